"""Experience replay (ER).

Chaudhry et al., "On Tiny Episodic Memories in Continual Learning" (2019, arXiv 1902.10486);
loss weighting of De Lange, van de Ven & Tuytelaars, "Continual evaluation for lifelong
learning: identifying the stability gap" (ICLR 2023), `src/methods/replay.py` of their code;
nearest-class-mean classifier of Rebuffi, Kolesnikov, Sperl & Lampert, "iCaRL: Incremental
Classifier and Representation Learning" (CVPR 2017, arXiv 1611.07725).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from cl.context import Batch, Context
from cl.strategy import Strategy
from strategies.memory import ClassBalancedMemory, ReservoirMemory

BUFFERS = ("class_balanced", "reservoir")
CLASSIFIERS = ("linear", "ncm")
FAR = 4.0  # distance given to classes without memory samples: beyond any real one (<= 2)


def nearest_mean_scores(
    features: torch.Tensor, mem_features: torch.Tensor, mem_y: torch.Tensor, n_classes: int
) -> torch.Tensor:
    """-||f(x) - mu_c||, per sample and class, on L2-normalised features (iCaRL's rule):
    mu_c = the re-normalised mean of class c's normalised memory features; `FAR` for classes
    with no memory sample. The nearest mean has the highest score."""
    f = F.normalize(features.flatten(1), dim=1)
    m = F.normalize(mem_features.flatten(1), dim=1)
    sums = m.new_zeros(n_classes, m.shape[1]).index_add_(0, mem_y, m)
    present = torch.bincount(mem_y, minlength=n_classes) > 0
    means = F.normalize(sums[present], dim=1)
    scores = f.new_full((len(f), n_classes), -FAR)
    scores[:, present] = -torch.cdist(f, means)
    return scores


class Replay(Strategy):
    """Mix `mem_batch_size` replayed samples into every training batch.

    Memory: `class_balanced` (equal share per seen class, updated after each experience, as
    the stability-gap ER) or `reservoir` (uniform over all samples seen, updated every step).
    Loss: with `new_weight=None` the plain mean CE over new and replayed samples together
    (Avalanche's `ReplayPlugin`); with `new_weight=w`,
    L = w * mean(CE_new) + (1 - w) * mean(CE_mem) (stability-gap ER; 0.3 on Split-MNIST);
    with `new_weight="1/k"`, w = 1/k in the k-th experience: the replay approximation of the
    joint loss over the k tasks so far (Hess, Tuytelaars & van de Ven, "Two Complementary
    Perspectives to Continual Learning", arXiv 2311.04898). While the memory is empty only
    the new samples count.

    Classifier (evaluation only): `linear`, the model's head; or `ncm`, iCaRL's nearest class
    mean: the class means of the memory's L2-normalised penultimate features, computed with
    the model being evaluated at every evaluation (so nothing to save: a resumed run
    recomputes them), and each sample goes to the nearest mean (`nearest_mean_scores`; the
    logged eval loss is the CE of these negated distances). While the memory is empty the
    head decides; classes not in the memory (the current task until its end, with a
    class-balanced memory) are never predicted. Training and online accuracy use the head.

    Sharing: `setup` puts the memory in `ctx.memory`, and every batch puts the replayed
    samples in `ctx.replayed`, so strategies after replay in the list (GEM, A-GEM) take their
    reference gradients on this memory instead of keeping their own.
    """

    name = "replay"
    member_wise = True

    def __init__(
        self,
        mem_size: int = 500,
        mem_batch_size: int | None = None,
        buffer: str = "class_balanced",
        new_weight: float | str | None = 0.3,
        classifier: str = "linear",
    ):
        if mem_size <= 0:
            raise ValueError(f"mem_size must be a positive integer, got {mem_size}")
        if mem_batch_size is not None and mem_batch_size <= 0:
            raise ValueError(
                f"mem_batch_size must be a positive integer or null, got {mem_batch_size}"
            )
        if buffer not in BUFFERS:
            raise ValueError(f"buffer must be one of {', '.join(BUFFERS)}, got {buffer!r}")
        if isinstance(new_weight, str) and new_weight != "1/k":
            raise ValueError(f"new_weight must be a number, '1/k' or null, got {new_weight!r}")
        if isinstance(new_weight, int | float) and not 0.0 < new_weight <= 1.0:
            raise ValueError(f"new_weight must be in (0, 1], '1/k' or null, got {new_weight}")
        if classifier not in CLASSIFIERS:
            raise ValueError(
                f"classifier must be one of {', '.join(CLASSIFIERS)}, got {classifier!r}"
            )
        self.classifier = classifier
        self.mem_batch_size = mem_batch_size
        self.new_weight = new_weight
        self.memory = (ClassBalancedMemory if buffer == "class_balanced" else ReservoirMemory)(
            mem_size
        )

    def setup(self, ctx: Context) -> None:
        ctx.memory = self.memory

    def batch(self, ctx: Context, batch: Batch) -> Batch:
        out, ctx.replayed = batch, None
        if len(self.memory) > 0:
            m = self.mem_batch_size or batch.n_new
            mx, my, mt = self.memory.sample(m, ctx.generator)
            ctx.replayed = Batch(mx, my, mt, 0)
            weight = None
            if self.new_weight is not None:
                w = self.new_weight
                w = 1.0 / (ctx.experience + 1) if w == "1/k" else w
                weight = torch.cat(
                    [
                        torch.full((batch.n_new,), w / batch.n_new, device=batch.y.device),
                        torch.full((m,), (1.0 - w) / m, device=batch.y.device),
                    ]
                )
            out = Batch(
                torch.cat([batch.x, mx]),
                torch.cat([batch.y, my]),
                torch.cat([batch.task, mt]),
                batch.n_new,
                weight,
            )
        if isinstance(self.memory, ReservoirMemory):
            self.memory.add(batch.x, batch.y, batch.task, ctx.generator)
        return out

    def after_experience(self, ctx: Context) -> None:
        if isinstance(self.memory, ClassBalancedMemory):
            e = ctx.stream.experiences[ctx.experience]
            self.memory.update(e.x, e.y, torch.full_like(e.y, e.index), ctx.generator)

    def eval_logits(
        self, ctx: Context, x: torch.Tensor, logits: torch.Tensor, features: torch.Tensor | None
    ) -> torch.Tensor:
        if self.classifier == "linear" or len(self.memory) == 0 or features is None:
            return logits
        m = self.memory
        return nearest_mean_scores(features, ctx.model.features(m.x), m.y, logits.shape[1])

    def state_dict(self) -> dict[str, Any]:
        return {"memory": self.memory.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.memory.load_state_dict(state["memory"])
