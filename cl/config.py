"""Compose YAML config groups with `key=value` overrides and validate them into a RunConfig.

Grammar (as in Hydra): `group=option` picks `configs/<group>/<option>.yaml`
(`strategy=[replay,naive]` composes several strategies, applied in order);
`a.b=value` sets a key. `experiment=name` loads `configs/experiment/name.yaml`, which may pick
groups (`defaults:`) and set keys. Importing this module does not import torch.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from cl import plugins
from cl.catalog import STRATEGIES
from cl.errors import UserError, comma_hint, did_you_mean
from cl.resources import shipped_folder
from cl.schema import RunConfig
from cl.validation import as_plain, validate  # noqa: F401 - as_plain: cl.config.as_plain

GROUPS = ("benchmark", "model", "strategy", "optim", "experiment")


def config_dir() -> Path:
    """The `configs/` folder: $CL_CONFIG_DIR, else cl's own (`cl.resources`)."""
    env = os.environ.get("CL_CONFIG_DIR")
    return Path(env) if env else shipped_folder("configs")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of keys to values")
    return data


def _group_file(group: str, option: str) -> dict:
    path = config_dir() / group / f"{option}.yaml"
    if not path.is_file():
        choices = ", ".join(options(group)) or "(none)"
        hint = comma_hint(group, option) or did_you_mean(option, options(group))
        raise UserError(f"unknown {group} '{option}'{hint}; valid choices: {choices}")
    return _read_yaml(path)


def parse_value(text: str, key: str | None = None) -> Any:
    """An override's value as YAML (`3` -> 3, `[a,b]` -> a list); text YAML cannot read is
    kept as it is, except an unclosed quote or bracket (UserError naming `key`)."""
    try:
        return yaml.safe_load(text) if text != "" else ""
    except (yaml.YAMLError, ValueError):  # ValueError: an integer of over 4,300 digits
        opening = text.lstrip()[:1]
        if opening in ("'", '"', "[", "{"):
            what = "quote" if opening in "'\"" else "bracket"
            shown = text if len(text) <= 60 else f"{text[:60]}..."
            raise UserError(f"{key}={shown} has an unclosed {what} ({opening}); close it") from None
        return text


def _key(item: str) -> str:
    return item.split("=", 1)[0].strip().lstrip("+")


def reject_repeats(overrides: list[str]) -> None:
    """UserError if the user gives one key twice (`seed=1 seed=2`): the last would win."""
    seen: dict[str, str] = {}
    for item in overrides:
        key = _key(item)
        if key in seen and "=" in item:
            raise UserError(f"key '{key}' is given twice ({seen[key]}, {item}); give it once")
        seen[key] = item


def parse_overrides(overrides: list[str]) -> tuple[dict[str, Any], list[tuple[str, Any]]]:
    """Split CLI overrides into group selections and dotted key assignments (a key given
    twice: the last wins; the CLI refuses that with `reject_repeats`)."""
    picks: dict[str, Any] = {}
    keys: list[tuple[str, Any]] = []
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override '{item}' is not of the form key=value (e.g. seed=3)")
        key, text = item.split("=", 1)
        key = key.strip().lstrip("+")
        if not key:
            raise UserError(f"override '{item}' has an empty key")
        value = parse_value(text, key)
        if key in GROUPS and not isinstance(value, dict):
            picks[key] = value
        else:
            keys.append((key, value))
    return picks, keys


def _strategy_names(value: Any) -> tuple[list[str], plugins.Family | None]:
    """The names picked, and their family (None: cl's own strategies)."""
    names = value if isinstance(value, list) else [value]
    if not names or not all(isinstance(n, str) and n for n in names):
        raise UserError(
            f"strategy must be a name or a list of names, got {value!r}; "
            f"valid choices: {', '.join(STRATEGIES)}"
        )
    families = {n: plugins.family(n.partition(".")[0]) if "." in n else None for n in names}
    family = next((f for f in families.values() if f is not None), None)
    if family is not None and any(f is not family for f in families.values()):
        raise UserError(
            f"strategy={names} mixes cl and {family.title} strategies; list either cl "
            f"strategies or {family.name}.<Name>s ({family.members})"
        )
    for n in names:
        if family is None and n not in STRATEGIES:
            hint = comma_hint("strategy", n) or did_you_mean(n, STRATEGIES)
            raise UserError(f"unknown strategy '{n}'{hint}; valid choices: {', '.join(STRATEGIES)}")
    if len(set(names)) != len(names):
        raise UserError(f"strategy lists '{names}' with a repeated name")
    return names, family


