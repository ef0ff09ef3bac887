"""The stream runner: trains the model experience after experience, evaluating as it goes.

One training iteration = one optimizer step on one batch. After every `eval.every`
iterations, and always at the last iteration of each experience, the evaluator scores the
seen tasks (all tasks at experience ends and at the initial evaluation, for R and FWT) and
one row goes to `log`. Strategies act only through their hooks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from cl.config import RunConfig
from cl.context import Batch, Context
from cl.errors import RunFailed
from cl.evaluation import Evaluator
from cl.metrics import StreamingMetrics
from strategies.base import Strategy


@dataclass
class Record:
    """What the summary needs: every evaluation's accuracies and training experience."""

    accs: list[list[float]] = field(default_factory=list)
    experience: list[int] = field(default_factory=list)
    iterations: int = 0


def make_optimizer(cfg: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.name == "adam":
        return torch.optim.Adam(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
    )


def forward(model: torch.nn.Module, x: torch.Tensor):
    """(logits, penultimate features); features are None for models without `features`/`head`."""
    if hasattr(model, "features") and hasattr(model, "head"):
        features = model.features(x)
        return model.head(features), features
    return model(x), None


def train_step(ctx: Context, strategies: list[Strategy], batch: Batch):
    """Forward, loss (task + strategy terms), backward, step. Returns (loss, online correct)."""
    output, ctx.features = forward(ctx.model, batch.x)
    logits = ctx.logits(output, batch.task)
    if batch.weight is None:
        loss = F.cross_entropy(logits, batch.y)
    else:
        loss = (F.cross_entropy(logits, batch.y, reduction="none") * batch.weight).sum()
    for s in strategies:
        extra = s.loss(ctx, batch, logits)
        if extra is not None:
            loss = loss + extra
    ctx.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for s in strategies:
        s.after_backward(ctx)
    ctx.optimizer.step()
    for s in strategies:
        s.after_step(ctx)
    n = batch.n_new  # prequential accuracy: new samples, scored before this update
    correct = (logits[:n].argmax(1) == batch.y[:n]).sum()
    return loss.detach(), correct


def run_stream(
    cfg: RunConfig,
    ctx: Context,
    strategies: list[Strategy],
    log: Callable[[dict], None],
    progress=None,
    on_experience_end: Callable | None = None,
) -> Record:
    """Train on every experience of `ctx.stream`; log one row per evaluation."""
    stream, bs, every = ctx.stream, cfg.train.batch_size, cfg.eval.every
    evaluator = Evaluator(stream, ctx.device, cfg.eval.batch_size)
    tracker, record = StreamingMetrics(), Record()
    window: dict[str, list] = {"loss": [], "correct": [], "seen": []}  # since the last row

    def emit(epoch: int, all_tasks: bool) -> None:
        k = ctx.experience
        n_eval = stream.n_tasks if all_tasks or cfg.eval.unseen else k + 1
        accs, losses = evaluator(ctx.model, n_eval)
        row = {"iteration": ctx.iteration, "experience": k, "epoch": epoch}
        if window["loss"]:
            steps = len(window["loss"])
            loss_sum = window["loss"][0] if steps == 1 else torch.stack(window["loss"]).sum()
            hits = window["correct"][0] if steps == 1 else torch.stack(window["correct"]).sum()
            train_loss = loss_sum.item() / steps
            if not math.isfinite(train_loss):
                raise RunFailed(
                    f"the training loss became {train_loss} at iteration {ctx.iteration} "
                    f"(experience {k}); lower optim.lr or check the data. Rows logged so far "
                    "are kept."
                )
            row["train/loss"] = train_loss
            row["train/online_acc"] = hits.item() / sum(window["seen"])
            for values in window.values():
                values.clear()
        for i, (a, lo) in enumerate(zip(accs, losses, strict=True)):
            row[f"eval/acc/task_{i}"] = a
            row[f"eval/loss/task_{i}"] = lo
        row.update(tracker.update(k, accs))
        record.accs.append(accs + [math.nan] * (stream.n_tasks - len(accs)))
        record.experience.append(k)
        log(row)

    for s in strategies:
        s.setup(ctx)
    emit(epoch=0, all_tasks=True)  # before any training: b for FWT
    for exp in stream.experiences:
        ctx.experience = exp.index
        ctx.seen_classes = sorted(set(ctx.seen_classes) | set(exp.classes))
        for s in strategies:
            s.before_experience(ctx)
        x, y, task = exp.x, exp.y, torch.full_like(exp.y, exp.index)
        for s in strategies:
            x, y, task = s.train_data(ctx, x, y, task)
        n_batches = math.ceil(len(y) / bs)
        if progress is not None:
            later = sum(math.ceil(len(e.y) / bs) for e in stream.experiences[exp.index + 1 :])
            progress.total = ctx.iteration + cfg.train.epochs * (n_batches + later)
        for epoch in range(cfg.train.epochs):
            order = torch.randperm(len(y), generator=ctx.generator).to(y.device)
            for b, idx in enumerate(order.split(bs)):
                batch = Batch(x[idx], y[idx], task[idx], len(idx))
                for s in strategies:
                    batch = s.batch(ctx, batch)
                loss, correct = train_step(ctx, strategies, batch)
                ctx.iteration += 1
                window["loss"].append(loss)
                window["correct"].append(correct)
                window["seen"].append(len(idx))
                last = epoch == cfg.train.epochs - 1 and b == n_batches - 1
                if last or ctx.iteration % every == 0:
                    emit(epoch, all_tasks=last)
                if progress is not None:
                    progress(ctx.iteration, record)
        for s in strategies:
            s.after_experience(ctx)
        if on_experience_end is not None:
            on_experience_end(ctx, strategies)
    record.iterations = ctx.iteration
    return record
