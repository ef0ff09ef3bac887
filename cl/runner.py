"""The stream runner: trains the model experience after experience, evaluating as it goes.

One training iteration = one optimizer step on one batch. After every `eval.every`
iterations (and every `plasticity.every`), and always at the end of each experience (after
the strategies' `after_experience`), the monitor scores the seen tasks (all tasks at
experience ends and before training, for R and FWT) and one row goes to `log`. Strategies
act only through their hooks.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.nn import functional as F

from cl.config import RunConfig
from cl.context import Batch, Context
from cl.monitor import Monitor, Record
from cl.plasticity import gradient_norm
from cl.streams import Stream
from strategies.base import Strategy


def make_optimizer(cfg: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.name == "adam":
        return torch.optim.Adam(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
    )


def make_context(
    cfg: RunConfig,
    stream: Stream,
    model: torch.nn.Module,
    device: torch.device,
    generator: torch.Generator | None,
) -> Context:
    """The run context for `model` on `stream`: optimizer from `cfg`, task masks if task-aware."""
    return Context(
        model=model,
        optimizer=make_optimizer(cfg, model),
        stream=stream,
        device=device,
        generator=generator,
        class_mask=stream.class_mask(device) if stream.task_incremental else None,
    )


def forward(model: torch.nn.Module, x: torch.Tensor):
    """(logits, penultimate features); features are None for models without `features`/`head`."""
    if hasattr(model, "features") and hasattr(model, "head"):
        features = model.features(x)
        return model.head(features), features
    return model(x), None


def train_step(ctx: Context, strategies: list[Strategy], batch: Batch, grad_norm: bool = False):
    """Forward, loss (task + strategy terms), backward, step.

    Returns (loss, online correct count, gradient norm before any gradient surgery or None).
    """
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
    norm = gradient_norm(ctx.model) if grad_norm else None
    for s in strategies:
        s.after_backward(ctx)
    ctx.optimizer.step()
    for s in strategies:
        s.after_step(ctx)
    n = batch.n_new  # prequential accuracy: new samples, scored before this update
    correct = (logits[:n].argmax(1) == batch.y[:n]).sum()
    return loss.detach(), correct, norm


def run_stream(
    cfg: RunConfig,
    ctx: Context,
    strategies: list[Strategy],
    monitor: Monitor,
    log: Callable[[dict], None],
    progress=None,
    on_experience_end: Callable | None = None,
) -> Record:
    """Train on every experience of `ctx.stream`; log one row per evaluation.

    Raises RunFailed on a non-finite loss; `monitor.record` then holds the rows so far.
    """
    stream, bs = ctx.stream, cfg.train.batch_size
    for s in strategies:
        s.setup(ctx)
    log(monitor.row(ctx, epoch=0, boundary=True))  # before any training: b for FWT
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
                want_norm = monitor.probe_due(ctx.iteration + 1)
                monitor.step(*train_step(ctx, strategies, batch, want_norm), n=len(idx))
                ctx.iteration += 1
                last = epoch == cfg.train.epochs - 1 and b == n_batches - 1
                if not last and monitor.due(ctx.iteration):
                    log(monitor.row(ctx, epoch, boundary=False))
                if progress is not None:
                    progress(ctx.iteration, monitor.record)
        for s in strategies:
            s.after_experience(ctx)
        # the experience's last row comes after its end-of-task changes (e.g. WA's alignment)
        log(monitor.row(ctx, cfg.train.epochs - 1, boundary=True))
        if on_experience_end is not None:
            on_experience_end(ctx, strategies)
    return monitor.record
