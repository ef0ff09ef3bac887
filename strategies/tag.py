"""TAG optimizer: Malviya, Ravindran & Chandar, CoLLAs 2022; code `pranshu28/TAG tag_update.py`."""

from __future__ import annotations

import math
from typing import Any

import torch


def alphas(m: torch.Tensor, memory: torch.Tensor, b: float) -> tuple[torch.Tensor, float]:
    """(alpha(t, tau) for every earlier task tau, alpha(t, t)) from the current task's first
    moment `m` and the earlier tasks' unit-norm final first moments `memory` (tasks x numel):
    alpha(t, tau) = exp(-b cos(M^t, M^tau)), alpha(t, t) = exp(-b) (cos of M^t with itself);
    with no earlier task, alpha(t, t) = 1 (the base optimizer)."""
    if len(memory) == 0:
        return memory.new_zeros(0), 1.0
    unit = m.flatten() / m.norm().clamp_min(1e-30)
    return torch.exp(-b * (memory @ unit)), math.exp(-b)


class TAG(torch.optim.Optimizer):
    """Task-based Accumulated Gradients (Malviya, Ravindran & Chandar, "TAG: Task-based
    Accumulated Gradients for Lifelong learning", CoLLAs 2022, arXiv 2105.05155).

    Per parameter tensor, during task t (n = steps of this task, g the gradient):
        M^t <- beta1 M^t + (1 - beta1) g                 (task-based first moment)
        V^t <- beta2 V^t + (1 - beta2) g^2  (rmsprop, adam)  |  V^t <- V^t + g^2  (adagrad)
        alpha(t, tau) = exp(-b <M^t, M^tau> / (|M^t| |M^tau|))  for tau < t (M^tau, V^tau frozen
                        at the end of task tau),  alpha(t, t) = exp(-b)  (t > 0; 1 for t = 0)
        theta <- theta - lr * N / (sqrt(sum_{tau <= t} alpha(t, tau) V^tau) / c2 + eps)
    with N = g, c2 = 1 (rmsprop, adagrad) or N = M^t / (1 - beta1^n), c2 = sqrt(1 - beta2^n)
    (adam). A direction that agrees with an earlier task (cos > 0) gets a small weight on that
    task's second moment and a larger step; one that conflicts (cos < 0) a larger weight and a
    smaller step. M and V restart at 0 with each task; the cosine is per parameter tensor.
    Defaults (paper, Split CIFAR-100, 1 epoch, batch 10): b = 5; lr 2.5e-4 (rmsprop), 5e-4
    (adam), 5e-3 (adagrad); beta1 = 0.9, beta2 = 0.99 (0.999 for adam), eps = 1e-8.
    As the official code: the cosine uses the current task's M^t at every step; the task's
    own weight is exp(-b) from the second task on. The code's adam bias correction counts the
    steps of the current *epoch* (`step` of the loader loop); here n counts the steps of the
    current task, which is the same in the paper's one-epoch setting.
    Task boundaries: `watch(ctx)` (the runner calls it) makes every step read the experience
    index `ctx.experience`; when it changes, the task's M (unit norm) and V are frozen.
    """

    def __init__(self, params, lr: float = 2.5e-4, base: str = "rmsprop", b: float = 5.0):
        if base not in ("rmsprop", "adam", "adagrad"):
            raise ValueError(f"base must be rmsprop, adam or adagrad, got {base!r}")
        beta2 = 0.999 if base == "adam" else 0.99
        defaults = dict(lr=lr, base=base, b=b, beta1=0.9, beta2=beta2, eps=1e-8, task=0)
        super().__init__(params, defaults)
        self.ctx: Any = None

    def watch(self, ctx: Any) -> None:
        """Read the task index from `ctx.experience` at every step."""
        self.ctx = ctx

    def _state(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        st = self.state[p]
        if not st:
            st["m"], st["v"] = torch.zeros_like(p), torch.zeros_like(p)
            st["n"] = torch.zeros((), dtype=torch.float64)
            st["memory_m"] = p.new_zeros((0, p.numel()))  # unit-norm M^tau of earlier tasks
            st["memory_v"] = p.new_zeros((0, *p.shape))  # V^tau of earlier tasks
        return st

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            task = group["task"] if self.ctx is None else int(self.ctx.experience)
            new_task = task != group["task"]
            group["task"] = task
            beta1, beta2, adam = group["beta1"], group["beta2"], group["base"] == "adam"
            for p in group["params"]:
                if new_task and self.state.get(p):  # freeze the finished task's moments
                    st = self.state[p]
                    unit = st["m"].flatten() / st["m"].norm().clamp_min(1e-30)
                    st["memory_m"] = torch.cat([st["memory_m"], unit[None]])
                    st["memory_v"] = torch.cat([st["memory_v"], st["v"][None]])
                    st["m"].zero_(), st["v"].zero_(), st["n"].zero_()
                if p.grad is None:
                    continue
                g, st = p.grad, self._state(p)
                st["n"] += 1
                st["m"].mul_(beta1).add_(g, alpha=1 - beta1)
                if group["base"] == "adagrad":
                    st["v"].addcmul_(g, g)
                else:
                    st["v"].mul_(beta2).addcmul_(g, g, value=1 - beta2)
                prev, own = alphas(st["m"], st["memory_m"], group["b"])
                v = own * st["v"] + torch.tensordot(prev, st["memory_v"], dims=1)
                numer, c2 = g, 1.0
                if adam:
                    n = float(st["n"])
                    numer, c2 = st["m"] / (1 - beta1**n), math.sqrt(1 - beta2**n)
                p.addcdiv_(numer, v.sqrt() / c2 + group["eps"], value=-group["lr"])
        return loss
