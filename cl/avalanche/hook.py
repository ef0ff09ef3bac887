"""cl's continual evaluation driven by Avalanche's training callbacks.

`MonitorPlugin` is the per-iteration core shared by `cl run strategy=avalanche.<Name>`
(cl/avalanche/bridge.py) and the script plugin `ContinualEvaluation` (cl/avalanche/plugin.py).
Given a cl `Monitor`, the run `Context` it reads and a `log(row)` callback, it does inside any
Avalanche strategy what cl's runner does in its own loop (cl/runner.py): one row before
training (all tasks); after every training iteration the loss and the online accuracy of the
experience's new samples (from `mb_output`, the forward before the update; found also when a
strategy such as DER puts its memory first); the gradient norm when the plasticity probe is
due (before GEM/AGEM project it if the plugin is first in the list); a row after every
`eval.every` iterations; and one boundary row over all tasks at every experience end, after
every plugin's end-of-experience work (BiC's bias layer). Evaluation is cl's evaluator (one
batched `inference_mode` forward over fixed tensors) on the strategy's current model (GDumb
replaces it), with the plugins' `after_eval_forward` hooks as the evaluator's inference hook
(`plugin_hook`, the same mechanism as native strategies' `eval_logits`), i.e. what
Avalanche's own evaluation would score.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from avalanche.core import BaseSGDPlugin, SupervisedPlugin
from torch import nn

from cl.context import Context
from cl.monitor import Monitor
from cl.plasticity import gradient_norm


class PluginHook:
    """An Avalanche strategy's inference hook for cl's evaluator (`InferenceHook`): its
    `plugins`' `after_eval_forward` (e.g. BiC's bias layers) applied to each chunk's logits,
    as Avalanche's own evaluation applies them. The model is `ctx.model`, the strategy's
    current one (GDumb replaces it), set before every row."""

    def __init__(self, strategy, plugins: list):
        self.strategy, self.plugins = strategy, plugins

    def __call__(self, x: torch.Tensor, logits: torch.Tensor, features: torch.Tensor | None):
        s = self.strategy
        saved, s.mb_output = s.mb_output, logits
        try:
            for p in self.plugins:
                p.after_eval_forward(s)
            return s.mb_output
        finally:
            s.mb_output = saved


def plugin_hook(strategy) -> PluginHook | None:
    """The strategy's `PluginHook`; None when no plugin has an `after_eval_forward` (then the
    evaluator runs the plain `model(x)`)."""
    plugins = [
        p
        for p in strategy.plugins
        if getattr(type(p), "after_eval_forward", None)
        not in (None, BaseSGDPlugin.after_eval_forward)
        and not isinstance(p, type(strategy.evaluator))
    ]
    return PluginHook(strategy, plugins) if plugins else None


def new_samples(strategy, y0: torch.Tensor, samples: int) -> slice:
    """Where the experience's own samples sit in the minibatch: first (replay loaders append
    memory), or last when a strategy put its memory before the batch `y0` it loaded (DER).
    Runs before Avalanche's Clock, which still counts the iterations before this one."""
    y, bs = strategy.mb_y, strategy.train_mb_size
    n = max(1, min(bs, samples - strategy.clock.train_epoch_iterations * bs, len(y0), len(y)))
    at = len(y) - len(y0) if len(y) > len(y0) and not torch.equal(y[: len(y0)], y0) else 0
    return slice(at, at + n)


def bic_compat() -> None:
    """Avalanche 0.6.0's BiC passes `verbose=` to MultiStepLR, which torch >= 2.7 removed."""
    import inspect

    import avalanche.training.plugins.bic as bic

    if "verbose" not in inspect.signature(torch.optim.lr_scheduler.MultiStepLR).parameters:

        def multistep(*args, verbose=None, **kwargs):
            return torch.optim.lr_scheduler.MultiStepLR(*args, **kwargs)

        bic.MultiStepLR = multistep


