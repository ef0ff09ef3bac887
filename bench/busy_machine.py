"""A run beside busy neighbours: one epoch of the default experiment (`cl run`, train.epochs=1,
W&B disabled, no report) idle, beside 2 and beside 6 CPU-bound processes (`while True: pass`,
killed at the end), with `run.threads` auto (0), 1 and 2, and 2 threads with
OMP_WAIT_POLICY=PASSIVE. Prints the run's wall time (summary.json `wall_time_s`: the loop and
its outputs) and the threads the run chose (environment.json).

Run: ``PYTHONPATH=. .venv/bin/python bench/busy_machine.py [--neighbours 0,2,6]``. On a machine
that is not idle to begin with, "idle" means "no neighbours of ours": say so with the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUN = [
    "train.epochs=1",
    "wandb.mode=disabled",
    "run.progress=false",
    "run.report=false",
    "run.device=cpu",
]
SETTINGS = {  # label -> (extra overrides, extra environment)
    "auto": ([], {}),
    "threads=1": (["run.threads=1"], {}),
    "threads=2": (["run.threads=2"], {}),
    "threads=2 passive": (["run.threads=2"], {"OMP_WAIT_POLICY": "PASSIVE"}),
}


def one_run(folder: Path, extra: list[str], env: dict) -> tuple[float, int]:
    cmd = [sys.executable, "-m", "cl", "run", "-q", *RUN, *extra]
    cmd += [f"run.dir={folder.parent}", f"run.name={folder.name}"]
    subprocess.run(cmd, check=True, env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    wall = json.loads((folder / "summary.json").read_text())["wall_time_s"]
    threads = json.loads((folder / "environment.json").read_text())["torch_threads"]
    return wall, threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--neighbours", default="0,2,6")
    args = parser.parse_args()
    counts = [int(n) for n in args.neighbours.split(",")]
    print(f"{os.cpu_count()} CPUs, load before: {os.getloadavg()[0]:.1f}")
    table: dict[tuple[int, str], tuple[float, int]] = {}
    with tempfile.TemporaryDirectory(prefix="cl-busy-") as tmp:
        for n in counts:
            hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
            try:
                time.sleep(0.5 if n else 0)
                for label, (extra, env) in SETTINGS.items():
                    name = f"n{n}-{label.replace(' ', '-').replace('=', '')}"
                    table[n, label] = one_run(Path(tmp) / name, extra, env)
                    wall, threads = table[n, label]
                    print(f"neighbours {n}, {label}: {wall:.2f} s ({threads} threads)", flush=True)
            finally:
                for p in hogs:
                    p.kill()
                    p.wait()
    print(f"\n{'one epoch, s (threads)':<24}" + "".join(f"{f'beside {n}':>16}" for n in counts))
    for label in SETTINGS:
        cells = "".join(f"{f'{table[n, label][0]:.2f} ({table[n, label][1]})':>16}" for n in counts)
        print(f"{label:<24}{cells}")


if __name__ == "__main__":
    main()
