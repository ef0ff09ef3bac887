"""The metric trackers: one per metric family, behind one protocol (`base.Tracker`), found by
name in `FAMILIES` (name -> config section, factory). A new family is one new module and one
line here; the monitor builds them in this order, which is the order of their row and summary
keys."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cl.schema import MetricsConfig, PlasticityConfig
from cl.trackers import (
    accuracy,
    example_forgetting,
    nfr,
    online,
    plasticity,
    strategy_stats,
    trainability,
)
from cl.trackers.base import Env, Evaluation, Step, Tracker

# name -> (its config section, "" for none; factory(section, env) -> tracker, or None when off)
FAMILIES: dict[str, tuple[str, Callable[[Any, Env], Tracker | None]]] = {
    "accuracy": ("metrics", accuracy.make),
    "online": ("metrics", online.make),
    "nfr": ("", nfr.make),
    "plasticity": ("plasticity", plasticity.make),
    "strategy": ("", strategy_stats.make),
    "example_forgetting": ("metrics.example_forgetting", example_forgetting.make),
    "trainability": ("plasticity", trainability.make),
}

__all__ = ["FAMILIES", "Env", "Evaluation", "Step", "Tracker", "build"]


def build(metrics: MetricsConfig, plasticity: PlasticityConfig, env: Env) -> dict[str, Tracker]:
    """The run's trackers (those the config's `metrics` and `plasticity` sections turn on),
    by name, in `FAMILIES` order; each factory gets its own section."""
    sections = {
        "": None,
        "metrics": metrics,
        "metrics.example_forgetting": metrics.example_forgetting,
        "plasticity": plasticity,
    }
    out = {}
    for name, (section, make) in FAMILIES.items():
        tracker = make(sections[section], env)
        if tracker is not None:
            out[name] = tracker
    return out