class MonitorPlugin(SupervisedPlugin):
    """Feeds a cl `Monitor` from an Avalanche strategy and sends its rows to `log`.

    `ctx.iteration` counts training iterations over all `train()` calls; `ctx.model` follows
    `unwrap(strategy.model)` (`unwrap` strips a wrapper such as cl run's task mask). Add it to
    the strategy's plugins, first for a gradient norm before any projection (user plugins run
    before Avalanche's Clock, which this relies on).
    """

    def __init__(
        self,
        monitor: Monitor | None = None,
        ctx: Context | None = None,
        log: Callable[[dict], None] | None = None,
        unwrap: Callable[[nn.Module], nn.Module] = lambda model: model,
    ):
        super().__init__()
        bic_compat()
        self.monitor, self.ctx, self.log, self.unwrap = monitor, ctx, log, unwrap
        self._norm: float | None = None
        self._y0: torch.Tensor | None = None
        self._samples, self._per_epoch = 0, None
        self._pending: int | None = None  # epoch of the experience whose boundary row is due

    def before_training(self, strategy, **kwargs) -> None:
        self.ctx.model = self.unwrap(strategy.model)
        self.monitor.evaluator.hook = plugin_hook(strategy)
        if not self.monitor.record.iteration:  # before any training: b for FWT
            self.log(self.monitor.row(self.ctx, epoch=0, boundary=True))

    def before_training_exp(self, strategy, **kwargs) -> None:
        self._boundary(strategy)  # the previous experience of the same `train()` call
        ctx, exp = self.ctx, strategy.experience
        ctx.model, ctx.experience = self.unwrap(strategy.model), exp.current_experience
        classes = {int(c) for c in exp.classes_in_this_experience}
        ctx.seen_classes = sorted(set(ctx.seen_classes) | classes)

    def before_training_epoch(self, strategy, **kwargs) -> None:
        data = getattr(strategy, "adapted_dataset", None) or strategy.experience.dataset
        try:
            self._per_epoch = len(strategy.dataloader)
        except TypeError:  # a loader without a length: every due iteration gets its own row
            self._per_epoch = None
        self._samples = len(data)

    def before_training_iteration(self, strategy, **kwargs) -> None:
        self._y0 = strategy.mb_y  # labels as loaded, before a strategy adds its memory

    def after_backward(self, strategy, **kwargs) -> None:
        if self.monitor.probe_due(self.ctx.iteration + 1):
            self._norm = gradient_norm(self.unwrap(strategy.model))

    def after_training_iteration(self, strategy, **kwargs) -> None:
        ctx, monitor, clock = self.ctx, self.monitor, strategy.clock
        new = new_samples(strategy, self._y0, self._samples)
        out = strategy.mb_output[new].detach()
        correct = (out.argmax(1) == strategy.mb_y[new]).sum()
        loss = strategy.loss.detach().sum()  # Avalanche's loss has shape [1]; a row wants 0-d
        monitor.step(loss, correct, self._norm, {}, n=new.stop - new.start)
        self._norm = None
        ctx.iteration += 1
        ctx.model = self.unwrap(strategy.model)
        i = clock.train_epoch_iterations
        last = self._per_epoch is not None and (  # its row is the experience's boundary row
            clock.train_exp_epochs == strategy.train_epochs - 1 and i == self._per_epoch - 1
        )
        if monitor.due(ctx.iteration) and not last:
            self.log(monitor.row(ctx, clock.train_exp_epochs, boundary=False))

    def after_training_exp(self, strategy, **kwargs) -> None:
        self._pending = max(strategy.clock.train_exp_epochs - 1, 0)  # the Clock counted it

    def after_training(self, strategy, **kwargs) -> None:
        self._boundary(strategy)

    def _boundary(self, strategy) -> None:
        """The boundary row of the experience just trained, once every plugin's
        `after_training_exp` has run."""
        if self._pending is not None:
            self.ctx.model = self.unwrap(strategy.model)
            self.log(self.monitor.row(self.ctx, self._pending, boundary=True))
            self._pending = None
