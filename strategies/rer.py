"""RER: Relational Experience Replay (the R-ER variant).

Q. Wang et al., "Relational Experience Replay: Continual Learning by Adaptively Tuning
Task-wise Relationship", arXiv 2112.15402; official code `wqza/RelationalExperienceReplay-CL`,
`models/r_er.py` (meta-net `MetaMergeNet(2, 16, 2)` in `backbone/MetaResNet18.py`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from cl.context import Batch, Context
from strategies.replay import Replay


class MetaNet(nn.Module):
    """w = sigmoid(W2 (relu(W11 l) + relu(W12 z)) + b2): l = (CE_new, CE_mem), z = logit norms."""

    def __init__(self, hidden: int = 16):
        super().__init__()
        self.loss_in, self.norm_in, self.out = (
            nn.Linear(2, hidden),
            nn.Linear(2, hidden),
            nn.Linear(hidden, 2),
        )

    def forward(self, losses: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(F.relu(self.loss_in(losses)) + F.relu(self.norm_in(norms))))


def pair_stats(logits: torch.Tensor, y: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """((n, 2) per-sample CE, (n, 2) logit L2 norms) of new sample i and replayed sample i."""
    ce = F.cross_entropy(logits, y, reduction="none")
    norm = logits.masked_fill(logits.isinf(), 0.0).norm(dim=1)  # task-masked logits: -inf -> 0
    return torch.stack([ce[:n], ce[n:]], 1), torch.stack([norm[:n], norm[n:]], 1)


class RER(Replay):
    """Replay whose per-sample loss weights come from a meta-learnt weighting net.

    Each new sample i is paired with replayed sample i (`mem_batch_size` = the new batch);
    the meta-net maps the pair's CE losses l_i and logit norms z_i (detached) to
    (w_new,i, w_mem,i) in (0, 1)^2, and replay's weights are multiplied by them:
        L = sum_i a_new w_new,i CE_new,i + sum_i a_mem w_mem,i CE_mem,i
    (a = replay's per-sample weights; with `new_weight` 0.5 this is half the code's
    mean(w_new CE_new) + mean(w_mem CE_mem)). Before the warm start (epochs <= warm_start *
    train.epochs of every experience; the code: epoch > floor(n_epochs / 2)) and on the first
    experience w = 1: plain replay. Meta-step (from the second experience, every `meta_every`
    iterations, before the model's step; the code: every floor(n_epochs / 10) batches):
    a virtual SGD step theta' = theta - lr grad_theta L(theta, w_phi) (lr = the model
    optimiser's, no momentum; `torch.func.functional_call`, graph kept), then phi takes an
    Adam step (lr `meta_lr` 1e-3, weight decay 1e-4) on the mean CE of theta' on a fresh memory
    sample. The code's virtual step draws its own memory batch; here it reuses this batch's.
    Defaults as the code: reservoir memory, equal new/replay weights.
    """

    name = "rer"
    member_wise = True

    def __init__(
        self,
        mem_size: int = 500,
        buffer: str = "reservoir",
        new_weight: float | None = 0.5,
        meta_lr: float = 1e-3,
        meta_every: int = 5,
        warm_start: float = 0.5,
        hidden: int = 16,
    ):
        if isinstance(new_weight, str):
            raise ValueError(f"new_weight must be a number or null, got {new_weight!r}")
        super().__init__(mem_size, None, buffer, new_weight)
        if meta_lr <= 0 or meta_every <= 0 or hidden <= 0:
            raise ValueError("meta_lr, meta_every and hidden must be positive")
        if not 0 <= warm_start < 1:
            raise ValueError(f"warm_start must be in [0, 1), got {warm_start}")
        self.meta_lr, self.meta_every, self.warm_start = meta_lr, meta_every, warm_start
        self.meta, self.hidden = MetaNet(hidden), hidden
        self.meta_opt = torch.optim.Adam(self.meta.parameters(), lr=meta_lr, weight_decay=1e-4)
        self.loaded: dict[str, Any] | None = None
        self.drawn = False  # the meta-net's initial weights were drawn
        self.stats: dict[str, float] = {}

    def setup(self, ctx: Context) -> None:
        super().setup(ctx)
        state, self.loaded = self.loaded, None
        if state is None and not self.drawn:  # nn.Linear's init, drawn from the run's RNG
            with torch.no_grad():
                for layer in (self.meta.loss_in, self.meta.norm_in, self.meta.out):
                    bound = 1 / math.sqrt(layer.in_features)
                    for p in layer.parameters():
                        p.copy_(torch.rand(p.shape, generator=ctx.generator) * 2 * bound - bound)
        self.drawn = True  # once: a second `setup` (a vectorised group's member) keeps it
        self.meta.to(ctx.device)
        if state is not None:
            self.meta.load_state_dict(state["meta"])
            self.meta_opt.load_state_dict(state["meta_opt"])

    def base_weights(self, batch: Batch) -> torch.Tensor:
        if batch.weight is not None:
            return batch.weight
        return torch.full((len(batch.y),), 1.0 / len(batch.y), device=batch.y.device)

    def batch(self, ctx: Context, batch: Batch) -> Batch:
        out = super().batch(ctx, batch)
        if ctx.experience > 0 and ctx.replayed is not None:
            if (ctx.iteration + 1) % self.meta_every == 0:
                self.meta_step(ctx, out)
        return out

    def meta_step(self, ctx: Context, batch: Batch) -> None:
        model, n = ctx.model, batch.n_new
        params = {k: p.detach().requires_grad_() for k, p in model.named_parameters()}
        buffers = {k: b.clone() for k, b in model.named_buffers()}  # BN statistics untouched
        logits = ctx.logits(functional_call(model, (params, buffers), (batch.x,)), batch.task)
        losses, norms = pair_stats(logits, batch.y, n)
        w = self.meta(losses.detach(), norms.detach())
        inner = (
            self.base_weights(batch)
            * torch.cat([w[:, 0], w[:, 1]])
            * torch.cat([losses[:, 0], losses[:, 1]])
        ).sum()
        grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
        lr = ctx.optimizer.param_groups[0]["lr"]
        fast = {k: p - lr * g for (k, p), g in zip(params.items(), grads, strict=True)}
        vx, vy, vt = self.memory.sample(len(ctx.replayed.y), ctx.generator)
        outer = F.cross_entropy(ctx.logits(functional_call(model, (fast, buffers), (vx,)), vt), vy)
        self.meta_opt.zero_grad(set_to_none=True)
        outer.backward(inputs=list(self.meta.parameters()))
        self.meta_opt.step()
        self.stats["meta_loss"] = outer.item()

    def loss(self, ctx: Context, batch: Batch, output: torch.Tensor) -> torch.Tensor | None:
        warm = ctx.epoch > self.warm_start * ctx.epochs
        if ctx.experience == 0 or ctx.replayed is None or not warm:
            return None
        losses, norms = pair_stats(output, batch.y, batch.n_new)
        with torch.no_grad():
            w = self.meta(losses.detach(), norms.detach())
        self.stats.update(w_new=w[:, 0].mean().item(), w_mem=w[:, 1].mean().item())
        ce = torch.cat([losses[:, 0], losses[:, 1]])
        # the task loss already holds sum(a * CE): add sum(a * (w - 1) * CE)
        return (self.base_weights(batch) * (torch.cat([w[:, 0], w[:, 1]]) - 1) * ce).sum()

    def metrics(self) -> dict[str, float]:
        stats, self.stats = self.stats, {}
        return stats

    def state_dict(self) -> dict[str, Any]:
        meta = {"meta": self.meta.state_dict(), "meta_opt": self.meta_opt.state_dict()}
        return {**super().state_dict(), **meta}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.loaded = state
