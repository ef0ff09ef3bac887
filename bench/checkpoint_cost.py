"""Cost of checkpointing and time to resume, on the default experiment (Split-MNIST mnist5k,
MLP 784-400-400-10, replay, evaluation after every iteration; W&B offline as by default).

    .venv/bin/python bench/checkpoint_cost.py [--repeats 5] [--wandb offline|disabled]

Overhead: `cl.run` with checkpoints at their defaults (every experience end, every
`run.checkpoint_every` iterations, every `run.checkpoint_minutes`) against
`run.checkpoint=false`, interleaved over rounds; the ratio is the median of per-round ratios
of the runs' `wall_time_s` (the loop and the outputs; data loading excluded), next to the time
spent inside `checkpoint.save` as a share of the checkpointed run. Resume: a default run stopped
by SIGTERM at iteration 300 (a child process), then `cl.api.resume` in this process, whose
imports are done: seconds from the call to the first training iteration (config, data, model,
checkpoint, metrics file, W&B), as median over rounds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cl
from cl import api, checkpoint, runner

HELPER = Path(__file__).resolve().parent.parent / "tests" / "helpers" / "kill_at.py"


def timed_saves():
    """Wrap `checkpoint.save`; returns the list its durations are appended to."""
    spent: list[float] = []
    save = checkpoint.save

    def save_timed(folder, data):
        t = time.perf_counter()
        save(folder, data)
        spent.append(time.perf_counter() - t)

    checkpoint.save = save_timed
    return spent


def time_to_first_iteration(folder: Path) -> float:
    """Seconds from `api.resume(folder)` to the runner's first training iteration."""
    began, reached = time.perf_counter(), []
    step = runner.train_step

    def first_step(*args, **kwargs):
        if not reached:
            reached.append(time.perf_counter() - began)
        return step(*args, **kwargs)

    runner.train_step = first_step
    try:
        api.resume(folder, quiet=True)
    finally:
        runner.train_step = step
    return reached[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--wandb", default="offline", choices=["offline", "disabled"])
    args = parser.parse_args()
    base = [f"wandb.mode={args.wandb}", "run.progress=false"]
    spent = timed_saves()
    arms = {"checkpoints (default)": [], "no checkpoints": ["run.checkpoint=false"]}
    walls: dict[str, list[float]] = {a: [] for a in arms}
    shares, sizes, counts, resumes = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cl.run([*base, f"run.dir={root}/warm", "train.epochs=1"], quiet=True)
        for r in range(args.repeats):
            for arm in arms if r % 2 == 0 else list(arms)[::-1]:
                spent.clear()
                run = cl.run([*base, *arms[arm], f"run.dir={root}/{r}"], quiet=True)
                walls[arm].append(run.summary["wall_time_s"])
                if spent:
                    counts.append(len(spent))
                    shares.append(sum(spent) / run.summary["wall_time_s"])
                    sizes.append((run.path / checkpoint.FILE).stat().st_size)
            folder = root / f"stopped-{r}"
            job = {"signal": "TERM", "at": 300, "stderr": str(root / "err")}
            job["args"] = ["-q", *base, f"run.dir={root}", f"run.name={folder.name}"]
            (root / "job.json").write_text(json.dumps([job]))
            out = subprocess.run(
                [sys.executable, str(HELPER), str(root / "job.json")],
                capture_output=True,
                text=True,
            )
            assert json.loads(out.stdout) == [143], (root / "err").read_text()
            resumes.append(time_to_first_iteration(folder))
            shutil.rmtree(folder)
    ratios = [a / b for a, b in zip(*walls.values(), strict=True)]
    print(f"{'arm':<24} {'median s':>9}  runs")
    for arm, ts in walls.items():
        print(f"{arm:<24} {statistics.median(ts):9.3f}  " + " ".join(f"{t:.2f}" for t in ts))
    print(f"wall-time ratio (median of per-round ratios): {statistics.median(ratios):.4f}x")
    print(
        f"time inside checkpoint.save: {100 * statistics.median(shares):.2f}% of the run "
        f"({statistics.median(counts):.0f} saves per run, "
        f"{statistics.median(sizes) / 1e6:.1f} MB each)"
    )
    print(
        f"resume to first iteration: median {statistics.median(resumes):.3f} s "
        f"(rounds: {' '.join(f'{t:.3f}' for t in resumes)})"
    )


if __name__ == "__main__":
    main()
