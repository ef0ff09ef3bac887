"""Shrink & perturb.

Ash & Adams, "On Warm-Starting Neural Network Training", NeurIPS 2020, arXiv 1910.08475; the
per-step form of Dohare et al., "Loss of plasticity in deep continual learning", Nature
632:768-774 (2024), arXiv 2306.13812 (`lop/algos/bp.py`, `Backprop.perturb`).
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from cl.context import Context
from cl.strategy import Strategy


class ShrinkPerturb(Strategy):
    """After every optimizer step, on every trainable parameter (weights and biases):

        theta <- (1 - lr * weight_decay) * theta + noise_std * eps,   eps ~ N(0, I)

    with lr the parameter group's current learning rate. This is the LoP code's form (shrink
    by SGD weight decay, then Gaussian noise), with the shrink applied decoupled from momentum;
    Ash & Adams shrink and perturb once per new data chunk instead. Noise comes from a
    generator seeded from the run's generator; its state is saved in the state dict.
    """

    name = "shrink_perturb"

    def __init__(self, weight_decay: float = 1e-4, noise_std: float = 1e-5):
        if weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        self.weight_decay, self.noise_std = weight_decay, noise_std
        self.rng: torch.Tensor | None = None

    def setup(self, ctx: Context) -> None:
        if self.rng is None:
            seed = int(torch.randint(2**62, (1,), generator=ctx.generator))
            self.rng = torch.Generator(ctx.device).manual_seed(seed).get_state()
        self.gen = torch.Generator(ctx.device)
        self._set_state(self.rng)

    def _set_state(self, state: torch.Tensor) -> None:
        try:
            self.gen.set_state(state)
        except RuntimeError:  # a state from another device type (a run resumed on a new device)
            self.gen.manual_seed(derived_seed(state))

    @torch.no_grad()
    def after_step(self, ctx: Context) -> None:
        for group in ctx.optimizer.param_groups:
            shrink = 1.0 - group["lr"] * self.weight_decay
            for p in group["params"]:
                if not p.requires_grad:
                    continue
                p.mul_(shrink)
                if self.noise_std > 0:
                    noise = torch.randn(p.shape, generator=self.gen, device=p.device)
                    p.add_(noise.to(p.dtype), alpha=self.noise_std)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.gen.get_state() if hasattr(self, "gen") else self.rng}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng = state["rng"]
        if hasattr(self, "gen"):
            self._set_state(self.rng)


def derived_seed(state: torch.Tensor) -> int:
    """A seed drawn from a generator state: CPU (Mersenne twister) and CUDA (Philox) states
    differ in kind, so a run resumed on the other device type reseeds from the saved state."""
    return int.from_bytes(hashlib.sha256(state.numpy().tobytes()).digest()[:8], "little")
