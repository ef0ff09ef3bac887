"""Wasserstein regularisation towards the initial weight distribution.

Lewandowski, Bortkiewicz, Kumar, Gyorgy, Schuurmans, Machado, "Learning Continually by Spectral
Regularization", arXiv 2406.06811 v1; introduced in Lewandowski, Tanaka, Schuurmans, Machado,
"Directions of Curvature as an Explanation for Loss of Plasticity", arXiv 2312.00246.
"""

from __future__ import annotations

import numpy as np
import torch

from cl.context import Batch, Context
from strategies.penalty import ParameterPenalty


def _argsort(x: torch.Tensor) -> torch.Tensor:
    """torch's CPU sort is ~5x slower than NumPy's quicksort on 50k floats; ties don't matter."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.argsort(x.detach().numpy()))
    return x.argsort()


class Wasserstein(ParameterPenalty):
    """Penalise the squared 1-D 2-Wasserstein distance of each parameter tensor to its init.

        R_W(theta) = sum_l sum_i ( sort(theta_l)_i - sort(theta_l^(0))_i )^2,
        L = L_task + lam * R_W

    per parameter tensor l (weights and biases separately, every trainable parameter), no
    division by the tensor size. Sorting matches quantiles, so the penalty is permutation
    invariant: looser than L2-init, which ties every weight to its own initial value. The
    sorted initial parameters are saved in the state dict. Computed as lam * sum (theta -
    t)^2 with t the initial quantile matched to each weight by rank (t held constant): the same
    value and gradient as differentiating through the sort, at a fraction of sort's backward.
    """

    name = "wasserstein"
    member_wise = True
    anchored = True

    def __init__(self, lam: float = 1e-3):
        super().__init__(lam)

    def anchor(self, p: torch.Tensor) -> torch.Tensor:
        return p.detach().flatten().sort().values

    def loss(self, ctx: Context, batch: Batch, output: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for p, p0 in zip(self.params, self.init, strict=True):
            flat = p.flatten()
            with torch.no_grad():
                target = torch.empty_like(p0).scatter_(0, _argsort(flat), p0)
            total = total + (flat - target).pow(2).sum()
        return self.lam * total
