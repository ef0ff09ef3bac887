"""Accuracy family: per-task accuracy and loss, the streaming stability-gap series, and the
forgetting and stability-gap summary from the evaluation record (cl/metrics.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from cl import metrics
from cl.schema import MetricsConfig
from cl.trackers.base import Env, Evaluation, Tracker


@dataclass
class Record:
    """Per evaluation: accuracies (NaN where not scored), experience, iteration."""

    accs: list[list[float]] = field(default_factory=list)
    experience: list[int] = field(default_factory=list)
    iteration: list[int] = field(default_factory=list)


class Accuracy(Tracker):
    keys = (
        "eval/acc/task_{i}", "eval/loss/task_{i}", "eval/acc/avg_seen", "sg/min_acc",
        "sg/wc_acc", "sg/wf_{w}", "sg/wp_{w}", "acc", "aaa", "bwt", "fwt", "forgetting",
        "forgetting_per_task", "forgetting_initial_last", "forgetting_initial_last_per_task",
        "min_acc", "wc_acc", "lca", "gap_depth", "recovery_time", "recovery_rate",
        "n_unrecovered",
        "accuracy_matrix", "wf_{w}", "wp_{w}", "wp_official_{w}",
    )  # fmt: skip
    on_host = True

    def __init__(self, cfg: MetricsConfig, n_tasks: int):
        self.cfg, self.n_tasks = cfg, n_tasks
        self.streaming = metrics.StreamingMetrics(tuple(cfg.windows))
        self.record = Record()

    def row(self, ev: Evaluation) -> dict:
        row = {}
        for i, (a, lo) in enumerate(zip(ev.accs, ev.losses, strict=True)):
            row[f"eval/acc/task_{i}"] = a
            row[f"eval/loss/task_{i}"] = lo
        row.update(self.streaming.update(ev.experience, ev.accs))
        r = self.record
        r.accs.append(ev.accs + [float("nan")] * (self.n_tasks - len(ev.accs)))
        r.experience.append(ev.experience)
        r.iteration.append(ev.iteration)
        return row

    def summary(self) -> dict:
        r, m = self.record, self.cfg
        if not r.accs:
            return {}
        A, exp, it = np.array(r.accs), np.array(r.experience), np.array(r.iteration)
        return metrics.summarize(
            A, exp, it, self.n_tasks, tuple(m.windows), m.lca_beta, m.transfer_normaliser,
            m.recovery_tolerance,
        )  # fmt: skip

    def state_dict(self) -> dict:
        r = self.record
        return {
            "accs": torch.tensor(r.accs, dtype=torch.float64).reshape(len(r.accs), self.n_tasks),
            "experience": list(r.experience),
            "iteration": list(r.iteration),
            "streaming": self.streaming.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.record = Record(
            state["accs"].tolist(), list(state["experience"]), list(state["iteration"])
        )
        self.streaming.load_state_dict(state["streaming"])


def make(cfg: MetricsConfig, env: Env) -> Accuracy:
    return Accuracy(cfg, env.stream.n_tasks)
