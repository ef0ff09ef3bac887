"""Time per training step of cl's GEM and A-GEM against naive and against Avalanche's GEM/AGEM.

Workload (GEM paper's MNIST setup): 20-task permuted MNIST on the embedded mnist5k digits, MLP
784-100-100-10 (ReLU), SGD lr 0.1 (no momentum), batch 10, 256 memories per past task; GEM
memory_strength 0.5, A-GEM sample_size 256. Timed at task k = 2, 5, 10, 20 (k - 1 past tasks):
the memories of tasks 1..k-1 are filled directly (random 256 samples of each task's training
data, the same samples for cl and Avalanche) and `--steps` steps are run on task k's data.

* cl: `cl.runner.train_step` with [] (naive), [GEM] or [AGEM], as the runner calls it.
* Avalanche 0.6.0: `avalanche.training.Naive` / `GEM(patterns_per_exp=256,
  memory_strength=0.5)` / `AGEM(patterns_per_exp=256, sample_size=256)`, train_mb_size 10, no
  metrics or loggers; GEM's memory_x/y/tid dicts and AGEM's buffers are filled directly and the
  clock is set to k - 1 finished experiences. One step = the time between two consecutive
  `before_training_iteration` callbacks (so data loading and every callback count).

Both run with NumPy's BLAS limited to one thread (threadpoolctl, `user_api="blas"`) and torch
on each of `--threads` (default 1 and 2: the VM has 2 cores). The arms take turns within each of
`--rounds` rounds, so a slow spell of the shared machine hits them alike; the table gives the
median over rounds of the median ms/step after `--warmup` steps, and the median of per-round
ratios. `cl A-GEM64` is A-GEM with Avalanche's default sample_size 64; `floor` is a naive step
plus one 256-sample forward/backward on the memories and nothing else (what any A-GEM with
sample_size 256 must compute).
Run: `.venv/bin/python bench/strategy_step.py` (`--grad-pass` times GEM's memory pass alone).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time
import warnings

import torch
from threadpoolctl import threadpool_limits
from torch import nn
from torch.nn import functional as F

from cl.config import load
from cl.context import Batch, Context
from cl.data import load_source
from cl.models import MLP
from cl.runner import train_step
from cl.strategy import Strategy
from cl.streams import build_stream
from strategies.agem import AGEM
from strategies.gem import GEM
from strategies.task_grads import rows, task_gradients

TASKS = (2, 5, 10, 20)
MEM, BATCH, LR = 256, 10, 0.1


def make_stream():
    cfg, _ = load(["benchmark=permuted_mnist", "benchmark.n_tasks=20"])
    b = cfg.benchmark
    data = load_source(b.source, cfg.data.root, cfg.data.download, b.test_fraction, b.split_seed)
    return build_stream(b, data, 0, 10)


def memories(stream, k):
    """(x, y) of 256 random training samples of each of the k - 1 past tasks."""
    gen = torch.Generator().manual_seed(1)
    out = []
    for e in stream.experiences[: k - 1]:
        idx = torch.randperm(len(e.y), generator=gen)[:MEM]
        out.append((e.x[idx].clone(), e.y[idx].clone()))
    return out


def model():
    torch.manual_seed(0)
    return MLP(784, [100, 100], 10)


class ExtraPass(Strategy):
    """A-GEM's unavoidable extra work alone: one fwd/bwd of 256 random memory samples per step
    (gradients discarded, no projection): the floor of an A-GEM step."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def after_backward(self, ctx):
        idx = torch.randperm(len(self.y), generator=ctx.generator)[:256]
        loss = F.cross_entropy(ctx.model(self.x.index_select(0, idx)), self.y[idx])
        torch.autograd.grad(loss, list(ctx.model.parameters()))


def time_cl(stream, k, arm, steps, warmup):
    net = model()
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    ctx = Context(net, opt, stream, torch.device("cpu"), experience=k - 1)
    ctx.seen_classes = list(range(10))
    ctx.generator = torch.Generator().manual_seed(0)
    strategies = []
    if arm == "floor":
        mem = memories(stream, k)
        strategies = [ExtraPass(torch.cat([x for x, _ in mem]), torch.cat([y for _, y in mem]))]
    elif arm != "naive":
        s = GEM(MEM, 0.5) if arm == "gem" else AGEM(MEM, 64 if arm == "agem64" else 256)
        mem = memories(stream, k)
        m = s.memory
        m.x, m.y = torch.cat([x for x, _ in mem]), torch.cat([y for _, y in mem])
        m.task = torch.cat([torch.full_like(y, t) for t, (_, y) in enumerate(mem)])
        strategies = [s]
    e = stream.experiences[k - 1]
    times = []
    for i in range(steps + warmup):
        sl = slice(i * BATCH, (i + 1) * BATCH)
        batch = Batch(e.x[sl], e.y[sl], torch.full((BATCH,), k - 1), BATCH)
        start = time.perf_counter()
        for s in strategies:
            batch = s.batch(ctx, batch)
        train_step(ctx, strategies, batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times[warmup:])


