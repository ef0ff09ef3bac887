"""Continual-evaluation overhead: the cl runner vs a bare PyTorch loop vs stock Avalanche.

All arms run the same workload: Split-MNIST on the embedded mnist5k digits (5 tasks of 2
classes, class-incremental, class order 0..9), an MLP 784-400-400-10 (ReLU), SGD (lr 0.01,
momentum 0), batch 32, one epoch per task, and an evaluation of the seen tasks on their fixed
evaluation subsets (200 test digits per task here) after every training iteration.

Arms (each timed on the training + evaluation loop only; data and model are built first):

* ``cl``        - ``cl.runner.run_stream`` with a ``cl.store.LocalStore`` sink in a temp folder,
                  assembled from cl's own pieces as ``cl.api.execute`` does.
* ``bare``      - a plain PyTorch loop on the same tensors, the same initial weights and the same
                  shuffling generator; after every iteration one ``inference_mode`` forward over
                  the seen tasks' evaluation tensors, per-task accuracy by segment sums. Like cl,
                  it also evaluates all tasks before training and at each experience's end.
* ``avalanche`` - ``avalanche.training.Naive`` over ``nc_benchmark`` built from the same
                  tensors, ``eval_every=1, peval_mode="iteration"``, evaluating the seen tasks'
                  test experiences (``test_stream[:k+1]``), i.e. the same evaluation workload.
* ``avalanche-stock`` - the same, but with ``eval_streams=[test_stream]`` (all five tasks every
                  time), the way Avalanche's docs set up periodic evaluation.

After a warm-up (every arm once on the first experience, plus one end-to-end run) the arms run
interleaved ``--repeats`` times; the table reports medians. ``cl.run(...)`` end to end (data
loading, run folder, checkpoint, plots) is timed too, as context. ``--profile`` adds a cProfile
of one ``run_stream`` call.

Run: ``.venv/bin/python bench/continual_eval.py [--repeats N] [--profile]`` or ``make bench``.
"""

from __future__ import annotations

import argparse
import cProfile
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

import strategies as strategy_mod
from cl import config as config_mod
from cl.config import RunConfig
from cl.context import Context
from cl.data import load_source
from cl.environment import seed_everything
from cl.models import build_model
from cl.runner import make_optimizer, run_stream
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
]
ARMS = ("cl", "bare", "avalanche", "avalanche-stock")
DEFAULT_OUT = Path(__file__).resolve().parent / "out" / "continual_eval.json"


@dataclass
class ArmResult:
    """One timed run of an arm: wall time of its loop and what the loop did."""

    wall_s: float
    iterations: int
    evals: int  # evaluation passes (each over one or more tasks)
    eval_samples: int  # evaluation forwards, in samples, summed over all passes
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
    """A plain MLP; seeded like cl's run, it gets the weights of cl's `MLP` (same init order)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Flatten()]
    for h in hidden:
        layers += [nn.Linear(in_dim, h), nn.ReLU()]
        in_dim = h
    return nn.Sequential(*layers, nn.Linear(in_dim, n_classes))


# --------------------------------------------------------------------------------------- cl


def run_cl(
    cfg: RunConfig, stream: Stream, folder: Path, profile: cProfile.Profile | None = None
) -> ArmResult:
    """cl's runner loop with its local metrics store, set up as `cl.api.execute` does."""
    device = torch.device("cpu")
    generator = seed_everything(cfg.seed)
    model = build_model(cfg.model, stream.input_shape, stream.n_classes).to(device)
    strategies = strategy_mod.build(cfg.strategy)
    ctx = Context(
        model=model,
        optimizer=make_optimizer(cfg, model),
        stream=stream,
        device=device,
        generator=generator,
        class_mask=stream.class_mask(device) if stream.task_incremental else None,
    )
    folder.mkdir(parents=True, exist_ok=True)
    store = LocalStore(folder)
    try:
        if profile is not None:
            profile.enable()
        start = time.perf_counter()
        record = run_stream(cfg, ctx, strategies, store.log)
        wall = time.perf_counter() - start
        if profile is not None:
            profile.disable()
    finally:
        store.close()
    sizes = [len(e.eval_y) for e in stream.experiences]
    samples = sum(
        s for row in record.accs for s, a in zip(sizes, row, strict=True) if not math.isnan(a)
    )
    return ArmResult(wall, record.iterations, len(record.accs), samples, record.accs[-1])


# ------------------------------------------------------------------------------------- bare


