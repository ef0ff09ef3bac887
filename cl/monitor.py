"""What the runner records: the monitor composes the metric trackers (cl/trackers/, one per
family) and runs the one batched evaluation they share.

The runner calls `step` after every training iteration and `add` when a row is `due`; the
monitor evaluates the model once and hands the result to every tracker, which adds its part of
the row and keeps what its summary needs.

Rows leave the device in chunks: per-iteration values (loss, online hits, the evaluation's
sums, trackers' device scalars) stay device tensors until `flush`, which copies them to the
host in one transfer (`HostCopy`) every `run.row_chunk` rows, then finishes and logs the rows
in order. Trackers marked `on_host` (accuracy, online) see those rows only then, with host
numbers; the others run at the row's iteration, on the model as it is then.
"""

from __future__ import annotations

import torch

from cl import trackers
from cl.context import Context
from cl.evaluation import Evaluator
from cl.schema import EvalConfig, MetricsConfig, PlasticityConfig
from cl.trackers.accuracy import Record
from cl.trackers.base import Env, Evaluation, Step

__all__ = ["HostCopy", "Monitor", "Record", "row_chunk"]


def row_chunk(value: int, device: torch.device) -> int:
    """`run.row_chunk` (0 = auto: 50 rows per host copy on CUDA, 1 elsewhere)."""
    return value or (50 if torch.device(device).type == "cuda" else 1)


class HostCopy:
    """Copies device tensors (0-d, 1-d or 2-d) to the host in one transfer and returns them
    as Python numbers and lists; `copies` counts the transfers. On CUDA the tensors go into
    one pinned buffer, then the stream is synchronised; on the CPU (nothing to transfer) each
    tensor is read where it is, `.tolist()`, the cheapest there."""

    def __init__(self):
        self.copies = 0

    def __call__(self, tensors: list[torch.Tensor]) -> list:
        if not tensors:
            return []
        self.copies += 1
        if not tensors[0].is_cuda:
            return [t.tolist() for t in tensors]
        wide = torch.empty(0, dtype=torch.float64, device=tensors[0].device)  # promotes to it
        flat = torch.cat([wide, *(t.reshape(-1) for t in tensors)])
        host = torch.empty(flat.shape, dtype=flat.dtype, pin_memory=True)
        host.copy_(flat, non_blocking=True)
        torch.cuda.current_stream(flat.device).synchronize()
        values, out, i = host.tolist(), [], 0
        for t in tensors:
            v, i = values[i : i + t.numel()], i + t.numel()
            if not t.is_floating_point():
                v = [int(x) for x in v]
            if t.dim() == 2:
                w = t.shape[1]
                v = [v[r * w : (r + 1) * w] for r in range(t.shape[0])]
            out.append(v[0] if t.dim() == 0 else v)
        return out


def _get(holder, key):
    return holder[key] if isinstance(holder, dict) else getattr(holder, key)


def _set(holder, key, value) -> None:
    if isinstance(holder, dict):
        holder[key] = value
    else:
        setattr(holder, key, value)


