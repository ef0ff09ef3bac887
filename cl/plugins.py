"""Registries the core owns: scenarios, strategy families, run finishers. One lookup path:
cl's own scenarios (split, permuted, rotated, random_labels) and its own strategy family
(`cl`: the strategies of `cl.catalog.STRATEGIES`) are entries too, registered here when this
module is imported; add-ons add theirs.

An add-on registers its entries from the function an entry point of the group `cl.plugins`
names (pyproject.toml: `avalanche = "cl.avalanche.registration:register"`). The core loads
them once, lazily: when a lookup misses the built-ins, or when it needs every entry (the
finishers, the list of choices). Registering imports nothing heavy: an entry's callables
import their add-on when they are called. Importing this module imports neither torch nor
any add-on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from cl import catalog

GROUP = "cl.plugins"
NATIVE = "cl"  # the name of cl's own strategy family


@dataclass(frozen=True)
class Scenario:
    """`benchmark.scenario=<name>`: a stream built from cl's data source `benchmark.source`
    (cl's own scenarios: `source`) or from the scenario's own data (an add-on's); it validates
    its own keys of `benchmark.*`."""

    name: str
    check: Callable[[Any], None]  # (benchmark DictConfig): UserError; may fill derived keys
    build: Callable[
        ..., Any
    ]  # (BenchmarkConfig, Dataset | None, seed, eval_subset, root) -> Stream
    source: bool = False  # True: built from `benchmark.source`, which the core loads first


@dataclass(frozen=True)
class Family:
    """A family of strategies. An add-on's are picked as `strategy=<name>.<Member>` and held in
    the config tree as `strategy: {<name>: {<Member>: {arg: value}}}` (`nested`); cl's own
    (`NATIVE`) as `strategy=replay,center_loss`, held as `strategy: {replay: {...}, ...}`."""

    name: str
    title: str  # in messages: "mixes cl and <title> strategies"
    members: str  # what a list may hold, e.g. "one Avalanche strategy and any plugins"
    check: Callable[[dict], dict]  # the config's `strategy` (plain) -> validated and converted
    driver: Callable[[], Callable]  # -> the run_stream that trains (cl's: cl.runner's)
    build: Callable[[dict], list] = lambda spec: []  # `strategy` -> the hooks cl's runner calls
    check_run: Callable[[Any], None] = lambda cfg: None  # (typed RunConfig): UserError
    defaults: Callable[[str], dict] | None = None  # `<name>.<Member>` -> its config entry
    owned: dict[str, str] = field(default_factory=dict)  # arguments cl fills (refused if set)
    no_checkpoints: str = ""  # why its runs are neither checkpointed nor resumed ("": they are)
    nested: bool = True  # False: cl's own, the keys of `strategy` are the strategies


# A finisher writes an output of a run folder when the run ends; it returns an HTML page to
# log to W&B (or None). (folder, the config's `run` section) -> Path | None
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
    """The registered scenario `name` (None: no such scenario)."""
    if name not in SCENARIOS:
        load()
    return SCENARIOS.get(name)


def scenarios() -> dict[str, Scenario]:
    load()
    return SCENARIOS


def family(name: str) -> Family | None:
    """The add-on family `name` (the part of `strategy=<name>.<Member>` before the dot; None:
    no such family)."""
    if name not in FAMILIES:
        load()
    found = FAMILIES.get(name)
    return found if found is not None and found.nested else None


def family_of(spec: Any) -> Family:
    """The family of a config's `strategy` mapping: an add-on's when its one key names one,
    else cl's own."""
    key = next(iter(spec)) if len(spec) == 1 else None
    found = None if key is None or key in catalog.STRATEGIES else family(key)
    return found or FAMILIES[NATIVE]


def finishers() -> dict[str, Finisher]:
    load()
    return FINISHERS


def label(spec: Any) -> str:
    """The strategies of a config as one name: `avalanche.EWC`, `replay+center_loss`."""
    fam = family_of(spec)
    if fam.nested and isinstance(spec[fam.name], dict):
        return "+".join(f"{fam.name}.{n}" for n in spec[fam.name])
    return "+".join(spec)


def _target(path: str, call: bool = True) -> Callable:
    """`module:attribute`, imported when first used (the catalog's way: the core names its
    heavy parts, it does not import them): a function that calls it, or (call=False) one
    that returns it."""

    def load_target(*args, **kwargs):
        module, _, attr = path.partition(":")
        found = getattr(import_module(module), attr)
        return found(*args, **kwargs) if call else found

    return load_target


def _register_builtins() -> None:
    """cl's own entries: its scenarios (cl.streams) and its strategy family (cl.strategy)."""
    for name in catalog.SCENARIOS:
        SCENARIOS[name] = Scenario(
            name,
            check=_target("cl.validation:check_source_benchmark"),
            build=_target("cl.streams:source_stream"),
            source=True,
        )
    FAMILIES[NATIVE] = Family(
        NATIVE,
        title="cl",
        members="cl strategies, applied in order",
        check=_target("cl.strategy:check_spec"),
        driver=_target("cl.runner:run_stream", call=False),
        build=_target("cl.strategy:build"),
        check_run=_target("cl.strategy:check_run"),
        nested=False,
    )


_register_builtins()
