"""TAG's step weights and update against hand computation; Hard ASH's mask; both end to end."""

import copy
import math
from types import SimpleNamespace

import pytest
import torch

from cl.models import MLP, HardASH
from strategies.tag import TAG, alphas


def test_tag_alphas_from_given_first_moments():
    memory = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # unit-norm M^tau
    prev, own = alphas(torch.tensor([3.0, 0.0]), memory, b=5.0)
    assert prev.tolist() == pytest.approx([math.exp(-5), 1.0, math.exp(5)], rel=1e-6)
    assert own == pytest.approx(math.exp(-5))
    assert alphas(torch.tensor([1.0, 2.0]), memory[:0], 5.0)[1] == 1.0  # first task: base


@pytest.mark.parametrize("base", ["rmsprop", "adam", "adagrad"])
def test_tag_update_equals_the_hand_computed_one_across_a_task_switch(base):
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    ctx = SimpleNamespace(experience=0)
    opt = TAG([p], lr=0.1, base=base, b=2.0)
    opt.watch(ctx)
    b1, b2 = 0.9, 0.999 if base == "adam" else 0.99
    grads = {0: [[1.0, 0.5], [0.5, 1.0]], 1: [[-1.0, 0.2], [0.3, -0.4]]}
    theta, mem_m, mem_v = p.detach().clone(), [], []
    for task, gs in grads.items():
        ctx.experience = task
        m, v = torch.zeros(2), torch.zeros(2)
        for n, gl in enumerate(gs, start=1):
            g = torch.tensor(gl)
            p.grad = g.clone()
            opt.step()
            m = b1 * m + (1 - b1) * g
            v = v + g * g if base == "adagrad" else b2 * v + (1 - b2) * g * g
            if task == 0:
                vs = v
            else:
                cos = torch.dot(m, mem_m[0]) / m.norm()
                vs = math.exp(-2.0) * v + torch.exp(-2.0 * cos) * mem_v[0]
            if base == "adam":
                step = (m / (1 - b1**n)) / (vs.sqrt() / math.sqrt(1 - b2**n) + 1e-8)
            else:
                step = g / (vs.sqrt() + 1e-8)
            theta = theta - 0.1 * step
            torch.testing.assert_close(p.detach(), theta)
        mem_m.append(m / m.norm())
        mem_v.append(v)


def test_tag_state_dict_round_trip_continues_identically():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    ctx = SimpleNamespace(experience=0)
    oa, ob = TAG(a.parameters(), lr=0.01), TAG(b.parameters(), lr=0.01)
    oa.watch(ctx), ob.watch(ctx)
    x = torch.randn(20, 3)
    for i in range(20):
        ctx.experience = i // 7
        for model, opt in ((a, oa), (b, ob)):
            opt.zero_grad()
            model(x[i : i + 1]).pow(2).sum().backward()
            opt.step()
        if i == 9:  # b restarts from a's checkpoint
            ob = TAG(b.parameters(), lr=0.01)
            ob.load_state_dict(copy.deepcopy(oa.state_dict()))  # as torch.load
            ob.watch(ctx)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_hard_ash_keeps_the_units_above_mean_plus_z_std():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0, 10.0], [-1.0, -1.0, 0.0, 5.0, 5.0]])
    # row 0: mean 4, std sqrt(10) = 3.162 -> z=1 threshold 7.16; row 1: mean 1.6, std 2.8
    out = HardASH(z=1.0)(x)
    assert out.tolist() == [[0, 0, 0, 0, 10.0], [0, 0, 0, 5.0, 5.0]]
    assert HardASH(z=0.0)(x).tolist() == [[0, 0, 0, 0, 10.0], [0, 0, 0, 5.0, 5.0]]
    assert HardASH(z=-1.0)(x)[0].tolist() == [1.0, 2.0, 3.0, 4.0, 10.0]  # 4 - 3.16 = 0.84
    x.requires_grad_(True)
    HardASH(1.0)(x).sum().backward()
    assert x.grad.tolist() == [[0, 0, 0, 0, 1.0], [0, 0, 0, 1.0, 1.0]]  # kept units only


