"""What the runner hands to strategies: the current batch and the run context."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

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

    def logits(self, output: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """Restrict logits to each sample's task classes when the stream is task-incremental."""
        if self.class_mask is None:
            return output
        return output.masked_fill(~self.class_mask[task], float("-inf"))
