"""The strategy hook contract. Every hook is optional; the runner calls them in list order."""

from __future__ import annotations

from typing import Any

import torch

from cl.context import Batch, Context


class Strategy:
    """Base class: no-op hooks. Subclasses override the few they need.

    Order within one training iteration: `batch` -> forward -> `loss` -> backward ->
    `after_backward` -> optimizer step -> `after_step`. Around each experience:
    `before_experience`, `train_data` (what to train on), ..., `after_experience`.
    """

    name = "strategy"

    def setup(self, ctx: Context) -> None:
        """Called once before the first experience."""

    def before_experience(self, ctx: Context) -> None:
        """Called at the start of each experience."""

    def train_data(
        self, ctx: Context, x: torch.Tensor, y: torch.Tensor, task: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The tensors to train on during this experience (default: the experience's own)."""
        return x, y, task

    def batch(self, ctx: Context, batch: Batch) -> Batch:
        """Transform the training batch (e.g. mix in replayed samples)."""
        return batch

    def loss(self, ctx: Context, batch: Batch, output: torch.Tensor) -> torch.Tensor | None:
        """An extra loss term added to the task loss, or None.

        `output` holds the (task-masked) logits of `batch`; `ctx.features` the penultimate
        features of the same forward pass, with gradients.
        """
        return None

    def after_backward(self, ctx: Context) -> None:
        """Edit gradients before the optimizer step (e.g. GEM projection)."""

    def after_step(self, ctx: Context) -> None:
        """Act on the weights after the optimizer step."""

    def after_experience(self, ctx: Context) -> None:
        """Called at the end of each experience (e.g. memory update)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