def run_bare(cfg: RunConfig, stream: Stream) -> ArmResult:
    """The same training and evaluation forwards in a plain PyTorch loop."""
    exps = stream.experiences
    model = make_mlp(
        cfg.seed, math.prod(stream.input_shape), list(cfg.model.hidden), stream.n_classes
    )
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum)
    generator = torch.Generator().manual_seed(cfg.seed)  # the order cl's runner draws
    bs = cfg.train.batch_size
    eval_x = torch.cat([e.eval_x for e in exps])
    eval_y = torch.cat([e.eval_y for e in exps])
    eval_task = torch.cat([torch.full((len(e.eval_y),), e.index) for e in exps])
    sizes = torch.tensor([len(e.eval_y) for e in exps], dtype=torch.float32)
    ends = sizes.long().cumsum(0).tolist()
    accs: list[list[float]] = []
    samples = 0

    def evaluate(n: int) -> None:
        nonlocal samples
        end = ends[n - 1]
        model.eval()
        with torch.inference_mode():
            hit = (model(eval_x[:end]).argmax(1) == eval_y[:end]).float()
            correct = torch.zeros(n).index_add_(0, eval_task[:end], hit)
            accs.append((correct / sizes[:n]).tolist())
        model.train()
        samples += end

    iterations = 0
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


# -------------------------------------------------------------------------------- avalanche


class AvalancheArm:
    """Stock Avalanche Naive over an `nc_benchmark` of the stream's tensors."""

    def __init__(self, cfg: RunConfig, stream: Stream, all_tasks: bool, evaluator: str):
        from avalanche.benchmarks import nc_benchmark
        from torch.utils.data import TensorDataset

        exps = stream.experiences
        train = TensorDataset(torch.cat([e.x for e in exps]), torch.cat([e.y for e in exps]))
        test = TensorDataset(
            torch.cat([e.eval_x for e in exps]), torch.cat([e.eval_y for e in exps])
        )
        classes = [c for e in exps for c in e.classes]
        self.benchmark = nc_benchmark(
            train, test, n_experiences=len(exps), task_labels=False, fixed_class_order=classes
        )
        self.cfg, self.stream = cfg, stream
        self.all_tasks, self.evaluator = all_tasks, evaluator

    def __call__(self, folder: Path | None = None) -> ArmResult:
        """Train and evaluate a fresh model (`folder` is unused: nothing is written)."""
        from avalanche.core import SupervisedPlugin
        from avalanche.evaluation.metrics import accuracy_metrics
        from avalanche.training import Naive
        from avalanche.training.plugins import EvaluationPlugin
        from avalanche.training.plugins.evaluation import default_evaluator

        class Count(SupervisedPlugin):
            """Counts evaluation passes and evaluated samples (a few calls per pass)."""

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
        model = make_mlp(
            cfg.seed,
            math.prod(self.stream.input_shape),
            list(cfg.model.hidden),
            self.stream.n_classes,
        )
        if self.evaluator == "default":
            evaluator = default_evaluator()
        else:
            with warnings.catch_warnings():  # "No loggers specified": on purpose
                warnings.simplefilter("ignore", UserWarning)
                evaluator = EvaluationPlugin(
                    accuracy_metrics(experience=True, stream=True), loggers=[]
                )
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
            seen = bench.test_stream if self.all_tasks else bench.test_stream[: k + 1]
            strategy.train(exp, eval_streams=[seen])
        wall = time.perf_counter() - start
        last = evaluator.get_last_metrics()
        accs = [
            last.get(f"Top1_Acc_Exp/eval_phase/test_stream/Task000/Exp{i:03d}", math.nan)
            for i in range(len(self.stream.experiences))
        ]
        return ArmResult(wall, count.iterations, count.evals, count.samples, accs)


# ------------------------------------------------------------------------------- end to end


def run_end_to_end(parent: Path) -> float:
    """Wall time of `cl.run(...)` (data load, run folder, runner, checkpoint, plots)."""
    import cl

    start = time.perf_counter()
    cl.run([*OVERRIDES, f"run.dir={parent}"], quiet=True)
    return time.perf_counter() - start


# ------------------------------------------------------------------------------------- main


def profile_cl(cfg: RunConfig, stream: Stream, folder: Path, top: int = 25) -> str:
    """cProfile of one `run_stream` call; the `top` entries by cumulative and own time."""
    prof = cProfile.Profile()
    result = run_cl(cfg, stream, folder, prof)
    out = io.StringIO()
    out.write(f"cProfile of run_stream (wall under the profiler {result.wall_s:.3f} s)\n")
    for key in ("cumulative", "tottime"):
        pstats.Stats(prof, stream=out).strip_dirs().sort_stats(key).print_stats(top)
    return out.getvalue()


def median(results: list[ArmResult]) -> float:
    return statistics.median(r.wall_s for r in results)


