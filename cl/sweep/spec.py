"""What a sweep runs: its trials, from Hydra-style multirun overrides or a W&B sweep file.

Overrides: `key=a,b,c` sweeps a key over values (commas at the top level only, so
`strategy=[replay,center_loss],naive` is two values), `key=range(0,5)` over 0..4, and a
plain `key=value` is common to every trial; the grid is the product, last key fastest.
Spec files use W&B's sweep-configuration format (`method: grid | random`, `parameters` with
`value`, `values` or a `distribution` and its bounds, nested `parameters`, `run_cap` or
`count` for random); `program`, `command`, `early_terminate` and `description` mean nothing
here and are ignored with a note.
"""

from __future__ import annotations

import itertools
import math
import random
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cl.errors import UserError

SWEEP_KEYS = (
    "name", "dir", "workers", "threads", "executor", "address", "retries", "metric", "max_trials",
    "devices_per_trial",
)  # fmt: skip
MAX_TRIALS = 10_000  # a larger sweep is refused unless sweep.max_trials is raised
IGNORED = ("program", "command", "early_terminate", "description")
RANGE = re.compile(r"range\(\s*(-?\d+)\s*,\s*(-?\d+)\s*(?:,\s*(-?\d+)\s*)?\)")


@dataclass
class Trial:
    """One run of the sweep: its name (also its run folder's) and its swept values."""

    name: str
    values: dict[str, str]  # swept key -> value as override text


@dataclass
class Spec:
    """The trials, the overrides common to all of them, and the metric to sort by."""

    trials: list[Trial]
    common: list[str] = field(default_factory=list)
    metric: str | None = None  # from a W&B spec's `metric.name`
    goal: str | None = None  # maximize | minimize
    options: dict[str, Any] = field(default_factory=dict)  # sweep.* from a W&B spec
    notes: list[str] = field(default_factory=list)


def split_top(text: str) -> list[str]:
    """Split at commas outside brackets and quotes."""
    parts, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _range(key: str, text: str) -> range | None:
    """`range(a,b[,c])` as a range (not expanded); None if `text` is not one."""
    m = RANGE.fullmatch(text.strip())
    if not m:
        return None
    try:
        start, stop, step = int(m[1]), int(m[2]), int(m[3] or 1)
    except ValueError:  # over 4,300 digits
        raise UserError(f"{key}={text[:60]}...: range bounds too large") from None
    if step == 0 or not range(start, stop, step):
        raise UserError(f"{key}={text} is an empty range")
    return range(start, stop, step)


def sweep_values(key: str, text: str) -> list[str]:
    """The values of `key=text` as override texts: a comma list, range(...), or one value."""
    r = _range(key, text)
    if r is not None:
        return [str(v) for v in r]
    values = split_top(text)
    if len(values) > 1 and any(v == "" for v in values):
        raise UserError(f"{key}={text} has an empty value in its comma list")
    return [v[1:-1] if len(v) > 1 and v[0] == v[-1] and v[0] in "'\"" else v for v in values]


def trial_name(index: int, values: dict[str, str]) -> str:
    """`007-strategy=replay-seed=2`: a safe run-folder name (cl's run.name rules)."""
    parts = [f"{k}={v}" for k, v in values.items()]
    text = re.sub(r"[^A-Za-z0-9_.+=,@-]", "", "-".join(parts).replace(",", "+"))
    return f"{index:03d}-{text}"[:120].rstrip("-.") if text else f"{index:03d}"


def check_size(n: int, max_trials: int) -> None:
    if n > max_trials:
        raise UserError(
            f"the sweep has {n:,} trials, more than sweep.max_trials={max_trials:,}; sweep "
            "fewer values, or raise sweep.max_trials if you mean it"
        )


def _count(item: str) -> int:
    """How many values override `item` sweeps, without expanding a range."""
    key, text = item.split("=", 1)
    r = _range(key, text)
    if r is None:
        return len(split_top(text))
    try:
        return len(r)
    except OverflowError:  # more than sys.maxsize values
        return sys.maxsize


