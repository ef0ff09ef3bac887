"""Sweep throughput: 8 trials of the default experiment with `train.epochs=1` (naive and
replay x seeds 0-3), run three ways in one script:

* a sequential loop of `cl run` processes (default torch threads), as a shell loop would;
* `cl sweep` with the local executor (defaults: one warm worker per core, one thread each);
* `cl sweep` on a local Ray head (`ray start --head` on 127.0.0.1, stopped at the end).

    .venv/bin/python bench/sweep_speed.py

Prints wall times, ratios to the sequential loop, and the per-trial time a warm worker spends
outside the run itself (`overhead_s` in trials.jsonl: composing and validating the trial's
config and bookkeeping; median over trials).
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
GRID = ["strategy=naive,replay", "seed=0,1,2,3"]
COMMON = ["train.epochs=1"]  # `-q` turns progress off; sweeps own run.progress


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def overhead(folder: Path) -> float:
    lines = (folder / "trials.jsonl").read_text().splitlines()
    values = [json.loads(x).get("overhead_s") for x in lines]
    return statistics.median(v for v in values if v is not None)


def main() -> None:
    cl = [str(BIN / "cl")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        seq = 0.0
        for strategy in ("naive", "replay"):
            for seed in range(4):
                run = [*cl, "run", "-q", *COMMON, f"strategy={strategy}", f"seed={seed}"]
                seq += timed([*run, f"run.dir={root}/seq"])
        sweep = [*cl, "sweep", "-q", *GRID, *COMMON, f"sweep.dir={root}"]
        local = timed([*sweep, "sweep.name=local"])
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        start = [str(BIN / "ray"), "start", "--head", "--node-ip-address=127.0.0.1"]
        start += [f"--port={port}", "--include-dashboard=false", "--disable-usage-stats"]
        subprocess.run(start, check=True, capture_output=True)
        try:
            address = f"sweep.address=127.0.0.1:{port}"
            ray = timed([*sweep, "sweep.name=ray", "sweep.executor=ray", address])
        finally:
            subprocess.run([str(BIN / "ray"), "stop", "--force"], capture_output=True)
        print(f"{'way':<34} {'wall s':>8} {'vs loop':>8}")
        for way, t in (
            ("sequential `cl run` processes", seq),
            ("cl sweep, local executor", local),
            ("cl sweep, local Ray head", ray),
        ):
            print(f"{way:<34} {t:8.1f} {t / seq:7.2f}x")
        print(f"warm worker time per trial outside the run: {overhead(root / 'local'):.3f} s")


if __name__ == "__main__":
    main()
