"""The one protocol of a metric family (`Tracker`) and what the monitor hands it: the training
step (`Step`), the row's one batched evaluation (`Evaluation`) and the run's parts (`Env`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cl.evaluation import Evaluator


@dataclass
class Env:
    """What a tracker's factory may use besides its own config section."""

    stream: Any
    model: nn.Module
    device: torch.device | str
    seed: int
    evaluator: Evaluator  # the rows' evaluator (its `ends` lay out the samples of `hits`)
    eval_batch_size: int


@dataclass
class Step:
    """One training iteration: loss and correct count of its new samples (device scalars, or
    host numbers for `on_host` trackers), the gradient norm (when asked for), the strategies'
    statistics, the number of new samples."""

    loss: torch.Tensor | float
    correct: torch.Tensor | int
    grad_norm: float | None
    stats: dict[str, float]
    n: int


@dataclass
class Evaluation:
    """One row's evaluation of the scored tasks (seen ones, all at boundaries): accuracies,
    losses and per-sample correctness `hits` (a device tensor laid out task after task, `ends`
    cumulative). `accs` and `losses` are host lists for `on_host` trackers; the others see
    them still on the device (`accs` a (2, n) tensor, `losses` None)."""

    model: nn.Module
    experience: int
    iteration: int
    boundary: bool
    accs: list[float] | torch.Tensor
    losses: list[float] | None
    hits: torch.Tensor
    ends: list[int]


class Tracker:
    """One metric family. After every training iteration the monitor calls `step`; when a row
    is due (`due` of any tracker, or `eval.every`) it evaluates once and asks every tracker,
    in registry order, first for `window` (what it saw since the last row), then for `row`
    (what it measures now). `summary` gives the final values; `keys` names every registry key
    (row and summary) it logs. The defaults do nothing."""

    keys: tuple[str, ...] = ()
    # True: `step`, `window` and `row` run when the row reaches the host (monitor.flush), with
    # host numbers (Step.loss, Step.correct, Evaluation.accs, .losses); False: at the row's
    # iteration, with device tensors (its row values may be device scalars, copied later)
    on_host: bool = False

    def due(self, iteration: int) -> bool:
        """Whether this family needs a row at `iteration` (besides every `eval.every`)."""
        return False

    def wants_grad_norm(self, iteration: int) -> bool:
        """Whether the training step of `iteration` should measure the gradient norm."""
        return False

    def step(self, step: Step) -> None:
        pass

    def window(self, ev: Evaluation) -> dict:
        return {}

    def row(self, ev: Evaluation) -> dict:
        return {}

    def summary(self) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
