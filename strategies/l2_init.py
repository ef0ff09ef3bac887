"""L2-init: regularisation towards the initial parameters.

Kumar, Marklund, Van Roy, "Maintaining Plasticity in Continual Learning via Regenerative
Regularization", arXiv 2308.11958.
"""

from __future__ import annotations

from typing import Any

import torch

from cl.context import Batch, Context
from cl.strategy import Strategy


class L2Init(Strategy):
    """L = L_task + lam * ||theta - theta_0||_2^2, theta_0 = the parameters at `setup`.

    Every trainable parameter (biases included). A loss term: with Adam it goes through Adam's
    normalisation (not a decoupled update theta <- theta - lr * 2 lam (theta - theta_0)).
    theta_0 is saved in the state dict.
    """

    name = "l2_init"

    def __init__(self, lam: float = 1e-3):
        if lam < 0:
            raise ValueError(f"lam must be >= 0, got {lam}")
        self.lam = lam
        self.params: list[torch.Tensor] = []
        self.init: list[torch.Tensor] | None = None

    def setup(self, ctx: Context) -> None:
        self.params = [p for p in ctx.model.parameters() if p.requires_grad]
        if self.init is None:
            self.init = [p.detach().clone() for p in self.params]

    def loss(self, ctx: Context, batch: Batch, output: torch.Tensor) -> torch.Tensor:
        return self.lam * sum(
            (p - p0).pow(2).sum() for p, p0 in zip(self.params, self.init, strict=True)
        )

    def state_dict(self) -> dict[str, Any]:
        return {"init": list(self.init or [])}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.init = [t.clone() for t in state["init"]]
