"""What the runner records: the monitor composes the metric trackers (cl/trackers/, one per
family) and runs the one batched evaluation they share.

The runner calls `step` after every training iteration and `row` when `due`; the monitor
evaluates the model once and hands the result to every tracker, which adds its part of the
row and keeps what its summary needs.
"""

from __future__ import annotations

from cl import trackers
from cl.context import Context
from cl.evaluation import Evaluator
from cl.schema import RunConfig
from cl.trackers.accuracy import Record
from cl.trackers.base import Env, Evaluation, Step

__all__ = ["Monitor", "Record"]


class Monitor:
    def __init__(self, cfg: RunConfig, ctx: Context):
        self.every, self.unseen, self.stream = cfg.eval.every, cfg.eval.unseen, ctx.stream
        self.evaluator = Evaluator(ctx.stream, ctx.device, cfg.eval.batch_size)
        env = Env(ctx.stream, ctx.model, ctx.device, cfg.seed, self.evaluator, cfg.eval.batch_size)
        self.trackers = trackers.build(cfg, env)

    @property
    def record(self) -> Record:
        """The evaluation record (accuracies, experiences, iterations of the rows so far)."""
        return self.trackers["accuracy"].record

    def probe_due(self, iteration: int) -> bool:
        """Whether the training step of `iteration` should measure the gradient norm."""
        return any(t.wants_grad_norm(iteration) for t in self.trackers.values())

    def due(self, iteration: int) -> bool:
        return iteration % self.every == 0 or any(t.due(iteration) for t in self.trackers.values())

    def step(self, loss, correct, grad_norm: float | None, stats: dict[str, float], n: int) -> None:
        s = Step(loss, correct, grad_norm, stats, n)
        for t in self.trackers.values():
            t.step(s)

    def row(self, ctx: Context, epoch: int, boundary: bool) -> dict:
        """Evaluate and return the row for this iteration (all tasks at boundaries)."""
        k = ctx.experience
        n_eval = self.stream.n_tasks if boundary or self.unseen else k + 1
        accs, losses, hits = self.evaluator(ctx.model, n_eval)
        ev = Evaluation(
            ctx.model, k, ctx.iteration, boundary, accs, losses, hits, self.evaluator.ends
        )
        row: dict = {"iteration": ctx.iteration, "experience": k, "epoch": epoch}
        for t in self.trackers.values():
            row.update(t.window(ev))
        for t in self.trackers.values():
            row.update(t.row(ev))
        return row

    def forgetting_tables(self) -> list[dict[str, list]]:
        """The per-sample tables of example forgetting (one per tracked set)."""
        ef = self.trackers.get("example_forgetting")
        return ef.tables() if ef is not None else []

    def state_dict(self) -> dict:
        """Every tracker's state, by name (tensors and plain data, for checkpoints)."""
        return {name: t.state_dict() for name, t in self.trackers.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, t in self.trackers.items():
            t.load_state_dict(state[name])

    def summary(self) -> dict:
        """Final values of every metric (those defined on what was recorded so far)."""
        out = {}
        for t in self.trackers.values():
            out.update(t.summary())
        return out
