"""The strategy contract: the hooks the runner calls, and building strategies by name.

A strategy's config keys are its constructor's arguments: `options` reads them (types and
defaults) from the signature (`cl.signatures`, shared with the Avalanche add-on),
`check_options` validates and converts user values against it and runs the constructor's own
range checks, so every mistake is found before any work.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import torch

from cl.catalog import STRATEGIES
from cl.context import Batch, Context
from cl.errors import UserError
from cl.signatures import Arg, NotFinite, convert, parameters, type_name

if TYPE_CHECKING:
    from cl.evaluation import InferenceHook
    from cl.schema import RunConfig


class Strategy:
    """Base class: no-op hooks. Subclasses override the few they need.

    Order within one training iteration: `batch` -> forward -> `loss` -> backward ->
    `after_backward` -> optimizer step -> `after_step`. Around each experience:
    `before_experience`, `train_data` (what to train on), ..., `after_experience`.
    Everything a strategy keeps between hooks goes through `state_dict` / `load_state_dict`
    (tensors, numbers, strings, lists and dicts only), so a run can stop after any iteration
    and resume exactly: on resume `load_state_dict` comes first, then `setup`, and the hooks
    of the experience in progress are not called again (`train_data` is, and must depend
    only on the state and the context).
    """

    name = "strategy"

    @classmethod
    def check(cls, cfg: RunConfig) -> None:
        """Raise ValueError if this strategy cannot run with `cfg` (called before any work)."""

    def setup(self, ctx: Context) -> None:
        """Called once before the first experience (and again on resume, after loading)."""

    def before_experience(self, ctx: Context) -> None:
        """Called at the start of each experience."""

    def train_data(
        self, ctx: Context, x: torch.Tensor, y: torch.Tensor, task: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The tensors to train on during this experience (default: the experience's own)."""
        return x, y, task

    def batch(self, ctx: Context, batch: Batch) -> Batch:
        """Transform the training batch (e.g. mix in replayed samples)."""
        return batch

    def loss(self, ctx: Context, batch: Batch, output: torch.Tensor) -> torch.Tensor | None:
        """An extra loss term added to the task loss, or None.

        `output` holds the (task-masked) logits of `batch`; `ctx.features` the penultimate
        features of the same forward pass, with gradients.
        """
        return None

    def after_backward(self, ctx: Context) -> None:
        """Edit gradients before the optimizer step (e.g. GEM projection)."""

    def after_step(self, ctx: Context) -> None:
        """Act on the weights after the optimizer step."""

    def after_experience(self, ctx: Context) -> None:
        """Called at the end of each experience (e.g. memory update)."""

    def eval_logits(
        self, ctx: Context, x: torch.Tensor, logits: torch.Tensor, features: torch.Tensor | None
    ) -> torch.Tensor:
        """Inference hook: the scores the evaluator ranks for the inputs `x` (one chunk of the
        evaluation samples), from the model's `logits` and penultimate `features` of the same
        forward (None for a model without `features`/`head`); default: `logits` unchanged.

        Called under `inference_mode` with the model in eval mode, before the task mask, by
        cl's evaluator (`cl.evaluation`) and, for Avalanche strategies, in the same place by
        the bridge. Only strategies that override it cost anything: without one the evaluator
        runs the plain `model(x)`. Online accuracy on the training batch is not affected: it
        stays the training forward's.
        """
        return logits

    def metrics(self) -> dict[str, float]:
        """Statistics of the iteration just trained (e.g. how a projection changed the gradient).

        Read after every iteration. The monitor logs each value as `strategy/<name>/<key>`,
        the mean over the iterations since the previous row, and the summary holds its mean
        over all iterations that reported it. Return {} for an iteration with nothing to
        report (it is left out of both means). Not state: rebuilt every iteration.
        """
        return {}

    def experience_metrics(self) -> dict[str, float]:
        """Statistics of the experience that just ended (e.g. WA's aligning factor), read once
        after `after_experience` and logged as `strategy/<name>/<key>` in that experience's
        last row (not part of the per-iteration means)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything the strategy keeps, as tensors and plain data (for checkpoints)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take a `state_dict`. On resume its tensors are on the run's device already, except
        generator states (uint8 tensors, kept on the CPU as torch's `set_state` wants them)."""


def inference_hook(strategies: list[Strategy], ctx: Context) -> InferenceHook | None:
    """The strategies' `eval_logits` in list order, bound to `ctx`, as the evaluator's hook;
    None when none overrides it (then the evaluator does no extra work)."""
    active = [s for s in strategies if type(s).eval_logits is not Strategy.eval_logits]
    if not active:
        return None

    def hook(x: torch.Tensor, logits: torch.Tensor, features: torch.Tensor | None):
        for s in active:
            logits = s.eval_logits(ctx, x, logits, features)
        return logits

    return hook


def strategy_class(name: str) -> type[Strategy]:
    """The class registered under `name` in the catalog."""
    module, attr = STRATEGIES[name].target.split(":")
    return getattr(importlib.import_module(module), attr)


def options(name: str) -> dict[str, Arg]:
    """{option: Arg (type hint, default)} from the constructor of strategy `name`."""
    return parameters(strategy_class(name))


def check_options(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Validate user options of strategy `name`; returns them converted to the declared types.

    Raises UserError naming the key and the valid choices (unknown key, wrong type, value
    out of range as the constructor checks it).
    """
    declared = options(name)
    out = {}
    for key, value in args.items():
        if key not in declared:
            valid = ", ".join(declared) or "(this strategy has no options)"
            raise UserError(f"unknown key 'strategy.{name}.{key}'; valid keys: {valid}")
        hint = declared[key].hint
        try:
            out[key] = convert(value, hint)
        except NotFinite:
            raise UserError(f"strategy.{name}.{key}={value!r} must be a finite number") from None
        except TypeError:
            shown, kind = ("null", "null") if value is None else (repr(value), type(value).__name__)
            raise UserError(
                f"strategy.{name}.{key}={shown} has type {kind}; expected {type_name(hint)}"
            ) from None
    try:
        strategy_class(name)(**out)
    except (TypeError, ValueError) as e:
        raise UserError(f"strategy.{name}.{e}") from None
    return out


def check_spec(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Validate the config's `strategy` mapping {name: options} (plain); returns it converted
    (cl's strategy family in `cl.plugins`)."""
    out = {}
    for name, args in spec.items():
        if not isinstance(args, dict):
            raise UserError(f"strategy.{name} must be a mapping of options, got {args!r}")
        out[name] = check_options(name, args)
    return out


def check_run(cfg: RunConfig) -> None:
    """UserError if a strategy of `cfg` cannot run with the rest of it."""
    for name in cfg.strategy:
        check_compatible(name, cfg)


def check_compatible(name: str, cfg: RunConfig) -> None:
    """UserError if strategy `name` cannot run with the rest of `cfg`."""
    try:
        strategy_class(name).check(cfg)
    except ValueError as e:
        raise UserError(f"strategy={name}: {e}") from None


def build(spec: dict[str, dict[str, Any]]) -> list[Strategy]:
    """Instantiate strategies from an ordered {name: constructor kwargs} mapping."""
    return [strategy_class(name)(**dict(kwargs or {})) for name, kwargs in spec.items()]
