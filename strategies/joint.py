"""Joint training on everything seen so far (the usual upper bound)."""

from __future__ import annotations

import torch

from cl.context import Context
from cl.strategy import Strategy


class Joint(Strategy):
    """At experience k, train on the union of the training data of experiences 0..k.

    This is incremental joint training (the "cumulative" baseline): each experience runs
    `train.epochs` epochs over the union, so later experiences have more iterations.
    """

    name = "joint"
    member_wise = True

    def train_data(self, ctx: Context, x: torch.Tensor, y: torch.Tensor, task: torch.Tensor):
        seen = ctx.stream.experiences[: ctx.experience + 1]
        xs = torch.cat([e.x for e in seen])
        ys = torch.cat([e.y for e in seen])
        ts = torch.cat([torch.full_like(e.y, e.index) for e in seen])
        return xs, ys, ts
