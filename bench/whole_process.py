"""Whole-process cost on the CPU: `cl run` as a user starts it vs a bare script doing the same
forwards, and cl's fixed costs.

Workload: permuted MNIST (mnist5k digits: 4,000 training samples per task), 5 tasks, batch 10
(2,000 iterations), MLP 784-400-400-10, SGD (cl's defaults), an evaluation after every
iteration on 500 samples of each seen task, W&B disabled, no plasticity probe.

* ``cl``: ``python -m cl run ...`` in a fresh process (through this file's ``--child`` mode,
  which times cl's parts: process start to the first training iteration, the run loop,
  example forgetting's rows, checkpoints, the outputs and the report).
* ``bare``: a fresh process that imports torch, loads the same digits (``cl.data``), permutes
  them, trains the same MLP and evaluates the seen tasks after every iteration (per-task
  accuracy copied to the host), and exits.

Both arms run on ``--threads`` torch threads (default 1: `run.threads` for cl,
``torch.set_num_threads`` for the script; on a busy machine a second thread costs more than it
gives, see bench/busy_machine.py). Arms alternate, ``--repeats`` times each; medians.
Targets: start to first iteration <= 2.5 s,
report build <= 1 s, example forgetting and checkpoints <= 2% of the run each.

Run: ``PYTHONPATH=. .venv/bin/python bench/whole_process.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OVERRIDES = [
    "benchmark=permuted_mnist",
    "benchmark.n_tasks=5",
    "train.batch_size=10",
    "train.epochs=1",
    "eval.every=1",
    "eval.subset=500",
    "strategy=naive",
    "plasticity.every=0",
    "wandb.mode=disabled",
    "run.progress=false",
    "run.device=cpu",
]


def child(out: str, args: list[str]) -> int:
    """`cl run args` with timers around cl's parts; writes them to `out` (JSON)."""
    began = time.time()
    import cl.checkpoint
    import cl.plugins
    import cl.runner
    import cl.trackers.example_forgetting as ef
    from cl.cli import main

    timers = {"example_forgetting_s": 0.0, "checkpoint_s": 0.0, "report_s": 0.0}
    marks: dict[str, float] = {"imported": time.time()}

    def timed(key, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                timers[key] += time.perf_counter() - t

        return wrapper

    step, stream = cl.runner.train_step, cl.runner.run_stream

    def first_step(*a, **k):
        marks.setdefault("first_iteration", time.time())
        return step(*a, **k)

    def run_stream(*a, **k):
        t = time.perf_counter()
        try:
            return stream(*a, **k)
        finally:
            timers["loop_s"] = time.perf_counter() - t

    cl.runner.train_step, cl.runner.run_stream = first_step, run_stream
    ef.ExampleForgetting.row = timed("example_forgetting_s", ef.ExampleForgetting.row)
    cl.checkpoint.save = timed("checkpoint_s", cl.checkpoint.save)
    cl.checkpoint.state_dict = timed("checkpoint_s", cl.checkpoint.state_dict)
    finishers = cl.plugins.finishers
    cl.plugins.finishers = lambda: {
        n: timed("report_s", f) if "report" in n else f for n, f in finishers().items()
    }
    code = main(["run", "-q", *args])
    marks["end"] = time.time()
    Path(out).write_text(json.dumps({"code": code, "began": began, **marks, **timers}))
    return code


def bare(out: str, threads: str) -> int:
    """The same training and evaluation forwards in a plain script."""
    import torch

    torch.set_num_threads(int(threads))
    from torch import nn
    from torch.nn import functional as F

    from cl.data import load_source

    data = load_source("mnist5k", "data", False, 0.2, 0)
    g = torch.Generator().manual_seed(0)
    x, y = data.x_train.flatten(1).float(), data.y_train
    tx, ty = data.x_test.flatten(1).float()[:500], data.y_test[:500]
    perms = [torch.arange(784) if t == 0 else torch.randperm(784, generator=g) for t in range(5)]
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(784, 400), nn.ReLU(), nn.Linear(400, 400), nn.ReLU(), nn.Linear(400, 10)
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    ex = torch.cat([tx[:, p] for p in perms])
    ey, et = ty.repeat(5), torch.arange(5).repeat_interleave(len(ty))
    accs = []
    for t, p in enumerate(perms):
        xt = x[:, p]
        for idx in torch.randperm(len(y), generator=g).split(10):
            loss = F.cross_entropy(model(xt[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            end = (t + 1) * len(ty)
            with torch.inference_mode():
                hit = (model(ex[:end]).argmax(1) == ey[:end]).float()
                accs.append((torch.zeros(t + 1).index_add_(0, et[:end], hit) / len(ty)).tolist())
    Path(out).write_text(json.dumps({"code": 0, "iterations": len(accs), "acc": accs[-1]}))
    return 0


def spawn(mode: list[str], out: Path) -> tuple[float, dict]:
    start = time.time()
    subprocess.run([sys.executable, __file__, *mode, str(out)], check=True)
    wall = time.time() - start
    info = json.loads(out.read_text())
    return wall, info | {"started": start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("extra", nargs="*", help="more cl overrides for the cl arm")
    args = parser.parse_args()
    walls: dict[str, list[float]] = {"cl": [], "bare": []}
    parts: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="cl-whole-") as tmp:
        for rnd in range(args.repeats):
            for arm in ("cl", "bare")[:: -1 if rnd % 2 else 1]:
                out = Path(tmp) / f"{arm}-{rnd}.json"
                if arm == "cl":
                    ov = [*OVERRIDES, f"run.threads={args.threads}", *args.extra]
                    ov += [f"run.dir={tmp}", f"run.name=r{rnd}"]
                    wall, info = spawn(["--child", *[f"--ov={o}" for o in ov]], out)
                    parts.append(info)
                else:
                    wall, info = spawn(["--bare", f"--ov={args.threads}"], out)
                walls[arm].append(wall)
            print(f"round {rnd + 1}: cl {walls['cl'][-1]:.2f} s, bare {walls['bare'][-1]:.2f} s")
    med = {a: statistics.median(w) for a, w in walls.items()}
    m = lambda key: statistics.median(p[key] for p in parts)  # noqa: E731
    start_first = statistics.median(p["first_iteration"] - p["started"] for p in parts)
    imports = statistics.median(p["imported"] - p["started"] for p in parts)
    loop = m("loop_s")
    print(
        f"\nwhole process, median of {args.repeats}: cl {med['cl']:.2f} s, "
        f"bare {med['bare']:.2f} s,"
        f" cl / bare {med['cl'] / med['bare']:.2f}x (per round: "
        + ", ".join(f"{c / b:.2f}" for c, b in zip(walls["cl"], walls["bare"], strict=True))
        + ")"
    )
    print(f"process start to imports done: {imports:.2f} s")
    print(f"process start to first training iteration: {start_first:.2f} s (target <= 2.5 s)")
    print(f"run loop (run_stream): {loop:.2f} s")
    print(f"report build: {m('report_s'):.2f} s (target <= 1 s)")
    for key, what in (
        ("example_forgetting_s", "example forgetting"),
        ("checkpoint_s", "checkpoints"),
    ):
        print(f"{what}: {m(key):.3f} s, {m(key) / loop:.1%} of the run loop (target <= 2%)")
    print(
        f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f} "
        "(timings are noisy when busy)"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("--child", "--bare"):
        ov = [a[5:] for a in sys.argv[2:-1] if a.startswith("--ov=")]
        fn = child if sys.argv[1] == "--child" else bare
        sys.exit(child(sys.argv[-1], ov) if fn is child else bare(sys.argv[-1], ov[0]))
    main()
