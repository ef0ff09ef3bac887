"""cl's evaluation inside Avalanche (`cl.avalanche.ContinualEvaluation`) vs Avalanche's own.

The workload of `bench/continual_eval.py`: Split-MNIST on the embedded mnist5k digits (5 tasks
of 2 classes, class order 0..9, 800 training and 200 test digits per task), an MLP
784-400-400-10 (ReLU), SGD (lr 0.01, momentum 0), batch 32, one epoch per task (125
iterations), an `nc_benchmark` over the same tensors. For Avalanche's `Naive` and `Replay`
(mem_size 200), three arms:

* (a) ``stock``: Avalanche's own evaluation after every iteration (`eval_every=1,
  peval_mode="iteration"`, `eval_streams=[test_stream]`, its default evaluator with an
  interactive logger writing to a string buffer), as `continual_eval.py` measures it.
* (b) ``cl-plugin``: `eval_every=-1`, no Avalanche metrics (`evaluator=None`), plus
  `ContinualEvaluation(benchmark, every=1)`: cl's evaluator after every iteration (seen
  tasks; all tasks before training and at every experience end), cl's whole metric suite
  (online accuracy, stability-gap rows, plasticity probe every 50 iterations), rows written
  to the run folder's metrics.jsonl; at the end summary.json and plots (W&B disabled,
  report.html off). Building the plugin (materialising the test tensors) is timed apart.
* (c) ``train-only``: `eval_every=-1`, `evaluator=None`: Avalanche training alone.

Method: one warm-up of every arm on the first experience, then `--repeats` rounds; each round
runs every arm once after `gc.collect()`, the order reversed every other round. Reported:
median wall time per arm, and the medians of the per-round ratios b/c (goal <= 1.5) and a/b
(goal >= 5). (b) and (c) train the identical model (same init, same shuffling); the script
checks their final accuracies agree.

Run: ``PYTHONPATH=. .venv/bin/python bench/avalanche_bridge.py [--repeats N]``.
Results also go to ``bench/out/avalanche_bridge.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import math
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from continual_eval import OVERRIDES, CpuShares, make_mlp, truncated  # noqa: E402

from cl import config as config_mod  # noqa: E402
from cl.data import load_source  # noqa: E402
from cl.streams import Stream, build_stream  # noqa: E402

B_OVER_C = 1.5  # cl plugin / train-only, at most
A_OVER_B = 5.0  # stock Avalanche / cl plugin, at least
ARMS = ("stock", "cl-plugin", "train-only")
STRATEGIES = ("Naive", "Replay")
DEFAULT_OUT = Path(__file__).resolve().parent / "out" / "avalanche_bridge.json"


def make_benchmark(stream: Stream):
    from avalanche.benchmarks import nc_benchmark
    from torch.utils.data import TensorDataset

    exps = stream.experiences
    train = TensorDataset(torch.cat([e.x for e in exps]), torch.cat([e.y for e in exps]))
    test = TensorDataset(torch.cat([e.eval_x for e in exps]), torch.cat([e.eval_y for e in exps]))
    return nc_benchmark(
        train,
        test,
        n_experiences=len(exps),
        task_labels=False,
        fixed_class_order=[c for e in exps for c in e.classes],
    )


def final_accs(model: nn.Module, bench) -> list[float]:
    """Accuracy on each test experience (not timed)."""
    from cl.avalanche.benchmarks import materialise

    model.eval()
    out = []
    with torch.inference_mode():
        for exp in bench.test_stream:
            x, y = materialise(exp.dataset)
            out.append(float((model(x).argmax(1) == y).float().mean()))
    model.train()
    return out


def run_arm(arm: str, name: str, cfg, stream: Stream, bench, folder: Path) -> dict:
    """Train one fresh model with strategy `name` under `arm`; returns times and accuracies."""
    from avalanche.evaluation.metrics import accuracy_metrics, loss_metrics
    from avalanche.logging import InteractiveLogger
    from avalanche.training import Naive, Replay
    from avalanche.training.plugins import EvaluationPlugin

    from cl.avalanche import ContinualEvaluation

    model = make_mlp(cfg.seed, math.prod(stream.input_shape), [400, 400], stream.n_classes)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum)
    plugins, setup_s, plugin = [], 0.0, None
    kwargs: dict = dict(eval_every=-1, evaluator=None)
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        with warnings.catch_warnings():  # "No loggers specified": on purpose
            warnings.simplefilter("ignore", UserWarning)
            if arm == "stock":
                metrics = dict(minibatch=False, epoch=True, experience=True, stream=True)
                evaluator = EvaluationPlugin(
                    accuracy_metrics(**metrics),
                    loss_metrics(**metrics),
                    loggers=[InteractiveLogger()],
                )
                kwargs = dict(eval_every=1, peval_mode="iteration", evaluator=evaluator)
            elif arm == "cl-plugin":
                start = time.perf_counter()
                plugin = ContinualEvaluation(
                    bench, every=1, run_dir=folder, wandb="disabled", report=False
                )
                setup_s = time.perf_counter() - start
                plugins.append(plugin)
                finish, finish_s = plugin.finish, []

                def timed_finish(*args, **kw):  # summary.json and plots, once at the end
                    begin = time.perf_counter()
                    try:
                        return finish(*args, **kw)
                    finally:
                        finish_s.append(time.perf_counter() - begin)

                plugin.finish = timed_finish
            extra = dict(mem_size=200) if name == "Replay" else {}
            strategy = (Replay if name == "Replay" else Naive)(
                model=model,
                optimizer=opt,
                criterion=nn.CrossEntropyLoss(),
                train_mb_size=cfg.train.batch_size,
                train_epochs=cfg.train.epochs,
                eval_mb_size=cfg.train.batch_size,
                device="cpu",
                plugins=plugins,
                **extra,
                **kwargs,
            )
            torch.manual_seed(cfg.seed)  # the same shuffling in every arm
            start = time.perf_counter()
            for exp in bench.train_stream:
                if arm == "stock":
                    strategy.train(exp, eval_streams=[bench.test_stream])
                else:
                    strategy.train(exp)
            wall = time.perf_counter() - start
    out = {"wall_s": wall, "setup_s": setup_s, "final_accs": final_accs(model, bench)}
    if plugin is not None:
        out["finish_s"] = sum(finish_s)
        out["eval_rows"] = len(plugin.monitor.record.accs)
        out["plugin_final_accs"] = plugin.monitor.record.accs[-1]
    return out


def eval_floor(cfg, stream: Stream) -> float:
    """Seconds of the evaluation forwards alone that (b) runs (the same model shape and
    tensors, no training): the seen tasks after every iteration, all tasks before training
    and at every experience end. A floor for any per-iteration evaluation of this workload."""
    exps = stream.experiences
    model = make_mlp(cfg.seed, math.prod(stream.input_shape), [400, 400], stream.n_classes)
    x, y = torch.cat([e.eval_x for e in exps]), torch.cat([e.eval_y for e in exps])
    ends = torch.tensor([len(e.eval_y) for e in exps]).cumsum(0).tolist()
    bs = cfg.train.batch_size
    schedule = [len(exps)]
    for k, e in enumerate(exps):
        schedule += [k + 1] * (math.ceil(len(e.y) / bs) - 1) + [len(exps)]
    model.eval()
    start = time.perf_counter()
    with torch.inference_mode():
        for n in schedule:
            (model(x[: ends[n - 1]]).argmax(1) == y[: ends[n - 1]]).sum().item()
    return time.perf_counter() - start


def paired(r: dict, a: str, b: str) -> float:
    """Median over rounds of arm a's time / arm b's time in the same round."""
    return statistics.median(x["wall_s"] / y["wall_s"] for x, y in zip(r[a], r[b], strict=True))


def report(results: dict) -> str:
    floor = statistics.median(results["floor"])
    lines = [
        f"{'strategy':<9}{'arm':<12}{'median s':>9}{'setup s':>9}  all runs (s)",
        f"{'-':<9}{'eval-floor':<12}{floor:>9.3f}{0:>9.3f}  "
        + " ".join(f"{w:.2f}" for w in results["floor"]),
    ]
    verdicts = []
    for name in STRATEGIES:
        r = results[name]
        for arm in ARMS:
            walls = [x["wall_s"] for x in r[arm]]
            setup = statistics.median(x["setup_s"] for x in r[arm])
            shown = " ".join(f"{w:.2f}" for w in walls)
            lines.append(
                f"{name:<9}{arm:<12}{statistics.median(walls):>9.3f}{setup:>9.3f}  {shown}"
            )
        b_c = paired(r, "cl-plugin", "train-only")
        a_b, a_c = paired(r, "stock", "cl-plugin"), paired(r, "stock", "train-only")
        finish = statistics.median(x["finish_s"] for x in r["cl-plugin"])
        loop_c = statistics.median(
            (x["wall_s"] - x["finish_s"]) / y["wall_s"]
            for x, y in zip(r["cl-plugin"], r["train-only"], strict=True)
        )
        over = statistics.median(
            (x["wall_s"] - x["finish_s"]) / (y["wall_s"] + f)
            for x, y, f in zip(r["cl-plugin"], r["train-only"], results["floor"], strict=True)
        )
        acc_b = r["cl-plugin"][0]["final_accs"]
        acc_c = r["train-only"][0]["final_accs"]
        diff = max(abs(x - y) for x, y in zip(acc_b, acc_c, strict=True))
        verdicts.append(
            f"{name}: (b) cl plugin / (c) train-only = {b_c:.2f}x (goal <= {B_OVER_C}: "
            f"{'met' if b_c <= B_OVER_C else 'MISSED'}); (a) stock / (b) cl plugin = {a_b:.1f}x "
            f"(goal >= {A_OVER_B:g}: {'met' if a_b >= A_OVER_B else 'MISSED'}); (a)/(c) = "
            f"{a_c:.1f}x; medians of per-round ratios; final acc max |b - c| = {diff:.1e}, "
            f"mean final acc {statistics.fmean(acc_b):.3f}; eval rows of (b): "
            f"{r['cl-plugin'][0]['eval_rows']}\n  without (b)'s end-of-run outputs (summary, "
            f"plots: {finish:.2f} s): (b)/(c) = {loop_c:.2f}x; (b) / ((c) + eval-floor) = "
            f"{over:.2f}x (the plugin's cost beyond the evaluation forwards themselves)"
        )
    return "\n".join([*lines, "", *verdicts])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    args = parser.parse_args(argv)
    cfg, _ = config_mod.load(OVERRIDES)
    b = cfg.benchmark
    data = load_source(b.source, cfg.data.root, cfg.data.download, b.test_fraction, b.split_seed)
    stream = build_stream(b, data, cfg.seed, cfg.eval.subset)
    bench, short = make_benchmark(stream), make_benchmark(truncated(stream, 1))
    print(
        f"workload: {b.source}, {stream.n_tasks} tasks, train sizes "
        f"{[len(e.y) for e in stream.experiences]}, eval sizes "
        f"{[len(e.eval_y) for e in stream.experiences]}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    results: dict = {n: {a: [] for a in ARMS} for n in STRATEGIES}
    results["floor"] = []
    order = [(n, a) for n in STRATEGIES for a in ARMS]
    with tempfile.TemporaryDirectory(prefix="cl-bench-") as tmp:
        root = Path(tmp)
        for n, a in order:  # warm-up
            run_arm(a, n, cfg, truncated(stream, 1), short, root / f"warm-{n}-{a}")
        during = CpuShares()
        for rnd in range(args.repeats):
            for n, a in order[:: -1 if rnd % 2 else 1]:
                gc.collect()
                res = run_arm(a, n, cfg, stream, bench, root / f"{n}-{a}-{rnd}")
                results[n][a].append(res)
            gc.collect()
            results["floor"].append(eval_floor(cfg, stream))
            times = "  ".join(
                f"{n}/{a} {results[n][a][-1]['wall_s']:.2f}s" for n in STRATEGIES for a in ARMS
            )
            print(f"round {rnd + 1}/{args.repeats}: {times}", flush=True)
        cpu = during.shares()
    table = report(results)
    if cpu:
        table += (
            f"\nCPUs during the timed rounds: {cpu['busy']:.0%} busy, {cpu['steal']:.1%} stolen "
            "(other processes share the machine when busy is well above this process's threads)"
        )
    print(f"\n{table}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"results": results, "table": table}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
