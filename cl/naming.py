"""What a run is called: its folder's default name and its plots' title, from its config."""

from __future__ import annotations

import hashlib
import json

from cl import config, plugins
from cl.schema import RunConfig


def _shipped(group: str, option: str, key: str):
    """`key` of configs/<group>/<option>.yaml (None if there is no such file or key)."""
    path = config.config_dir() / group / f"{option}.yaml"
    return (config._read_yaml(path) if path.is_file() else {}).get(key)


def default_name(cfg: RunConfig, plain_config: dict) -> str:
    """<benchmark>-<model>-<strategies>-s<seed>-<hash>: the benchmark as used (a native one
    on another source than its own: <scenario>_<source>, e.g. split_digits), a strategy whose
    memory is not its default kind gets it appended (replay_reservoir), and the hash covers
    every other setting but run.* and wandb.*, so runs that differ get different names."""
    b = cfg.benchmark
    bench = b.name
    if plugins.scenario(b.scenario).source and b.source != _shipped("benchmark", b.name, "source"):
        bench = f"{b.scenario}_{b.source}"
    label = plugins.label(cfg.strategy)
    if plugins.family_of(cfg.strategy).name == plugins.NATIVE:
        names = []
        for n, opts in cfg.strategy.items():
            buffer = opts.get("buffer") if isinstance(opts, dict) else getattr(opts, "buffer", None)
            own = _shipped("strategy", n, "buffer")
            names.append(f"{n}_{buffer}" if buffer and own and buffer != own else n)
        label = "+".join(names)
    rest = {k: v for k, v in plain_config.items() if k not in ("run", "wandb", "seed")}
    digest = hashlib.sha1(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()
    return f"{bench}-{cfg.model.name}-{label}-s{cfg.seed}-{digest[:6]}"


def title(cfg: RunConfig) -> str:
    """The plots' title: <benchmark> / <strategies>."""
    return f"{cfg.benchmark.name} / {plugins.label(cfg.strategy)}"
