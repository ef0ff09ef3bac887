"""The local run folder: a crash-safe per-evaluation metrics store, and `load_run` to read it.

Rows are JSON lines in `metrics.jsonl`, written and flushed one at a time, so a run killed
with SIGKILL keeps every row written before the kill (a torn last line is ignored on read).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class LocalStore:
    """Appends one JSON line per logged row to `<run folder>/metrics.jsonl`."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / METRICS_FILE
        self._file = open(self.path, "a", buffering=1 << 16)  # noqa: SIM115 - closed in close()

    def log(self, row: dict[str, Any]) -> None:
        try:
            line = json.dumps(row, allow_nan=False)
        except ValueError:  # NaN or inf: stored as null
            line = json.dumps({k: _clean(v) for k, v in row.items()})
        self._file.write(line + "\n")
        self._file.flush()

    def close(self, ok: bool = True) -> None:
        if not self._file.closed:
            self._file.close()


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # torn last line of a killed run
    return rows


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    tmp.replace(path)


@dataclass
class Run:
    """A run folder read back: `.metrics` (one row per evaluation) and `.summary`."""

    path: Path
    metrics: Any  # pandas.DataFrame
    summary: dict[str, Any]

    @property
    def config(self) -> dict[str, Any]:
        import yaml

        return yaml.safe_load((self.path / "config.yaml").read_text())

    def task_columns(self) -> list[str]:
        cols = [c for c in self.metrics.columns if c.startswith("eval/acc/task_")]
        return sorted(cols, key=lambda c: int(c.rsplit("_", 1)[1]))


def load_run(path: str | Path) -> Run:
    """Read a run folder written by `cl run` (also one whose run was killed)."""
    import pandas as pd

    path = Path(path)
    if not (path / METRICS_FILE).is_file():
        from cl.errors import UserError

        raise UserError(f"{path} is not a cl run folder (no {METRICS_FILE})")
    metrics = pd.DataFrame(read_rows(path / METRICS_FILE))
    summary_path = path / SUMMARY_FILE
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return Run(path, metrics, summary)