def test_mlp_with_hard_ash_is_sparse():
    torch.manual_seed(0)
    model = MLP(20, [200], 4, activation="hard_ash", ash_z=1.0)
    h = model.features(torch.randn(64, 20))
    assert 0.05 < (h != 0).float().mean() < 0.3  # ~16% for Gaussian pre-activations


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def mnist_task(classes, train=True):
    from cl.data import load_mnist5k

    d = load_mnist5k(0.2, 0)
    x, y = (d.x_train, d.y_train) if train else (d.x_test, d.y_test)
    keep = torch.isin(y, torch.tensor(classes))
    return x[keep].flatten(1), y[keep]


@pytest.mark.outcome
def test_hard_ash_stays_sparse_and_learns_the_current_task(seed_offset, outcome, one_thread):
    """Class-incremental digits (0, 1) then (2, 3), one epoch each, Adagrad: the hidden layer
    stays sparse (Gaussian pre-activations would keep 15.9% at z = 1; the trained ones keep
    8.5-10.2% over seeds 0-4 and the 4 kernel settings) and learns the current task."""
    torch.manual_seed(0 + seed_offset)
    model = MLP(784, [400], 10, activation="hard_ash", ash_z=1.0)
    opt = torch.optim.Adagrad(model.parameters(), lr=0.01)
    for classes in ([0, 1], [2, 3]):
        x, y = mnist_task(classes)
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed_offset))
        for i in range(0, len(y), 32):
            idx = perm[i : i + 32]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    x, y = mnist_task([2, 3], train=False)
    with torch.no_grad():
        active = (model.features(x) != 0).float().mean()
        acc = (model(x).argmax(1) == y).float().mean()
    # no effect: without the mask every unit is active; the 20 seed/kernel runs: 8.5-10.2%
    outcome.below("active fraction of hidden units", active, 0.45, null=1.0)
    outcome.above("active fraction of hidden units (not collapsed)", active, 0.04, null=0.0)
    outcome.above("current task accuracy", acc, 0.75, null=0.5)  # 0.925-0.965


@pytest.mark.outcome
def test_tag_weights_a_repeated_task_less_than_an_unrelated_one(seed_offset, outcome, one_thread):
    """Digits (0, 1), then (2, 3), then (0, 1) again: in the third task the first moment points
    along task 1's frozen M, so alpha(3, 1) = exp(-b cos) is small and task 1's V barely damps
    the step, while task 2's (unrelated) V weighs more: log alpha(3, 2) - log alpha(3, 1) =
    b (cos(M, M1) - cos(M, M2)) > 0 for every parameter tensor (at most 2b = 10)."""
    torch.manual_seed(0 + seed_offset)
    model = MLP(784, [100], 10)
    opt = TAG(model.parameters(), lr=1e-3, base="rmsprop", b=5.0)
    ctx = SimpleNamespace(experience=0)
    opt.watch(ctx)
    gen = torch.Generator().manual_seed(seed_offset)
    for task, classes in enumerate(([0, 1], [2, 3], [0, 1])):
        ctx.experience = task
        x, y = mnist_task(classes)
        for _ in range(25):
            idx = torch.randint(len(y), (32,), generator=gen)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    gaps = []
    for p in model.parameters():
        st = opt.state[p]
        prev, _ = alphas(st["m"], st["memory_m"], 5.0)
        gaps.append(math.log(prev[1]) - math.log(prev[0]))
    outcome.above("log alpha(unrelated) - log alpha(repeated), min over tensors", min(gaps), 0.3, 0)
    outcome.above("log alpha(unrelated) - log alpha(repeated), mean", sum(gaps) / 4, 1.5, 0)
