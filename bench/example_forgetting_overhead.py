"""Cost of example forgetting (Toneva et al.) at eval.every=1 on bench/continual_eval.py's workload.

Times cl's runner loop (`continual_eval.run_cl`: Split-MNIST mnist5k, MLP 784-400-400-10, batch
32, evaluation after every iteration) with `metrics.example_forgetting.enabled` true and false,
interleaved over `--repeats` rounds (which arm goes first alternates). Prints each arm's median
wall and CPU (process) time and the medians of the per-round ratios on/off; on a shared machine
the CPU-time ratio is the steadier one (the loop runs on one thread: run with
OMP_NUM_THREADS=1). Also prints the time spent inside `ExampleForgetting.row` (its tracker in
cl/trackers/: the per-set updates and the row's keys) as a share of the loop: the direct cost,
free of noise.
`--train-probe N` also times the optional training-sample probe (N samples per task).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from continual_eval import OVERRIDES, run_cl  # noqa: E402

from cl import config as config_mod  # noqa: E402
from cl.data import load_source  # noqa: E402
from cl.streams import build_stream  # noqa: E402
from cl.trackers.example_forgetting import ExampleForgetting  # noqa: E402

GOAL = 1.03  # on / off, at most


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--train-probe", type=int, default=0)
    args = parser.parse_args()
    arms = {
        "off": ["metrics.example_forgetting.enabled=false"],
        "on": ["metrics.example_forgetting.enabled=true"],
    }
    if args.train_probe:
        arms["on+train"] = [f"metrics.example_forgetting.train_probe={args.train_probe}"]
    cfgs = {a: config_mod.load(OVERRIDES + o)[0] for a, o in arms.items()}
    b = cfgs["off"].benchmark
    data = load_source(b.source, "data", True, b.test_fraction, b.split_seed)
    stream = build_stream(b, data, 0, cfgs["off"].eval.subset)
    update, spent = ExampleForgetting.row, [0.0]

    def timed_update(self, *a, **k):  # the tracker's own share of the loop
        start = time.perf_counter()
        try:
            return update(self, *a, **k)
        finally:
            spent[0] += time.perf_counter() - start

    ExampleForgetting.row = timed_update
    wall: dict[str, list[float]] = {a: [] for a in arms}
    cpu: dict[str, list[float]] = {a: [] for a in arms}
    share = []
    with tempfile.TemporaryDirectory() as tmp:
        for a in arms:  # warm-up
            run_cl(cfgs[a], stream, Path(tmp) / f"warm-{a}")
        for r in range(args.repeats):
            order = list(arms) if r % 2 == 0 else list(arms)[::-1]
            for a in order:
                gc.collect()
                spent[0], c = 0.0, time.process_time()
                wall[a].append(run_cl(cfgs[a], stream, Path(tmp) / f"{r}-{a}").wall_s)
                cpu[a].append(time.process_time() - c)
                if a == "on":
                    share.append(spent[0] / wall[a][-1])
    for a in arms:
        print(
            f"{a:>9}: wall median {statistics.median(wall[a]):.3f} s (best {min(wall[a]):.3f}),"
            f" CPU median {statistics.median(cpu[a]):.3f} s (best {min(cpu[a]):.3f})"
        )
    for a in arms:
        if a != "off":
            for name, t in (("wall", wall), ("CPU", cpu)):
                ratios = [x / y for x, y in zip(t[a], t["off"], strict=True)]
                print(
                    f"{a}/off {name}: median of per-round ratios {statistics.median(ratios):.4f}"
                    f" (rounds: {', '.join(f'{x:.3f}' for x in ratios)}; goal <= {GOAL})"
                )
    print(f"example forgetting's share of the 'on' loop: median {statistics.median(share):.4%}")


if __name__ == "__main__":
    main()
