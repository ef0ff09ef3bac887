"""Weight Aligning: norm alignment, loss form, herding, state, and the Split-MNIST outcome."""

import pytest
import torch
from torch.nn import functional as F

import cl
from cl.context import Batch
from cl.models import MLP
from strategies.weight_aligning import WeightAligning, herding


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Exp:
    def __init__(self, index, x, y, classes):
        self.index, self.x, self.y, self.classes = index, x, y, classes


class Stream:
    def __init__(self, experiences):
        self.experiences = experiences


class Ctx:
    def __init__(self, model, stream):
        self.model, self.stream, self.class_mask = model, stream, None
        self.experience, self.seen_classes, self.generator = 0, [], None


def blobs(classes, n=40, d=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.tensor(classes).repeat_interleave(n)
    centers = torch.randn(10, d, generator=gen) * 3
    return centers[y] + torch.randn(len(y), d, generator=gen), y


@pytest.mark.outcome
def test_alignment_equalises_mean_norms_and_removes_the_new_class_bias(seed_offset, outcome):
    torch.manual_seed(0 + seed_offset)
    model = MLP(6, [16], 4)  # 8 units: some seeds leave old samples with no active unit (ties)
    x0, y0 = blobs([0, 1], seed=seed_offset)
    x1, y1 = blobs([2, 3], seed=seed_offset)
    ctx = Ctx(model, Stream([Exp(0, x0, y0, [0, 1]), Exp(1, x1, y1, [2, 3])]))
    wa = WeightAligning(mem_size=0)
    with torch.no_grad():  # a head biased towards the new classes 2, 3 through their norms
        model.head.bias.zero_()
        model.head.weight[:2] = model.head.weight[:2].abs() + 0.1
        model.head.weight[2:] = model.head.weight[:2] * 4.0
    ctx.seen_classes, wa.old_classes, ctx.experience = [0, 1, 2, 3], [0, 1], 1
    x_old = x0
    model.requires_grad_(False)
    before = model(x_old).argmax(1)
    norms = model.head.weight.norm(dim=1)
    assert norms[2:].mean() > 3 * norms[:2].mean()
    to_new = torch.isin(before, torch.tensor([2, 3])).float().mean()
    outcome.above("old samples predicted new, before", to_new, 0.8, null=0.5)
    old_rows = model.head.weight[:2].clone()
    wa.after_experience(ctx)
    norms = model.head.weight.norm(dim=1)
    assert norms[:2].mean() == pytest.approx(norms[2:].mean().item(), rel=1e-5)
    assert torch.equal(model.head.weight[:2], old_rows)  # old classes untouched
    after = model(x_old).argmax(1)
    to_new_after = torch.isin(after, torch.tensor([2, 3])).float().mean()
    outcome.below("old samples predicted new, after", to_new_after, 0.6, null=to_new)
    assert wa.old_classes == [0, 1, 2, 3]


def test_no_alignment_without_old_classes_or_when_disabled():
    torch.manual_seed(0)
    model = MLP(6, [8], 4)
    x0, y0 = blobs([0, 1])
    ctx = Ctx(model, Stream([Exp(0, x0, y0, [0, 1])]))
    ctx.seen_classes = [0, 1]
    w = model.head.weight.clone()
    WeightAligning(mem_size=0).after_experience(ctx)  # first experience: nothing to align to
    assert torch.equal(model.head.weight, w)
    ctx.seen_classes, ctx.experience = [0, 1, 2], 0
    wa = WeightAligning(mem_size=0, align=False)
    wa.old_classes = [0, 1]
    wa.after_experience(ctx)
    assert torch.equal(model.head.weight, w)


def test_loss_is_one_minus_lambda_ce_over_seen_plus_lambda_kd():
    torch.manual_seed(0)
    model = MLP(6, [8], 6)
    x1, y1 = blobs([2, 3], n=5)
    ctx = Ctx(model, Stream([Exp(0, None, None, [0, 1]), Exp(1, x1, y1, [2, 3])]))
    wa = WeightAligning(mem_size=0, temperature=2.0)
    wa.old_classes, ctx.experience, ctx.seen_classes = [0, 1], 1, [0, 1, 2, 3]
    wa.before_experience(ctx)  # teacher = copy of the current model, lam = 2 / 4
    assert wa.lam == 0.5
    with torch.no_grad():
        model.head.weight.add_(0.3 * torch.randn_like(model.head.weight))  # student != teacher
    batch = Batch(x1, y1, torch.ones_like(y1), len(y1))
    out = model(x1)
    total = F.cross_entropy(out, y1) + wa.loss(ctx, batch, out)  # what the runner adds up
    ce_seen = F.cross_entropy(out[:, :4], y1)  # classes 4, 5 unseen: left out
    q_old = F.softmax(wa.old_model(x1)[:, :2] / 2, dim=1)
    kd = -(q_old * F.log_softmax(out[:, :2] / 2, dim=1)).sum(1).mean()
    assert total.item() == pytest.approx((0.5 * ce_seen + 0.5 * kd).item(), rel=1e-5)
    total.backward()
    assert model.head.weight.grad[4:].abs().max() < 1e-7  # unseen rows are not trained


@pytest.mark.outcome
def test_herding_picks_samples_whose_mean_tracks_the_class_mean(seed_offset, outcome):
    gen = torch.Generator().manual_seed(0 + seed_offset)
    f = torch.randn(200, 5, generator=gen) + 2
    idx = herding(f, 40)  # herding's error falls as 1/k, a random draw's as 1/sqrt(k)
    assert len(idx) == 40 and len(set(idx.tolist())) == 40
    phi = F.normalize(f, dim=1)
    err = (phi[idx].mean(0) - phi.mean(0)).norm()
    rand = torch.stack(
        [
            (phi[torch.randperm(200, generator=gen)[:40]].mean(0) - phi.mean(0)).norm()
            for _ in range(50)
        ]
    )
    # far better than a random draw of 40, and improving with more picks
    outcome.below("herding / random error", err / rand.mean(), 0.65, null=1)
    err10 = (phi[idx[:10]].mean(0) - phi.mean(0)).norm()
    outcome.below("error with 40 / with 10 picks", err / err10, 1, null=1)


def test_memory_budget_is_shared_and_old_classes_shrink_by_priority():
    torch.manual_seed(0)
    model = MLP(6, [8], 4)
    x0, y0 = blobs([0, 1])
    x1, y1 = blobs([2, 3], seed=1)
    ctx = Ctx(model, Stream([Exp(0, x0, y0, [0, 1]), Exp(1, x1, y1, [2, 3])]))
    wa = WeightAligning(mem_size=20, align=False)
    ctx.seen_classes = [0, 1]
    wa.after_experience(ctx)
    assert torch.bincount(wa.y).tolist() == [10, 10]
    first = wa.x[wa.y == 0][:5].clone()
    ctx.experience, ctx.seen_classes = 1, [0, 1, 2, 3]
    wa.after_experience(ctx)
    assert torch.bincount(wa.y).tolist() == [5, 5, 5, 5]
    assert torch.equal(wa.x[wa.y == 0], first)
    b = WeightAligning()
    b.load_state_dict(wa.state_dict())
    assert torch.equal(b.x, wa.x) and b.old_classes == [0, 1, 2, 3]


def test_clip_keeps_head_weights_non_negative():
    model = MLP(6, [8], 4)
    WeightAligning(clip=True).after_step(Ctx(model, None))
    assert model.head.weight.min() >= 0


SPLIT = ["benchmark=split_mnist", "model.hidden=[100,100]", "optim.lr=0.05", "plasticity.every=0"]
# 20 exemplars: the bias towards new classes that the alignment removes is larger than with 100,
# where KD alone came within 0.02 of WA (WA - KD 0.02 to 0.24 over seeds 0-9; with 20 exemplars
# 0.06 to 0.17 over seeds and CPU kernels). WA - naive: 0.14 to 0.28 (naive collapses to 0.1-0.2).
WA = ["strategy=weight_aligning", "strategy.weight_aligning.mem_size=20"]


def final_model_acc(run, overrides):
    """Mean accuracy over all tasks of the model in the run's last checkpoint.

    The checkpoint is written after the `after_experience` hooks, so it holds the aligned
    model; the runner's own last evaluation row is taken before them (see the WA report).
    """
    from cl.config import load
    from cl.data import load_source
    from cl.models import build_model
    from cl.streams import build_stream

    cfg, _ = load(overrides)
    b = cfg.benchmark
    data = load_source(b.source, cfg.data.root, cfg.data.download, b.test_fraction, b.split_seed)
    stream = build_stream(b, data, cfg.seed, cfg.eval.subset)
    model = build_model(cfg.model, stream.input_shape, stream.n_classes)
    model.load_state_dict(torch.load(run.path / "checkpoint.pt", weights_only=True)["model"])
    with torch.no_grad():
        model.eval()
        accs = [(model(e.eval_x).argmax(1) == e.eval_y).float().mean() for e in stream.experiences]
    return torch.stack(accs).mean().item()


@pytest.mark.outcome
def test_weight_aligning_beats_naive_and_kd_alone_on_class_incremental_split_mnist(
    fast, seed_offset, outcome
):
    acc = {}
    for name, ov in {
        "naive": ["strategy=naive"],
        "wa": WA,
        "kd": WA + ["strategy.weight_aligning.align=false"],  # same KD, exemplars and clipping
    }.items():
        overrides = fast + SPLIT + ov + ["train.epochs=5", f"seed={seed_offset}"]
        acc[name] = final_model_acc(cl.run(overrides, quiet=True), overrides)
    outcome.above("wa - naive acc", acc["wa"] - acc["naive"], 0.06, null=0)
    outcome.above("wa - kd acc", acc["wa"] - acc["kd"], 0.02, null=0)