def from_overrides(overrides: list[str], max_trials: int = MAX_TRIALS) -> Spec:
    """The grid of `overrides` (Hydra's multirun grammar); UserError if it holds more than
    `max_trials` trials (checked before the grid is expanded)."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override '{item}' is not of the form key=value (e.g. seed=0,1,2)")
    check_size(math.prod(map(_count, overrides)), max_trials)
    swept: dict[str, list[str]] = {}
    common = []
    for item in overrides:
        key, text = item.split("=", 1)
        values = sweep_values(key, text)
        if len(values) > 1 or RANGE.fullmatch(text.strip()):
            if key in swept:
                raise UserError(f"{key} is swept twice")
            swept[key] = values
        else:
            common.append(f"{key}={values[0]}")
    keys = list(swept)
    combos = itertools.product(*(swept[k] for k in keys))
    trials = [Trial("", dict(zip(keys, c, strict=True))) for c in combos]
    for i, t in enumerate(trials):
        t.name = trial_name(i, t.values)
    return Spec(trials, common)


def _text(value: Any) -> str:
    """A value as override text that parses back to it (floats exactly)."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=10**9).strip().removesuffix("\n...")


def _flatten(params: dict, prefix: str = "") -> dict[str, dict]:
    out = {}
    for key, p in params.items():
        if not isinstance(p, dict):
            raise UserError(f"parameters.{prefix}{key} must be a mapping (value, values, ...)")
        if "parameters" in p:
            out |= _flatten(p["parameters"], f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = p
    return out


def _draw(key: str, p: dict, rng: random.Random) -> Any:
    """One random value of parameter `p` (W&B's distributions)."""
    kind = p.get("distribution")
    if kind is None:
        if "value" in p:
            kind = "constant"
        elif "values" in p:
            kind = "categorical"
        elif isinstance(p.get("min"), int) and isinstance(p.get("max"), int):
            kind = "int_uniform"
        else:
            kind = "uniform"
    lo, hi, q = p.get("min"), p.get("max"), p.get("q", 1.0)
    mu, sigma = p.get("mu", 0.0), p.get("sigma", 1.0)
    quant = lambda v: round(v / q) * q if isinstance(q, float) else int(round(v / q) * q)  # noqa: E731
    draws = {
        "constant": lambda: p["value"],
        "categorical": lambda: rng.choices(p["values"], weights=p.get("probabilities"))[0],
        "int_uniform": lambda: rng.randint(lo, hi),
        "uniform": lambda: rng.uniform(lo, hi),
        "q_uniform": lambda: quant(rng.uniform(lo, hi)),
        "log_uniform": lambda: math.exp(rng.uniform(lo, hi)),
        "log_uniform_values": lambda: math.exp(rng.uniform(math.log(lo), math.log(hi))),
        "q_log_uniform": lambda: quant(math.exp(rng.uniform(lo, hi))),
        "q_log_uniform_values": lambda: quant(math.exp(rng.uniform(math.log(lo), math.log(hi)))),
        "inv_log_uniform": lambda: math.exp(-rng.uniform(lo, hi)),
        "inv_log_uniform_values": lambda: math.exp(rng.uniform(math.log(lo), math.log(hi))),
        "normal": lambda: rng.gauss(mu, sigma),
        "q_normal": lambda: quant(rng.gauss(mu, sigma)),
        "log_normal": lambda: math.exp(rng.gauss(mu, sigma)),
        "q_log_normal": lambda: quant(math.exp(rng.gauss(mu, sigma))),
        "beta": lambda: rng.betavariate(p.get("a", 1.0), p.get("b", 1.0)),
        "q_beta": lambda: quant(rng.betavariate(p.get("a", 1.0), p.get("b", 1.0))),
    }
    if kind not in draws:
        raise UserError(
            f"parameters.{key}: unknown distribution '{kind}'; valid: {', '.join(draws)}"
        )
    try:
        return draws[kind]()
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"parameters.{key}: bad bounds for distribution {kind} ({e})") from None


