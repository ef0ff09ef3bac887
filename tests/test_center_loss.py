"""Center loss: the loss and its gradient, Wen et al.'s center update, frozen old centers."""

import pytest
import torch

from cl.context import Batch, Context
from cl.distributed import SINGLE
from strategies.center_loss import CenterLoss


class Exp:
    def __init__(self, classes):
        self.classes = classes


class Head:
    out_features = 3


class Model:
    head = Head()


class Ctx:
    collective = SINGLE  # one process (cl/distributed.py)
    sample_mean = Context.sample_mean

    def __init__(self, experiences):
        self.model, self.device, self.experience = Model(), torch.device("cpu"), 0
        self.stream = type("S", (), {"experiences": [Exp(c) for c in experiences]})()
        self.features = None


MEANS = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 1.0]])


def step(s, ctx, y, gen, means=MEANS):
    ctx.features = means[y] + 0.3 * torch.randn(len(y), 2, generator=gen)
    batch = Batch(torch.zeros(len(y), 1), y, torch.zeros_like(y), len(y))
    loss = s.loss(ctx, batch, None)
    s.after_step(ctx)
    return loss


@pytest.mark.outcome
def test_centers_converge_to_the_class_means(seed_offset, outcome):
    gen = torch.Generator().manual_seed(0 + seed_offset)
    s, ctx = CenterLoss(alpha=0.1), Ctx([[0, 1, 2]])
    s.before_experience(ctx)
    # batches of 64: the centers' jitter stays under 0.05 (200 seeds); with 16, up to 0.097
    for _ in range(300):
        step(s, ctx, torch.randint(3, (64,), generator=gen), gen)
    outcome.within("center error", (s.centers - MEANS).abs().max(), 0.1)


def test_loss_value_and_gradient():
    s, ctx = CenterLoss(weight=0.1), Ctx([[0, 1, 2]])
    s.before_experience(ctx)
    s.centers = MEANS.clone()
    phi = torch.tensor([[2.0, 0.0], [0.0, 0.0]], requires_grad=True)
    ctx.features = phi
    y = torch.tensor([0, 1])
    loss = s.loss(ctx, Batch(torch.zeros(2, 1), y, y, 2), None)
    # 0.1 * (1/2) * (1/2 * 1^2 + 1/2 * 2^2) = 0.125
    assert loss.item() == pytest.approx(0.125)
    loss.backward()
    assert torch.allclose(phi.grad, 0.1 * (phi - MEANS[y]).detach() / 2)


@pytest.mark.outcome
def test_old_centers_stay_fixed_and_new_classes_learn_theirs(seed_offset, outcome):
    gen = torch.Generator().manual_seed(0 + seed_offset)
    s, ctx = CenterLoss(alpha=0.1), Ctx([[0, 1], [2]])
    s.before_experience(ctx)
    for _ in range(100):
        step(s, ctx, torch.randint(2, (64,), generator=gen), gen)
    old = s.centers[:2].clone()
    outcome.within("old-class center error", (old - MEANS[:2]).abs().max(), 0.1)
    assert s.centers[2].abs().sum() == 0
    ctx.experience = 1
    s.before_experience(ctx)
    shifted = MEANS + 5.0  # the features drift: old classes must keep their centers
    for _ in range(100):
        step(s, ctx, torch.randint(3, (64,), generator=gen), gen, shifted)
    assert torch.equal(s.centers[:2], old)
    outcome.within("new-class center error", (s.centers[2] - shifted[2]).abs().max(), 0.1)
    # drifted old-class features are still pulled back: 0.01 * 1/2 * ||(5, 5)||^2 = 0.25
    # (on 64 samples: within 0.011 of it over 200 seeds; on 2 samples, within 0.04)
    loss = step(s, ctx, torch.tensor([0, 1]).repeat(32), gen, shifted)
    outcome.within("pull-back loss - 0.25", abs(loss.item() - 0.25), 0.02)


def test_state_dict_round_trip():
    gen = torch.Generator().manual_seed(0)
    a, ctx = CenterLoss(), Ctx([[0, 1, 2]])
    a.before_experience(ctx)
    step(a, ctx, torch.tensor([0, 1, 2]), gen)
    b = CenterLoss()
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.centers, b.centers) and torch.equal(a.has_center, b.has_center)


def test_rejects_bad_options():
    with pytest.raises(ValueError, match="alpha"):
        CenterLoss(alpha=0.0)


def test_freeze_head_stops_old_class_rows_only():
    from cl.models import MLP

    torch.manual_seed(0)
    model = MLP(4, [5], 3)
    s, ctx = CenterLoss(freeze_head=True), Ctx([[0, 1], [2]])
    ctx.model = model
    s.before_experience(ctx)
    ctx.experience = 1
    s.before_experience(ctx)  # classes 0, 1 fixed; class 2 learning
    model(torch.randn(8, 4)).sum().backward()
    s.after_backward(ctx)
    assert model.head.weight.grad[:2].abs().sum() == 0 and model.head.bias.grad[:2].abs().sum() == 0
    assert model.head.weight.grad[2].abs().sum() > 0
    s.learning[:] = False  # domain-incremental: every class fixed -> the head is skipped
    model.zero_grad()
    model(torch.randn(8, 4)).sum().backward()
    s.after_backward(ctx)
    assert model.head.weight.grad is None and model.body[1].weight.grad is not None


ROTATED = [
    "benchmark=rotated_mnist",
    "benchmark.n_tasks=4",
    "model.hidden=[100,100]",
    "train.batch_size=8",
    "optim.momentum=0.9",
    "optim.lr=0.05",
    "eval.every=50",
    "plasticity.every=0",  # the probe does not change training; it costs 15% here
]


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.outcome
def test_center_loss_improves_on_naive_on_rotated_mnist(fast, one_thread, seed_offset, outcome):
    import cl

    # Batches of 32 and the final ACC: the gain was -0.02 to +0.07 over 15 seeds x 3 CPU kernels
    # (mean 0.035). Batches of 8 (4x the steps: naive drifts further) and the average anytime
    # accuracy over the run (an evaluation every 50 steps, less chaotic than the last one)
    # give 0.05 to 0.10.
    args = fast + ROTATED + [f"seed={seed_offset}"]
    naive = cl.run(args + ["strategy=naive"], quiet=True).summary["aaa"]
    center = cl.run(args + ["strategy=center_loss"], quiet=True).summary["aaa"]
    outcome.above("center loss - naive average anytime acc", center - naive, 0.02, null=0)
