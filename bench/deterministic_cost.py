"""Cost of `run.deterministic` on the default experiment (Split-MNIST mnist5k, MLP
784-400-400-10, replay, evaluation after every iteration), in this process.

    .venv/bin/python bench/deterministic_cost.py [--repeats 3] [--device auto] [--threads N]
        [extra cl overrides, e.g. train.epochs=1]

Runs `cl.run` with run.deterministic=true and =false alternately (W&B disabled, no progress
bar, no report, no checkpoints), `--repeats` of each; prints each setting's median
`wall_time_s` (the loop and the outputs; data loading excluded) and median CPU time of the
process during the run (less sensitive to other jobs on a shared machine), and their ratios.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

import cl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    times: dict[bool, list[float]] = {True: [], False: []}
    cpu: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        common = [
            f"run.dir={tmp}",
            f"run.device={args.device}",
            "wandb.mode=disabled",
            "run.progress=false",
            "run.report=false",
            "run.checkpoint=false",
            *args.overrides,
        ]
        for i in range(args.repeats):
            for on in (True, False) if i % 2 == 0 else (False, True):
                name = f"{'det' if on else 'free'}-{i}"
                flag = f"run.deterministic={str(on).lower()}"
                began = time.process_time()
                run = cl.run([*common, flag, f"run.name={name}"], quiet=True)
                cpu[on].append(time.process_time() - began)
                times[on].append(run.summary["wall_time_s"])
                print(
                    f"deterministic={on!s:<5} round {i}: wall {times[on][-1]:.2f} s, "
                    f"CPU {cpu[on][-1]:.2f} s",
                    flush=True,
                )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    for what, values in (("wall time", times), ("CPU time", cpu)):
        det, free = statistics.median(values[True]), statistics.median(values[False])
        print(
            f"median {what}: deterministic {det:.2f} s, not {free:.2f} s, "
            f"ratio deterministic / not {det / free:.3f}"
        )


if __name__ == "__main__":
    main()
