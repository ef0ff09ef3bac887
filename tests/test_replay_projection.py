"""Replay plus gradient projection (Hess et al., arXiv 2311.04898): `[replay,agem]` and
`[replay,gem]` project replay's combined gradient against reference gradients on replay's own
memory; the projection statistics (`Strategy.metrics`) reach the rows and the summary."""

import math

import pytest
import torch

from cl import api, config
from cl.context import Batch, Context
from cl.distributed import SINGLE
from cl.runner import run_stream
from strategies.agem import AGEM
from strategies.gem import GEM, dual_weights
from strategies.replay import Replay
from strategies.task_grads import rows, task_gradients

SMALL = [
    "run.progress=false",
    "wandb.mode=disabled",
    "benchmark.source=digits",
    "benchmark.n_tasks=3",
    "model.hidden=[16]",
    "train.epochs=1",
    "eval.subset=50",
    "run.report=false",
    "strategy.replay.mem_size=60",
    "strategy.replay.new_weight=1/k",
]


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Ctx:  # what the projection hooks read
    collective = SINGLE  # one process (cl/distributed.py)
    mean_gradient = Context.mean_gradient

    def __init__(self, model, replayed=None, experience=1):
        self.model, self.replayed, self.experience = model, replayed, experience
        self.generator, self.memory = None, None

    def logits(self, output, task):
        return output


def linear_with_grad(g):
    """A bias-free Linear(2, 1) whose .grad is `g` (the training gradient, known)."""
    model = torch.nn.Linear(2, 1, bias=False)
    model.weight.grad = torch.tensor([g], dtype=torch.float32)
    return model


@pytest.mark.parametrize(
    "g_ref, projected, cos, ref_cos",
    [
        ([-1.0, 1.0], 1.0, 1 / math.sqrt(2), -1 / math.sqrt(2)),  # g~ = (0.5, 0.5)
        ([1.0, 1.0], 0.0, 1.0, 1 / math.sqrt(2)),  # <g, g_ref> > 0: g kept
    ],
)
def test_agem_statistics_on_known_gradients(g_ref, projected, cos, ref_cos):
    model = linear_with_grad([1.0, 0.0])
    agem = AGEM()
    agem.shared = True
    agem.reference_grads = lambda ctx, ref: [torch.tensor([g_ref])]
    agem.after_backward(Ctx(model, replayed=Batch(torch.zeros(1, 2), None, None, 0)))
    stats = agem.metrics()
    assert stats["projected"] == projected
    assert stats["cos"] == pytest.approx(cos, abs=1e-6)
    assert stats["norm_ratio"] == pytest.approx(cos, abs=1e-6)  # |g~| = cos * |g| here
    assert stats["ref_cos"] == pytest.approx(ref_cos, abs=1e-6)
    new = model.weight.grad.flatten()
    assert new @ torch.tensor(g_ref) >= -1e-7  # non-negative dot with the memory gradient
    expected = torch.tensor([0.5, 0.5]) if projected else torch.tensor([1.0, 0.0])
    assert torch.allclose(new, expected)


def test_agem_reports_nothing_without_a_memory():
    agem = AGEM()
    agem.shared = True
    agem.after_backward(Ctx(linear_with_grad([1.0, 0.0]), replayed=None))
    assert agem.metrics() == {}


@pytest.mark.parametrize("margin", [0.0, 0.5])
def test_gem_statistics_on_known_gradients(margin):
    g = torch.tensor([1.0, 0.0])
    G = torch.tensor([[-1.0, 1.0], [0.0, 1.0], [2.0, 1.0]])  # only task 0 is violated
    model = linear_with_grad(g.tolist())
    gem = GEM(memory_strength=margin)
    gem.memories = lambda ctx: "known"
    gem.memory_grads = lambda ctx, mem: [G.view(3, 1, 2)]
    gem.after_backward(Ctx(model))
    new = model.weight.grad.flatten()
    stats = gem.metrics()
    assert stats["projected"] == 1.0 and stats["violated"] == pytest.approx(1 / 3)
    assert stats["ref_cos"] == pytest.approx(-1 / math.sqrt(2), abs=1e-6)
    assert (G @ new).min() >= -5e-3  # every constraint holds (up to the QP's 1e-3 ridge)
    # the statistics from the QP's quantities equal those of the gradient actually set
    assert stats["cos"] == pytest.approx(float(g @ new / new.norm()), abs=1e-5)
    assert stats["norm_ratio"] == pytest.approx(float(new.norm()), abs=1e-5)
    assert stats["cos"] < 0.99  # the gradient did turn
    gem.memory_grads = lambda ctx, mem: [G[1:].view(2, 1, 2)]  # no violation: kept as is
    model.weight.grad = g.clone().view(1, 2)
    gem.after_backward(Ctx(model))
    assert gem.metrics()["projected"] == 0.0 and gem.metrics()["cos"] == 1.0
    assert torch.equal(model.weight.grad.flatten(), g)


def test_replay_joint_weight_is_one_over_tasks_so_far():
    replay = Replay(mem_size=20, mem_batch_size=4, new_weight="1/k")
    replay.memory.update(torch.randn(20, 3), torch.arange(20) % 2, torch.zeros(20).long())
    ctx = Ctx(None, experience=2)
    ctx.generator = torch.Generator().manual_seed(0)
    out = replay.batch(
        ctx, Batch(torch.randn(8, 3), torch.zeros(8).long(), torch.ones(8).long(), 8)
    )
    assert torch.allclose(out.weight[:8].sum(), torch.tensor(1 / 3))
    assert torch.allclose(out.weight[8:].sum(), torch.tensor(2 / 3))
    assert torch.equal(ctx.replayed.x, out.x[8:])  # the replayed samples, shared
    with pytest.raises(ValueError, match="1/k"):
        Replay(new_weight="1/2")


