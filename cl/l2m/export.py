"""A run folder's rows as an L2Logger log (format 1.1), the input of l2metrics.

The lifetime is a "condensed" L2M scenario: evaluation block, learning block of experience 0,
evaluation block, learning block of experience 1, ... Evaluation blocks come from the rows
that score every task (the row before training, iteration 0, and the last row of each
experience): one evaluation experience per task, its accuracy on the task's evaluation subset.
A learning block holds one learning experience per logged row of its experience: the row's
`train/online_acc` (prequential accuracy of the training batches since the previous row).
"""

from __future__ import annotations

import math
import re
import shutil
import tempfile
from pathlib import Path

from cl.errors import UserError
from cl.store import Run

PERF = "accuracy"  # the performance column (logger_info.json's metrics_columns)
WORKER = "cl"
# each task learned once, in one block (L2M's "condensed" scenario); complexity and difficulty
# are left out (l2metrics then notes them as undefined)
SCENARIO_INFO = {"author": "cl", "scenario_type": "condensed"}


def task_names(benchmark: str, n_tasks: int) -> list[str]:
    """L2M task names `<task>_<variant>` (letters and digits only): task0_splitmnist, ..."""
    variant = re.sub(r"[^0-9a-z]", "", benchmark.lower()) or "stream"
    return [f"task{i}_{variant}" for i in range(n_tasks)]


def lifetime(run: Run) -> tuple[list[float], list[list[float]], list[list[tuple[int, float]]]]:
    """(b, R, learning) from a finished run's rows: b[j] = accuracy on task j before
    training, R[k][j] = accuracy on task j at the end of experience k, learning[k] = the
    (iteration, online accuracy) of each row of experience k. UserError when the rows do not
    hold a whole lifetime."""
    rows = run.metrics
    cols = run.task_columns()
    if not len(rows) or not cols:
        raise UserError(f"{run.path} has no per-iteration evaluation rows in metrics.jsonl")
    first = rows[rows["iteration"] == 0]
    if first.empty or first[cols].iloc[0].isna().any():
        raise UserError(f"{run.path} has no evaluation of every task before training (iteration 0)")
    b = [float(v) for v in first[cols].iloc[0]]
    R, learning = [], []
    for k in range(len(cols)):
        rows_k = rows[(rows["experience"] == k) & (rows["iteration"] > 0)]
        if "train/online_acc" in rows.columns:
            rows_k = rows_k[rows_k["train/online_acc"].notna()]
        if rows_k.empty:
            raise UserError(f"{run.path} has no training rows for experience {k}")
        end = rows_k[cols].iloc[-1]
        if end.isna().any():
            raise UserError(f"{run.path}: the last row of experience {k} does not score every task")
        R.append([float(v) for v in end])
        pairs = zip(rows_k["iteration"], rows_k["train/online_acc"], strict=True)
        learning.append([(int(i), float(a)) for i, a in pairs])
    return b, R, learning


def write(run: Run, out: Path, names: list[str]) -> Path:
    """Write `run`'s lifetime as an L2Logger log folder `out` (replaced if present), through
    l2logger's own DataLogger; returns `out`."""
    from l2logger.l2logger import DataLogger

    b, R, learning = lifetime(run)
    if len(names) != len(b):
        raise UserError(f"{run.path} scores {len(b)} tasks, expected {len(names)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        info = {"metrics_columns": [PERF]}
        log = DataLogger(tmp, out.name, info, dict(SCENARIO_INFO))
        exp = 0

        def record(block: int, kind: str, task: int, acc: float, iteration: int) -> None:
            nonlocal exp
            if not math.isfinite(acc):
                return
            log.log_record(
                {"block_num": block, "exp_num": exp, "worker_id": WORKER,
                 "block_type": kind, "task_name": names[task], "task_params": {},
                 PERF: acc, "iteration": iteration}
            )  # fmt: skip
            exp += 1

        for j, acc in enumerate(b):
            record(0, "test", j, acc, 0)
        for k, (end, rows) in enumerate(zip(R, learning, strict=True)):
            for iteration, acc in rows:
                record(2 * k + 1, "train", k, acc, iteration)
            for j, acc in enumerate(end):
                record(2 * k + 2, "test", j, acc, rows[-1][0])
        log.close()
        if out.exists():
            shutil.rmtree(out)
        Path(log.scenario_dir).rename(out)
    return out
