"""L2 regularisation, the baseline of Dohare et al., "Loss of plasticity in deep continual
learning", Nature 632:768-774 (2024), arXiv 2306.13812 (there: SGD weight decay)."""

from __future__ import annotations

import torch

from cl.context import Batch, Context
from strategies.penalty import ParameterPenalty


class L2(ParameterPenalty):
    """L = L_task + lam/2 * ||theta||_2^2 over every trainable parameter (biases included).

    As a loss term its gradient lam * theta equals SGD's `weight_decay=lam` (coupled: it goes
    through momentum and, with Adam, through Adam's normalisation, like torch's Adam
    `weight_decay`, not AdamW). Stateless.
    """

    name = "l2"
    member_wise = True

    def __init__(self, lam: float = 1e-4):
        super().__init__(lam)

    def loss(self, ctx: Context, batch: Batch, output: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.lam * sum(p.pow(2).sum() for p in self.params)
