"""Shrink & perturb.

Ash & Adams, "On Warm-Starting Neural Network Training", NeurIPS 2020, arXiv 1910.08475; the
per-step form of Dohare et al., "Loss of plasticity in deep continual learning", Nature
632:768-774 (2024), arXiv 2306.13812 (`lop/algos/bp.py`, `Backprop.perturb`).
"""

from __future__ import annotations

from typing import Any

import torch

from cl.context import Context
from cl.strategy import Strategy
from strategies.rng import RngStream


class ShrinkPerturb(Strategy):
    """After every optimizer step, on every trainable parameter (weights and biases):

        theta <- (1 - lr * weight_decay) * theta + noise_std * eps,   eps ~ N(0, I)

    with lr the parameter group's current learning rate. This is the LoP code's form (shrink
    by SGD weight decay, then Gaussian noise), with the shrink applied decoupled from momentum;
    Ash & Adams shrink and perturb once per new data chunk instead. Noise comes from a
    private stream on the run's device (`RngStream`), saved in the state dict; resumed on
    another device type, it is reseeded from the saved state.
    """

    name = "shrink_perturb"
    member_wise = True

    def __init__(self, weight_decay: float = 1e-4, noise_std: float = 1e-5):
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        self.weight_decay, self.noise_std = weight_decay, noise_std
        self.rng = RngStream()

    def setup(self, ctx: Context) -> None:
        self.rng.setup(ctx, ctx.device)

    @torch.no_grad()
    def after_step(self, ctx: Context) -> None:
        for group in ctx.optimizer.param_groups:
            shrink = 1.0 - group["lr"] * self.weight_decay
            for p in group["params"]:
                if not p.requires_grad:
                    continue
                p.mul_(shrink)
                if self.noise_std > 0:
                    noise = torch.randn(p.shape, generator=self.rng.gen, device=p.device)
                    p.add_(noise.to(p.dtype), alpha=self.noise_std)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.load_state_dict(state["rng"])