def _grid_values(key: str, p: dict) -> list[Any]:
    if "value" in p:
        return [p["value"]]
    if "values" in p and p.get("distribution", "categorical") == "categorical":
        return list(p["values"])
    if p.get("distribution", "int_uniform") == "int_uniform" and {"min", "max"} <= set(p):
        if isinstance(p["min"], int) and isinstance(p["max"], int):
            return list(range(p["min"], p["max"] + 1))
    raise UserError(
        f"parameters.{key}: method grid needs value, values or integer min/max; "
        "a distribution needs method: random"
    )


def _grid_count(key: str, p: dict) -> int:
    """How many values `_grid_values` gives, without expanding an integer min/max range."""
    categorical = "values" in p and p.get("distribution", "categorical") == "categorical"
    integers = isinstance(p.get("min"), int) and isinstance(p.get("max"), int)
    if "value" in p or categorical or not integers:
        return len(_grid_values(key, p))
    _grid_values(key, {**p, "min": 0, "max": 0})  # the same checks, on a tiny range
    return max(0, p["max"] - p["min"] + 1)


def from_wandb_file(path: str | Path, seed: int = 0, max_trials: int = MAX_TRIALS) -> Spec:
    """The trials of a W&B sweep-configuration file (grid or random; random drawn with
    `seed`, so the same file gives the same trials); UserError above `max_trials` trials."""
    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"cannot read the sweep spec {path}: {e}") from None
    if not isinstance(spec, dict):
        raise UserError(f"{path} must hold a W&B sweep configuration (a mapping)")
    known = {"method", "parameters", "name", "metric", "run_cap", "count", "project", "entity"}
    unknown = set(spec) - known - set(IGNORED)
    if unknown:
        raise UserError(
            f"{path}: unknown sweep keys {sorted(unknown)}; valid: "
            f"{', '.join(sorted(known | set(IGNORED)))}"
        )
    notes = [
        f"note: {path.name}: '{k}' means nothing to cl sweep; ignored" for k in IGNORED if k in spec
    ]
    method = spec.get("method")
    if method not in ("grid", "random"):
        raise UserError(
            f"{path}: method={method!r}; cl sweep runs grid or random offline "
            "(bayes needs the W&B server)"
        )
    params = _flatten(spec.get("parameters") or {})
    if not params:
        raise UserError(f"{path}: parameters is empty")
    keys = list(params)
    if method == "grid":
        check_size(math.prod(_grid_count(k, params[k]) for k in keys), max_trials)
        combos = list(itertools.product(*(_grid_values(k, params[k]) for k in keys)))
    else:
        count = spec.get("run_cap", spec.get("count"))
        if not isinstance(count, int) or count <= 0:
            raise UserError(f"{path}: method random needs run_cap (or count), a positive integer")
        check_size(count, max_trials)
        rng = random.Random(seed)
        combos = [tuple(_draw(k, params[k], rng) for k in keys) for _ in range(count)]
    varying = [k for k in keys if len({_text(c[keys.index(k)]) for c in combos}) > 1 or k == "seed"]
    common = [f"{k}={_text(combos[0][keys.index(k)])}" for k in keys if k not in varying]
    trials = []
    for i, combo in enumerate(combos):
        values = {k: _text(v) for k, v in zip(keys, combo, strict=True) if k in varying}
        trials.append(Trial(trial_name(i, values), values))
    options: dict[str, Any] = {}
    if "name" in spec:
        options["name"] = str(spec["name"])
    common += [f"wandb.{k}={spec[k]}" for k in ("project", "entity") if k in spec]
    metric = spec.get("metric") or {}
    if metric and not isinstance(metric, dict):
        raise UserError(f"{path}: metric must be a mapping with name and goal")
    return Spec(trials, common, metric.get("name"), metric.get("goal"), options, notes)
