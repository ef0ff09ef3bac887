"""What the runner hands to strategies: the current batch and the run context."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch.nn import functional as F

from cl.distributed import SINGLE, Collective

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
    # The run's ranks (cl/distributed.py): world 1 but under torchrun. Hooks see the global
    # batch on every rank; the training forward takes this rank's share (`shard`) through the
    # DDP module `ddp`; a strategy that reduces over samples itself uses `sample_mean`,
    # `mean_gradient` or the collective's `all_reduce_sum` (never torch.distributed).
    collective: Collective = SINGLE
    ddp: torch.nn.Module | None = None
    n_global: int = 0  # samples in the current training batch, over all ranks

    def shard(self, batch: Batch) -> Batch:
        """This rank's share of `batch` for the training forward (`batch` itself on one rank):
        its share of the new samples, then its share of the others (replayed), each sample's
        task-loss weight times the world size (1 / batch size for an unweighted batch), so
        that DDP's average of the ranks' gradients is the gradient of the global batch's loss
        whatever the batch size (a share may be empty)."""
        self.n_global = batch.y.shape[-1]
        c = self.collective
        if c.world == 1:
            return batch
        n, total = batch.n_new, self.n_global
        every = torch.arange(total, device=batch.y.device)
        idx = torch.cat([every[:n][c.shard(n)], every[n:][c.shard(total - n)]])
        if batch.weight is None:
            weight = torch.full(idx.shape, c.world / total, device=batch.y.device)
        else:
            weight = batch.weight[idx] * c.world
        n_new = len(every[:n][c.shard(n)])
        return Batch(batch.x[idx], batch.y[idx], batch.task[idx], n_new, weight)

    def sample_mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean over the training batch's samples of a loss term given per sample of this
        rank's share (dim 0); under DDP this rank's part of it (sum * world / global count),
        whose average over the ranks, as DDP averages gradients, is the global mean."""
        if self.collective.world == 1:
            return values.sum(0) / len(values)
        return values.sum(0) * (self.collective.world / self.n_global)

    def mean_gradient(self, x, y, task, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """Gradients of the mean CE of the samples (x, y, task) (logits through the plain
        model and `logits`) at the current parameters, zeros where the loss does not reach;
        under DDP each rank takes its share of the samples and one all-reduce sums them."""
        c = self.collective
        if c.world == 1:
            loss = F.cross_entropy(self.logits(self.model(x), task), y)
        else:
            sl = c.shard(len(y))
            logits = self.logits(self.model(x[sl]), task[sl])
            loss = F.cross_entropy(logits, y[sl], reduction="sum") / len(y)
        gs = torch.autograd.grad(loss, params, allow_unused=True)
        gs = [torch.zeros_like(p) if g is None else g for p, g in zip(params, gs, strict=True)]
        if c.world > 1:
            flat = c.all_reduce_sum(torch.cat([g.flatten() for g in gs]))
            parts = flat.split([p.numel() for p in params])
            gs = [t.view_as(p) for t, p in zip(parts, params, strict=True)]
        return gs

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
