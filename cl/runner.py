"""The stream runner: trains the model experience after experience, evaluating as it goes.

The run's state (`RunState`: context, strategies, monitor and the `Cursor` into the stream) is
one object, so a run can start fresh or continue from a checkpoint through the same loop.
One training iteration = one optimizer step on one batch. After every `eval.every`
iterations (and every `plasticity.every`), and always at the end of each experience (after
the strategies' `after_experience`), the monitor scores the seen tasks (all tasks at
experience ends and before training, for R and FWT) and queues one row; rows go to `log` in
order, in chunks of `run.row_chunk` (one host copy per chunk: no host synchronisation per
iteration on CUDA) and at the end. Strategies act only through their hooks.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from cl.catalog import OPTIMIZERS
from cl.context import Batch, Context
from cl.errors import RunFailed
from cl.models import forward
from cl.monitor import Monitor, Record
from cl.schema import OptimConfig, TrainConfig
from cl.strategy import Strategy, inference_hook
from cl.streams import Stream


def make_optimizer(o: OptimConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer of the config's `optim` section over `model`'s parameters."""
    if o.name == "adam":
        return torch.optim.Adam(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "rmsprop":  # TAG's base: torch's RMSprop, alpha = beta2 = 0.99, eps 1e-8
        return torch.optim.RMSprop(
            model.parameters(), lr=o.lr, eps=1e-8, weight_decay=o.weight_decay
        )
    if o.name == "adagrad":
        return torch.optim.Adagrad(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "tag":  # a method's optimizer: loaded by name, like strategies (cl.catalog)
        module, attr = OPTIMIZERS["tag"].target.split(":")
        tag = getattr(importlib.import_module(module), attr)
        return tag(model.parameters(), lr=o.lr, base=o.base, b=o.b)
    return torch.optim.SGD(
        model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
    )


def make_context(
    optim: OptimConfig,
    train: TrainConfig,
    stream: Stream,
    model: torch.nn.Module,
    device: torch.device,
    generator: torch.Generator | None,
) -> Context:
    """The run context for `model` on `stream`: the `optim` section's optimizer, the `train`
    section's epochs and precision, task masks if task-aware.

    A task-aware optimizer (TAG) gets the context through its `watch` method and reads the
    experience index from it at every step."""
    ctx = Context(
        model=model,
        optimizer=make_optimizer(optim, model),
        stream=stream,
        device=device,
        generator=generator,
        epochs=train.epochs,
        class_mask=stream.class_mask(device) if stream.task_incremental else None,
        amp=train.amp == "bf16",
    )
    if hasattr(ctx.optimizer, "watch"):
        ctx.optimizer.watch(ctx)
    return ctx


def train_step(ctx: Context, strategies: list[Strategy], batch: Batch, grad_norm: bool = False):
    """Forward, loss (task + strategy terms), backward, step.

    Returns (loss, online correct count, gradient norm before any gradient surgery or None,
    the strategies' `metrics()` as {"strategy/<name>/<key>": value}). Over several ranks the
    loss and count are this rank's parts (the monitor sums them over the ranks at row time).
    """
    batch = ctx.shard(batch)  # this rank's share (the batch itself on one rank)
    with torch.autocast(ctx.device.type, torch.bfloat16, enabled=ctx.amp):
        output, ctx.features = forward(ctx.model, batch.x) if ctx.ddp is None else ctx.ddp(batch.x)
        logits = ctx.logits(output, batch.task)
        loss = ctx.task_loss(logits, batch)
    for s in strategies:
        extra = s.loss(ctx, batch, logits)
        if extra is not None:
            loss = loss + extra
    ctx.optimizer.zero_grad(set_to_none=True)
    loss.backward(torch.ones_like(loss))  # one loss per member in a group (cl/members.py)
    norm = ctx.grad_norm() if grad_norm else None
    for s in strategies:
        s.after_backward(ctx)
    try:
        ctx.optimizer.step()
    except RuntimeError as e:  # e.g. optim.lr=1e308: a step size float32 cannot hold
        if "overflow" not in str(e):
            raise
        raise RunFailed(
            f"the optimizer step overflowed in iteration {ctx.iteration + 1} ({e}); lower "
            "optim.lr. Rows logged so far are kept."
        ) from None
    for s in strategies:
        s.after_step(ctx)
    n = batch.n_new  # prequential accuracy: new samples, scored before this update
    correct = (logits[..., :n, :].argmax(-1) == batch.y[..., :n]).sum(-1)
    stats = {f"strategy/{s.name}/{k}": v for s in strategies for k, v in s.metrics().items()}
    return loss.detach(), correct, norm, stats


@dataclass
class Cursor:
    """Where training stands: the next batch of the current experience and epoch."""

    experience: int = 0
    started: bool = False  # `before_experience` has run for `experience`
    epoch: int = 0
    batch: int = 0  # batches of this epoch already trained
    order: torch.Tensor | None = None  # this epoch's sample order, drawn at its first batch


@dataclass
class RunState:
    """Everything a run needs to go on: what a checkpoint saves and a resume restores, and
    the loop's own settings (`train`: batch size, epochs). `spec` is the config's `strategy`
    as given, for a family that trains through its own loop (the Avalanche bridge builds its
    strategy from it); cl's own loop calls the hooks in `strategies`."""

    train: TrainConfig
    ctx: Context
    strategies: list[Strategy]
    monitor: Monitor
    cursor: Cursor = field(default_factory=Cursor)
    spec: dict = field(default_factory=dict)


def run_stream(
    state: RunState,
    log: Callable[[dict], None],
    progress=None,
    safe_point: Callable[[bool], None] | None = None,
) -> Record:
    """Train from `state.cursor` to the end of the stream; log one row per evaluation.

    Strategies must be set up. `safe_point(boundary)` is called after every iteration and at
    every experience end, when `state` is consistent (a checkpoint may be taken there, after
    `state.monitor.flush(log)`: rows still queued are not in `state`'s checkpoint).
    Raises RunFailed on a non-finite loss; `state.monitor.record` then holds the rows so far.
    """
    ctx, strategies, monitor = state.ctx, state.strategies, state.monitor
    bs, epochs, cur = state.train.batch_size, state.train.epochs, state.cursor
    monitor.evaluator.hook = inference_hook(strategies, ctx)  # the strategies' `eval_logits`
    if not monitor.record.iteration:
        monitor.add(ctx, 0, True, log)  # before any training: b for FWT
    while cur.experience < ctx.stream.n_tasks:
        exp = ctx.stream.experiences[cur.experience]
        ctx.experience = exp.index
        if not cur.started:
            ctx.seen_classes = sorted(set(ctx.seen_classes) | set(exp.classes))
            for s in strategies:
                s.before_experience(ctx)
            cur.started = True
        x, y, task = exp.x, exp.y, torch.full_like(exp.y, exp.index)
        for s in strategies:
            x, y, task = s.train_data(ctx, x, y, task)
        n_batches = math.ceil(y.shape[-1] / bs)
        if progress is not None:
            later = sum(
                math.ceil(e.y.shape[-1] / bs) for e in ctx.stream.experiences[exp.index + 1 :]
            )
            left = (epochs - cur.epoch) * n_batches - cur.batch + epochs * later
            progress.total = ctx.iteration + left
        while cur.epoch < epochs:
            if cur.order is None:
                cur.order = ctx.shuffle(y.shape[-1]).to(y.device)
            batches = cur.order.split(bs, dim=-1)
            ctx.epoch = cur.epoch
            while cur.batch < n_batches:
                idx = batches[cur.batch]
                take = ctx.take
                batch = Batch(take(x, idx), take(y, idx), take(task, idx), idx.shape[-1])
                for s in strategies:
                    batch = s.batch(ctx, batch)
                want_norm = monitor.probe_due(ctx.iteration + 1)
                monitor.step(*train_step(ctx, strategies, batch, want_norm), n=idx.shape[-1])
                ctx.iteration += 1
                cur.batch += 1
                last = cur.epoch == epochs - 1 and cur.batch == n_batches
                if not last and monitor.due(ctx.iteration):
                    monitor.add(ctx, cur.epoch, False, log)
                if progress is not None:
                    progress(ctx.iteration, monitor.record)
                if safe_point is not None:
                    safe_point(False)
            cur.epoch, cur.batch, cur.order = cur.epoch + 1, 0, None
        for s in strategies:
            s.after_experience(ctx)
        # the experience's last row comes after its end-of-task changes (e.g. WA's alignment)
        stats = {
            f"strategy/{s.name}/{k}": v
            for s in strategies
            for k, v in s.experience_metrics().items()
        }
        monitor.add(ctx, epochs - 1, True, log, stats)
        state.cursor = cur = Cursor(experience=cur.experience + 1)
        if safe_point is not None:
            safe_point(True)
    monitor.flush(log)
    return monitor.record
