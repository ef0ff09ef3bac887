"""Continual-evaluation overhead: the cl runner vs a bare PyTorch loop vs stock Avalanche.

Every arm runs the same workload: Split-MNIST on the embedded mnist5k digits (5 tasks of 2
classes, class-incremental, class order 0..9), an MLP 784-400-400-10 (ReLU), SGD (lr 0.01,
momentum 0), batch 32, one epoch per task (125 iterations), and an evaluation on the fixed
evaluation subsets (200 test digits per task with mnist5k) after every training iteration.

Arms, each timed on its training + evaluation loop only (data and model are built first):

* ``cl``: ``cl.runner.run_stream`` writing to a ``cl.store.LocalStore`` in a temp folder,
  assembled from cl's own pieces as ``cl.api.build_state`` does. It evaluates the seen tasks
  after every iteration, and all tasks before training and at the end of each experience.
* ``bare``: a plain PyTorch loop with the same tensors (taken from the cl stream), the same
  initial weights and the same shuffling generator, so it trains the identical model. After
  every iteration: one ``inference_mode`` forward over the seen tasks' evaluation tensors, then
  per-task accuracy by segment sums. The same evaluations as cl (initial + experience ends too).
* ``avalanche-stock``: ``avalanche.training.Naive`` over ``nc_benchmark`` of the same tensors,
  ``eval_every=1, peval_mode="iteration"``, trained with
  ``strategy.train(exp, eval_streams=[benchmark.test_stream])``: every evaluation scores all
  five test experiences (Avalanche also evaluates before each ``train`` call and twice at each
  experience's last iteration).
* ``avalanche-seen``: the same, with ``eval_streams=[test_stream[:k + 1]]``: only the seen
  tasks, i.e. about the evaluation workload of cl and bare.

Avalanche's evaluator is its ``default_evaluator`` (``--avalanche-evaluator default``, the
default, as stock Avalanche: accuracy and loss metrics, an interactive logger whose output is
sent to a string buffer) or ``EvaluationPlugin(accuracy_metrics(experience=True, stream=True),
loggers=[])`` (``--avalanche-evaluator quiet``: computes less, which favours Avalanche).

Method: a warm-up (cl, bare and Avalanche on the first experience, one ``cl.run``), then
``--repeats`` rounds; each round runs every arm once after a ``gc.collect()``: cl and bare back
to back (which goes first alternates), then the Avalanche arms. The table reports medians, and
best-of; the cl/bare ratio also as the median of the per-round ratios, the steadiest of the
three on a machine whose speed drifts (on a shared 2-core VM, runs of one arm vary by 30%+, so
use ``--repeats 9`` or more before reading much into a few percent).
``cl.run(...)`` end to end (data loading, run folder, checkpoint, plots; W&B disabled) is timed
once a round as context. ``--profile`` appends a cProfile of one ``run_stream`` call.
Results also go to ``bench/out/continual_eval.json``.

Run: ``.venv/bin/python bench/continual_eval.py [--repeats N] [--profile]`` or ``make bench``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import json
import math
import os
import pstats
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from cl import config as config_mod
from cl import strategy as strategy_mod
from cl.data import load_source
from cl.environment import seed_everything
from cl.models import build_model
from cl.monitor import Monitor
from cl.runner import RunState, make_context, run_stream
from cl.schema import RunConfig
from cl.store import LocalStore
from cl.streams import Stream, build_stream

OVERRIDES = [
    "benchmark=split_mnist",
    "benchmark.source=mnist5k",
    "benchmark.n_tasks=5",
    "benchmark.incremental=class",
    "benchmark.class_order=[0,1,2,3,4,5,6,7,8,9]",
    "model=mlp",
    "model.hidden=[400,400]",
    "model.activation=relu",
    "strategy=naive",
    "optim=sgd",
    "optim.lr=0.01",
    "optim.momentum=0.0",
    "train.epochs=1",
    "train.batch_size=32",
    "eval.every=1",
    "eval.subset=1000",
    "eval.unseen=false",
    "wandb.mode=disabled",
    "run.device=cpu",
    "run.progress=false",
    "seed=0",
    "plasticity.every=0",  # the probe is not part of this workload (bench/metrics_overhead.py)
]
CL_TARGET = 1.15  # cl loop / bare loop, at most
AVALANCHE_TARGET = 10.0  # Avalanche / cl loop, at least
DEFAULT_OUT = Path(__file__).resolve().parent / "out" / "continual_eval.json"

Arm = Callable[[Path], "ArmResult"]  # one timed run; the argument is a scratch folder


@dataclass
class ArmResult:
    """One timed run of an arm: wall time of its loop and what the loop did."""

    wall_s: float
    iterations: int
    evals: int  # evaluation passes (each over one or more tasks)
    eval_samples: int  # samples forwarded for evaluation, summed over all passes
    final_accs: list[float] = field(default_factory=list)  # per task, after the last task


def truncated(stream: Stream, n: int) -> Stream:
    """The first `n` experiences of `stream` (tensors shared, not copied)."""
    return Stream(
        stream.name,
        stream.experiences[:n],
        stream.n_classes,
        stream.input_shape,
        stream.task_incremental,
    )


def make_mlp(seed: int, in_dim: int, hidden: list[int], n_classes: int) -> nn.Sequential:
    """A plain MLP; seeded like a cl run, it gets the weights of cl's `MLP` (same init order)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten()]
    for h in hidden:
        layers += [nn.Linear(in_dim, h), nn.ReLU()]
        in_dim = h
    return nn.Sequential(*layers, nn.Linear(in_dim, n_classes))


