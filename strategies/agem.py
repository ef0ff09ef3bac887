"""A-GEM: Averaged Gradient Episodic Memory.

Chaudhry, Ranzato, Rohrbach & Elhoseiny, "Efficient Lifelong Learning with A-GEM", ICLR 2019
(arXiv 1812.00420); official code `facebookresearch/agem`.
"""

from __future__ import annotations

from typing import Any

import torch

from cl.context import Context
from cl.strategy import Strategy
from strategies.memory import ExperienceMemory


def project(g: torch.Tensor, g_ref: torch.Tensor) -> torch.Tensor:
    """g if g.g_ref >= 0, else g - (g.g_ref / g_ref.g_ref) g_ref (flat vectors)."""
    dot = g @ g_ref
    if dot >= 0:
        return g
    return g - (dot / (g_ref @ g_ref).clamp_min(1e-12)) * g_ref


def projection_stats(g, projected, dot_ref, ref_norm) -> dict[str, float]:
    """How the projection changed g: projected (0/1), cos(g, g~), |g~|/|g|, cos(g, g_ref)."""
    norm = g.norm()
    tiny = torch.finfo(g.dtype).tiny
    if projected is g:
        cos, ratio = 1.0, 1.0
    else:
        p_norm = projected.norm()
        cos = float((g @ projected) / (norm * p_norm).clamp_min(tiny))
        ratio = float(p_norm / norm.clamp_min(tiny))
    ref_cos = float(dot_ref / (norm * ref_norm).clamp_min(tiny))
    return {
        "projected": float(projected is not g),
        "cos": cos,
        "norm_ratio": ratio,
        "ref_cos": ref_cos,
    }


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

    After replay (`strategy=[replay,agem]`; Hess, Tuytelaars & van de Ven, "Two Complementary
    Perspectives to Continual Learning", arXiv 2311.04898, their `er_agem.py`): no own memory;
    g is the gradient of replay's combined new + replayed loss, and g_ref that of the mean CE
    on the very samples replay mixed into this batch (`ctx.replayed`, drawn from replay's
    memory `ctx.memory`), so the projected step does not increase the replayed loss to first
    order. `patterns_per_exp` and `sample_size` are then unused.
    `metrics()`: `projected` (1 if g was changed), `cos` (cosine of g and g~), `norm_ratio`
    (|g~| / |g|) and `ref_cos` (cosine of g and g_ref), in every iteration with a memory.
    """

    name = "agem"
    member_wise = True

    def __init__(self, patterns_per_exp: int = 256, sample_size: int = 256):
        if patterns_per_exp <= 0:
            raise ValueError(f"patterns_per_exp must be a positive integer, got {patterns_per_exp}")
        if sample_size <= 0:
            raise ValueError(f"sample_size must be a positive integer, got {sample_size}")
        self.patterns_per_exp = patterns_per_exp
        self.sample_size = sample_size
        self.memory = ExperienceMemory(patterns_per_exp)  # its own, unless shared
        self.shared = False  # reference samples from a preceding replay (set in `setup`)
        self.stats: dict[str, float] = {}

    def setup(self, ctx: Context) -> None:
        self.shared = ctx.memory is not None

    def reference_batch(self, ctx: Context):
        """(x, y, task) for g_ref, or None while there is no memory."""
        if self.shared:
            r = ctx.replayed
            return None if r is None else (r.x, r.y, r.task)
        m = self.memory
        if len(m) == 0:
            return None
        idx = torch.randperm(len(m), generator=ctx.generator)[: self.sample_size].to(m.y.device)
        return m.x.index_select(0, idx), m.y[idx], m.task[idx]

    def reference_grads(self, ctx: Context, ref=None) -> list[torch.Tensor]:
        """g_ref on `ref` = (x, y, task) (default: `reference_batch`), one tensor per parameter
        (zeros for parameters the loss does not reach)."""
        x, y, task = ref or self.reference_batch(ctx)
        return ctx.mean_gradient(x, y, task, list(ctx.model.parameters()))  # sharded over ranks

    def after_backward(self, ctx: Context) -> None:
        self.stats = {}
        ref = self.reference_batch(ctx)
        if ref is None:
            return
        refs = self.reference_grads(ctx, ref)
        params = list(ctx.model.parameters())
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        g = torch.cat([t.flatten() for t in grads])
        g_ref = torch.cat([r.flatten() for r in refs])
        projected = project(g, g_ref)
        self.stats = projection_stats(g, projected, g_ref @ g, g_ref.norm())
        if projected is not g:
            chunks = projected.split([p.numel() for p in params])
            for p, chunk in zip(params, chunks, strict=True):
                p.grad = chunk.view_as(p)

    def metrics(self) -> dict[str, float]:
        return self.stats

    def after_experience(self, ctx: Context) -> None:
        if not self.shared:
            self.memory.add_experience(ctx.stream.experiences[ctx.experience], ctx.generator)

    def state_dict(self) -> dict[str, Any]:
        return self.memory.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict(state)
