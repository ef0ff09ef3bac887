"""The strategy contract: the hooks the runner calls, and building strategies by name.

A strategy's config keys are its constructor's arguments: `options` reads them (types and
defaults) from the signature, `check_options` validates and converts user values against it
and runs the constructor's own range checks, so every mistake is found before any work.
"""

from __future__ import annotations

import importlib
import inspect
import math
import types
import typing
from typing import TYPE_CHECKING, Any

import torch

from cl.catalog import STRATEGIES
from cl.context import Batch, Context
from cl.errors import UserError

if TYPE_CHECKING:
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


def strategy_class(name: str) -> type[Strategy]:
    """The class registered under `name` in the catalog."""
    module, attr = STRATEGIES[name].target.split(":")
    return getattr(importlib.import_module(module), attr)


def options(name: str) -> dict[str, tuple[Any, Any]]:
    """{option: (type hint, default)} from the constructor of strategy `name`."""
    init = strategy_class(name).__init__
    hints = typing.get_type_hints(init)
    return {
        key: (hints.get(key, Any), p.default)
        for key, p in inspect.signature(init).parameters.items()
        if key != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def _type_name(hint: Any) -> str:
    names = [getattr(t, "__name__", str(t)) for t in typing.get_args(hint) or (hint,)]
    return " or ".join("null" if n == "NoneType" else n for n in names)


def _convert(value: Any, hint: Any) -> Any:
    """`value` as type `hint` (int -> float allowed, bool never a number); raises TypeError."""
    union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
    allowed = typing.get_args(hint) if union else (hint,)
    if hint is Any:
        return value
    if value is None:
        if type(None) in allowed:
            return None
        raise TypeError("null")
    for t in allowed:
        if t is bool and isinstance(value, bool):
            return value
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is float and isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ValueError("a finite number")
            return float(value)
        if t is str and isinstance(value, str):
            return value
    raise TypeError(type(value).__name__)


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
        hint = declared[key][0]
        try:
            out[key] = _convert(value, hint)
        except TypeError as e:
            shown = "null" if value is None else repr(value)
            raise UserError(
                f"strategy.{name}.{key}={shown} has type {e}; expected {_type_name(hint)}"
            ) from None
        except ValueError as e:
            raise UserError(f"strategy.{name}.{key}={value!r} must be {e}") from None
    try:
        strategy_class(name)(**out)
    except (TypeError, ValueError) as e:
        raise UserError(f"strategy.{name}.{e}") from None
    return out


def check_compatible(name: str, cfg: RunConfig) -> None:
    """UserError if strategy `name` cannot run with the rest of `cfg`."""
    try:
        strategy_class(name).check(cfg)
    except ValueError as e:
        raise UserError(f"strategy={name}: {e}") from None


def build(spec: dict[str, dict[str, Any]]) -> list[Strategy]:
    """Instantiate strategies from an ordered {name: constructor kwargs} mapping."""
    return [strategy_class(name)(**dict(kwargs or {})) for name, kwargs in spec.items()]
