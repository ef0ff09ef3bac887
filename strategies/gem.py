"""GEM: Gradient Episodic Memory.

Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual Learning", NeurIPS 2017
(arXiv 1706.08840); official code `facebookresearch/GradientEpisodicMemory` (`model/gem.py`).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch.nn import functional as F

from cl.context import Context
from strategies.base import Strategy


def flatten(params: list[torch.Tensor], grads) -> torch.Tensor:
    """Gradients `grads` of `params` as one vector (zeros where a gradient is None)."""
    pairs = zip(params, grads, strict=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in pairs])


def flat_grad(model: torch.nn.Module) -> torch.Tensor:
    """The current `.grad` of every parameter, flattened in `parameters()` order."""
    params = list(model.parameters())
    return flatten(params, [p.grad for p in params])


def write_grad(model: torch.nn.Module, flat: torch.Tensor) -> None:
    i = 0
    for p in model.parameters():
        n = p.numel()
        p.grad = flat[i : i + n].view_as(p).clone()
        i += n


@functools.cache
def blas_controller():
    """threadpoolctl's controller, built once: `threadpool_limits()` rescans libraries (~2 ms)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def solve_dual(G, g, margin: float, eps: float = 1e-3, Gg=None) -> torch.Tensor:
    """GEM's dual QP, as the official `project2cone2`; returns g~ = G^T v* + g.

    min_v 1/2 v^T (G G^T + eps I) v + (G g)^T v  s.t.  v >= margin.
    The algebra runs in torch, in G's dtype (the official code casts G to float64 first; G G^T
    in float32 took 2.4 ms vs 10.2 ms at 19 x 89,610, and eps = 1e-3 dwarfs its rounding); the
    small (t x t) problem is solved in float64 by quadprog inside a single-BLAS-thread limit, so
    NumPy's threads do not fight torch's. `Gg` may pass G g if already computed.
    """
    import numpy as np
    import quadprog

    P = (G @ G.T).double()
    P = 0.5 * (P + P.T) + eps * torch.eye(len(G), dtype=P.dtype, device=P.device)
    q = -(G @ g if Gg is None else Gg).double()
    t = len(G)
    with blas_controller().limit(limits=1, user_api="blas"):
        v = quadprog.solve_qp(P.cpu().numpy(), q.cpu().numpy(), np.eye(t), np.full(t, margin))[0]
    v = torch.as_tensor(v, dtype=G.dtype, device=G.device)
    return v @ G + g


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

    Memory gradients: a Python loop of one forward/backward per past task (whole memory, train
    mode). Measured against one vmapped `torch.func.grad` over all tasks (inputs (t, m, ...)) on
    the 20-task permuted-MNIST MLP, 256 memories per task, one torch thread, medians of 15
    interleaved calls (`bench/strategy_step.py --grad-pass`, loaded 2-core VM), at 1 / 4 / 9 /
    19 past tasks: loop 2.8 / 10.9 / 18.1 / 36.1 ms vs batched 5.4 / 11.3 / 16.4 / 32.7 ms (a
    rerun: 2.0 / 8.3 / 25.7 / 45.6 vs 3.7 / 8.6 / 22.2 / 39.7). Same FLOPs: batching saves at
    most ~10% late and costs ~2.5 ms of overhead early, so the simpler loop is kept.
    """

    name = "gem"

    def __init__(self, patterns_per_exp: int = 256, memory_strength: float = 0.5):
        if patterns_per_exp <= 0:
            raise ValueError(f"gem patterns_per_exp must be positive, got {patterns_per_exp}")
        if memory_strength < 0:
            raise ValueError(f"gem memory_strength must be >= 0, got {memory_strength}")
        self.patterns_per_exp = patterns_per_exp
        self.memory_strength = memory_strength
        self.x: list[torch.Tensor] = []  # one tensor of memories per past experience
        self.y: list[torch.Tensor] = []
        self.task: list[int] = []

    def memory_grads(self, ctx: Context) -> torch.Tensor:
        """G: (number of past tasks, number of parameters), at the current parameters."""
        params = list(ctx.model.parameters())
        rows = []
        for x, y, k in zip(self.x, self.y, self.task, strict=True):
            logits = ctx.model(x)
            if ctx.class_mask is not None:
                logits = logits.masked_fill(~ctx.class_mask[k], float("-inf"))
            gs = torch.autograd.grad(F.cross_entropy(logits, y), params, allow_unused=True)
            rows.append(flatten(params, gs))
        return torch.stack(rows)

    def after_backward(self, ctx: Context) -> None:
        if not self.x:
            return
        G = self.memory_grads(ctx)
        g = flat_grad(ctx.model)
        Gg = G @ g
        if (Gg < 0).any():
            write_grad(ctx.model, solve_dual(G, g, self.memory_strength, Gg=Gg))

    def after_experience(self, ctx: Context) -> None:
        e = ctx.stream.experiences[ctx.experience]
        idx = torch.randperm(len(e.y), generator=ctx.generator)[: self.patterns_per_exp]
        idx = idx.to(e.y.device)
        self.x.append(e.x[idx].clone())
        self.y.append(e.y[idx].clone())
        self.task.append(e.index)

    def state_dict(self) -> dict[str, Any]:
        return {"x": list(self.x), "y": list(self.y), "task": list(self.task)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.x, self.y, self.task = list(state["x"]), list(state["y"]), list(state["task"])