def traced(strategy_list, extra=()):
    """A small run of `[replay, projection]`; per projected step: the reference samples, the
    groups, whether each sample is in replay's memory at that moment, the dot products of the
    step taken with the memory gradients, the statistics and the experience."""
    cfg, _ = config.load([*SMALL, f"strategy={strategy_list}", *extra])
    state = api.build_state(cfg)
    replay, proj = state.strategies
    steps, last = [], {}
    inner, memories = proj.after_backward, proj.memories if isinstance(proj, GEM) else None

    def recording(ctx):
        last["mem"] = memories(ctx)
        return last["mem"]

    def after_backward(ctx):
        g = torch.cat([p.grad.flatten() for p in ctx.model.parameters()])
        inner(ctx)
        if not proj.metrics():
            return
        if isinstance(proj, AGEM):
            r = ctx.replayed
            ref = (r.x, r.y, [len(r.y)], [0])
        else:
            ref = last["mem"]
        G = rows(task_gradients(ctx.model, *ref, ctx.logits))
        grad = torch.cat([p.grad.flatten() for p in ctx.model.parameters()])
        stored = ctx.memory.x.flatten(1)
        hits = (ref[0].flatten(1)[:, None, :] == stored[None]).all(-1).any(1)
        # GEM's QP (official eps = 1e-3 ridge) guarantees G g~ >= -1e-3 v*; A-GEM's G g~ >= 0
        bound = torch.zeros(len(G))
        if isinstance(proj, GEM) and proj.metrics()["projected"]:
            bound = -1e-3 * dual_weights(G @ G.T, G @ g, proj.memory_strength)
        slack = (G @ grad - bound) / (G.norm(dim=1) * grad.norm())  # >= 0 up to rounding
        steps.append((ref, hits, slack, dict(proj.metrics()), ctx.experience))

    if memories is not None:
        proj.memories = recording
    proj.after_backward = after_backward
    record = []
    run_stream(state, record.append)
    return state, replay, proj, steps, record


@pytest.mark.parametrize("name", ["agem", "gem"])
def test_projection_uses_the_replay_memory(name):
    extra = ["strategy.gem.sample_size=8"] if name == "gem" else []
    state, replay, proj, steps, rows_ = traced(f"[replay,{name}]", extra)
    assert proj.shared and state.ctx.memory is replay.memory
    assert len(proj.memory) == 0  # no memory of its own
    assert steps and {e for *_, e in steps} == {1, 2}  # from the first task with a memory on
    for ref, hits, slack, _, experience in steps:
        assert hits.all()  # every reference sample is a sample of replay's memory
        if name == "gem":  # per past task, at most sample_size of them
            assert ref[3] == list(range(experience)) and max(ref[2]) <= 8
        # the step taken has a non-negative dot product with every memory gradient
        assert slack.min() >= -1e-5
    rate = sum(s["projected"] for *_, s, _ in steps) / len(steps)
    assert 0 < rate <= 1
    # the monitor logs the window means, and the summary the mean over reporting iterations
    key = f"strategy/{name}/projected"
    logged = [r[key] for r in rows_ if key in r]
    assert len(logged) == len(steps) and sum(logged) / len(logged) == pytest.approx(rate)
    assert state.monitor.summary()[key] == pytest.approx(rate)
    cos = [s["cos"] for *_, s, _ in steps]
    assert all(-1 <= c <= 1 + 1e-6 for c in cos)


def test_projection_before_replay_keeps_its_own_memory():
    cfg, _ = config.load([*SMALL, "strategy=[agem,replay]", "strategy.agem.patterns_per_exp=10"])
    state = api.build_state(cfg)
    run_stream(state, lambda row: None)
    agem, replay = state.strategies
    assert not agem.shared and len(agem.memory) == 30  # its own memory, 10 per experience


def test_monitor_averages_strategy_metrics_per_row_and_over_the_run():
    cfg, _ = config.load([*SMALL, "strategy=replay"])
    state = api.build_state(cfg)
    monitor, ctx = state.monitor, state.ctx
    one = (torch.tensor(1.0), torch.tensor(3), None)
    monitor.step(*one, {"strategy/x/a": 1.0}, n=4)
    monitor.step(*one, {}, n=4)  # nothing to report: left out of the means
    monitor.step(*one, {"strategy/x/a": 0.0, "strategy/x/b": 2.0}, n=4)
    saved = monitor.state_dict()  # mid-row: the window survives a checkpoint
    monitor.trackers["strategy"].load_state_dict({"window": {}, "total": {}})
    monitor.load_state_dict(saved)
    row = monitor.row(ctx, epoch=0, boundary=False)
    assert row["strategy/x/a"] == 0.5 and row["strategy/x/b"] == 2.0
    monitor.step(*one, {"strategy/x/a": 1.0}, n=4)
    row = monitor.row(ctx, epoch=0, boundary=False)
    assert row["strategy/x/a"] == 1.0 and "strategy/x/b" not in row
    summary = monitor.summary()
    assert summary["strategy/x/a"] == pytest.approx(2 / 3) and summary["strategy/x/b"] == 2.0
