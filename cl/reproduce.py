"""`cl reproduce NAME`: run a paper reproduction over seeds and check its claims.

A reproduction is a folder `experiments/<name>/` with `reproduction.yaml` (title, paper, the
overrides `common` to every run, the `quick` ones added by `--quick`, the `arms` to compare,
the number of `seeds`), an optional `measure.py` (`quantities(run) -> dict` of quantities
beyond the summary's metrics; `figure(runs, path)`) and a README. Its arms x seeds run as one
sweep (`cl sweep`'s folder, executor and resume) in `--out/<name>`; the claims are the rows of
`experiments/targets.csv` for that experiment, evaluated on the run folders:

    quantity  `arm.metric` (a summary metric or one of measure.py's quantities), per seed
    rival     optional `arm.metric`; the claim is on the per-seed difference quantity - rival
    holds     mean over seeds of that difference `comparison` (> or <) `bound`
"""

from __future__ import annotations

import csv
import importlib.util
import math
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cl.errors import UserError
from cl.resources import shipped_folder

EXPERIMENTS = shipped_folder("experiments")
TARGETS = EXPERIMENTS / "targets.csv"


@dataclass
class Reproduction:
    """One experiment folder's reproduction.yaml."""

    name: str
    folder: Path
    title: str
    paper: str
    common: list[str]
    arms: dict[str, list[str]]
    seeds: int = 3
    quick: list[str] = field(default_factory=list)


@dataclass
class Claim:
    """One row of targets.csv."""

    experiment: str
    claim: str
    quantity: str
    comparison: str
    bound: float
    rival: str
    seeds: int
    source: str
    reproduced: str  # yes | no | "" (not measured at full scale yet)


def available() -> dict[str, Reproduction]:
    found = {}
    for path in sorted(EXPERIMENTS.glob("*/reproduction.yaml")):
        spec = yaml.safe_load(path.read_text())
        found[path.parent.name] = Reproduction(name=path.parent.name, folder=path.parent, **spec)
    return found


def claims(experiment: str | None = None) -> list[Claim]:
    with TARGETS.open(newline="") as f:
        rows = [Claim(**row) for row in csv.DictReader(f)]
    for c in rows:
        c.bound, c.seeds = float(c.bound), int(c.seeds)
    return [c for c in rows if experiment in (None, c.experiment)]


