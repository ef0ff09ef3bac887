"""The group's context and the member-wise strategy adapter.

`MemberContext` gives the loop its per-member order, gather and loss (one loss per member:
their sum is backpropagated, so each member gets its own gradient); its `members` are the
members' own contexts (generator, stream, memory, model). `MemberWise` calls a strategy that
declares `member_wise = True` once per member with that member's own context on its slice of
the batch, stacks what the calls return, and moves gradients between the member models and the
stack around gradient surgery (README, "Vectorised seeds").
"""

from __future__ import annotations

from typing import Any

import torch

from cl.context import Batch, Context
from cl.strategy import Strategy


class MemberContext(Context):
    """The group's context: tensors carry a leading member axis; `members` are the members'
    own contexts (kept in step by `sync`)."""

    members: list[Context]

    def sync(self) -> None:
        for c in self.members:
            c.experience, c.iteration, c.epoch = self.experience, self.iteration, self.epoch

    def shuffle(self, n: int) -> torch.Tensor:
        return torch.stack([c.shuffle(n) for c in self.members])

    def take(self, t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(len(idx), device=idx.device)[:, None]
        return t[rows, idx]

    def task_loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        ce = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), batch.y.flatten(), reduction="none"
        ).view(batch.y.shape)
        return ce.mean(1) if batch.weight is None else (ce * batch.weight).sum(1)

    def grad_norm(self) -> list[float]:
        self.optimizer.fold()
        out = []
        for m in range(len(self.members)):
            grads = [p.grad[m] for p in self.model.params if p.grad is not None]
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
            out.append(float(norm) if grads else 0.0)
        return out

    def logits(self, output: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        if self.class_mask is None:
            return output
        rows = torch.arange(len(task), device=task.device)[:, None]
        return output.masked_fill(~self.class_mask[rows, task], float("-inf"))


# --- strategies ----------------------------------------------------------------------------------


class PerMember(list):
    """One value per member (a strategy statistic, a row value): split by the monitor."""


class MemberWise(Strategy):
    """The members' instances of one strategy, called member by member with each member's
    context on its slice of the batch; what they return is stacked along the member axis."""

    def __init__(self, instances: list[Strategy], members: list[Context], group: MemberContext):
        self.instances, self.members, self.group = instances, members, group
        self.name = instances[0].name
        cls = type(instances[0])
        self.surgery = cls.after_backward is not Strategy.after_backward
        self.scores = cls.eval_logits is not Strategy.eval_logits

    def _each(self, method: str) -> list:
        self.group.sync()
        return [getattr(s, method)(c) for s, c in zip(self.instances, self.members, strict=True)]

    def before_experience(self, ctx):
        for c in self.members:
            e = c.stream.experiences[ctx.experience]
            c.seen_classes = sorted(set(c.seen_classes) | set(e.classes))
        self._each("before_experience")

    def train_data(self, ctx, x, y, task):
        self.group.sync()
        out = [
            s.train_data(c, x[m], y[m], task[m])
            for m, (s, c) in enumerate(zip(self.instances, self.members, strict=True))
        ]
        return tuple(torch.stack(t) for t in zip(*out, strict=True))

    def batch(self, ctx, batch):
        self.group.sync()
        out = []
        for m, (s, c) in enumerate(zip(self.instances, self.members, strict=True)):
            w = None if batch.weight is None else batch.weight[m]
            b = Batch(batch.x[m], batch.y[m], batch.task[m], batch.n_new, w)
            out.append(s.batch(c, b))
        weights = [b.weight for b in out]
        weight = None if all(w is None for w in weights) else torch.stack(weights)
        return Batch(
            torch.stack([b.x for b in out]),
            torch.stack([b.y for b in out]),
            torch.stack([b.task for b in out]),
            out[0].n_new,
            weight,
        )

    def loss(self, ctx, batch, output):
        self.group.sync()
        terms = []
        for m, (s, c) in enumerate(zip(self.instances, self.members, strict=True)):
            c.features = None if ctx.features is None else ctx.features[m]
            w = None if batch.weight is None else batch.weight[m]
            b = Batch(batch.x[m], batch.y[m], batch.task[m], batch.n_new, w)
            terms.append(s.loss(c, b, output[m]))
        if all(t is None for t in terms):
            return None
        zero = output.new_zeros(())
        return torch.stack([zero if t is None else t.reshape(()) for t in terms])

    def after_backward(self, ctx):
        if not self.surgery:
            return
        self.group.sync()
        for m, (s, c) in enumerate(zip(self.instances, self.members, strict=True)):
            ctx.optimizer.unfold(m)
            s.after_backward(c)

    def after_step(self, ctx):
        self._each("after_step")

    def after_experience(self, ctx):
        self._each("after_experience")

    def eval_logits(self, ctx, x, logits, features):
        if not self.scores:
            return logits
        return torch.stack(
            [
                s.eval_logits(c, x[m], logits[m], None if features is None else features[m])
                for m, (s, c) in enumerate(zip(self.instances, self.members, strict=True))
            ]
        )

    def metrics(self):
        return _per_member([s.metrics() for s in self.instances])

    def experience_metrics(self):
        return _per_member([s.experience_metrics() for s in self.instances])


def _per_member(dicts: list[dict]) -> dict:
    keys = dict.fromkeys(k for d in dicts for k in d)
    return {k: PerMember(d.get(k) for d in dicts) for k in keys}


def member_values(values: Any, m: int) -> Any:
    return values[m] if isinstance(values, PerMember) else values
