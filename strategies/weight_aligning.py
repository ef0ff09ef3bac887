"""WA: Zhao, Xiao, Gan, Zhang & Xia, "Maintaining Discrimination and Fairness in Class
Incremental Learning", CVPR 2020 (arXiv 1911.07053); reference code `G-U-N/PyCIL models/wa.py`."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch.nn import functional as F

from cl.context import Batch, Context
from cl.strategy import Strategy


def herding(features: torch.Tensor, m: int) -> torch.Tensor:
    """iCaRL herding (PyCIL `_construct_exemplar`), in priority order: on L2-normalised phi,
    repeatedly pick argmin_i ||mu - (phi_i + S) / k||, S = sum of the k - 1 chosen, no repeats."""
    phi = F.normalize(features, dim=1)
    mu, s = phi.mean(0), torch.zeros_like(phi[0])
    free = torch.ones(len(phi), dtype=torch.bool, device=phi.device)
    chosen = []
    for k in range(1, min(m, len(phi)) + 1):
        dist = (mu - (phi + s) / k).norm(dim=1).masked_fill(~free, float("inf"))
        chosen.append(i := int(dist.argmin()))
        free[i], s = False, s + phi[i]
    return torch.tensor(chosen, dtype=torch.long, device=features.device)


class WeightAligning(Strategy):
    """KD + exemplar replay + Weight Aligning (Zhao et al., CVPR 2020), class-incremental.

    L = (1 - lam) CE_seen(o, y) + lam KD (paper, PyCIL), lam = C_old / (C_old + C_new) with
    C_old = classes seen before this experience, C_new = this experience's classes;
    KD = -(1/B) sum_x sum_{k old} softmax(o^_k / T) log softmax(o_k / T), T = `temperature`,
    no T^2; o^ = logits of the model frozen at the experience start (after the last alignment).
    CE_seen: CE over the classes seen so far (the head has every class from the start; unseen
    rows are neither pushed towards -inf nor part of WA's norms). The runner already adds
    CE_all (all head units, weight 1, or its per-sample weights), so this term returns
    -CE_all + (1 - lam) CE_seen + lam KD, which makes the total exactly L.
    Exemplars: `mem_size` in total (0 = none), equal share per seen class, iCaRL herding on the
    current model's features; old classes keep their first (highest-priority) exemplars.
    `mem_batch_size=None` (paper): exemplars join the training data (D_new U M); an integer k
    draws k exemplars into every batch instead (plain mean CE).
    Aligning (`align`), after each experience with new classes: gamma = mean_old ||W_c|| /
    mean_new ||W_c|| over head rows, W_new <- gamma W_new; biases untouched (as PyCIL).
    `clip` (default True, the paper's; PyCIL does not clip): W_head <- max(W_head, 0) after
    every step. gamma is logged per experience as `strategy/weight_aligning/gamma` (also with
    align=false: the factor it would apply). When aligning helps (class-incremental
    Split-MNIST, mnist5k, MLP 400-400, SGD, mem_size 200, seeds 0-2;
    experiments/weight_aligning/README.md): only with clipping and a converged head (5 epochs:
    ACC 0.480 -> 0.559, gamma 0.90-0.99 < 1); it hurts at 1 epoch (clip 0.212 -> 0.160, no clip
    0.170 -> 0.121) and without clipping at 5 epochs (0.525 -> 0.280), where gamma > 1 (1.22-1.29:
    the old rows are the larger ones) and aligning enlarges the new rows further.
    """

    name = "weight_aligning"
    member_wise = True

    def __init__(
        self,
        mem_size: int = 2000,
        mem_batch_size: int | None = None,
        temperature: float = 2.0,
        align: bool = True,
        clip: bool = True,
    ):
        if mem_size < 0:
            raise ValueError(f"mem_size must be >= 0, got {mem_size}")
        if mem_batch_size is not None and mem_batch_size <= 0:
            raise ValueError(
                f"mem_batch_size must be a positive integer or null, got {mem_batch_size}"
            )
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.mem_size, self.mem_batch_size = mem_size, mem_batch_size
        self.temperature, self.align, self.clip = temperature, align, clip
        self.old_classes: list[int] = []  # classes seen before the current experience
        self.lam, self.old_model = 0.0, None  # KD weight, frozen teacher of this experience
        self.teacher_weights: dict[str, torch.Tensor] | None = None  # loaded, not yet built
        self.x = self.y = self.task = None
        self.gamma: float | None = None  # this experience's aligning factor (a statistic)

    @classmethod
    def check(cls, cfg) -> None:
        if cfg.benchmark.incremental == "task":
            raise ValueError(
                "a class-incremental (single-head) method; use benchmark.incremental=class"
            )

    def setup(self, ctx: Context) -> None:
        if ctx.class_mask is not None:
            raise ValueError("weight_aligning is a class-incremental (single-head) method")
        if self.teacher_weights is not None:  # from `load_state_dict`
            self.old_model = self._frozen_copy(ctx.model)
            self.old_model.load_state_dict(self.teacher_weights)
            self.teacher_weights = None

    @staticmethod
    def _frozen_copy(model: torch.nn.Module) -> torch.nn.Module:
        return copy.deepcopy(model).eval().requires_grad_(False)

    def before_experience(self, ctx: Context) -> None:
        current = ctx.stream.experiences[ctx.experience].classes
        self.lam = len(self.old_classes) / (len(self.old_classes) + len(current))
        self.old_model = None
        if self.old_classes:
            self.old_model = self._frozen_copy(ctx.model)

    def train_data(self, ctx: Context, x: torch.Tensor, y: torch.Tensor, task: torch.Tensor):
        if self.mem_batch_size is not None or self.y is None:
            return x, y, task
        return torch.cat([x, self.x]), torch.cat([y, self.y]), torch.cat([task, self.task])

    def batch(self, ctx: Context, batch: Batch) -> Batch:
        if self.mem_batch_size is None or self.y is None or len(self.y) == 0:
            return batch
        idx = torch.randint(len(self.y), (self.mem_batch_size,), generator=ctx.generator)
        pairs = ((batch.x, self.x), (batch.y, self.y), (batch.task, self.task))
        x, y, t = (torch.cat([a, b[idx.to(b.device)]]) for a, b in pairs)
        return Batch(x, y, t, batch.n_new)

    def loss(self, ctx: Context, batch: Batch, output: torch.Tensor) -> torch.Tensor | None:
        seen = torch.zeros(output.shape[1], dtype=torch.bool, device=output.device)
        seen[ctx.seen_classes] = True
        ce = lambda o: F.cross_entropy(o, batch.y, reduction="none")  # noqa: E731
        ce_all, ce_seen = ce(output), ce(output.masked_fill(~seen, float("-inf")))
        w = batch.weight
        reduce = (lambda v: v.mean()) if w is None else (lambda v: (v * w).sum())  # noqa: E731
        extra = -reduce(ce_all) + (1 - self.lam) * reduce(ce_seen)
        if self.old_model is None:
            return extra
        old = self.old_classes
        with torch.no_grad():
            target = F.softmax(self.old_model(batch.x)[:, old] / self.temperature, dim=1)
        log_p = F.log_softmax(output[:, old] / self.temperature, dim=1)
        return extra + self.lam * -(target * log_p).sum(1).mean()

    def after_step(self, ctx: Context) -> None:
        if self.clip:
            with torch.no_grad():
                ctx.model.head.weight.clamp_(min=0)

    def after_experience(self, ctx: Context) -> None:
        new = [c for c in ctx.seen_classes if c not in self.old_classes]
        W = ctx.model.head.weight
        self.gamma = None
        if self.old_classes and new:
            with torch.no_grad():
                norms = W.norm(dim=1)
                gamma = norms[self.old_classes].mean() / norms[new].mean()
                self.gamma = float(gamma)  # logged also with align=false: what it would be
                if self.align:
                    W[new] *= gamma
        if self.mem_size > 0:
            self.update_memory(ctx, new)
        self.old_classes = list(ctx.seen_classes)

    def experience_metrics(self) -> dict[str, float]:
        return {} if self.gamma is None else {"gamma": self.gamma}

    def update_memory(self, ctx: Context, new: list[int]) -> None:
        per_class = self.mem_size // len(ctx.seen_classes)
        parts = []
        if self.y is not None:
            for c in self.y.unique().tolist():
                idx = (self.y == c).nonzero().squeeze(1)[:per_class]
                parts.append((self.x[idx], self.y[idx], self.task[idx]))
        e = ctx.stream.experiences[ctx.experience]
        was_training = ctx.model.training
        with torch.no_grad():
            ctx.model.eval()
            for c in new:
                idx = (e.y == c).nonzero().squeeze(1)
                idx = idx[herding(ctx.model.features(e.x[idx]), per_class)]
                parts.append((e.x[idx], e.y[idx], torch.full_like(e.y[idx], e.index)))
        ctx.model.train(was_training)
        self.x, self.y, self.task = (torch.cat([p[i] for p in parts]) for i in range(3))

    def state_dict(self) -> dict[str, Any]:
        teacher = None if self.old_model is None else self.old_model.state_dict()
        return {
            "x": self.x,
            "y": self.y,
            "task": self.task,
            "old_classes": list(self.old_classes),
            "lam": self.lam,
            "teacher": teacher,  # this experience's frozen model (weights only)
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.x, self.y, self.task = state["x"], state["y"], state["task"]
        self.old_classes, self.lam = list(state["old_classes"]), state["lam"]
        self.teacher_weights = state["teacher"]  # the teacher is rebuilt in `setup`
