"""cl's continual evaluation driven by Avalanche's training callbacks.

`MonitorPlugin` is the per-iteration hook: given a cl `Monitor`, the run `Context` it reads
and a `log(row)` callback, it does inside any Avalanche strategy what cl's runner does in its
own loop (cl/runner.py): one row before training (all tasks), the online accuracy and loss of
every training batch, an evaluation of the seen tasks after every `eval.every` iterations
(one batched `inference_mode` forward over fixed tensors, no DataLoader, no metric plugins),
and one boundary row over all tasks at every experience end, after the strategy's own
end-of-experience changes of plugins listed before this one.
"""

from __future__ import annotations

from collections.abc import Callable

from avalanche.core import SupervisedPlugin

from cl.context import Context
from cl.monitor import Monitor
from cl.plasticity import gradient_norm


def epoch_shape(strategy) -> tuple[int, int | None]:
    """(samples of the experience's own data, iterations per epoch or None if unknown)."""
    data = getattr(strategy, "adapted_dataset", None) or strategy.experience.dataset
    try:
        per_epoch = len(strategy.dataloader)
    except TypeError:  # a loader without a length: every due iteration gets its own row
        per_epoch = None
    return len(data), per_epoch


class MonitorPlugin(SupervisedPlugin):
    """Feeds a cl `Monitor` from an Avalanche strategy and sends its rows to `log`.

    `ctx.iteration` counts training iterations over all `train()` calls; `ctx.model` follows
    `strategy.model`. Add it to the strategy's plugins (user plugins run before Avalanche's
    Clock, which this relies on).
    """

    def __init__(
        self,
        monitor: Monitor | None = None,
        ctx: Context | None = None,
        log: Callable[[dict], None] | None = None,
    ):
        super().__init__()
        self.monitor, self.ctx, self.log = monitor, ctx, log
        self._norm: float | None = None
        self._want_norm = False
        self._samples, self._per_epoch = 0, None

    def before_training(self, strategy, **kwargs) -> None:
        if not self.monitor.record.iteration:  # before any training: b for FWT
            self.ctx.model = strategy.model
            self.log(self.monitor.row(self.ctx, epoch=0, boundary=True))

    def before_training_exp(self, strategy, **kwargs) -> None:
        ctx, exp = self.ctx, strategy.experience
        ctx.model, ctx.experience = strategy.model, exp.current_experience
        classes = {int(c) for c in exp.classes_in_this_experience}
        ctx.seen_classes = sorted(set(ctx.seen_classes) | classes)

    def before_training_epoch(self, strategy, **kwargs) -> None:
        self._samples, self._per_epoch = epoch_shape(strategy)

    def before_training_iteration(self, strategy, **kwargs) -> None:
        self._want_norm = self.monitor.probe_due(self.ctx.iteration + 1)

    def after_backward(self, strategy, **kwargs) -> None:
        if self._want_norm:
            self._norm = gradient_norm(strategy.model)

    def after_training_iteration(self, strategy, **kwargs) -> None:
        ctx, monitor, clock = self.ctx, self.monitor, strategy.clock
        # the experience's own samples come first in a minibatch (replay loaders add memory
        # after them): the online accuracy scores only those. This runs before Avalanche's
        # Clock, so the clock still counts the iterations before this one.
        bs, i = strategy.train_mb_size, clock.train_epoch_iterations
        n = max(1, min(len(strategy.mb_y), bs, self._samples - i * bs))
        correct = (strategy.mb_output[:n].argmax(1) == strategy.mb_y[:n]).sum()
        monitor.step(strategy.loss.detach(), correct, self._norm, {}, n=n)
        self._norm = None
        ctx.iteration += 1
        last = self._per_epoch is not None and (  # its row is the experience's boundary row
            clock.train_exp_epochs == strategy.train_epochs - 1 and i == self._per_epoch - 1
        )
        if monitor.due(ctx.iteration) and not last:
            self.log(monitor.row(ctx, clock.train_exp_epochs, boundary=False))

    def after_training_exp(self, strategy, **kwargs) -> None:
        epoch = max(strategy.clock.train_exp_epochs - 1, 0)  # the Clock counted the last epoch
        self.log(self.monitor.row(self.ctx, epoch, boundary=True))
