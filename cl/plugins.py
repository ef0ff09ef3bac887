"""Registries the core owns, filled by add-ons: scenarios, strategy families, run finishers.

An add-on registers its entries from the function an entry point of the group `cl.plugins`
names (pyproject.toml: `avalanche = "cl.avalanche.registration:register"`). The core loads
them once, lazily: when a lookup misses the built-ins, or when it needs every entry (the
finishers, the list of choices). Registering imports nothing heavy: an entry's callables
import their add-on when they are called. Importing this module imports neither torch nor
any add-on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from cl.catalog import STRATEGIES

GROUP = "cl.plugins"


@dataclass(frozen=True)
class Scenario:
    """`benchmark.scenario=<name>`: a stream an add-on builds from its own data; it validates
    its own keys of `benchmark.*`."""

    name: str
    check: Callable[[Any], None]  # (benchmark DictConfig): UserError; may fill derived keys
    build: Callable[..., Any]  # (BenchmarkConfig, root, seed, eval_subset) -> cl Stream


@dataclass(frozen=True)
class Family:
    """`strategy=<name>.<Member>`: strategies an add-on runs, held in the config tree as
    `strategy: {<name>: {<Member>: {arg: value}}}`."""

    name: str
    title: str  # in messages: "mixes cl and <title> strategies"
    members: str  # what a list may hold, e.g. "one Avalanche strategy and any plugins"
    defaults: Callable[[str], dict]  # `<name>.<Member>` -> its config entry
    check: Callable[[dict], dict]  # `strategy.<name>` -> validated and converted
    driver: Callable[[], Callable]  # -> the run_stream that replaces cl.runner's
    owned: dict[str, str]  # arguments cl fills (refused if set): where their value comes from
    no_checkpoints: str = ""  # why its runs are neither checkpointed nor resumed ("": they are)


# A finisher writes an output of a run folder when the run ends; it returns an HTML page to
# log to W&B (or None). (folder, RunConfig) -> Path | None
Finisher = Callable[[Path, Any], Path | None]

SCENARIOS: dict[str, Scenario] = {}
FAMILIES: dict[str, Family] = {}
FINISHERS: dict[str, Finisher] = {}
_loaded = False


def load() -> None:
    """Run every `cl.plugins` entry point's register function (once per process)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for entry in entry_points(group=GROUP):
        entry.load()()


def scenario(name: str) -> Scenario | None:
    """The registered scenario `name` (None: not an add-on's)."""
    if name not in SCENARIOS:
        load()
    return SCENARIOS.get(name)


def scenarios() -> dict[str, Scenario]:
    load()
    return SCENARIOS


def family(name: str) -> Family | None:
    """The strategy family `name` (the part of `strategy=<name>.<Member>` before the dot)."""
    if name not in FAMILIES:
        load()
    return FAMILIES.get(name)


def family_of(spec: Any) -> Family | None:
    """The family of a config's `strategy` mapping: one key that names a family (None: cl's
    own strategies)."""
    if len(spec) != 1:
        return None
    key = next(iter(spec))
    return None if key in STRATEGIES else family(key)


def finishers() -> dict[str, Finisher]:
    load()
    return FINISHERS


def label(spec: Any) -> str:
    """The strategies of a config as one name: `avalanche.EWC`, `replay+center_loss`."""
    fam = family_of(spec)
    if fam is not None and isinstance(spec[fam.name], dict):
        return "+".join(f"{fam.name}.{n}" for n in spec[fam.name])
    return "+".join(spec)