def compose(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose the config tree for `overrides` (no validation beyond the schema)."""
    base = _read_yaml(config_dir() / "config.yaml")
    picks = dict(base.pop("defaults", {}) or {})
    cli_picks, cli_keys = parse_overrides(list(overrides))
    experiment = cli_picks.pop("experiment", picks.pop("experiment", None))
    exp_values: dict = {}
    if experiment:
        exp_values = _group_file("experiment", str(experiment))
        picks.update(exp_values.pop("defaults", {}) or {})
    picks.update(cli_picks)

    tree: dict[str, Any] = {**base}
    for group in ("benchmark", "model", "optim"):
        if group in picks:
            tree[group] = {**tree.get(group, {}), **_group_file(group, str(picks[group]))}
    names, family = _strategy_names(picks.get("strategy", "naive"))
    if family is not None:  # strategy.<family>.<Name>.<arg>
        members = {n.partition(".")[2]: family.defaults(n) for n in names}
        tree["strategy"] = {family.name: members}
        if family.no_checkpoints:
            _no_checkpoint_keys(names, cli_keys, family.no_checkpoints)
            tree["run"] = {**tree.get("run", {}), "checkpoint": False}
    else:
        tree["strategy"] = {n: _group_file("strategy", n) or {} for n in names}

    schema = OmegaConf.structured(RunConfig)
    try:
        cfg = OmegaConf.merge(schema, tree, exp_values)
        OmegaConf.set_struct(cfg, True)
        for key, value in cli_keys:
            _assign(cfg, key, value)
    except OmegaConfBaseException as e:
        raise UserError(_explain(e)) from None
    return cfg


def _no_checkpoint_keys(names: list[str], keys: list[tuple[str, Any]], why: str) -> None:
    for key, value in keys:
        if key.startswith("run.checkpoint") and not (key == "run.checkpoint" and value is False):
            raise UserError(
                f"'{key}' does not apply to strategy={','.join(names)}: {why}, so their runs "
                "are not checkpointed and cannot be resumed"
            )


def _assign(cfg: DictConfig, key: str, value: Any) -> None:
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if parent_key == "strategy" and leaf not in parent:
        first = next(iter(parent), "replay")
        raise UserError(
            f"unknown key '{key}': strategy options are set per strategy, "
            f"e.g. strategy.{first}.{leaf}=value"
        )
    if parent is None and key.startswith("strategy."):
        raise UserError(
            f"'{key}' sets an option of a strategy that is not selected; "
            f"selected: {', '.join(cfg.strategy)} (pick it with strategy=...)"
        )
    family = plugins.family_of(cfg.strategy)  # arguments cl fills for an add-on's strategies
    if (
        family is not None
        and key.startswith(f"strategy.{family.name}.")
        and leaf in family.owned
        and isinstance(parent, DictConfig)
    ):
        raise UserError(
            f"{key} is set by cl from {family.owned[leaf]}; remove it "
            f"(arguments that can be set: {', '.join(parent.keys()) or '(none)'})"
        )
    if parent_key == "benchmark.args" and isinstance(parent, DictConfig):
        with open_dict(parent):  # an Avalanche benchmark's arguments: checked in validation
            parent[leaf] = OmegaConf.create(value) if isinstance(value, list | dict) else value
        return
    if not isinstance(parent, DictConfig) or leaf not in parent.keys():  # keys(): also ???
        raise UserError(_unknown_key(cfg, key))
    if isinstance(value, list | dict):
        value = OmegaConf.create(value)
    OmegaConf.update(cfg, key, value, merge=False)


def _unknown_key(cfg: DictConfig, key: str) -> str:
    """The message for an unknown dotted key: its first unknown part, the closest keys."""
    node, done = cfg, []
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node.keys():
            break
        node, done = node[part], [*done, part]
    where = ".".join(done)
    if not isinstance(node, DictConfig):
        return f"unknown key '{key}': {where} is a value, not a group of keys"
    valid = list(node.keys())
    prefix = f"{where}." if where else ""
    bad = key.split(".")[len(done)]
    close = difflib.get_close_matches(bad, valid, n=2, cutoff=0.6)
    rest = key.split(".")[len(done) + 1 :]
    hint = (
        " (did you mean " + " or ".join(repr(".".join([prefix + c, *rest])) for c in close) + "?)"
        if close
        else ""
    )
    return f"unknown key '{key}'{hint}; valid keys {'in ' + where if where else 'at the top'}: " + (
        ", ".join(valid) or "(none)"
    )


def _explain(e: OmegaConfBaseException) -> str:
    key = getattr(e, "full_key", None)
    msg = str(e).splitlines()[0]
    if len(msg) > 300:  # the value itself can be huge
        msg = f"{msg[:200]}... ({len(msg)} characters)"
    if "not in struct" in msg or "Key '" in msg and "not" in msg:
        return f"unknown key '{key}': {msg}"
    return f"invalid value for '{key}': {msg}" if key else msg


def load(overrides: list[str] | tuple[str, ...] = ()) -> tuple[RunConfig, DictConfig]:
    """Compose and validate; returns the typed config and its resolved tree."""
    cfg = compose(overrides)
    return validate(cfg), cfg


# Keys a resumed run may change: they do not touch its results (run.device moves the run to
# another device, where it goes on correctly but not bit for bit).
RESUME_KEYS = (
    "run.device",
    "run.progress",
    "run.checkpoint",
    "run.checkpoint_every",
    "run.checkpoint_minutes",
    "run.row_chunk",
    "run.nproc",  # the global batch stays train.batch_size: N -> M ranks continue the same run
    "wandb.mode",
    "wandb.init_timeout",
)


def load_saved(path: Path, overrides: list[str] | tuple[str, ...] = ()):
    """The config a run folder was started with (its config.yaml), validated again, with
    `overrides` limited to RESUME_KEYS; returns (RunConfig, resolved tree)."""
    picks, keys = parse_overrides(list(overrides))
    for key in [*picks, *(k for k, _ in keys)]:
        if key not in RESUME_KEYS:
            raise UserError(
                f"'{key}' cannot change on resume: the run continues with the config it "
                f"started with ({path}); allowed on resume: {', '.join(RESUME_KEYS)}"
            )
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), _read_yaml(path))
        OmegaConf.set_struct(cfg, True)
        for key, value in keys:
            _assign(cfg, key, value)
    except OmegaConfBaseException as e:
        raise UserError(f"{path}: {_explain(e)}") from None
    return validate(cfg), cfg


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
