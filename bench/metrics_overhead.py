"""Cost of the metric suite on the default experiment (Split-MNIST mnist5k, MLP, replay).

Times `cl.run` (W&B disabled, no progress bar) three ways, interleaved over `--repeats`
rounds: the full suite at its default cadence; without the plasticity probe
(`plasticity.every=0`); and without the probe and the windowed WF/WP trackers (the bare
evaluation rows: per-task accuracy and loss, min-ACC, WC-ACC). Prints medians and ratios.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import cl
from cl import metrics

STREAMING = metrics.StreamingMetrics

BASE = ["wandb.mode=disabled", "run.progress=false", "run.checkpoint=false"]


class NoWindows(metrics.StreamingMetrics):
    def __init__(self, windows=()):
        super().__init__(windows=())


def timed(overrides: list[str], folder: Path, windows: bool = True) -> float:
    metrics.StreamingMetrics = STREAMING if windows else NoWindows
    try:
        run = cl.run(BASE + [f"run.dir={folder}"] + overrides, quiet=True)
    finally:
        metrics.StreamingMetrics = STREAMING
    return run.summary["wall_time_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    arms = {
        "full suite": ([], True),
        "no plasticity probe": (["plasticity.every=0"], True),
        "no probe, no WF/WP": (["plasticity.every=0"], False),
    }
    times: dict[str, list[float]] = {a: [] for a in arms}
    with tempfile.TemporaryDirectory() as tmp:
        timed(["train.epochs=1"], Path(tmp))  # warm-up
        for r in range(args.repeats):
            order = list(arms) if r % 2 == 0 else list(arms)[::-1]
            for arm in order:
                overrides, windows = arms[arm]
                times[arm].append(timed(overrides, Path(tmp) / f"{r}", windows))
    base = statistics.median(times["no probe, no WF/WP"])
    print(f"{'arm':<22} {'median s':>9} {'ratio':>7}  runs")
    for arm, ts in times.items():
        med = statistics.median(ts)
        print(f"{arm:<22} {med:9.3f} {med / base:7.3f}x  " + " ".join(f"{t:.2f}" for t in ts))


if __name__ == "__main__":
    main()
