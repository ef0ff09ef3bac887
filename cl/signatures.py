"""Constructor signatures as config options: which arguments take config values, their
types and defaults, and converting a config value to a declared type. No torch, no avalanche.
Used by cl's strategy options (`cl.strategy`) and by the Avalanche add-on alike.
"""

from __future__ import annotations

import collections.abc
import inspect
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class NotFinite(TypeError):
    """A NaN or infinite value for a float; a TypeError, so callers that only tell right from
    wrong types need not know it."""


@dataclass(frozen=True)
class Arg:
    hint: Any  # type hint (Any when unannotated and the default says nothing)
    default: Any  # inspect.Parameter.empty when required
    plain: bool  # settable from a config value (numbers, strings, bools, lists, null)

    @property
    def required(self) -> bool:
        return self.default is inspect.Parameter.empty


def _is_plain(hint: Any) -> bool:
    if hint is Any or hint in (int, float, bool, str, type(None)):
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return True
    if origin in (typing.Union, types.UnionType):
        return all(_is_plain(a) for a in args)
    if origin in (list, tuple, collections.abc.Sequence):
        return all(_is_plain(a) for a in args if a is not Ellipsis)
    return False


def _hint_of_default(default: Any) -> Any:
    if isinstance(default, bool | int | float | str):
        return type(default)
    if isinstance(default, list):
        return list
    return Any if default is None or default is inspect.Parameter.empty else object


def parameters(cls: type | Callable) -> dict[str, Arg]:
    """{argument: Arg} of the constructor of an Avalanche class (or of a benchmark function),
    cl's owned ones included."""
    init = cls.__init__ if isinstance(cls, type) else cls
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # noqa: BLE001 - forward references Avalanche leaves unresolved
        hints = {}
    out = {}
    for key, p in inspect.signature(init).parameters.items():
        if key == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if key in hints:
            hint = hints[key]
        elif p.annotation is not p.empty and not isinstance(p.annotation, str):
            hint = p.annotation
        elif p.annotation is not p.empty:
            hint = object  # an unresolved forward reference: a class, not a config value
        else:
            hint = _hint_of_default(p.default)
        plain = _is_plain(hint) and (
            p.default is p.empty or p.default is None or _is_plain(_hint_of_default(p.default))
        )
        out[key] = Arg(hint, p.default, plain)
    return out


def type_name(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if typing.get_origin(hint) in (list, tuple, collections.abc.Sequence):
        return f"a list of {type_name(args[0]) if args else 'values'}"
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))


def convert(value: Any, hint: Any) -> Any:
    """`value` as type `hint` (int -> float allowed, bool never a number); raises TypeError
    (NotFinite for a NaN or infinite float)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        finite = None
        for a in args:
            try:
                return convert(value, a)
            except NotFinite as e:
                finite = e
            except TypeError:
                pass
        raise finite or TypeError(value)
    if origin is typing.Literal:
        if value in args:
            return value
        raise TypeError(value)
    if origin in (list, tuple, collections.abc.Sequence) or hint is list:
        if not isinstance(value, list):
            raise TypeError(value)
        return [convert(v, args[0]) if args else v for v in value]
    if hint is type(None) and value is None:
        return None
    if isinstance(value, bool):
        if hint is bool:
            return value
        raise TypeError(value)
    if hint is int and isinstance(value, int):
        return value
    if hint is float and isinstance(value, int | float):
        if not math.isfinite(value):
            raise NotFinite(value)
        return float(value)
    if hint is str and isinstance(value, str):
        return value
    raise TypeError(value)
