"""Continual-learning strategies: small classes with optional hooks called by `cl.runner`.

Nothing here knows about W&B, files or the CLI. Build a list from config with `build`.
"""

from __future__ import annotations

import importlib
from typing import Any

from strategies.base import Strategy

__all__ = ["Strategy", "build"]


def build(spec: dict[str, dict[str, Any]]) -> list[Strategy]:
    """Instantiate strategies from an ordered {name: constructor kwargs} mapping."""
    from cl.catalog import STRATEGIES

    out = []
    for name, kwargs in spec.items():
        module, attr = STRATEGIES[name].target.split(":")
        cls = getattr(importlib.import_module(module), attr)
        out.append(cls(**dict(kwargs or {})))
    return out
