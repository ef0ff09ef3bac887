"""Spectral regularisation.

Lewandowski, Bortkiewicz, Kumar, Gyorgy, Schuurmans, Ostaszewski, Machado, "Learning Continually
by Spectral Regularization", arXiv 2406.06811 (ICLR 2025).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from cl.context import Batch, Context
from cl.strategy import Strategy


class Spectral(Strategy):
    """Keep every layer's largest singular value near 1 with a soft penalty.

        R(theta) = sum_l [ (sigma_max(W_l)^k - 1)^2 + (||b_l||_2^k)^2 ],   L = L_task + lam * R

    over every Linear and Conv2d layer of the model, head included (conv kernels reshaped to
    (out, in*kh*kw); the bias is a one-column matrix, so sigma_max(b) = ||b||_2, target 0; for
    k = 2 a layer adds (sigma^2 - 1)^2 + ||b||^4). Normalisation scales are not regularised.
    sigma_max comes from one power-iteration step per training step with a persistent left
    vector u per layer (as spectral normalisation, Miyato et al. 2018):
        v = normalize(W^T u),  u = normalize(W v),  sigma = u^T W v   (u, v detached)
    so d sigma / dW = u v^T. The u vectors are drawn once from the run's generator and saved
    in the state dict.
    """

    name = "spectral"
    member_wise = True

    def __init__(self, lam: float = 1e-4, k: int = 2):
        if lam < 0:
            raise ValueError(f"lam must be >= 0, got {lam}")
        if k < 1:
            raise ValueError(f"k must be a positive integer, got {k}")
        self.lam, self.k = lam, k
        self.layers: list[nn.Module] = []
        self.u: list[torch.Tensor] | None = None

    def setup(self, ctx: Context) -> None:
        self.layers = [m for m in ctx.model.modules() if isinstance(m, nn.Linear | nn.Conv2d)]
        if self.u is None:
            self.u = [
                F.normalize(torch.randn(m.weight.shape[0], generator=ctx.generator), dim=0).to(
                    m.weight
                )
                for m in self.layers
            ]

    def sigmas(self) -> list[torch.Tensor]:
        """One power-iteration step per layer; returns the estimates (differentiable in W)."""
        out = []
        for i, m in enumerate(self.layers):
            w = m.weight.reshape(m.weight.shape[0], -1)
            with torch.no_grad():
                v = F.normalize(w.T @ self.u[i], dim=0)
                self.u[i] = F.normalize(w @ v, dim=0)
            out.append(self.u[i] @ w @ v)
        return out

    def loss(self, ctx: Context, batch: Batch, output: torch.Tensor) -> torch.Tensor:
        total = 0.0
        for m, sigma in zip(self.layers, self.sigmas(), strict=True):
            total = total + (sigma**self.k - 1) ** 2
            if m.bias is not None:
                total = total + m.bias.norm() ** (2 * self.k)
        return self.lam * total

    def state_dict(self) -> dict[str, Any]:
        return {"u": list(self.u or [])}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.u = [u.clone() for u in state["u"]]
