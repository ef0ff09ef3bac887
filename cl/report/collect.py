"""The runs a report shows: run folders and sweep folders read back, grouped by configuration.

A path is a run folder (`metrics.jsonl`) or a sweep folder (`sweep.yaml`, its trials in
`runs/`). Runs whose resolved configs are equal but for the seed (and for run, wandb and data
settings) form one configuration, wherever they come from: a sweep's trials, loose run folders,
or both. A configuration is named by the keys in which it differs from the others (a sweep's
swept keys first), or by the `run.label` its runs set; names longer than MAX_LABEL characters
are abbreviated, the full text kept for tooltips.
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
MAX_LABEL = 40  # characters of a configuration's name on the page (the full one on hover)


@dataclass
class RunView:
    """One run as the report sees it."""

    name: str
    path: Path
    config: dict[str, Any]
    environment: dict[str, Any]
    summary: dict[str, Any]
    metrics: Any  # pandas.DataFrame
    group: str = ""  # its configuration's (short, unique) name

    @property
    def status(self) -> str:
        return self.summary.get("status", "running")

    @property
    def seed(self) -> Any:
        return self.config.get("seed")


@dataclass
class Report:
    title: str
    runs: list[RunView]
    sweep: dict[str, Any] | None = None  # the (last) sweep folder's sweep.yaml
    groups: list[str] = field(default_factory=list)  # configuration names, in order
    full: dict[str, str] = field(default_factory=dict)  # name -> full description
    differ: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> {key: value}

    def members(self, group: str) -> list[RunView]:
        return [r for r in self.runs if r.group == group]


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


def sources(paths: list[str | Path]) -> list[tuple[str, list[Path], dict | None]]:
    """Per path: its name (a sweep's or a run's), its run folders, and a sweep's spec."""
    from cl.sweep.folder import SPEC_FILE, read_spec

    out = []
    for p in map(Path, paths):
        if (p / SPEC_FILE).is_file():
            spec = read_spec(p)
            names = [t["name"] for t in spec["trials"]]
            runs = [p / "runs" / n for n in names if (p / "runs" / n / METRICS_FILE).is_file()]
            out.append((str(spec.get("name") or p.name), runs, spec))
        elif (p / METRICS_FILE).is_file():
            out.append((p.name, [p], None))
        else:
            raise UserError(f"{p} is neither a run folder (metrics.jsonl) nor a sweep folder")
    return out


def run_folders(paths: list[str | Path]) -> tuple[list[Path], dict | None]:
    """The run folders under `paths` (a sweep folder gives its trials), and a sweep's spec."""
    found = sources(paths)
    specs = [spec for _, _, spec in found if spec is not None]
    return [f for _, folders, _ in found for f in folders], (specs[-1] if specs else None)


def strategy_name(spec: Any) -> str:
    """A config's strategies as one name: `avalanche.EWC`, `replay+center_loss`, `none`."""
    if isinstance(spec, str | list):  # a hand-written config: `strategy: joint`
        return "+".join([spec] if isinstance(spec, str) else map(str, spec)) or "none"
    return label(spec) if isinstance(spec, dict) and spec else "none"


def _identity(flat: dict[str, Any]) -> str:
    """What makes a configuration: the config but for seed, run, wandb and data settings (and
    a `run.label`, which sets the configuration apart under its own name)."""
    keep = {k: str(v) for k, v in flat.items() if not k.startswith(NOT_CONFIG)}
    return json.dumps([flat.get("run.label"), sorted(keep.items())])


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def short_keys(keys: list[str]) -> dict[str, str]:
    """Each key without its section where that stays unambiguous (`benchmark.n_tasks` ->
    `n_tasks`, `strategy.replay.buffer` -> `buffer`)."""
    shorts = [_short(k) for k in keys]
    return {k: s if shorts.count(s) == 1 else k for k, s in zip(keys, shorts, strict=True)}


