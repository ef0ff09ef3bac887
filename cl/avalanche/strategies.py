"""Avalanche strategies and plugins as cl strategies: names, options, validation, listing.

`strategy=avalanche.<Name>` picks a strategy class of `avalanche.training` (a subclass of
Avalanche's templates); `strategy=avalanche.<Plugin>` picks a plugin of
`avalanche.training.plugins`, run in Avalanche's `Naive`. A list holds at most one strategy
class and any number of plugins (`strategy=[avalanche.Replay,avalanche.EWCPlugin]`).
`strategy.avalanche.<Name>.<arg>=value` sets a constructor argument; the config tree keeps
them as `strategy: {avalanche: {<Name>: {<arg>: value}}}`. Arguments cl owns (`OWNED`) are
filled from cl's config and refused if set. Importing this module imports neither torch nor
avalanche; the functions that read Avalanche's classes import it (about 3 s).
"""

from __future__ import annotations

import inspect
import typing
import warnings
from typing import Any

from cl.errors import UserError
from cl.signatures import Arg, convert, parameters, type_name

PREFIX = "avalanche."
KEY = "avalanche"  # the config tree's key under `strategy`
MISSING = "???"  # OmegaConf's mark for a required value
BASE = "Naive"  # the strategy that runs a list of plugins only

# Constructor arguments cl fills (refused if set by hand), and where their value comes from.
OWNED = {
    "model": "model.* (cl's model)",
    "optimizer": "optim.* (cl's optimizer)",
    "criterion": "cross-entropy, as cl's runner",
    "train_mb_size": "train.batch_size",
    "batch_size": "train.batch_size",
    "train_epochs": "train.epochs",
    "eval_mb_size": "eval.batch_size",
    "device": "run.device",
    "plugins": "strategy=[avalanche.<Name>,avalanche.<Plugin>,...]",
    "evaluator": "cl's evaluation (eval.*); Avalanche's evaluation and loggers are off",
    "eval_every": "eval.every (cl evaluates; Avalanche's eval_every is -1)",
    "peval_mode": "eval.every",
}
# Plugins that cannot run under cl: why.
EXCLUDED = {
    "SupervisedPlugin": "the base class of plugins",
    "EvaluationPlugin": "cl does the evaluation (eval.*)",
    "EarlyStoppingPlugin": "needs Avalanche's periodic evaluation, which is off under cl",
    "LRSchedulerPlugin": "needs a scheduler object",
}


# Strategies whose `model` must be one of Avalanche's special networks (not annotated).
SPECIAL_MODELS = {
    "PNNStrategy": "a PNN model (avalanche.models.PNN)",
    "AETraining": "an autoencoder",
    "VAETraining": "a VAE model",
}


def is_avalanche(name: str) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def label(spec: dict) -> str:
    """The strategies of a config as one name: `avalanche.EWC`, `replay+center_loss`."""
    if KEY in spec and isinstance(spec[KEY], dict):
        return "+".join(f"{PREFIX}{n}" for n in spec[KEY])
    return "+".join(spec)


def available() -> tuple[dict[str, type], dict[str, type]]:
    """({name: strategy class}, {name: plugin class}) of the installed Avalanche."""
    try:
        import avalanche.training as training
        import avalanche.training.plugins as plugins
        from avalanche.core import BasePlugin
        from avalanche.training.templates.base import BaseTemplate
    except ImportError:
        raise UserError(
            "strategy=avalanche.<Name> needs avalanche-lib: pip install 'cl[avalanche]'"
        ) from None
    except OSError as e:  # its import writes ~/.avalanche/config.json
        raise UserError(f"avalanche could not start ({e}); it needs a writable HOME") from None

    strategies = {
        n: c
        for n, c in sorted(vars(training).items())
        if inspect.isclass(c) and issubclass(c, BaseTemplate) and not n.endswith("Template")
    }
    plugin_classes = {
        n: c
        for n, c in sorted(vars(plugins).items())
        if inspect.isclass(c) and issubclass(c, BasePlugin) and n not in strategies
    }
    return strategies, plugin_classes


def resolve(name: str) -> tuple[type, bool]:
    """(class, is_plugin) of `avalanche.<Name>`; UserError naming the valid ones."""
    short = name[len(PREFIX) :] if is_avalanche(name) else name
    strategies, plugins = available()
    if short in strategies:
        return strategies[short], False
    if short in plugins and short not in EXCLUDED:
        return plugins[short], True
    if short in EXCLUDED:
        raise UserError(f"strategy={PREFIX}{short} cannot run under cl: {EXCLUDED[short]}")
    valid = [n for n in strategies if runnable(strategies[n])[0]]
    valid += [n for n in plugins if n not in EXCLUDED and runnable(plugins[n])[0]]
    raise UserError(
        f"unknown strategy '{PREFIX}{short}'; Avalanche strategies and plugins: "
        f"{', '.join(PREFIX + n for n in valid)} (cl list strategies)"
    )


def runnable(cls: type) -> tuple[bool, str]:
    """(True, "") if cl can fill every required argument, else (False, why)."""
    import torch

    params = parameters(cls)
    if cls.__name__ in SPECIAL_MODELS:
        return False, f"needs {SPECIAL_MODELS[cls.__name__]}, not cl's model"
    model = params.get("model")
    if model is None and "optimizer" not in params and "slda_model" not in params:
        if "train_mb_size" in params:  # a strategy that builds its own network
            return False, "builds its own model, not cl's"
    elif model is not None:
        kinds = typing.get_args(model.hint) or (model.hint,)
        special = [k for k in kinds if inspect.isclass(k) and issubclass(k, torch.nn.Module)]
        if special and torch.nn.Module not in special and len(special) == len(kinds):
            return False, f"needs a {' or '.join(k.__name__ for k in special)} model, not cl's"
    missing = [k for k, a in params.items() if a.required and not a.plain and k not in OWNED]
    if missing:
        return False, f"needs {', '.join(missing)} (Python objects, not config values)"
    return True, ""


