"""The driver that replaces `cl.runner.run_stream` for `strategy=avalanche.<Name>`.

The Avalanche strategy trains cl's model with cl's optimizer on cl's stream (the same
tensors, experience order and seed: the model is built and seeded exactly as for a native
strategy) through Avalanche's own loop, `strategy.train(experience)`, with Avalanche's
evaluation and loggers off (an `EvaluationPlugin` without metrics or loggers,
`eval_every=-1`). The `Bridge` plugin, first in the plugin list, feeds cl's `Monitor` as
`cl.runner` does: `step` after every iteration (loss, prequential accuracy of the new samples
from `mb_output`, i.e. before the update), a row when `due`, and a boundary row after each
experience (after every plugin's end-of-experience work). Task-incremental streams give
Avalanche task labels (the experience index) and a model that masks each sample's logits to
its task's classes, as cl's runner does.

Evaluation runs cl's evaluator on the strategy's current model (GDumb replaces it) followed by
the plugins' `after_eval_forward` hooks (BiC's bias correction), so what is scored is what
Avalanche's own evaluation would score.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch import nn

from cl.avalanche import strategies as names
from cl.monitor import Record
from cl.plasticity import gradient_norm
from cl.runner import RunState
from cl.streams import Stream

MASK = -1e9  # logits of other tasks' classes (finite: distillation losses stay finite)


def quiet_evaluator():
    """Avalanche's evaluation plugin with no metrics and no loggers."""
    from avalanche.training.plugins import EvaluationPlugin

    with warnings.catch_warnings():  # "No loggers specified": on purpose
        warnings.simplefilter("ignore")
        return EvaluationPlugin(loggers=[])


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