def time_avalanche(stream, k, arm, steps, warmup):
    from avalanche.benchmarks import tensors_benchmark
    from avalanche.benchmarks.utils import _make_taskaware_tensor_classification_dataset
    from avalanche.core import SupervisedPlugin
    from avalanche.training import AGEM as AvAGEM
    from avalanche.training import GEM as AvGEM
    from avalanche.training import Naive
    from avalanche.training.plugins import AGEMPlugin, EvaluationPlugin, GEMPlugin

    class Clock(SupervisedPlugin):
        def __init__(self):
            super().__init__()
            self.stamps = []

        def before_training_iteration(self, strategy, **kwargs):
            self.stamps.append(time.perf_counter())

    e = stream.experiences[k - 1]
    n = (steps + warmup + 1) * BATCH
    x, y = e.x[:n].flatten(1), e.y[:n]
    bench = tensors_benchmark([(x, y)], [(x[:BATCH], y[:BATCH])], task_labels=[0])
    net, clock = model(), Clock()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluator = EvaluationPlugin(loggers=[])
    kw = dict(
        optimizer=torch.optim.SGD(net.parameters(), lr=LR),
        criterion=nn.CrossEntropyLoss(),
        train_mb_size=BATCH,
        train_epochs=1,
        device="cpu",
        evaluator=evaluator,
        plugins=[clock],
    )
    if arm == "naive":
        strategy = Naive(model=net, **kw)
    elif arm == "gem":
        strategy = AvGEM(model=net, patterns_per_exp=MEM, memory_strength=0.5, **kw)
        plugin = next(p for p in strategy.plugins if isinstance(p, GEMPlugin))
        for t, (mx, my) in enumerate(memories(stream, k)):
            plugin.memory_x[t], plugin.memory_y[t] = mx.flatten(1), my
            plugin.memory_tid[t] = torch.zeros_like(my)
    else:
        strategy = AvAGEM(model=net, patterns_per_exp=MEM, sample_size=256, **kw)
        plugin = next(p for p in strategy.plugins if isinstance(p, AGEMPlugin))
        for mx, my in memories(stream, k):
            plugin.update_memory(_make_taskaware_tensor_classification_dataset(mx.flatten(1), my))
    strategy.clock.train_exp_counter = k - 1
    with contextlib.redirect_stdout(io.StringIO()):
        strategy.train(bench.train_stream[0])
    diffs = [b - a for a, b in zip(clock.stamps, clock.stamps[1:], strict=False)]
    return statistics.median(diffs[warmup:])


def grad_pass(stream, repeats=15):
    """GEM's memory-gradient pass at 1/4/9/19 past tasks: one pass per task vs cl's one pass."""
    net = model()
    params = list(net.parameters())

    def per_task(mem):
        rows = []
        for x, y in mem:
            gs = torch.autograd.grad(F.cross_entropy(net(x), y), params)
            rows.append(torch.cat([g.flatten() for g in gs]))
        return torch.stack(rows)

    for past in (1, 4, 9, 19):
        mem = memories(stream, past + 1)
        x, y, sizes = torch.cat([x for x, _ in mem]), torch.cat([y for _, y in mem]), [MEM] * past
        arms = {
            "per-task passes": lambda mem=mem: per_task(mem),
            "one pass": lambda x=x, y=y, s=sizes: rows(
                task_gradients(net, x, y, s, range(len(s)), lambda out, task: out)
            ),
        }
        first, second = (f() for f in arms.values())
        assert torch.allclose(first, second, atol=1e-5)
        times = {n: [] for n in arms}
        for _ in range(repeats):
            for n, f in arms.items():
                start = time.perf_counter()
                f()
                times[n].append(time.perf_counter() - start)
        med = ", ".join(f"{n} {statistics.median(v) * 1e3:.2f} ms" for n, v in times.items())
        print(f"{past:2d} past tasks: {med}")


ARMS = ("cl naive", "av naive", "cl gem", "av gem", "cl agem", "av agem", "cl agem64", "cl floor")


def measure(stream, k, args):
    """{arm: [ms/step per round]}; the arms take turns within each round."""
    times = {arm: [] for arm in ARMS}
    for _ in range(args.rounds):
        for arm in ARMS:
            side, name = arm.split()
            timer = time_cl if side == "cl" else time_avalanche
            times[arm].append(timer(stream, k, name, args.steps, args.warmup) * 1e3)
    return times


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--tasks", type=int, nargs="+", default=list(TASKS))
    p.add_argument("--grad-pass", action="store_true", help="only time GEM's gradient pass")
    args = p.parse_args()
    stream = make_stream()
    for threads in args.threads:
        torch.set_num_threads(threads)
        with threadpool_limits(1, user_api="blas"):
            if args.grad_pass:
                print(f"torch threads {threads}")
                grad_pass(stream)
                continue
            rows = [(k, measure(stream, k, args)) for k in args.tasks]
        med = statistics.median
        print(
            f"\nms/step: median over {args.rounds} rounds of the median of {args.steps} steps; "
            f"torch threads {threads}, BLAS threads 1. Ratios: median of per-round ratios."
        )
        head = ("task", "cl naive", "cl GEM", "cl A-GEM", "av Naive", "av GEM", "av AGEM")
        print(" | ".join(f"{h:>8}" for h in head), end="")
        print(" | cl A-GEM64 | av GEM/cl GEM | cl A-GEM/cl naive | cl A-GEM64/cl naive", end="")
        print(" | floor/cl naive")
        for k, t in rows:
            arms = ("cl naive", "cl gem", "cl agem", "av naive", "av gem", "av agem", "cl agem64")
            vals = [med(t[a]) for a in arms]
            ratio = lambda a, b, t=t: statistics.median(  # noqa: E731
                [x / y for x, y in zip(t[a], t[b], strict=True)]
            )
            print(
                f"{k:>8} | "
                + " | ".join(f"{v:8.2f}" for v in vals[:6])
                + f" | {vals[6]:10.2f} | {ratio('av gem', 'cl gem'):13.2f}"
                + f" | {ratio('cl agem', 'cl naive'):17.2f}"
                + f" | {ratio('cl agem64', 'cl naive'):19.2f}"
                + f" | {ratio('cl floor', 'cl naive'):14.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