def measure_module(rep: Reproduction):
    path = rep.folder / "measure.py"
    if not path.is_file():
        return None
    spec = importlib.util.spec_from_file_location(f"cl_reproduce_{rep.name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sweep_spec(rep: Reproduction, quick: bool, seeds: int):
    """The arms x seeds as a sweep: trial `<arm>-s<seed>` with the arm's overrides as values."""
    from cl.sweep.spec import Spec, Trial

    trials = []
    for arm, overrides in rep.arms.items():
        values = dict(item.split("=", 1) for item in overrides)
        trials += [Trial(f"{arm}-s{s}", values | {"seed": str(s)}) for s in range(seeds)]
    common = [*rep.common, *(rep.quick if quick else []), "wandb.mode=disabled"]
    return Spec(trials=trials, common=common)


def per_seed(runs: dict[str, list], module) -> dict[str, list[float]]:
    """`arm.quantity` -> its value in each seed's run (NaN where a run did not finish)."""
    values: dict[str, list[float]] = {}
    for arm, seeds in runs.items():
        for s, run in enumerate(seeds):
            found = {k: v for k, v in run.summary.items() if isinstance(v, int | float)}
            if module is not None and hasattr(module, "quantities"):
                found |= module.quantities(run)
            if run.summary.get("status") != "finished":
                found = dict.fromkeys(found, math.nan)
            for k, v in found.items():
                values.setdefault(f"{arm}.{k}", [math.nan] * len(seeds))[s] = float(v)
    return values


def check(claim: Claim, values: dict[str, list[float]]) -> dict[str, Any]:
    """The claim's measured values and whether it holds on the mean over seeds."""
    for name in filter(None, (claim.quantity, claim.rival)):
        if name not in values:
            raise UserError(f"targets.csv: {claim.experiment} has no quantity {name!r}")
    q = values[claim.quantity]
    r = values[claim.rival] if claim.rival else [0.0] * len(q)
    diff = [a - b for a, b in zip(q, r, strict=True)]

    def ok(d: float) -> bool:
        return d > claim.bound if claim.comparison == ">" else d < claim.bound

    mean = statistics.fmean(diff) if diff else math.nan
    return {
        "experiment": claim.experiment,
        "claim": claim.claim,
        "quantity": claim.quantity,
        "measured": spread(q),
        "rival": f"{claim.rival} {spread(r)}" if claim.rival else "",
        "difference": spread(diff),
        "target": f"{claim.comparison} {claim.bound:g}",
        "seeds_holding": f"{sum(ok(d) for d in diff)}/{len(diff)}",
        "holds": "yes" if ok(mean) else "NO",
        "source": claim.source,
    }


def spread(xs: list[float]) -> str:
    if not xs or any(x != x for x in xs):
        return "n/a"
    std = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.fmean(xs):.4f} ± {std:.4f}"


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: claim, measured mean ± std over seeds (and the rival's), holds."""
    lines = ["| claim | measured | rival | target (difference) | seeds | holds |", "|---" * 6 + "|"]
    for r in rows:
        lines.append(
            f"| {r['claim']} | {r['quantity']} {r['measured']} | {r['rival']} | "
            f"{r['target']} ({r['difference']}) | {r['seeds_holding']} | {r['holds']} |"
        )
    return "\n".join(lines)


def reproduce(name: str, quick: bool, seeds: int | None, out: str | None, quiet: bool) -> int:
    """Run one reproduction (or `all`); print and write its claims table. Exit code: the
    sweep's (0, 1 when a run failed, 128+signal), else 0."""
    if seeds is not None and seeds < 1:  # a count: --seeds 3 runs seeds 0, 1, 2
        raise UserError(f"--seeds {seeds}: the number of seeds must be at least 1")
    reps = available()
    if name == "all":
        codes = [reproduce(n, quick, seeds, out, quiet) for n in reps]
        return max(codes, default=0)
    if name not in reps:
        raise UserError(f"no reproduction {name!r}; available: {', '.join(reps)}")
    from cl.sweep.driver import Options, start_sweep

    rep = reps[name]
    if seeds is None:
        seeds = 1 if quick else rep.seeds
    root = Path(out or Path(os.environ.get("CL_RUN_DIR", "runs")) / "reproduce").expanduser()
    label = f"{name}-quick" if quick else name
    spec = sweep_spec(rep, quick, seeds)
    code = start_sweep(spec, Options(name=label, dir=str(root)), quiet, reuse=True)
    if code >= 128:
        return code
    folder = root.resolve() / label
    from cl import load_run

    runs = {a: [load_run(folder / "runs" / f"{a}-s{s}") for s in range(seeds)] for a in rep.arms}
    module = measure_module(rep)
    values = per_seed(runs, module)  # read once: measure.py's quantities and figure share them
    rows = [check(c, values) for c in claims(name)]
    missed = [r for r in rows if r["holds"] == "NO"]
    if quick:  # the reduced scale (1 seed, fewer epochs) may miss what the full scale shows
        for r in missed:
            r["holds"] = "NO (quick scale)"
    text = f"## {rep.title}\n\n{table(rows)}\n"
    if quick:
        text += (
            f"\nquick scale: {len(missed)} of {len(rows)} claims missed; quick runs may miss "
            f"claims that hold at full scale (cl reproduce {name})\n"
        )
    (folder / "claims.md").write_text(text)
    with (folder / "claims.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}))
        w.writeheader()
        w.writerows(rows)
    if module is not None and hasattr(module, "figure"):
        module.figure(runs, folder / "figure.png")
    print(text + f"\n{folder}", file=sys.stdout)
    return code


def listing() -> str:
    lines = []
    for name, rep in available().items():
        n = len(claims(name))
        lines.append(f"{name:<20} {rep.title}  [{rep.paper}]  {n} claims, {rep.seeds} seeds")
    return "\n".join(lines)
