"""L2-init: regularisation towards the initial parameters.

Kumar, Marklund, Van Roy, "Maintaining Plasticity in Continual Learning via Regenerative
Regularization", arXiv 2308.11958.
"""

from __future__ import annotations

import torch

from cl.context import Batch, Context
from strategies.penalty import ParameterPenalty


class L2Init(ParameterPenalty):
    """L = L_task + lam * ||theta - theta_0||_2^2, theta_0 = the parameters at `setup`.

    Every trainable parameter (biases included). A loss term: with Adam it goes through Adam's
    normalisation (not a decoupled update theta <- theta - lr * 2 lam (theta - theta_0)).
    theta_0 is saved in the state dict.
    """

    name = "l2_init"
    member_wise = True
    anchored = True

    def __init__(self, lam: float = 1e-3):
        super().__init__(lam)

    def loss(self, ctx: Context, batch: Batch, output: torch.Tensor) -> torch.Tensor:
        return self.lam * sum(
            (p - p0).pow(2).sum() for p, p0 in zip(self.params, self.init, strict=True)
        )
