"""A-GEM: Averaged Gradient Episodic Memory.

Chaudhry, Ranzato, Rohrbach & Elhoseiny, "Efficient Lifelong Learning with A-GEM", ICLR 2019
(arXiv 1812.00420); official code `facebookresearch/agem`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from cl.context import Context
from cl.strategy import Strategy


def project(g: torch.Tensor, g_ref: torch.Tensor) -> torch.Tensor:
    """g if g.g_ref >= 0, else g - (g.g_ref / g_ref.g_ref) g_ref (flat vectors)."""
    dot = g @ g_ref
    if dot >= 0:
        return g
    return g - (dot / (g_ref @ g_ref).clamp_min(1e-12)) * g_ref


class AGEM(Strategy):
    """A-GEM (Chaudhry et al., ICLR 2019).

    Memory: after each experience, `patterns_per_exp` random samples of it.
    Every step: g_ref = grad of the mean CE on `sample_size` samples drawn uniformly without
    replacement from the union of all memories (all of them if fewer; the official code's
    `np.random.choice(..., replace=False)`), logits masked to each sample's task classes in
    task-incremental streams, at the current parameters. Projection, closed form, on device:
        g~ = g                                        if g . g_ref >= 0
        g~ = g - (g . g_ref / g_ref . g_ref) g_ref    otherwise.
    Cost: one extra forward/backward of `sample_size` samples and two dot products.
    (Avalanche's default `sample_size` is 64; 256 here, the official MNIST/CIFAR setting.)
    """

    name = "agem"

    def __init__(self, patterns_per_exp: int = 256, sample_size: int = 256):
        if patterns_per_exp <= 0:
            raise ValueError(f"patterns_per_exp must be a positive integer, got {patterns_per_exp}")
        if sample_size <= 0:
            raise ValueError(f"sample_size must be a positive integer, got {sample_size}")
        self.patterns_per_exp = patterns_per_exp
        self.sample_size = sample_size
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.task: torch.Tensor | None = None

    def reference_grads(self, ctx: Context) -> list[torch.Tensor]:
        """g_ref, one tensor per parameter (zeros for parameters the loss does not reach)."""
        n = len(self.y)
        idx = torch.randperm(n, generator=ctx.generator)[: self.sample_size].to(self.y.device)
        logits = ctx.logits(ctx.model(self.x.index_select(0, idx)), self.task[idx])
        params = list(ctx.model.parameters())
        gs = torch.autograd.grad(F.cross_entropy(logits, self.y[idx]), params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, gs, strict=True)]

    def after_backward(self, ctx: Context) -> None:
        if self.y is None:
            return
        refs = self.reference_grads(ctx)
        params = list(ctx.model.parameters())
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        g = torch.cat([t.flatten() for t in grads])
        projected = project(g, torch.cat([r.flatten() for r in refs]))
        if projected is not g:
            chunks = projected.split([p.numel() for p in params])
            for p, chunk in zip(params, chunks, strict=True):
                p.grad = chunk.view_as(p)

    def after_experience(self, ctx: Context) -> None:
        e = ctx.stream.experiences[ctx.experience]
        idx = torch.randperm(len(e.y), generator=ctx.generator)[: self.patterns_per_exp]
        idx = idx.to(e.y.device)
        x, y, t = e.x[idx], e.y[idx], torch.full((len(idx),), e.index, device=e.y.device)
        cat = lambda a, b: b.clone() if a is None else torch.cat([a, b])  # noqa: E731
        self.x, self.y, self.task = cat(self.x, x), cat(self.y, y), cat(self.task, t)

    def state_dict(self) -> dict[str, Any]:
        return {"x": self.x, "y": self.y, "task": self.task}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.x, self.y, self.task = state["x"], state["y"], state["task"]
