"""The sweep folder: `sweep.yaml` (options and trials), `trials.jsonl` (every trial state
change), `runs/<trial>/` (ordinary run folders), and the tables `trials.csv` (one row per
trial) and `aggregate.csv` (one row per configuration: mean and std over seeds).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cl import metric_registry
from cl.errors import UserError

SPEC_FILE = "sweep.yaml"
JOURNAL = "trials.jsonl"
TRIALS_CSV = "trials.csv"
AGGREGATE_CSV = "aggregate.csv"


def write_spec(folder: Path, spec: dict[str, Any]) -> None:
    tmp = folder / f"{SPEC_FILE}.tmp"
    tmp.write_text(yaml.safe_dump(spec, sort_keys=False))
    tmp.replace(folder / SPEC_FILE)


def read_spec(folder: Path) -> dict[str, Any]:
    """`sweep.yaml` of `folder`; UserError if it is missing, not YAML or not of its shape."""
    path = folder / SPEC_FILE
    if not path.is_file():
        raise UserError(f"{folder} is not a cl sweep folder (no {SPEC_FILE})")
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError) as e:  # ValueError: bad UTF-8
        raise UserError(f"cannot read {path}: {' '.join(str(e).split())[:300]}") from None
    problem = spec_problem(spec)
    if problem:
        raise UserError(f"{path} is not a sweep.yaml cl wrote: {problem}")
    return spec


NAMES = {str: "string", dict: "mapping", list: "list"}


def spec_problem(spec: Any) -> str | None:
    """What is wrong with the shape of a read sweep.yaml, or None."""
    if not isinstance(spec, dict):
        return "it must hold a mapping (it is empty or holds something else)"
    shapes = {"name": str, "options": dict, "metric": str, "goal": str, "common": list}
    shapes |= {"swept": list, "trials": list}
    for key, kind in shapes.items():
        if not isinstance(spec.get(key), kind):
            return f"'{key}' must be a {NAMES[kind]}"
    for i, t in enumerate(spec["trials"]):
        if not (isinstance(t, dict) and isinstance(t.get("name"), str)):
            return f"trials[{i}] must be a mapping with a name"
        if not isinstance(t.get("values"), dict):
            return f"trials[{i}] must have values (a mapping)"
    if not all(isinstance(c, str) for c in spec["common"]):
        return "'common' must be a list of key=value texts"
    return None


def first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


class Journal:
    """`trials.jsonl`: one JSON line per trial state change, flushed as written."""

    def __init__(self, folder: Path):
        self.path = folder / JOURNAL
        self.file = open(self.path, "a", buffering=1)  # noqa: SIM115 - closed in close()

    def __call__(self, trial: str, state: str, **info: Any) -> None:
        record = {"trial": trial, "state": state, "time": round(time.time(), 3), **info}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def last_states(folder: Path) -> dict[str, dict[str, Any]]:
    """Each trial's latest journal record. An unreadable line (a torn last line) is ignored;
    a JSON line that is not a trial record is a UserError naming it."""
    out: dict[str, dict[str, Any]] = {}
    path = folder / JOURNAL
    if path.is_file():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            attempt = record.get("attempt", 0) if isinstance(record, dict) else None
            if not (
                isinstance(record, dict)
                and isinstance(record.get("trial"), str)
                and isinstance(record.get("state"), str)
                and isinstance(attempt, int)
                and not isinstance(attempt, bool)
            ):
                raise UserError(
                    f"{path}:{number} is not a trial record (a JSON object with trial, state "
                    f"and an integer attempt): {line[:100]}"
                )
            out[record["trial"]] = record
    return out


def read_summary(run_dir: Path) -> dict[str, Any]:
    """A trial's summary.json; {} when absent or not a JSON object (the trial shows no
    metrics rather than stopping the sweep's tables)."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def config_label(values: dict[str, str]) -> str:
    """A trial's configuration: its swept values without the seed."""
    return " ".join(f"{k}={v}" for k, v in values.items() if k != "seed") or "(all)"


