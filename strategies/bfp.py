"""BFP: Backward Feature Projection.

Gu, Shim & Shkurti, "Preserving Linear Separability in Continual Learning by Backward Feature
Projection", CVPR 2023 (arXiv 2303.14595); official code `rvl-lab-utoronto/BFP`,
`models/bfp/bfp.py` and `models/bfp/projector_manager.py`.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from cl.context import Batch, Context
from cl.strategy import Strategy


class BFP(Strategy):
    """Distil the old model's penultimate features through a learnable linear projection A.

    From the second experience on, with h = `ctx.features` (penultimate features of the
    training batch, new and, after replay in the list, replayed samples) and h_old those of the
    model frozen at the end of the previous experience (eval mode, no gradient):
        L_BFP = alpha_bfp * mean_i ||A h_i + b - h_old,i||_2 / sqrt(d)
    (the code's default `mfro` matching loss: the L2 norm per sample, not squared, divided by
    the square root of the feature width d; the paper's Eq. 6 is the norm). New features may
    change by any linear map of the old ones, so the old classes stay linearly separable while
    new directions can grow. A (d x d, with bias) is reset at the start of every experience, by
    default to a random `nn.Linear` initialisation as in the code's published commands
    (`identity_init=True`: to the identity, the code's `--proj_init_identity`), and trained on
    the same loss by its own optimiser, SGD lr `proj_lr` 0.1 momentum 0.9, stepped after the
    model's step. The paper runs it on DER++ or ER (`alpha_bfp` 1, `--final_feat`: the last
    feature map only); here it runs on cl's `replay` when composed after it
    (`strategy=[replay,bfp]`), alone on the new samples only. The code samples a second buffer
    batch for this loss; here it is computed on the same replayed samples as the CE.
    """

    name = "bfp"
    member_wise = True

    def __init__(
        self,
        alpha_bfp: float = 1.0,
        proj_lr: float = 0.1,
        momentum: float = 0.9,
        identity_init: bool = False,
    ):
        if alpha_bfp < 0:
            raise ValueError(f"alpha_bfp must be >= 0, got {alpha_bfp}")
        if proj_lr <= 0:
            raise ValueError(f"proj_lr must be > 0, got {proj_lr}")
        if not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.alpha, self.proj_lr, self.momentum = alpha_bfp, proj_lr, momentum
        self.identity_init = identity_init
        self.old_model: nn.Module | None = None
        self.projector: nn.Linear | None = None
        self.opt: torch.optim.SGD | None = None
        self.loaded: dict[str, Any] | None = None  # from `load_state_dict`, built in `setup`
        self.last: float | None = None

    def setup(self, ctx: Context) -> None:
        if not hasattr(ctx.model, "features"):
            raise ValueError("bfp needs a model with `features(x)` and `head`")
        state, self.loaded = self.loaded, None
        if state is not None and state["old"] is not None:
            self.old_model = self._frozen_copy(ctx.model)
            self.old_model.load_state_dict(state["old"])
            self._new_projector(ctx)
            self.projector.load_state_dict(state["projector"])
            self.opt.load_state_dict(state["opt"])

    @staticmethod
    def _frozen_copy(model: nn.Module) -> nn.Module:
        return copy.deepcopy(model).eval().requires_grad_(False)

    def _new_projector(self, ctx: Context, generator: torch.Generator | None = None) -> None:
        d = ctx.model.head.in_features
        self.projector = nn.Linear(d, d, device=ctx.device)
        with torch.no_grad():
            if self.identity_init:
                self.projector.weight.copy_(torch.eye(d))
                self.projector.bias.zero_()
            elif generator is not None:  # nn.Linear's own init, drawn from the run's RNG
                bound = 1 / math.sqrt(d)
                for p in self.projector.parameters():
                    p.copy_(torch.rand(p.shape, generator=generator) * 2 * bound - bound)
        self.opt = torch.optim.SGD(
            self.projector.parameters(), lr=self.proj_lr, momentum=self.momentum
        )

    def before_experience(self, ctx: Context) -> None:
        if ctx.experience > 0:
            self.old_model = self._frozen_copy(ctx.model)
            self._new_projector(ctx, ctx.generator)

    def loss(self, ctx: Context, batch: Batch, output: torch.Tensor) -> torch.Tensor | None:
        self.last = None
        if self.old_model is None or self.alpha == 0:
            return None
        with torch.no_grad():
            old = self.old_model.features(batch.x).flatten(1)
        h = ctx.features.flatten(1)
        self.opt.zero_grad(set_to_none=True)
        dist = (self.projector(h) - old).norm(dim=1).mean() / math.sqrt(h.shape[1])
        self.last = dist.item()
        return self.alpha * dist

    def after_step(self, ctx: Context) -> None:
        if self.last is not None:
            self.opt.step()

    def metrics(self) -> dict[str, float]:
        return {} if self.last is None else {"match_loss": self.last}

    def state_dict(self) -> dict[str, Any]:
        if self.old_model is None:
            return {"old": None}
        return {
            "old": self.old_model.state_dict(),
            "projector": self.projector.state_dict(),
            "opt": self.opt.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loaded = state
