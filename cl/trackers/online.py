"""Online (prequential) accuracy and training loss of the batches since the last row, and
learning speed, from the training steps."""

from __future__ import annotations

import math

import numpy as np
import torch

from cl import metrics
from cl.errors import RunFailed
from cl.schema import MetricsConfig
from cl.trackers.base import Env, Evaluation, Step, Tracker


class Online(Tracker):
    keys = (
        "train/loss", "train/online_acc", "online_acc", "online_acc_per_task",
        "learning_speed", "learning_speed_per_task",
    )  # fmt: skip
    on_host = True

    def __init__(self, cfg: MetricsConfig):
        self.cfg = cfg
        self.loss: list[float] = []
        self.correct: list[int] = []
        self.seen: list[int] = []
        self.online: dict[int, list[float]] = {}  # task -> its batches' accuracies

    def step(self, step: Step) -> None:
        self.loss.append(step.loss)
        self.correct.append(step.correct)
        self.seen.append(step.n)

    def window(self, ev: Evaluation) -> dict:
        if not self.loss:
            return {}
        k, steps = ev.experience, len(self.loss)
        loss = sum(self.loss) / steps
        if not math.isfinite(loss):
            raise RunFailed(
                f"the training loss became {loss} in the {steps} iteration(s) before iteration "
                f"{ev.iteration} (experience {k}); lower optim.lr or check the data. Rows "
                "logged so far are kept."
            )
        hits = self.correct
        self.online.setdefault(k, []).extend(h / n for h, n in zip(hits, self.seen, strict=True))
        out = {"train/loss": loss, "train/online_acc": sum(hits) / sum(self.seen)}
        self.loss, self.correct, self.seen = [], [], []
        return out

    def summary(self) -> dict:
        m, online = self.cfg, self.online
        tasks = sorted(online)
        everything = [a for k in tasks for a in online[k]]
        speeds = [metrics.learning_speed(online[k], m.speed_target, m.speed_window) for k in tasks]
        reached = [s for s in speeds if s is not None]
        return {
            "online_acc": float(np.mean(everything)) if everything else None,
            "online_acc_per_task": [float(np.mean(online[k])) for k in tasks],
            "learning_speed": float(np.mean(reached)) if reached else None,
            "learning_speed_per_task": speeds,
        }

    def state_dict(self) -> dict:
        f64 = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731 - exact for floats
        return {
            "online": {k: f64(v) for k, v in self.online.items()},
            "loss": f64(self.loss) if self.loss else None,
            "correct": torch.tensor(self.correct) if self.correct else None,
            "seen": list(self.seen),
        }

    def load_state_dict(self, state: dict) -> None:
        self.online = {k: v.tolist() for k, v in state["online"].items()}
        self.loss = [] if state["loss"] is None else state["loss"].tolist()
        self.correct = [] if state["correct"] is None else state["correct"].tolist()
        self.seen = list(state["seen"])


def make(cfg: MetricsConfig, env: Env) -> Online:
    return Online(cfg)
