"""Strategies' own statistics (`Strategy.metrics()`): each row logs the mean since the last
row that reported it, the summary the mean over the run."""

from __future__ import annotations

from cl.trackers.base import Env, Evaluation, Step, Tracker


class StrategyStats(Tracker):
    keys = ("strategy/{name}/{stat}",)

    def __init__(self):
        self.window_values: dict[str, list[float]] = {}  # since the last row
        self.total: dict[str, list[float]] = {}  # key -> [sum, count] over the run

    def step(self, step: Step) -> None:
        for key, value in step.stats.items():
            self.window_values.setdefault(key, []).append(float(value))
            total = self.total.setdefault(key, [0.0, 0.0])
            total[0], total[1] = total[0] + float(value), total[1] + 1

    def window(self, ev: Evaluation) -> dict:
        out = {key: sum(v) / len(v) for key, v in self.window_values.items()}
        self.window_values = {}
        return out

    def summary(self) -> dict:
        return {key: total / count for key, (total, count) in self.total.items()}

    def state_dict(self) -> dict:
        return {
            "window": {k: list(v) for k, v in self.window_values.items()},
            "total": {k: list(v) for k, v in self.total.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        self.window_values = {k: list(v) for k, v in state["window"].items()}
        self.total = {k: list(v) for k, v in state["total"].items()}


def make(cfg: None, env: Env) -> StrategyStats:
    return StrategyStats()
