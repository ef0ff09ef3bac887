"""The runs a report shows: run folders and sweep folders read back, grouped by configuration.

A path is a run folder (`metrics.jsonl`) or a sweep folder (`sweep.yaml`, its trials in
`runs/`). Runs that differ only in their seed form one configuration (a sweep's trial values
without the seed; for loose run folders, the config keys in which they differ).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cl.errors import UserError
from cl.plugins import label
from cl.store import METRICS_FILE, SUMMARY_FILE, load_run

NOT_CONFIG = ("seed", "run.", "wandb.", "data.", "eval.batch_size")


@dataclass
class RunView:
    """One run as the report sees it."""

    name: str
    path: Path
    config: dict[str, Any]
    environment: dict[str, Any]
    summary: dict[str, Any]
    metrics: Any  # pandas.DataFrame
    group: str = ""  # the configuration without the seed

    @property
    def status(self) -> str:
        return self.summary.get("status", "running")


@dataclass
class Report:
    title: str
    runs: list[RunView]
    sweep: dict[str, Any] | None = None  # a sweep folder's sweep.yaml
    groups: list[str] = field(default_factory=list)


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out |= _flat(v, f"{prefix}{k}.")
        return out
    return {prefix[:-1]: json.dumps(tree) if isinstance(tree, list) else tree}


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


REQUIRED = ("iteration", "experience")  # the columns every chart is drawn against


def read_run(path: Path) -> RunView:
    """One run folder; UserError if its summary.json is not a JSON object."""
    try:
        run = load_run(path)
    except ValueError as e:  # summary.json that is not JSON
        raise UserError(f"{path / SUMMARY_FILE} is not valid JSON ({e})") from None
    if not isinstance(run.summary, dict):
        raise UserError(f"{path / SUMMARY_FILE} must hold a JSON object")
    config = run.config if (path / "config.yaml").is_file() else {}
    env = _json(path / "environment.json")
    return RunView(path.name, path, config or {}, env, run.summary, run.metrics)


def has_rows(run: RunView) -> bool:
    return len(run.metrics) > 0 and all(c in run.metrics.columns for c in REQUIRED)


def run_folders(paths: list[str | Path]) -> tuple[list[Path], dict | None]:
    """The run folders under `paths` (a sweep folder gives its trials), and a sweep's spec."""
    from cl.sweep.folder import SPEC_FILE, read_spec

    folders, sweep = [], None
    for p in map(Path, paths):
        if (p / SPEC_FILE).is_file():
            sweep = read_spec(p)
            names = [t["name"] for t in sweep["trials"]]
            folders += [p / "runs" / n for n in names if (p / "runs" / n / METRICS_FILE).is_file()]
        elif (p / METRICS_FILE).is_file():
            folders.append(p)
        else:
            raise UserError(f"{p} is neither a run folder (metrics.jsonl) nor a sweep folder")
    return folders, sweep


def group_runs(runs: list[RunView], sweep: dict | None) -> list[str]:
    """Set each run's configuration label; returns the labels in order of appearance."""
    if sweep is not None:
        values = {t["name"]: t["values"] for t in sweep.get("trials", [])}
        for r in runs:
            v = values.get(r.name, {})
            r.group = " ".join(f"{k}={x}" for k, x in v.items() if k != "seed") or "(all)"
    else:
        flats = [_flat(r.config) for r in runs]
        for f, r in zip(flats, runs, strict=True):  # the strategy list as one value
            f["strategy"] = label(r.config.get("strategy") or {})  # avalanche.EWC, replay+...
        keys = sorted({k for f in flats for k in f})
        differ = [
            k
            for k in keys
            if not k.startswith(NOT_CONFIG)
            and len({str(f.get(k)) for f in flats}) > 1
            and (k == "strategy" or not k.startswith("strategy.") or all(k in f for f in flats))
        ]
        for r, f in zip(runs, flats, strict=True):
            r.group = " ".join(f"{k}={f.get(k)}" for k in differ) or (
                r.name if len(runs) == 1 else "(all)"
            )
    return list(dict.fromkeys(r.group for r in runs))


def collect(paths: list[str | Path]) -> Report:
    """The runs of `paths`. A sweep's trial with no rows yet is left out; a run folder given
    by name must hold rows (UserError otherwise)."""
    folders, sweep = run_folders(paths)
    given = {Path(p) for p in paths}
    runs = []
    for run in map(read_run, folders):
        if has_rows(run):
            runs.append(run)
        elif run.path in given:
            what = "holds no rows" if run.metrics.empty else f"lacks {' or '.join(REQUIRED)}"
            raise UserError(f"{run.path / METRICS_FILE} {what}; nothing to report yet")
    if not runs:
        raise UserError(f"no runs with rows under {', '.join(map(str, paths))} yet")
    groups = group_runs(runs, sweep)
    title = sweep["name"] if sweep else (runs[0].name if len(runs) == 1 else f"{len(runs)} runs")
    return Report(title, runs, sweep, groups)