def settable(cls: type) -> dict[str, Arg]:
    return {k: a for k, a in parameters(cls).items() if a.plain and k not in OWNED}


def defaults(name: str) -> dict[str, Any]:
    """The config entry of `avalanche.<Name>`: its settable arguments with their defaults
    (`???` where the constructor requires a value)."""
    cls, _ = resolve(name)
    ok, why = runnable(cls)
    if not ok:
        raise UserError(f"strategy={PREFIX}{cls.__name__} cannot run under cl: it {why}")
    out = {}
    for key, a in settable(cls).items():
        out[key] = MISSING if a.required else a.default
    return out


def check(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Validate `strategy.avalanche` ({Name: {arg: value}}); returns it converted.

    UserError for an unknown name, an unknown, owned, missing or ill-typed argument, more
    than one strategy class, or a value the constructor refuses (it is built once with a
    dummy model and optimizer, so its own checks run before any work).
    """
    if not isinstance(spec, dict) or not spec:
        raise UserError(f"strategy.{KEY} must map Avalanche names to their arguments")
    out, classes = {}, []
    for name, args in spec.items():
        cls, is_plugin = resolve(name)
        where = f"strategy.{KEY}.{name}"
        if not isinstance(args, dict):
            raise UserError(f"{where} must be a mapping of arguments, got {args!r}")
        allowed = settable(cls)
        valid = ", ".join(allowed) or "(none)"
        conv = {}
        for key, value in args.items():
            if key in OWNED:
                raise UserError(
                    f"{where}.{key} is set by cl from {OWNED[key]}; remove it "
                    f"(arguments that can be set: {valid})"
                )
            if key not in allowed:
                raise UserError(f"unknown key '{where}.{key}'; valid keys: {valid}")
            if value == MISSING:
                raise UserError(
                    f"{PREFIX}{name} needs {where}.{key}=<{type_name(allowed[key].hint)}> "
                    f"(required by its constructor)"
                )
            try:
                conv[key] = convert(value, allowed[key].hint)
            except TypeError:
                shown = "null" if value is None else repr(value)
                raise UserError(
                    f"{where}.{key}={shown} has the wrong type; expected "
                    f"{type_name(allowed[key].hint)} (valid keys: {valid})"
                ) from None
        for key, a in allowed.items():
            if a.required and key not in conv:
                raise UserError(
                    f"{PREFIX}{name} needs {where}.{key}=<{type_name(a.hint)}> "
                    f"(required by its constructor)"
                )
        out[name] = conv
        classes.append((name, cls, is_plugin))
    strategies = [n for n, _, p in classes if not p]
    if len(strategies) > 1:
        raise UserError(
            f"strategy lists {len(strategies)} Avalanche strategies ({', '.join(strategies)}); "
            "one strategy at most, with any number of plugins"
        )
    _try_build(classes, out)
    return out


def _try_build(classes, args) -> None:
    """Build each class once with a dummy model, to run its own argument checks."""
    import torch

    for name, cls, is_plugin in classes:
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
        kwargs = dict(args[name])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if is_plugin:
                    cls(**kwargs, **owned_values(cls, model=model))
                else:
                    fill = dict(
                        model=model,
                        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                        criterion=torch.nn.CrossEntropyLoss(),
                        train_mb_size=1,
                        train_epochs=1,
                        eval_mb_size=1,
                        device="cpu",
                        plugins=[],
                        evaluator=quiet_evaluator(),
                        eval_every=-1,
                    )
                    cls(**kwargs, **owned_values(cls, **fill))
        except (TypeError, ValueError, AssertionError) as e:
            raise UserError(f"strategy.{KEY}.{name}: {e}") from None


def quiet_evaluator():
    """Avalanche's evaluation plugin with no metrics and no loggers."""
    from avalanche.training.plugins import EvaluationPlugin

    with warnings.catch_warnings():  # "No loggers specified": on purpose
        warnings.simplefilter("ignore")
        return EvaluationPlugin(loggers=[])


def owned_values(cls: type, **values: Any) -> dict[str, Any]:
    """The subset of `values` (cl's fills for owned arguments) that `cls` accepts."""
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        names = set(parameters(cls)) | (set(values) - {"batch_size"})
    else:
        names = set(params)
    return {k: v for k, v in values.items() if k in names}


def listing() -> str:
    """`cl list strategies`'s avalanche section, from the installed Avalanche."""
    try:
        import avalanche
    except ImportError:
        return "avalanche: not installed (pip install 'cl[avalanche]')"
    strategies, plugins = available()
    lines = [
        f"avalanche (avalanche-lib {avalanche.__version__}): strategy=avalanche.<Name>, "
        f"arguments as strategy.avalanche.<Name>.<arg>=value; plugins run in {BASE}"
    ]
    for kind, table in (("strategy", strategies), ("plugin", plugins)):
        for n, cls in table.items():
            if n in EXCLUDED:
                continue
            ok, why = runnable(cls)
            args = settable(cls)
            req = [k for k, a in args.items() if a.required]
            text = f"needs {', '.join(req)}; " if req and ok else ""
            text += f"options: {', '.join(args) or '(none)'}" if ok else f"not available: {why}"
            lines.append(f"  {PREFIX + n:<34} {kind:<8} {text}")
    return "\n".join(lines)
