"""The group's monitor: every member's evaluation subsets scored in one batched forward
(`[members, chunk, ...]`), each member's row finished by its own monitor (its trackers) and
logged to its own sinks (`MemberRows`: one row per member)."""

from __future__ import annotations

import torch

from cl.context import Context
from cl.errors import UserError
from cl.evaluation import Evaluator
from cl.members.context import MemberContext, PerMember
from cl.trackers.base import Evaluation


class MemberRows(list):
    """One row per member; `update` splits `PerMember` values."""

    def update(self, values: dict) -> None:  # type: ignore[override]
        for m, row in enumerate(self):
            row.update(
                {
                    k: v[m] if isinstance(v, PerMember) else v
                    for k, v in values.items()
                    if not (isinstance(v, PerMember) and v[m] is None)
                }
            )


class StackedEvaluator:
    """Every member's evaluation subsets in one batched forward (`[members, chunk, ...]`)."""

    def __init__(self, evaluators: list[Evaluator], masks: torch.Tensor | None):
        e0 = evaluators[0]
        if any(e.ends != e0.ends for e in evaluators):
            raise UserError("the members' evaluation subsets differ in size; use executor=local")
        self.x = torch.stack([e.x for e in evaluators])
        self.y = torch.stack([e.y for e in evaluators])
        self.task, self.ends, self.sizes = e0.task, e0.ends, e0.sizes
        self.batch_size, self.masks = e0.batch_size, masks
        self.hook = None

    def __call__(self, model, n: int):
        from cl.models import forward

        end, members = self.ends[n - 1], self.x.shape[0]
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                sums = torch.zeros(members, n, 2, device=self.x.device, dtype=torch.float64)
                hits = []
                rows = torch.arange(members, device=self.x.device)[:, None]
                for start in range(0, end, self.batch_size):
                    sl = slice(start, min(end, start + self.batch_size))
                    x = self.x[:, sl]
                    out = model(x) if self.hook is None else self.hook(x, *forward(model, x))
                    task = self.task[sl]
                    if self.masks is not None:
                        out = out.masked_fill(~self.masks[rows, task[None]], float("-inf"))
                    y = self.y[:, sl]
                    hits.append(out.argmax(-1) == y)
                    ce = -torch.log_softmax(out, -1).gather(-1, y[..., None]).squeeze(-1)
                    sums.index_add_(1, task, torch.stack([hits[-1], ce], -1).double())
                stats = (sums / self.sizes[None, :n, None]).transpose(1, 2).tolist()
        finally:
            model.train(was_training)
        hits = torch.cat(hits, 1)
        return [(s[0], s[1], hits[m]) for m, s in enumerate(stats)]


class GroupMonitor:
    def __init__(self, monitors: list, members: list[Context], masks):
        self.monitors, self.members = monitors, members
        self.every, self.unseen = monitors[0].every, monitors[0].unseen
        self.stream_tasks = monitors[0].stream.n_tasks
        self.evaluator = StackedEvaluator([m.evaluator for m in monitors], masks)

    @property
    def record(self):
        return self.monitors[0].record

    def probe_due(self, iteration: int) -> bool:
        return self.monitors[0].probe_due(iteration)

    def due(self, iteration: int) -> bool:
        return self.monitors[0].due(iteration)

    def step(self, loss, correct, grad_norm, stats, n: int) -> None:
        for m, mon in enumerate(self.monitors):
            norm = None if grad_norm is None else grad_norm[m]
            mine = {k: v[m] for k, v in stats.items() if v[m] is not None}
            mon.step(loss[m], correct[m], norm, mine, n)

    def add(self, ctx: MemberContext, epoch: int, boundary: bool, log, extra=None) -> None:
        """Evaluate every member in one stacked pass and log their rows (`MemberRows`) at once:
        each member's monitor finishes its row as a one-row chunk (its `flush`)."""
        k = ctx.experience
        ctx.sync()
        n_eval = self.stream_tasks if boundary or self.unseen else k + 1
        rows = MemberRows()
        results = self.evaluator(ctx.model, n_eval)
        for mon, c, (accs, losses, hits) in zip(self.monitors, self.members, results, strict=True):
            ends = mon.evaluator.ends
            ev = Evaluation(c.model, k, ctx.iteration, boundary, (accs, losses), None, hits, ends)
            parts = {n: (t.window(ev), t.row(ev)) for n, t in mon.trackers.items() if not t.on_host}
            head = {"iteration": ctx.iteration, "experience": k, "epoch": epoch}
            mon.pending.append((head, ev, mon.steps, parts, {}))
            mon.steps = []
            mon.flush(rows.append)
        rows.update(extra or {})
        log(rows)

    def flush(self, log) -> None:
        """Nothing waits: a group logs its rows as it evaluates (`add`)."""
