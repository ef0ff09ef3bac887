"""The set-up shared by penalties on the parameters (L2, L2-init, Wasserstein)."""

from __future__ import annotations

from typing import Any

import torch

from cl.context import Context
from cl.strategy import Strategy


class ParameterPenalty(Strategy):
    """A loss term `lam * R(theta)` over `params`, every trainable parameter (biases included).

    With `anchored`, `init` holds `anchor(p)` of each parameter as it was at the first `setup`
    (theta_0), saved in the state dict. A loss term, not a decoupled update: with Adam it goes
    through Adam's normalisation.
    """

    anchored = False

    def __init__(self, lam: float):
        if lam < 0:
            raise ValueError(f"lam must be >= 0, got {lam}")
        self.lam = lam
        self.params: list[torch.Tensor] = []
        self.init: list[torch.Tensor] | None = None

    def anchor(self, p: torch.Tensor) -> torch.Tensor:
        """What is kept of parameter `p` at the start (default: a copy)."""
        return p.detach().clone()

    def setup(self, ctx: Context) -> None:
        self.params = [p for p in ctx.model.parameters() if p.requires_grad]
        if self.anchored and self.init is None:
            self.init = [self.anchor(p) for p in self.params]

    def state_dict(self) -> dict[str, Any]:
        return {"init": list(self.init or [])} if self.anchored else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.anchored:
            self.init = [t.clone() for t in state["init"]]