class Monitor:
    """The rows of the run of `ctx`: evaluated as the config's `eval` section says, by the
    trackers that `metrics` and `plasticity` turn on (`seed`: their random choices), copied
    to the host `chunk` rows at a time (`run.row_chunk`)."""

    def __init__(
        self,
        ctx: Context,
        eval: EvalConfig,
        metrics: MetricsConfig,
        plasticity: PlasticityConfig,
        seed: int,
        chunk: int = 0,
    ):
        self.every, self.unseen, self.stream = eval.every, eval.unseen, ctx.stream
        self.evaluator = Evaluator(ctx.stream, ctx.device, eval.batch_size)
        env = Env(ctx.stream, ctx.model, ctx.device, seed, self.evaluator, eval.batch_size)
        self.trackers = trackers.build(metrics, plasticity, env)
        self.chunk = row_chunk(chunk, ctx.device)
        self.copy = HostCopy()
        self.pending: list[tuple] = []  # rows waiting for the host copy
        self.steps: list[Step] = []  # steps since the last row, for the `on_host` trackers
        # over several ranks: each step's loss and online count are the rank's parts until
        # summed (`sync`: with the row's evaluation, or before a checkpoint); `synced` of
        # `steps` are summed
        self.collective = self.evaluator.collective = ctx.collective
        self.evaluator.want_hits = any(n in self.trackers for n in ("example_forgetting", "nfr"))
        self.synced = 0

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
        self.steps.append(s)
        for t in self.trackers.values():
            if not t.on_host:
                t.step(s)

    def add(self, ctx: Context, epoch: int, boundary: bool, log, extra: dict | None = None):
        """Evaluate now and queue this iteration's row (all tasks at boundaries; `extra` is
        appended to it); `log` gets the queued rows, in order, once `chunk` are waiting."""
        k = ctx.experience
        n_eval = self.stream.n_tasks if boundary or self.unseen else k + 1
        stats, hits, parts = self.evaluator.evaluate(ctx.model, n_eval, self._parts())
        self._summed(parts)
        ends = self.evaluator.ends
        ev = Evaluation(ctx.model, k, ctx.iteration, boundary, stats, None, hits, ends)
        parts = {  # the device-side trackers' parts, measured on the model as it is now
            name: (t.window(ev), t.row(ev)) for name, t in self.trackers.items() if not t.on_host
        }
        head = {"iteration": ctx.iteration, "experience": k, "epoch": epoch}
        self.pending.append((head, ev, self.steps, parts, extra or {}))
        self.steps, self.synced = [], 0
        if len(self.pending) >= self.chunk:
            self.flush(log)

    def _parts(self) -> torch.Tensor | None:
        """(steps not yet summed, 2) float64: each one's loss and online count on this rank
        (None on one rank, or when there are none)."""
        todo = self.steps[self.synced :]
        if self.collective.world == 1 or not todo:
            return None
        return torch.stack([torch.stack([s.loss.double(), s.correct.double()]) for s in todo])

    def _summed(self, parts: torch.Tensor | None) -> None:
        """Replace the steps' parts by the global loss (the ranks' mean: each rank's loss is
        its share's part of the global mean) and count."""
        if parts is None:
            return
        world = self.collective.world
        for s, (loss, correct) in zip(self.steps[self.synced :], parts, strict=True):
            s.loss, s.correct = loss / world, correct.round().long()
        self.synced = len(self.steps)

    def sync(self) -> None:
        """Sum the steps' parts over the ranks now (every rank calls it: before a checkpoint
        or a stop, which hold the steps since the last row)."""
        parts = self._parts()
        if parts is not None:
            self._summed(self.collective.all_reduce_sum(parts))

    def flush(self, log) -> None:
        """Copy the queued rows' device values to the host in one transfer, finish the rows
        and `log` them in order (also feeds the `on_host` trackers the steps since)."""
        pending, steps = self.pending, self.steps
        self.pending, self.steps, self.synced = [], [], 0
        refs = [(ev, "accs") for _, ev, *_ in pending]  # (holder, key) of each device value
        for _, _, row_steps, parts, _ in pending:
            refs += [(s, key) for s in row_steps for key in ("loss", "correct")]
            refs += [(d, k) for pair in parts.values() for d in pair for k in d]
        refs += [(s, key) for s in steps for key in ("loss", "correct")]
        refs = [(h, k) for h, k in refs if isinstance(_get(h, k), torch.Tensor)]
        for (holder, key), value in zip(
            refs, self.copy([_get(h, k) for h, k in refs]), strict=True
        ):
            _set(holder, key, value)
        host = [t for t in self.trackers.values() if t.on_host]
        for head, ev, row_steps, parts, extra in pending:
            ev.accs, ev.losses = ev.accs
            for s in row_steps:
                for t in host:
                    t.step(s)
            row = dict(head)
            for name, t in self.trackers.items():
                row.update(t.window(ev) if t.on_host else parts[name][0])
            for name, t in self.trackers.items():
                row.update(t.row(ev) if t.on_host else parts[name][1])
            row.update(extra)
            log(row)
        for s in steps:
            for t in host:
                t.step(s)

    def row(self, ctx: Context, epoch: int, boundary: bool) -> dict:
        """Evaluate and return the row for this iteration at once (with any queued before)."""
        rows: list[dict] = []
        self.add(ctx, epoch, boundary, rows.append)
        self.flush(rows.append)
        return rows[-1]

    def forgetting_tables(self) -> list[dict[str, list]]:
        """The per-sample tables of example forgetting (one per tracked set)."""
        ef = self.trackers.get("example_forgetting")
        return ef.tables() if ef is not None else []

    def state_dict(self) -> dict:
        """Every tracker's state, by name (tensors and plain data, for checkpoints); after
        `flush` (queued rows and steps are not part of it)."""
        if self.pending:
            raise RuntimeError("Monitor.state_dict with queued rows: flush them first")
        self.flush(lambda row: None)  # the steps since the last row, to their trackers
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
