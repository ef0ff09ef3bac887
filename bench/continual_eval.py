"""Continual-evaluation overhead: the cl runner vs bare PyTorch loops vs stock Avalanche.

Every arm runs the same stream: Split-MNIST on the embedded mnist5k digits (5 tasks of 2
classes, class-incremental, class order 0..9), SGD (lr 0.01, momentum 0), and an evaluation
on the fixed evaluation subsets (200 test digits per task with mnist5k) after every training
iteration, on one of three workloads (``--workloads``, comma-separated; default all):

* ``mlp``: MLP 784-400-400-10 (ReLU), batch 32, one epoch per task (125 iterations);
* ``mlp-wide``: MLP 784-2000-2000-10, batch 256, 10 epochs per task (200 iterations);
* ``resnet18``: cl's reduced ResNet-18 (width 20), batch 64, one epoch per task.

``--quick`` shrinks them (one epoch, the first two tasks) for a smoke run. ``--device cuda``
runs every arm on the GPU (the arms synchronise before they stop their clocks).

Arms, each timed on its training + evaluation loop only (data and model are built first):

* ``cl``: ``cl.runner.run_stream`` writing to a ``cl.store.LocalStore`` in a temp folder,
  assembled from cl's own pieces as ``cl.api.build_state`` does. It evaluates the seen tasks
  after every iteration, and all tasks before training and at the end of each experience.
* ``bare``: a plain PyTorch loop with the same tensors (taken from the cl stream), the same
  initial weights and the same shuffling generator, so it trains the identical model. After
  every iteration: one ``inference_mode`` forward over the seen tasks' evaluation tensors, then
  per-task accuracy by segment sums, copied to the host (``.tolist()``) at each evaluation.
  The same evaluations as cl (initial + experience ends too).
* ``bare-device``: the same loop, keeping each evaluation's accuracies on the device and
  copying them to the host once at the end (what cl's `run.row_chunk` approaches on CUDA).
* ``train-only``: the same loop without any evaluation (the floor).
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

On a GPU machine (torch 2.11, Python 3.12, no package index): carry the wheels cl needs but
torch does not bring (omegaconf with antlr4-python3-runtime, mlxtend, mnist1d, quadprog),
``pip install --no-index --find-links wheels/ ...`` them, then from the repository root::

    PYTHONPATH=$PWD python bench/continual_eval.py --device cuda --repeats 5 --no-e2e

(Avalanche arms run only where it is installed; without it they are left out.)
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import importlib.util
import io
import itertools
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
    "run.progress=false",
    "seed=0",
    "plasticity.every=0",  # the probe is not part of this workload (bench/metrics_overhead.py)
]
CL_TARGET = 1.15  # cl loop / bare loop, at most
AVALANCHE_TARGET = 10.0  # Avalanche / cl loop, at least
DEFAULT_OUT = Path(__file__).resolve().parent / "out" / "continual_eval.json"
WORKLOADS = {  # name -> overrides on top of OVERRIDES
    "mlp": [],
    "mlp-wide": ["model.hidden=[2000,2000]", "train.batch_size=256", "train.epochs=10"],
    "resnet18": ["model=resnet18", "train.batch_size=64"],
}
QUICK = ["train.epochs=1", "benchmark.tasks=[0,1]"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    device = torch.device(cfg.run.device)
    generator = seed_everything(cfg.seed)
    model = build_model(cfg.model, stream.input_shape, stream.n_classes).to(device)
    ctx = make_context(cfg.optim, cfg.train, stream, model, device, generator)
    strategies = strategy_mod.build(cfg.strategy)
    folder.mkdir(parents=True, exist_ok=True)
    store = LocalStore(folder)
    try:
        if profile is not None:
            profile.enable()
        start = time.perf_counter()
        monitor = Monitor(ctx, cfg.eval, cfg.metrics, cfg.plasticity, cfg.seed, cfg.run.row_chunk)
        state = RunState(cfg.train, ctx, strategies, monitor)
        for s in strategies:
            s.setup(ctx)
        record = run_stream(state, store.log)
        sync(device)
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


def run_bare(cfg: RunConfig, stream: Stream, evals: str = "host") -> ArmResult:
    """The same training and evaluation forwards in a plain PyTorch loop. `evals`: "host"
    copies each evaluation's accuracies to the host, "device" keeps them on the device and
    copies them once at the end, "none" trains only."""
    exps, device = stream.experiences, torch.device(cfg.run.device)
    seed_everything(cfg.seed)  # cl's model, with cl's initial weights
    model = build_model(cfg.model, stream.input_shape, stream.n_classes).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum)
    generator = torch.Generator().manual_seed(cfg.seed)  # the shuffling cl's runner draws
    bs = cfg.train.batch_size
    eval_x = torch.cat([e.eval_x for e in exps])
    eval_y = torch.cat([e.eval_y for e in exps])
    eval_task = torch.cat([torch.full((len(e.eval_y),), e.index) for e in exps]).to(device)
    sizes = torch.tensor([len(e.eval_y) for e in exps], dtype=torch.float32)
    ends = sizes.long().cumsum(0).tolist()
    sizes = sizes.to(device)
    accs: list = []
    samples = iterations = 0

    def evaluate(n: int) -> None:  # accuracy on the first n tasks
        nonlocal samples
        if evals == "none":
            return
        end = ends[n - 1]
        model.eval()
        with torch.inference_mode():
            hit = (model(eval_x[:end]).argmax(1) == eval_y[:end]).float()
            correct = torch.zeros(n, device=device).index_add_(0, eval_task[:end], hit)
            acc = correct / sizes[:n]
            accs.append(acc.tolist() if evals == "host" else acc)
        model.train()
        samples += end

    start = time.perf_counter()
    evaluate(len(exps))
    for exp in exps:
        for epoch in range(cfg.train.epochs):
            order = torch.randperm(len(exp.y), generator=generator).to(device)
            n_batches = math.ceil(len(exp.y) / bs)
            for b, idx in enumerate(order.split(bs)):
                loss = F.cross_entropy(model(exp.x[idx]), exp.y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                iterations += 1
                last = epoch == cfg.train.epochs - 1 and b == n_batches - 1
                evaluate(len(exps) if last else exp.index + 1)
    if evals == "device":  # one copy at the end
        lengths = [len(a) for a in accs]
        flat = torch.cat(accs).tolist()
        accs = [
            flat[i - n : i] for i, n in zip(itertools.accumulate(lengths), lengths, strict=True)
        ]
    sync(device)
    wall = time.perf_counter() - start
    return ArmResult(wall, iterations, len(accs), samples, accs[-1] if accs else [])


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


def run_end_to_end(parent: Path, overrides: list[str]) -> float:
    """Wall time of `cl.run(...)`: data load, run folder, runner, checkpoint, plots."""
    import cl

    start = time.perf_counter()
    cl.run([*overrides, f"run.dir={parent}"], quiet=True)
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
        acc = statistics.fmean([a for a in r.final_accs if not math.isnan(a)] or [math.nan])
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
    for arm in ("bare-device", "train-only"):
        if arm in results:
            lines.append(
                f"cl / {arm}: {cl_s / _median(results[arm]):.3f}x (median); bare / {arm}: "
                f"{bare / _median(results[arm]):.3f}x"
            )
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
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help=f"of {', '.join(WORKLOADS)}"
    )
    parser.add_argument("--quick", action="store_true", help="one epoch, two tasks (smoke)")
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
    names = args.workloads.split(",")
    if unknown := [n for n in names if n not in WORKLOADS]:
        parser.error(f"unknown workloads {unknown}; valid: {', '.join(WORKLOADS)}")
    device = torch.device(args.device)
    avalanche = device.type == "cpu" and importlib.util.find_spec("avalanche") is not None
    print(
        f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs; Avalanche arms: {'yes' if avalanche else 'no'}"
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
    summary: dict = {"torch": torch.__version__, "device": str(device), "cpu_before": before}
    for name in names:
        extra = [*WORKLOADS[name], *(QUICK if args.quick else []), f"run.device={device}"]
        summary[name] = run_workload(name, extra, args, avalanche and "resnet" not in name)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"\nwrote {args.out}")


def run_workload(name: str, extra: list[str], args, avalanche: bool) -> dict:
    """Time every arm on one workload, interleaved; print and return the table."""
    overrides = [*OVERRIDES, *extra]
    cfg, _ = config_mod.load(overrides)
    b = cfg.benchmark
    data = load_source(b.source, cfg.data.root, cfg.data.download, b.test_fraction, b.split_seed)
    stream = build_stream(b, data, cfg.seed, cfg.eval.subset).to(cfg.run.device)
    short = truncated(stream, 1)
    evaluator = args.avalanche_evaluator
    arms: dict[str, Arm] = {
        "cl": lambda folder: run_cl(cfg, stream, folder),
        "bare": lambda folder: run_bare(cfg, stream, "host"),
        "bare-device": lambda folder: run_bare(cfg, stream, "device"),
        "train-only": lambda folder: run_bare(cfg, stream, "none"),
    }
    warmups: list[Arm] = [
        lambda folder: run_cl(cfg, short, folder),
        lambda folder: run_bare(cfg, short),
    ]
    if avalanche:
        arms["avalanche-stock"] = AvalancheArm(cfg, stream, all_tasks=True, evaluator=evaluator)
        if not args.no_avalanche_seen:
            arms["avalanche-seen"] = AvalancheArm(cfg, stream, all_tasks=False, evaluator=evaluator)
        warmups.append(AvalancheArm(cfg, short, all_tasks=True, evaluator=evaluator))
    print(
        f"\n== workload {name}: {cfg.model.name} {list(cfg.model.hidden)}, batch "
        f"{cfg.train.batch_size}, {cfg.train.epochs} epoch(s), {stream.n_tasks} tasks, train "
        f"sizes {[len(e.y) for e in stream.experiences]}, eval sizes "
        f"{[len(e.eval_y) for e in stream.experiences]}"
    )
    results: dict[str, list[ArmResult]] = {a: [] for a in arms}
    e2e: list[float] = []
    pair = ["cl", "bare", "bare-device", "train-only"]
    others = [a for a in arms if a not in pair]
    with tempfile.TemporaryDirectory(prefix="cl-bench-") as tmp:
        root = Path(tmp)
        for i, warmup in enumerate(warmups):
            warmup(root / f"warmup-{i}")
        e2e_on = not args.no_e2e and name == "mlp" and cfg.run.device == "cpu"
        if e2e_on:
            run_end_to_end(root / "e2e-warmup", overrides)
        during = CpuShares()
        for rnd in range(args.repeats):
            flip = -1 if rnd % 2 else 1  # the bare arms back to back, order alternating
            for arm in pair[::flip] + others[::flip]:
                gc.collect()
                results[arm].append(arms[arm](root / f"{arm}-{rnd}"))
            if e2e_on:
                gc.collect()
                e2e.append(run_end_to_end(root / f"e2e-{rnd}", overrides))
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
    return {
        "overrides": overrides,
        "threads": torch.get_num_threads(),
        "avalanche_evaluator": evaluator,
        "cpu_during": cpu,
        "median_s": {a: _median(r) for a, r in results.items()},
        "runs": {a: [asdict(x) for x in r] for a, r in results.items()},
        "end_to_end_s": e2e,
        "table": table,
    }


if __name__ == "__main__":
    main()