class EvalView(nn.Module):
    """The strategy's current model, followed by its plugins' `after_eval_forward` hooks."""

    def __init__(self, strategy, unwrap: Callable[[nn.Module], nn.Module]):
        super().__init__()
        from avalanche.core import BaseSGDPlugin

        self.strategy, self.unwrap = [strategy], unwrap  # a list: not a registered submodule
        self.hooks = [
            p
            for p in strategy.plugins
            if getattr(type(p), "after_eval_forward", None)
            not in (None, BaseSGDPlugin.after_eval_forward)
            and not isinstance(p, type(strategy.evaluator))
        ]

    def train(self, mode: bool = True):
        self.training = mode
        self.unwrap(self.strategy[0].model).train(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.strategy[0]
        out = self.unwrap(s.model)(x)
        if self.hooks:
            saved = s.mb_output
            s.mb_output = out
            for p in self.hooks:
                p.after_eval_forward(s)
            out, s.mb_output = s.mb_output, saved
        return out


def _compat() -> None:
    """Avalanche 0.6.0's BiC passes `verbose=` to MultiStepLR, which torch >= 2.7 removed."""
    import inspect

    import avalanche.training.plugins.bic as bic

    if "verbose" not in inspect.signature(torch.optim.lr_scheduler.MultiStepLR).parameters:

        def multistep(*args, verbose=None, **kwargs):
            return torch.optim.lr_scheduler.MultiStepLR(*args, **kwargs)

        bic.MultiStepLR = multistep


def build(state: RunState, plugins: list):
    """The Avalanche strategy of `state.cfg` on cl's model and optimizer, `plugins` first."""
    _compat()
    cfg, ctx = state.cfg, state.ctx
    spec = cfg.strategy[names.KEY]
    resolved = [(n, *names.resolve(n)) for n in spec]
    user_plugins = [
        cls(**spec[n], **names.owned_values(cls, model=ctx.model, batch_size=cfg.train.batch_size))
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
        train_mb_size=cfg.train.batch_size,
        train_epochs=cfg.train.epochs,
        eval_mb_size=cfg.eval.batch_size,
        device=ctx.device,
        plugins=[*plugins, *user_plugins],
        evaluator=quiet_evaluator(),
        eval_every=-1,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return strategy_cls(**args, **owned)


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "model", model) if type(model).__name__ == "TaskMasked" else model


def run_stream(
    state: RunState,
    log: Callable[[dict], None],
    progress=None,
    safe_point: Callable[[bool], None] | None = None,
) -> Record:
    """Train the stream with the Avalanche strategy; log one row per evaluation, as
    `cl.runner.run_stream` (same signature; a fresh start only, never a resume)."""
    from avalanche.core import SupervisedPlugin

    cfg, ctx, monitor = state.cfg, state.ctx, state.monitor
    bs, epochs = cfg.train.batch_size, cfg.train.epochs

    class Bridge(SupervisedPlugin):
        """Feeds cl's monitor after every Avalanche training iteration."""

        norm: float | None = None
        y0: torch.Tensor | None = None

        def before_training_iteration(self, strategy, **kwargs):
            self.y0 = strategy.mb_y  # labels as loaded, before a strategy adds its memory

        def after_backward(self, strategy, **kwargs):  # first plugin: before any projection
            want = monitor.probe_due(ctx.iteration + 1)
            self.norm = gradient_norm(_unwrap(strategy.model)) if want else None

        def after_training_iteration(self, strategy, **kwargs):
            clock = strategy.clock  # counters of this iteration, before Avalanche's Clock
            y, y0 = strategy.mb_y, self.y0
            done = clock.train_epoch_iterations * bs
            n = max(1, min(bs, len(strategy.adapted_dataset) - done, len(y0)))
            at = 0  # the new samples come first (replay loaders), or last (DER puts memory first)
            if len(y) > len(y0) and not torch.equal(y[: len(y0)], y0):
                at = len(y) - len(y0)
            out = strategy.mb_output[at : at + n].detach()  # the forward before this update
            correct = (out.argmax(1) == y[at : at + n]).sum()
            monitor.step(strategy.loss.detach(), correct, self.norm, {}, n=n)
            ctx.iteration += 1
            ctx.model = _unwrap(strategy.model)
            epoch = clock.train_exp_epochs
            last = epoch == strategy.train_epochs - 1 and clock.train_epoch_iterations + 1 == len(
                strategy.dataloader
            )
            if not last and monitor.due(ctx.iteration):
                log(monitor.row(ctx, epoch, boundary=False))
            if progress is not None:
                progress(ctx.iteration, monitor.record)
            if safe_point is not None:
                safe_point(False)

    strategy = build(state, [Bridge()])
    view = EvalView(strategy, _unwrap)
    evaluator = monitor.evaluator
    monitor.evaluator = _ViewEvaluator(evaluator, view)
    bench = benchmark(ctx.stream)
    if progress is not None:
        progress.total = sum(epochs * math.ceil(len(e.y) / bs) for e in ctx.stream.experiences)
    if not monitor.record.iteration:
        log(monitor.row(ctx, epoch=0, boundary=True))  # before any training: b for FWT
    for exp, av_exp in zip(ctx.stream.experiences, bench.train_stream, strict=True):
        ctx.experience = exp.index
        ctx.seen_classes = sorted(set(ctx.seen_classes) | set(exp.classes))
        with warnings.catch_warnings(record=True):  # Avalanche's deprecation notes: kept off
            strategy.train(av_exp, eval_streams=[])
        ctx.model = _unwrap(strategy.model)
        log(monitor.row(ctx, epochs - 1, boundary=True))  # after every end-of-task change
        if safe_point is not None:
            safe_point(True)
    return monitor.record


class _ViewEvaluator:
    """cl's evaluator, scoring the strategy's eval view instead of the model it is given."""

    def __init__(self, evaluator, view: nn.Module):
        self.evaluator, self.view = evaluator, view

    def __getattr__(self, name):
        return getattr(self.evaluator, name)

    def __call__(self, model: nn.Module, n: int):
        return self.evaluator(self.view, n)
