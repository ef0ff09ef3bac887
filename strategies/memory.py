"""Episodic memories (tensor buffers) shared by rehearsal strategies."""

from __future__ import annotations

from typing import Any

import torch


def by_task(
    x: torch.Tensor,
    y: torch.Tensor,
    task: torch.Tensor,
    per_task: int | None = None,
    generator: torch.Generator | None = None,
    before: int | None = None,
):
    """(x, y, sizes, tasks): the samples grouped by task id (ascending), back to back, each
    task cut to `per_task` random samples if set, only tasks < `before` if set; None if empty.
    """
    parts, tasks = [], []
    for k in task.unique().tolist():
        if before is not None and k >= before:
            continue
        idx = (task == k).nonzero().squeeze(1)
        if per_task is not None and len(idx) > per_task:
            idx = idx[torch.randperm(len(idx), generator=generator)[:per_task].to(idx.device)]
        parts.append(idx)
        tasks.append(k)
    if not parts:
        return None
    idx = torch.cat(parts)
    return x[idx], y[idx], [len(i) for i in parts], tasks


class Memory:
    """A tensor store of (x, y, task) samples with uniform sampling."""

    def __init__(self, max_size: int):
        if max_size <= 0:
            raise ValueError(f"memory size must be positive, got {max_size}")
        self.max_size = max_size
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.task: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.y is None else len(self.y)

    def sample(self, n: int, generator: torch.Generator | None = None):
        idx = torch.randint(len(self), (n,), generator=generator).to(self.y.device)
        return self.x[idx], self.y[idx], self.task[idx]

    def state_dict(self) -> dict[str, Any]:
        return {"x": self.x, "y": self.y, "task": self.task}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.x, self.y, self.task = state["x"], state["y"], state["task"]


class ExperienceMemory(Memory):
    """`max_size` random samples of every experience, stored experience after experience
    (GEM's and A-GEM's own memory)."""

    def add_experience(self, e, generator: torch.Generator | None = None) -> None:
        """Keep `max_size` random samples of experience `e` (all of them if it has fewer)."""
        idx = torch.randperm(len(e.y), generator=generator)[: self.max_size].to(e.y.device)
        t = torch.full((len(idx),), e.index, device=e.y.device)
        cat = lambda a, b: b.clone() if a is None else torch.cat([a, b])  # noqa: E731
        self.x, self.y, self.task = cat(self.x, e.x[idx]), cat(self.y, e.y[idx]), cat(self.task, t)


class ClassBalancedMemory(Memory):
    """Equal share of `max_size` per class seen so far (adaptive), updated per experience.

    Each new class keeps a random subset of its samples; old classes shrink by dropping
    samples from the end of their (already random) selection. As Avalanche's
    `ClassBalancedBuffer(adaptive_size=True)`, used by the stability-gap paper's ER.
    """

    def update(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        task: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> None:
        old = {} if self.y is None else {int(c): self.y == c for c in self.y.unique()}
        new_classes = [int(c) for c in y.unique() if int(c) not in old]
        per_class = self.max_size // max(1, len(old) + len(new_classes))
        parts = []
        for mask in old.values():
            idx = mask.nonzero().squeeze(1)[:per_class]
            parts.append((self.x[idx], self.y[idx], self.task[idx]))
        for c in new_classes:
            idx = (y == c).nonzero().squeeze(1)
            pick = torch.randperm(len(idx), generator=generator)[:per_class].to(idx.device)
            idx = idx[pick]
            parts.append((x[idx], y[idx], task[idx]))
        self.x = torch.cat([p[0] for p in parts])
        self.y = torch.cat([p[1] for p in parts])
        self.task = torch.cat([p[2] for p in parts])


class ReservoirMemory(Memory):
    """Reservoir sampling (Vitter's algorithm R): a uniform sample of every example seen."""

    def __init__(self, max_size: int):
        super().__init__(max_size)
        self.n_seen = 0

    def add(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        task: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> None:
        free = self.max_size - len(self)
        if free > 0:
            k = min(free, len(y))
            cat = lambda a, b: b[:k].clone() if a is None else torch.cat([a, b[:k]])  # noqa: E731
            self.x, self.y, self.task = cat(self.x, x), cat(self.y, y), cat(self.task, task)
            x, y, task = x[k:], y[k:], task[k:]
            self.n_seen += k
        if len(y) == 0:
            return
        seen = self.n_seen + torch.arange(1, len(y) + 1)
        slot = (torch.rand(len(y), generator=generator) * seen).long()
        keep = (slot < self.max_size).nonzero().squeeze(1)
        # Later samples win a shared slot, as in the sequential algorithm.
        last = {int(s): int(i) for i, s in zip(keep.tolist(), slot[keep].tolist(), strict=True)}
        if last:
            slots = torch.tensor(list(last.keys()), device=self.y.device)
            src = torch.tensor(list(last.values()), device=y.device)
            self.x[slots], self.y[slots], self.task[slots] = x[src], y[src], task[src]
        self.n_seen += len(y)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "n_seen": self.n_seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.n_seen = int(state["n_seen"])