def report(results: dict[str, list[ArmResult]], e2e: list[float]) -> str:
    """The table of medians and the ratios."""
    bare = median(results["bare"])
    lines = [
        f"{'arm':<16}{'median s':>10}{'vs bare':>9}{'iters':>7}{'evals':>7}"
        f"{'eval samples':>14}{'final avg acc':>15}  runs (s)"
    ]
    for arm, runs in results.items():
        r = runs[0]
        acc = statistics.fmean(a for a in r.final_accs if not math.isnan(a))
        walls = " ".join(f"{x.wall_s:.3f}" for x in runs)
        lines.append(
            f"{arm:<16}{median(runs):>10.3f}{median(runs) / bare:>8.2f}x{r.iterations:>7}"
            f"{r.evals:>7}{r.eval_samples:>14}{acc:>15.4f}  {walls}"
        )
    cl_s = median(results["cl"])
    lines.append("")
    lines.append(f"cl runner loop / bare loop: {cl_s / bare:.3f}x   (target <= 1.15x)")
    for arm in ("avalanche", "avalanche-stock"):
        if arm in results:
            lines.append(
                f"cl is {median(results[arm]) / cl_s:.1f}x faster than {arm} (target >= 10x)"
            )
    if e2e:
        lines.append(
            f"cl.run(...) end to end (data, folder, checkpoint, plots): median "
            f"{statistics.median(e2e):.3f} s  runs: " + " ".join(f"{x:.3f}" for x in e2e)
        )
    cl_acc, bare_acc = results["cl"][0].final_accs, results["bare"][0].final_accs
    diff = max(abs(a - b) for a, b in zip(cl_acc, bare_acc, strict=True))
    lines.append(f"final per-task accuracy, max |cl - bare|: {diff:.2e} (same weights, same order)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed repeats")
    parser.add_argument(
        "--avalanche-evaluator",
        choices=("quiet", "default"),
        default="quiet",
        help="quiet: EvaluationPlugin(accuracy_metrics(experience, stream), "
        "loggers=[]); default: Avalanche's default_evaluator (prints)",
    )
    parser.add_argument(
        "--no-avalanche-stock",
        action="store_true",
        help="skip the arm that evaluates the whole test stream every time",
    )
    parser.add_argument("--no-e2e", action="store_true", help="skip the cl.run(...) timing")
    parser.add_argument("--profile", action="store_true", help="cProfile one run_stream call")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    args = parser.parse_args(argv)

    cfg, _ = config_mod.load(OVERRIDES)
    b = cfg.benchmark
    data = load_source(b.source, cfg.data.root, cfg.data.download, b.test_fraction, b.split_seed)
    stream = build_stream(b, data, cfg.seed, cfg.eval.subset)
    short = truncated(stream, 1)
    evaluator = args.avalanche_evaluator
    arms: dict[str, Callable[[Path], ArmResult]] = {
        "cl": lambda folder: run_cl(cfg, stream, folder),
        "bare": lambda folder: run_bare(cfg, stream),
        "avalanche": AvalancheArm(cfg, stream, all_tasks=False, evaluator=evaluator),
    }
    if not args.no_avalanche_stock:
        arms["avalanche-stock"] = AvalancheArm(cfg, stream, all_tasks=True, evaluator=evaluator)
    warmups: list[Callable[[Path], ArmResult]] = [
        lambda folder: run_cl(cfg, short, folder),
        lambda folder: run_bare(cfg, short),
        AvalancheArm(cfg, short, all_tasks=False, evaluator=evaluator),
    ]

    print(
        f"workload: {b.name} on {b.source}, {stream.n_tasks} tasks, train sizes "
        f"{[len(e.y) for e in stream.experiences]}, eval sizes "
        f"{[len(e.eval_y) for e in stream.experiences]}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs; "
        f"avalanche evaluator: {evaluator}"
    )
    load_before = os.getloadavg()[0]
    if load_before > 0.5:
        print(
            f"warning: load average {load_before:.2f} before the run; other processes compete "
            "for the CPUs and the timings (most of all Avalanche's) will be noisy"
        )
    results: dict[str, list[ArmResult]] = {a: [] for a in arms}
    e2e: list[float] = []
    with tempfile.TemporaryDirectory(prefix="cl-bench-") as tmp:
        root = Path(tmp)
        for i, warmup in enumerate(warmups):
            warmup(root / f"warmup-{i}")
        if not args.no_e2e:
            run_end_to_end(root / "e2e-warmup")
        for rep in range(args.repeats):
            for arm, fn in arms.items():
                results[arm].append(fn(root / f"{arm}-{rep}"))
            if not args.no_e2e:
                e2e.append(run_end_to_end(root / f"e2e-{rep}"))
            print(
                f"repeat {rep + 1}/{args.repeats}: "
                + "  ".join(f"{a} {r[-1].wall_s:.3f}s" for a, r in results.items()),
                flush=True,
            )
        profile = profile_cl(cfg, stream, root / "profile") if args.profile else None
    load_after = os.getloadavg()[0]

    print()
    table = report(results, e2e)
    print(table)
    print(f"load average (1 min): {load_before:.2f} before, {load_after:.2f} after")
    if profile:
        print()
        print(profile)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "overrides": OVERRIDES,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "avalanche_evaluator": evaluator,
                "load_average": [load_before, load_after],
                "median_s": {a: median(r) for a, r in results.items()},
                "runs": {a: [asdict(x) for x in r] for a, r in results.items()},
                "end_to_end_s": e2e,
                "table": table,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
