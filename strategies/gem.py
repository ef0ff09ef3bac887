"""GEM: Gradient Episodic Memory.

Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual Learning", NeurIPS 2017
(arXiv 1706.08840); official code `facebookresearch/GradientEpisodicMemory` (`model/gem.py`).
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from cl.context import Context
from cl.strategy import Strategy
from strategies.memory import ExperienceMemory, by_task
from strategies.task_grads import task_gradients


@functools.cache
def blas_controller():
    """threadpoolctl's controller, built once: `threadpool_limits()` rescans libraries (~2 ms)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def dual_weights(P: torch.Tensor, Gg: torch.Tensor, margin: float, eps: float = 1e-3):
    """v* of GEM's dual QP, as the official `project2cone2`, from P = G G^T and G g.

    min_v 1/2 v^T (P + eps I) v + (G g)^T v  s.t.  v >= margin, solved in float64 by quadprog
    inside a one-thread BLAS limit, so NumPy's threads do not fight torch's.
    """
    import numpy as np
    import quadprog

    P = P.double()
    P = 0.5 * (P + P.T) + eps * torch.eye(len(P), dtype=P.dtype, device=P.device)
    t = len(P)
    with blas_controller().limit(limits=1, user_api="blas"):
        v = quadprog.solve_qp(
            P.cpu().numpy(), -Gg.double().cpu().numpy(), np.eye(t), np.full(t, margin)
        )[0]
    return torch.as_tensor(v, dtype=Gg.dtype, device=Gg.device)