def tables(folder: Path, spec: dict[str, Any]):
    """Write and return (trials, aggregate) DataFrames from the run folders' summaries."""
    import pandas as pd

    states = last_states(folder)
    rows = []
    for t in spec["trials"]:
        name, values = t["name"], t["values"]
        row: dict[str, Any] = {"trial": name, "config": config_label(values), **values}
        row["status"] = states.get(name, {}).get("state", "queued")
        row["attempts"] = states.get(name, {}).get("attempt", 0)
        run_dir = folder / "runs" / name
        row["run"] = f"runs/{name}"
        summary = read_summary(run_dir)
        if summary:
            row |= {
                k: v
                for k, v in summary.items()
                if isinstance(v, int | float) and not isinstance(v, bool) and k != "status"
            }
        rows.append(row)
    trials = pd.DataFrame(rows)
    metrics = [
        c for c in trials.columns if c not in ("trial", "config", "status", "attempts", "run")
    ]
    metrics = [
        c for c in metrics if c not in spec["swept"] and pd.api.types.is_numeric_dtype(trials[c])
    ]
    done = trials[trials["status"] == "finished"]
    keys = ["config"] + [k for k in spec["swept"] if k != "seed"]
    groups = []
    for _, g in done.groupby("config", sort=False):
        row = {k: g[k].iloc[0] for k in keys} | {"n": len(g)}
        for m in metrics:
            row[f"{m}_mean"] = g[m].mean()
            row[f"{m}_std"] = g[m].std(ddof=1) if len(g) > 1 else math.nan
        groups.append(row)
    aggregate = pd.DataFrame(
        groups, columns=[*keys, "n"] + [f"{m}_{s}" for m in metrics for s in ("mean", "std")]
    )
    metric = spec["metric"]
    if f"{metric}_mean" in aggregate:
        aggregate = aggregate.sort_values(f"{metric}_mean", ascending=spec["goal"] == "minimize")
    trials.to_csv(folder / TRIALS_CSV, index=False)
    aggregate.to_csv(folder / AGGREGATE_CSV, index=False)
    return trials, aggregate


def table_text(aggregate, metric: str) -> str:
    """The aggregate as text: mean ± std over seeds of the main metrics and `metric`."""
    main = [m.key for m in metric_registry.shown("sweep")]
    shown = [*main, *([metric] if metric not in main else [])]
    shown = [m for m in shown if f"{m}_mean" in aggregate]
    header = ["configuration", "n", *shown]
    lines = [header]
    for _, row in aggregate.iterrows():
        cells = [str(row["config"]), str(row["n"])]
        for m in shown:
            mean, std = row[f"{m}_mean"], row[f"{m}_std"]
            cells.append(
                "n/a" if mean != mean else f"{mean:.4f}" + ("" if std != std else f" ± {std:.4f}")
            )
        lines.append(cells)
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in lines)


@dataclass
class Sweep:
    """A sweep folder read back: `.trials` (one row per trial) and `.aggregate` (one row per
    configuration: n, mean and std over seeds of every metric), `.spec` (sweep.yaml)."""

    path: Path
    spec: dict[str, Any]
    trials: Any  # pandas.DataFrame
    aggregate: Any  # pandas.DataFrame


def load_sweep(path: str | Path) -> Sweep:
    import pandas as pd

    path = Path(path)
    spec = read_spec(path)
    if not (path / TRIALS_CSV).is_file():
        trials, aggregate = tables(path, spec)
    else:
        trials = pd.read_csv(path / TRIALS_CSV)
        aggregate = pd.read_csv(path / AGGREGATE_CSV)
    return Sweep(path, spec, trials, aggregate)


def run_status(run_dir: Path) -> str | None:
    """The `status` in a trial's summary.json, or None while it has none (or it is unreadable)."""
    try:
        return json.loads((run_dir / "summary.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None