def run_cl(
    cfg: RunConfig, stream: Stream, folder: Path, profile: cProfile.Profile | None = None
) -> ArmResult:
    """cl's runner loop with its local metrics store, set up as `cl.api.build_state` does."""
    device = torch.device("cpu")
    generator = seed_everything(cfg.seed)
    model = build_model(cfg.model, stream.input_shape, stream.n_classes).to(device)
    ctx = make_context(cfg, stream, model, device, generator)
    strategies = strategy_mod.build(cfg.strategy)
    folder.mkdir(parents=True, exist_ok=True)
    store = LocalStore(folder)
    try:
        if profile is not None:
            profile.enable()
        start = time.perf_counter()
        state = RunState(cfg, ctx, strategies, Monitor(cfg, ctx))
        for s in strategies:
            s.setup(ctx)
        record = run_stream(state, store.log)
        wall = time.perf_counter() - start
        if profile is not None:
            profile.disable()
    finally:
        store.close()
    sizes = [len(e.eval_y) for e in stream.experiences]
    samples = sum(
        size for row in record.accs for size, a in zip(sizes, row, strict=True) if not math.isnan(a)
    )
    return ArmResult(wall, ctx.iteration, len(record.accs), samples, record.accs[-1])


def run_bare(cfg: RunConfig, stream: Stream) -> ArmResult:
    """The same training and evaluation forwards in a plain PyTorch loop."""
    exps = stream.experiences
    in_dim = math.prod(stream.input_shape)
    model = make_mlp(cfg.seed, in_dim, list(cfg.model.hidden), stream.n_classes)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum)
    generator = torch.Generator().manual_seed(cfg.seed)  # the shuffling cl's runner draws
    bs = cfg.train.batch_size
    eval_x = torch.cat([e.eval_x for e in exps])
    eval_y = torch.cat([e.eval_y for e in exps])
    eval_task = torch.cat([torch.full((len(e.eval_y),), e.index) for e in exps])
    sizes = torch.tensor([len(e.eval_y) for e in exps], dtype=torch.float32)
    ends = sizes.long().cumsum(0).tolist()
    accs: list[list[float]] = []
    samples = iterations = 0

    def evaluate(n: int) -> None:  # accuracy on the first n tasks
        nonlocal samples
        end = ends[n - 1]
        model.eval()
        with torch.inference_mode():
            hit = (model(eval_x[:end]).argmax(1) == eval_y[:end]).float()
            correct = torch.zeros(n).index_add_(0, eval_task[:end], hit)
            accs.append((correct / sizes[:n]).tolist())
        model.train()
        samples += end

    start = time.perf_counter()
    evaluate(len(exps))
    for exp in exps:
        order = torch.randperm(len(exp.y), generator=generator)
        n_batches = math.ceil(len(exp.y) / bs)
        for b, idx in enumerate(order.split(bs)):
            loss = F.cross_entropy(model(exp.x[idx]), exp.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            iterations += 1
            evaluate(len(exps) if b == n_batches - 1 else exp.index + 1)
    wall = time.perf_counter() - start
    return ArmResult(wall, iterations, len(accs), samples, accs[-1])


class AvalancheArm:
    """Avalanche's Naive strategy over an `nc_benchmark` of the stream's tensors."""

    def __init__(self, cfg: RunConfig, stream: Stream, all_tasks: bool, evaluator: str):
        from avalanche.benchmarks import nc_benchmark
        from torch.utils.data import TensorDataset

        exps = stream.experiences
        train = TensorDataset(torch.cat([e.x for e in exps]), torch.cat([e.y for e in exps]))
        test = TensorDataset(
            torch.cat([e.eval_x for e in exps]), torch.cat([e.eval_y for e in exps])
        )
        self.benchmark = nc_benchmark(
            train,
            test,
            n_experiences=len(exps),
            task_labels=False,
            fixed_class_order=[c for e in exps for c in e.classes],
        )
        self.cfg, self.stream = cfg, stream
        self.all_tasks, self.evaluator = all_tasks, evaluator

    def _evaluator(self):
        from avalanche.evaluation.metrics import accuracy_metrics
        from avalanche.training.plugins import EvaluationPlugin

        if self.evaluator == "default":  # default_evaluator(), with a logger made here so that
            # it writes to the redirected stdout (the module-level one holds the real stdout)
            from avalanche.evaluation.metrics import loss_metrics
            from avalanche.logging import InteractiveLogger

            metrics = dict(minibatch=False, epoch=True, experience=True, stream=True)
            return EvaluationPlugin(
                accuracy_metrics(**metrics), loss_metrics(**metrics), loggers=[InteractiveLogger()]
            )
        with warnings.catch_warnings():  # "No loggers specified": on purpose
            warnings.simplefilter("ignore", UserWarning)
            return EvaluationPlugin(accuracy_metrics(experience=True, stream=True), loggers=[])

    def __call__(self, folder: Path | None = None) -> ArmResult:
        """Train and evaluate a fresh model (`folder` is unused: nothing is written)."""
        from avalanche.core import SupervisedPlugin
        from avalanche.training import Naive

        class Count(SupervisedPlugin):
            """Counts evaluation passes and samples (a few calls per pass: negligible)."""

            def __init__(self) -> None:
                super().__init__()
                self.evals = self.samples = self.iterations = 0

            def before_eval(self, strategy, **kwargs) -> None:
                self.evals += 1

            def after_eval_exp(self, strategy, **kwargs) -> None:
                self.samples += len(strategy.experience.dataset)

            def after_training_exp(self, strategy, **kwargs) -> None:
                self.iterations += strategy.clock.train_exp_iterations

        cfg, bench, count = self.cfg, self.benchmark, Count()
        in_dim = math.prod(self.stream.input_shape)
        model = make_mlp(cfg.seed, in_dim, list(cfg.model.hidden), self.stream.n_classes)
        sink = io.StringIO()  # Avalanche's console output, kept off the terminal
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            evaluator = self._evaluator()
            strategy = Naive(
                model=model,
                optimizer=torch.optim.SGD(
                    model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum
                ),
                criterion=nn.CrossEntropyLoss(),
                train_mb_size=cfg.train.batch_size,
                train_epochs=cfg.train.epochs,
                eval_mb_size=cfg.train.batch_size,
                device="cpu",
                evaluator=evaluator,
                eval_every=1,
                peval_mode="iteration",
                plugins=[count],
            )
            start = time.perf_counter()
            for k, exp in enumerate(bench.train_stream):
                scored = bench.test_stream if self.all_tasks else bench.test_stream[: k + 1]
                strategy.train(exp, eval_streams=[scored])
        wall = time.perf_counter() - start
        last = evaluator.get_last_metrics()
        key = "Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp{:03d}"
        accs = [last.get(key.format(i), math.nan) for i in range(len(self.stream.experiences))]
        return ArmResult(wall, count.iterations, count.evals, count.samples, accs)


def run_end_to_end(parent: Path) -> float:
    """Wall time of `cl.run(...)`: data load, run folder, runner, checkpoint, plots."""
    import cl

    start = time.perf_counter()
    cl.run([*OVERRIDES, f"run.dir={parent}"], quiet=True)
    return time.perf_counter() - start


def profile_cl(cfg: RunConfig, stream: Stream, folder: Path, top: int = 25) -> str:
    """cProfile of one `run_stream` call: the `top` entries by cumulative and by own time."""
    prof = cProfile.Profile()
    result = run_cl(cfg, stream, folder, prof)
    out = io.StringIO()
    out.write(f"cProfile of run_stream ({result.wall_s:.3f} s under the profiler)\n")
    for key in ("cumulative", "tottime"):
        pstats.Stats(prof, stream=out).strip_dirs().sort_stats(key).print_stats(top)
    return out.getvalue()


class CpuShares:
    """CPU time shares between two /proc/stat samples (Linux; empty elsewhere).

    `busy`: share of all CPUs running anything; `steal`: share taken by the hypervisor from
    this virtual machine, a sign of noisy neighbours that slows every arm unpredictably.
    """

    def __init__(self) -> None:
        self.start = self._ticks()

    @staticmethod
    def _ticks() -> list[int] | None:
        try:
            with open("/proc/stat") as f:
                return [int(v) for v in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None

    def shares(self) -> dict[str, float]:
        end = self._ticks()
        if self.start is None or end is None or len(end) < 8:
            return {}
        d = [e - s for s, e in zip(self.start, end, strict=True)]
        total = max(sum(d), 1)
        return {"busy": (total - d[3] - d[4]) / total, "steal": d[7] / total}


def _median(runs: list[ArmResult]) -> float:
    return statistics.median(r.wall_s for r in runs)


def _best(runs: list[ArmResult]) -> float:
    return min(r.wall_s for r in runs)


def report(results: dict[str, list[ArmResult]], e2e: list[float]) -> str:
    """The table (medians, best-of, workload counts) and the ratios against the targets."""
    bare, bare_best = _median(results["bare"]), _best(results["bare"])
    lines = [
        f"{'arm':<16}{'median s':>9}{'vs bare':>9}{'best s':>8}{'vs bare':>9}{'iters':>7}"
        f"{'evals':>7}{'eval samples':>14}{'final acc':>11}  all runs (s)"
    ]
    for arm, runs in results.items():
        r = runs[0]
        acc = statistics.fmean(a for a in r.final_accs if not math.isnan(a))
        walls = " ".join(f"{x.wall_s:.3f}" for x in runs)
        lines.append(
            f"{arm:<16}{_median(runs):>9.3f}{_median(runs) / bare:>8.2f}x"
            f"{_best(runs):>8.3f}{_best(runs) / bare_best:>8.2f}x{r.iterations:>7}{r.evals:>7}"
            f"{r.eval_samples:>14}{acc:>11.4f}  {walls}"
        )
    cl_runs = results["cl"]
    cl_s = _median(cl_runs)
    ratio = cl_s / bare
    paired = statistics.median(
        c.wall_s / b.wall_s for c, b in zip(cl_runs, results["bare"], strict=True)
    )
    met = "met" if ratio <= CL_TARGET else "MISSED"
    lines += [
        "",
        f"cl runner loop / bare loop: {ratio:.3f}x (median), {_best(cl_runs) / bare_best:.3f}x "
        f"(best-of), {paired:.3f}x (median of per-round ratios); target <= {CL_TARGET}x: {met}",
    ]
    for arm, what in (
        ("avalanche-stock", "stock Avalanche (eval_streams=[test_stream])"),
        ("avalanche-seen", "Avalanche evaluating only the seen tasks (same workload)"),
    ):
        if arm in results:
            speedup = _median(results[arm]) / cl_s
            if arm == "avalanche-stock":  # the target is set against stock Avalanche
                met = "met" if speedup >= AVALANCHE_TARGET else "MISSED"
                verdict = f"target >= {AVALANCHE_TARGET:g}x: {met}"
            else:
                verdict = "for reference (no target)"
            lines.append(f"cl is {speedup:.1f}x faster than {what}; {verdict}")
    if e2e:
        lines.append(
            f"cl.run(...) end to end (data, run folder, checkpoint, plots): median "
            f"{statistics.median(e2e):.3f} s; runs: " + " ".join(f"{x:.3f}" for x in e2e)
        )
    diff = max(
        abs(a - b)
        for a, b in zip(cl_runs[0].final_accs, results["bare"][0].final_accs, strict=True)
    )
    lines.append(f"final per-task accuracy, max |cl - bare| = {diff:.1e} (the same training)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument(
        "--avalanche-evaluator",
        choices=("quiet", "default"),
        default="default",
        help="quiet: EvaluationPlugin(accuracy_metrics(experience=True, stream=True), "
        "loggers=[]); default: Avalanche's default_evaluator (prints progress)",
    )
    parser.add_argument(
        "--no-avalanche-seen", action="store_true", help="skip the seen-tasks Avalanche arm"
    )
    parser.add_argument("--no-e2e", action="store_true", help="skip the cl.run(...) timing")
    parser.add_argument("--profile", action="store_true", help="cProfile one run_stream call")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    cfg, _ = config_mod.load(OVERRIDES)
    b = cfg.benchmark
    data = load_source(b.source, cfg.data.root, cfg.data.download, b.test_fraction, b.split_seed)
    stream = build_stream(b, data, cfg.seed, cfg.eval.subset)
    short = truncated(stream, 1)
    evaluator = args.avalanche_evaluator
    arms: dict[str, Arm] = {
        "cl": lambda folder: run_cl(cfg, stream, folder),
        "bare": lambda folder: run_bare(cfg, stream),
        "avalanche-stock": AvalancheArm(cfg, stream, all_tasks=True, evaluator=evaluator),
    }
    if not args.no_avalanche_seen:
        arms["avalanche-seen"] = AvalancheArm(cfg, stream, all_tasks=False, evaluator=evaluator)
    warmups: list[Arm] = [
        lambda folder: run_cl(cfg, short, folder),
        lambda folder: run_bare(cfg, short),
        AvalancheArm(cfg, short, all_tasks=True, evaluator=evaluator),
    ]

    print(
        f"workload: {b.name} on {b.source}, {stream.n_tasks} tasks, train sizes "
        f"{[len(e.y) for e in stream.experiences]}, eval sizes "
        f"{[len(e.eval_y) for e in stream.experiences]}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
        f"Avalanche evaluator: {evaluator}"
    )
    idle = CpuShares()
    time.sleep(1.0)
    before = idle.shares()
    if before:
        print(
            f"CPUs before the start (1 s): {before['busy']:.0%} busy, {before['steal']:.0%} stolen"
        )
        if before["busy"] > 0.1 or before["steal"] > 0.02:
            print("note: other work competes for the CPUs; the timings will be noisy")
    results: dict[str, list[ArmResult]] = {a: [] for a in arms}
    e2e: list[float] = []
    pair, others = ["cl", "bare"], [a for a in arms if a not in ("cl", "bare")]
    with tempfile.TemporaryDirectory(prefix="cl-bench-") as tmp:
        root = Path(tmp)
        for i, warmup in enumerate(warmups):
            warmup(root / f"warmup-{i}")
        if not args.no_e2e:
            run_end_to_end(root / "e2e-warmup")
        during = CpuShares()
        for rnd in range(args.repeats):
            flip = -1 if rnd % 2 else 1  # cl and bare back to back, each first in turn
            for arm in pair[::flip] + others[::flip]:
                gc.collect()
                results[arm].append(arms[arm](root / f"{arm}-{rnd}"))
            if not args.no_e2e:
                gc.collect()
                e2e.append(run_end_to_end(root / f"e2e-{rnd}"))
            times = "  ".join(f"{a} {r[-1].wall_s:.3f}s" for a, r in results.items())
            print(f"round {rnd + 1}/{args.repeats}: {times}", flush=True)
        cpu = during.shares()
        profile = profile_cl(cfg, stream, root / "profile") if args.profile else None

    table = report(results, e2e)
    if cpu:
        table += (
            f"\nCPUs during the timed rounds: {cpu['busy']:.0%} busy, {cpu['steal']:.1%} stolen "
            f"by the hypervisor (this process alone keeps up to {torch.get_num_threads()} busy)"
        )
    print(f"\n{table}")
    if profile:
        print(f"\n{profile}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "overrides": OVERRIDES,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "avalanche_evaluator": evaluator,
        "cpu_before": before,
        "cpu_during": cpu,
        "median_s": {a: _median(r) for a, r in results.items()},
        "runs": {a: [asdict(x) for x in r] for a, r in results.items()},
        "end_to_end_s": e2e,
        "table": table,
    }
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