def abbreviate(text: str, limit: int = MAX_LABEL) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _differing(flats: list[dict[str, Any]], swept: list[str]) -> list[str]:
    """The config keys whose values differ between configurations, swept keys first, then the
    strategy, then the rest in order. A strategy's option counts where that strategy is used."""
    keys = list(dict.fromkeys(k for f in flats for k in f if not k.startswith(NOT_CONFIG)))

    def differs(k: str) -> bool:
        have = [f for f in flats if k in f] if k.startswith("strategy.") else flats
        return len({str(f.get(k)) for f in have}) > 1

    found = [k for k in keys if differs(k)]
    first = [k for k in [*swept, "strategy"] if k in found]
    return list(dict.fromkeys([*first, *sorted(found)]))


def group_runs(runs: list[RunView], swept: list[str] | None = None, per_run: bool = False):
    """Set each run's configuration name (`run.group`); returns (names in order, name -> full
    description, name -> {differing key: value}). `per_run`: every run is its own."""
    flats = []
    for r in runs:
        f = _flat(r.config)
        f["strategy"] = strategy_name(r.config.get("strategy"))
        flats.append(f)
    ids = [_identity(f) for f in flats]
    first = {i: flats[ids.index(i)] for i in dict.fromkeys(ids)}  # one config per identity
    keys = _differing(list(first.values()), swept or [])
    shown = short_keys(keys)
    names: dict[str, tuple[str, str, dict]] = {}
    for i, f in first.items():
        values = {k: str(f[k]) for k in keys if k in f}
        full = " ".join(f"{shown[k]}={v}" for k, v in values.items())
        own = f.get("run.label")
        full = str(own) if own else full
        full = full or f"strategy={f['strategy']}"  # nothing differs: one configuration
        names[i] = (full, abbreviate(full), {k: values[k] for k in keys if k in values})
    taken: dict[str, str] = {}  # identity (or run) -> name
    groups, fulls, differ = [], {}, {}
    for r, i in zip(runs, ids, strict=True):
        full, short, values = names[i]
        key = i
        if per_run:
            same = [x for x, j in zip(runs, ids, strict=True) if j == i]
            tag = f"seed={r.seed}" if sum(x.seed == r.seed for x in same) == 1 else r.name
            full = f"{full} · {tag}"
            short = f"{abbreviate(short, MAX_LABEL - len(tag) - 3)} · {tag}"
            key = r.name
        if key not in taken:  # distinct names, should two abbreviate alike
            name = short if short not in fulls else f"{short} #{len(groups) + 1}"
            taken[key] = name
            groups.append(name)
            fulls[name], differ[name] = full, values
        r.group = taken[key]
    return groups, fulls, differ


def title(names: list[str], runs: int, groups: int) -> str:
    """A page's title: the sweep or run given, else the sources (at most three named)."""
    if len(names) == 1:
        return names[0]
    shown = (
        " + ".join(names) if len(names) <= 3 else f"{', '.join(names[:2])} + {len(names) - 2} more"
    )
    return f"{shown} ({runs} runs, {groups} configurations)"


def collect(paths: list[str | Path], per_run: bool = False) -> Report:
    """The runs of `paths`, grouped by configuration (`per_run`: one group per run). A
    sweep's trial with no rows yet is left out; a run folder given by name must hold rows
    (UserError otherwise)."""
    found = sources(paths)
    given = {Path(p) for p in paths}
    runs = []
    for run in (read_run(f) for _, folders, _ in found for f in folders):
        if has_rows(run):
            runs.append(run)
        elif run.path in given:
            what = "holds no rows" if run.metrics.empty else f"lacks {' or '.join(REQUIRED)}"
            raise UserError(f"{run.path / METRICS_FILE} {what}; nothing to report yet")
    if not runs:
        raise UserError(f"no runs with rows under {', '.join(map(str, paths))} yet")
    specs = [spec for _, _, spec in found if spec is not None]
    swept = [k for spec in specs for k in spec.get("swept", []) if k != "seed"]
    groups, full, differ = group_runs(runs, swept, per_run)
    names = list(dict.fromkeys(name for name, _, _ in found))
    page_title = title(names, len(runs), len(groups))
    return Report(page_title, runs, specs[-1] if specs else None, groups, full, differ)
