"""What the runner hands to strategies: the current batch and the run context."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch.nn import functional as F

if TYPE_CHECKING:
    from cl.streams import Stream


@dataclass
class Batch:
    """One training batch. The first `n_new` samples are the current task's data.

    `weight` (optional) gives each sample's weight in the task loss, which is then
    `sum(weight * CE)`; without it the task loss is the plain mean CE over the batch.
    """

    x: torch.Tensor
    y: torch.Tensor
    task: torch.Tensor  # experience index of each sample (task-aware masking, replay)
    n_new: int
    weight: torch.Tensor | None = None


@dataclass
class Context:
    """The state of the run that strategies may read (and the model/optimizer they may act on)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    stream: Stream
    device: torch.device
    experience: int = 0  # index of the experience being trained
    iteration: int = 0  # global training iterations done so far
    epoch: int = 0  # epoch of the experience being trained (0-based)
    epochs: int = 1  # epochs per experience (train.epochs)
    seen_classes: list[int] = field(default_factory=list)
    class_mask: torch.Tensor | None = None  # (n_tasks, n_classes) in task-incremental streams
    generator: torch.Generator | None = None  # the run's training RNG (sampling, shuffling)
    amp: bool = False  # train.amp=bf16: the training forward under torch.autocast(bfloat16)
    features: torch.Tensor | None = None  # penultimate features of the current training batch
    # A rehearsal strategy's episodic memory (tensors `x`, `y`, `task`), set in its `setup`, for
    # the strategies after it in the list (replay -> GEM/A-GEM reference gradients), and the
    # memory samples it mixed into this iteration's batch (None while the memory is empty).
    memory: Any = None
    replayed: Batch | None = None

    # The member axis (cl/members.py) reaches the loop through these four; a single run's
    # tensors have no member axis: samples are dim 0 (dim -1 of `y` and of the order).
    def shuffle(self, n: int) -> torch.Tensor:
        """This epoch's sample order."""
        return torch.randperm(n, generator=self.generator)

    def take(self, t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The samples `idx` of `t`."""
        return t[idx]

    def task_loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The task loss: mean CE, or `sum(weight * CE)` for a weighted batch."""
        if batch.weight is None:
            return F.cross_entropy(logits, batch.y)
        return (F.cross_entropy(logits, batch.y, reduction="none") * batch.weight).sum()

    def grad_norm(self) -> float:
        from cl.plasticity import gradient_norm

        return gradient_norm(self.model)

    def logits(self, output: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Restrict logits to each sample's task classes when the stream is task-incremental."""
        if self.class_mask is None:
            return output
        return output.masked_fill(~self.class_mask[task], float("-inf"))
