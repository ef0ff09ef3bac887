"""The driver that replaces `cl.runner.run_stream` for `strategy=avalanche.<Name>`.

The Avalanche strategy trains cl's model with cl's optimizer on cl's stream (the same
tensors, experience order and seed: the model is built and seeded exactly as for a native
strategy) through Avalanche's own loop, `strategy.train(experience)`, with Avalanche's
evaluation and loggers off (an `EvaluationPlugin` without metrics or loggers,
`eval_every=-1`). cl's `Monitor` is fed by `MonitorPlugin` (cl/avalanche/hook.py: rows,
online accuracy, gradient norm, evaluation of what Avalanche would score), first in the plugin
list; this module adds what is specific to `cl run`: the progress bar, the safe points where
an interrupt stops the run, and for task-incremental streams Avalanche task labels (the
experience index) and a model that masks each sample's logits to its task's classes, as cl's
runner does.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import nn

from cl.avalanche import strategies as names
from cl.avalanche.hook import MonitorPlugin
from cl.avalanche.strategies import quiet_evaluator
from cl.monitor import Record
from cl.runner import RunState
from cl.streams import Stream

MASK = -1e9  # logits of other tasks' classes (finite: distillation losses stay finite)


def benchmark(stream: Stream):
    """An Avalanche benchmark of the stream's tensors: training data and evaluation subsets,
    one experience per cl experience, task label = experience index if task-incremental."""
    from avalanche.benchmarks import tensors_benchmark

    exps = stream.experiences
    return tensors_benchmark(  # on the CPU: Avalanche's loaders pin and move each batch
        [(e.x.cpu(), e.y.cpu()) for e in exps],
        [(e.eval_x.cpu(), e.eval_y.cpu()) for e in exps],
        task_labels=[e.index if stream.task_incremental else 0 for e in exps],
    )


def task_masked(model: nn.Module, mask: torch.Tensor) -> nn.Module:
    """`model` as an Avalanche multi-task module whose logits are masked to each task."""
    from avalanche.models import MultiTaskModule

    class TaskMasked(MultiTaskModule):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x, task_labels):
            out = self.model(x)
            if task_labels is None:  # Avalanche's convention: every task's output (LwF)
                return {t: out.masked_fill(~m, MASK) for t, m in enumerate(mask)}
            return out.masked_fill(~mask[task_labels.to(mask.device)], MASK)

    return TaskMasked()


def build(state: RunState, plugins: list):
    """The Avalanche strategy of `state.spec` on cl's model and optimizer, `plugins` first."""
    ctx, train = state.ctx, state.train
    spec = state.spec[names.KEY]
    resolved = [(n, *names.resolve(n)) for n in spec]
    user_plugins = [
        cls(**spec[n], **names.owned_values(cls, model=ctx.model, batch_size=train.batch_size))
        for n, cls, is_plugin in resolved
        if is_plugin
    ]
    strategy_cls = next((c for _, c, p in resolved if not p), None)
    if strategy_cls is None:
        strategy_cls, args = names.resolve(names.BASE)[0], {}
    else:
        args = spec[strategy_cls.__name__]
    model = ctx.model
    if ctx.stream.task_incremental:
        model = task_masked(ctx.model, ctx.stream.class_mask(ctx.device))
    owned = names.owned_values(
        strategy_cls,
        model=model,
        optimizer=ctx.optimizer,
        criterion=nn.CrossEntropyLoss(),
        train_mb_size=train.batch_size,
        train_epochs=train.epochs,
        eval_mb_size=state.monitor.evaluator.batch_size,  # the config's eval.batch_size
        device=ctx.device,
        plugins=[*plugins, *user_plugins],
        evaluator=quiet_evaluator(),
        eval_every=-1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return strategy_cls(**args, **owned)


def unwrap(model: nn.Module) -> nn.Module:
    """cl's model inside `task_masked`'s wrapper (any other model as it is)."""
    return getattr(model, "model", model) if type(model).__name__ == "TaskMasked" else model


class _RunPlugin(MonitorPlugin):
    """`MonitorPlugin` plus what `cl run` adds after every iteration: progress, safe point."""

    def __init__(self, state: RunState, log, progress, safe_point):
        super().__init__(state.monitor, state.ctx, log, unwrap)
        self.progress, self.safe_point = progress, safe_point

    def after_training_iteration(self, strategy, **kwargs) -> None:
        super().after_training_iteration(strategy, **kwargs)
        if self.progress is not None:
            self.progress(self.ctx.iteration, self.monitor.record)
        if self.safe_point is not None:
            self.safe_point(False)


def run_stream(
    state: RunState,
    log: Callable[[dict], None],
    progress=None,
    safe_point: Callable[[bool], None] | None = None,
) -> Record:
    """Train the stream with the Avalanche strategy; log one row per evaluation, as
    `cl.runner.run_stream` (same signature; a fresh start only, never a resume)."""
    stream = state.ctx.stream
    bs, epochs = state.train.batch_size, state.train.epochs
    strategy = build(state, [_RunPlugin(state, log, progress, safe_point)])
    if progress is not None:
        progress.total = sum(epochs * math.ceil(len(e.y) / bs) for e in stream.experiences)
    for av_exp in benchmark(stream).train_stream:
        with warnings.catch_warnings(record=True):  # Avalanche's deprecation notes: kept off
            strategy.train(av_exp, eval_streams=[])  # the plugin logs the boundary row
        if safe_point is not None:
            safe_point(True)
    return state.monitor.record