class GEM(Strategy):
    """Gradient Episodic Memory (Lopez-Paz & Ranzato, NeurIPS 2017).

    Memory: after each experience, `patterns_per_exp` random samples of it (the official ring
    buffer keeps the most recent ones; with shuffled data both are a random subset).
    Every step, at the current theta: g_k = grad (1/|M_k|) sum_{M_k} CE(f(x), y) for each past
    task k (logits masked to task k's classes in task-incremental streams), rows of G.
    If any <g, g_k> < 0, the gradient is projected by the dual QP
        min_v 1/2 v^T (G G^T + 1e-3 I) v + (G g)^T v  s.t.  v >= gamma,   g~ = G^T v* + g,
    with gamma = `memory_strength`. As in the official code (`project2cone2`), the margin is a
    lower bound on every dual variable: when the QP fires, each past task's gradient is added
    with weight >= gamma, violated or not. It is not a primal margin <g~, g_k> >= gamma.

    The memory gradients come from one pass over all memories for all-Linear models, else one
    pass per task (`strategies/task_grads.py`). G stays in per-parameter blocks: G g, G G^T
    (float32, then float64 for the QP; the official code casts G to float64 first, and eps =
    1e-3 dwarfs the rounding) and G^T v are sums over blocks, with no flat copies. G G^T is
    formed only when a constraint is violated.

    `sample_size=n` takes each task's gradient on n of its memories drawn anew every step (one
    minibatch per past task, as Hess et al.'s ER + GEM); null uses all of them (official GEM).
    After replay (`strategy=[replay,gem]`; Hess, Tuytelaars & van de Ven, "Two Complementary
    Perspectives to Continual Learning", arXiv 2311.04898, their `er_gem.py`): no own memory;
    the past tasks are those of replay's memory (`ctx.memory`, grouped by each sample's task,
    tasks before the current one), g is the gradient of replay's combined new + replayed
    loss, and the projection keeps each past task's memory loss from increasing to first
    order. `patterns_per_exp` is then unused.
    `metrics()`: `projected` (1 if the QP fired), `cos` (cosine of g and g~), `norm_ratio`
    (|g~| / |g|), `ref_cos` (the smallest cosine of g and a g_k), `violated` (share of past
    tasks with <g, g_k> < 0), in every iteration with a memory.
    """

    name = "gem"
    member_wise = True

    def __init__(
        self,
        patterns_per_exp: int = 256,
        memory_strength: float = 0.5,
        sample_size: int | None = None,
    ):
        if patterns_per_exp <= 0:
            raise ValueError(f"patterns_per_exp must be a positive integer, got {patterns_per_exp}")
        if memory_strength < 0:
            raise ValueError(f"memory_strength must be >= 0, got {memory_strength}")
        if sample_size is not None and sample_size <= 0:
            raise ValueError(f"sample_size must be a positive integer or null, got {sample_size}")
        self.patterns_per_exp = patterns_per_exp
        self.memory_strength = memory_strength
        self.sample_size = sample_size
        self.shared = False  # past tasks from a preceding replay's memory (set in `setup`)
        self.stats: dict[str, float] = {}
        self.memory = ExperienceMemory(patterns_per_exp)  # its own, unless shared

    def setup(self, ctx: Context) -> None:
        self.shared = ctx.memory is not None

    def memories(self, ctx: Context):
        """(x, y, sizes, tasks): the past tasks' memories back to back; None if there are none."""
        m = ctx.memory if self.shared else self.memory
        if len(m) == 0:
            return None
        # a reservoir also holds the current task: only tasks before it
        before = ctx.experience if self.shared else None
        return by_task(m.x, m.y, m.task, self.sample_size, ctx.generator, before)

    def memory_grads(self, ctx: Context, mem=None) -> list[torch.Tensor]:
        """Per parameter, (past tasks, *shape): row k = grad of task k's mean memory loss."""
        x, y, sizes, tasks = mem or self.memories(ctx)
        if ctx.collective.world == 1:
            return task_gradients(ctx.model, x, y, sizes, tasks, ctx.logits)
        params = list(ctx.model.parameters())  # over ranks: each its share of every memory
        per_task = [
            ctx.mean_gradient(x_k, y_k, torch.full_like(y_k, t), params)
            for x_k, y_k, t in zip(x.split(list(sizes)), y.split(list(sizes)), tasks, strict=True)
        ]
        return [torch.stack(column) for column in zip(*per_task, strict=True)]

    def after_backward(self, ctx: Context) -> None:
        self.stats = {}
        mem = self.memories(ctx)
        if mem is None:
            return
        params = list(ctx.model.parameters())
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in params]
        blocks = [b.flatten(1) for b in self.memory_grads(ctx, mem)]
        Gg = sum(b @ g.flatten() for b, g in zip(blocks, grads, strict=True))
        gg = sum(g.flatten() @ g.flatten() for g in grads)
        tiny = torch.finfo(Gg.dtype).tiny
        norms = (gg * sum((b * b).sum(1) for b in blocks)).sqrt().clamp_min(tiny)
        violated = Gg < 0
        self.stats = {
            "projected": 0.0,
            "cos": 1.0,
            "norm_ratio": 1.0,
            "ref_cos": float((Gg / norms).min()),
            "violated": float(violated.float().mean()),
        }
        if not violated.any():
            return
        P = sum(b @ b.T for b in blocks)
        v = dual_weights(P, Gg, self.memory_strength)
        for p, b, g in zip(params, blocks, grads, strict=True):
            p.grad = g.add_((v @ b).view_as(g))
        # |g~|^2 = |g|^2 + 2 v.Gg + v'Pv and g.g~ = |g|^2 + v.Gg, from what the QP already has
        vGg = v @ Gg
        new = (gg + 2 * vGg + v @ P @ v).clamp_min(0)
        self.stats |= {
            "projected": 1.0,
            "cos": float((gg + vGg) / (gg * new).sqrt().clamp_min(tiny)),
            "norm_ratio": float((new / gg.clamp_min(tiny)).sqrt()),
        }

    def metrics(self) -> dict[str, float]:
        return self.stats

    def after_experience(self, ctx: Context) -> None:
        if not self.shared:
            self.memory.add_experience(ctx.stream.experiences[ctx.experience], ctx.generator)

    def state_dict(self) -> dict[str, Any]:
        return self.memory.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict(state)
