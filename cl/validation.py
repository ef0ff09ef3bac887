"""Validation of a composed config: every choice, range and combination, before any work.

Choices, ranges, finite numbers, names that become paths, and which strategy, model and
scenario can go together; strategy options against their constructors (`cl.strategy`).
Each mistake is one UserError naming the key and what is valid.
"""

from __future__ import annotations

import math
import re
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from cl import plugins
from cl.catalog import BENCHMARKS, MODELS, SOURCE_CLASSES, SOURCES, STRATEGIES
from cl.errors import UserError, comma_hint, did_you_mean
from cl.schema import RunConfig

CHOICES = {
    "benchmark.source": tuple(SOURCES),
    "benchmark.incremental": ("class", "task"),
    "model.name": tuple(MODELS),
    "model.activation": ("relu", "tanh", "leaky_relu", "gelu", "sigmoid", "hard_ash"),
    "optim.name": ("sgd", "adam", "rmsprop", "adagrad", "tag"),
    "optim.base": ("rmsprop", "adam", "adagrad"),
    "metrics.transfer_normaliser": ("paper", "code"),
    "train.amp": ("off", "bf16"),
    "wandb.mode": ("offline", "online", "disabled"),
}


MAX_INT = 2**31 - 1  # sizes and counts: beyond this torch indexing fails
MAX_SEED = 2**32 - 1  # NumPy's legacy seeding takes 0 .. 2**32 - 1
POSITIVE_INTS = (
    "benchmark.n_tasks",
    "train.epochs",
    "train.batch_size",
    "eval.every",
    "eval.subset",
    "eval.batch_size",
    "metrics.lca_beta",
    "metrics.speed_window",
    "plasticity.probe_size",
    "plasticity.probe_steps",
    "plasticity.probe_inputs",
    "model.width",
    "run.checkpoint_every",
)
# key: (low, high, low inclusive, high inclusive, text)
FLOAT_RANGES = {
    "optim.lr": (0.0, math.inf, False, False, "> 0"),
    "optim.momentum": (0.0, 1.0, True, False, "in [0, 1)"),
    "optim.weight_decay": (0.0, math.inf, True, False, ">= 0"),
    "optim.b": (0.0, math.inf, True, False, ">= 0"),
    "benchmark.test_fraction": (0.0, 1.0, False, False, "in (0, 1)"),
    "metrics.recovery_tolerance": (0.0, 1.0, True, True, "in [0, 1]"),
    "metrics.speed_target": (0.0, 1.0, False, True, "in (0, 1]"),
    "plasticity.dead_threshold": (0.0, math.inf, True, False, ">= 0"),
    "plasticity.probe_lr": (0.0, math.inf, False, False, "> 0"),
    "wandb.init_timeout": (0.0, math.inf, False, False, "> 0"),
    "run.checkpoint_minutes": (0.0, math.inf, True, False, ">= 0 (0 = off)"),
}
RUN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=,@-]{0,199}")
DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?|mps")
WANDB_FORBIDDEN = set("/\\#?%:")


def validate(cfg: DictConfig) -> RunConfig:
    """Check values and combinations; returns the typed RunConfig or raises UserError.

    Everything is checked here, before any data is loaded: choices, ranges, finite numbers,
    names that become paths, and which strategy, model and scenario can go together.
    """
    _check_finite(as_plain(cfg), "")
    scenarios = tuple(plugins.scenarios())
    for key, choices in {"benchmark.scenario": scenarios, **CHOICES}.items():
        value = OmegaConf.select(cfg, key)
        if value not in choices:
            hint = comma_hint(key, value) or did_you_mean(value, choices)
            raise UserError(
                f"{key}={value!r} is not valid{hint}; valid choices: {', '.join(choices)}"
            )
    b, m = cfg.benchmark, cfg.model
    if plugins.scenario(b.scenario).source and b.name not in BENCHMARKS:
        hint = did_you_mean(b.name, BENCHMARKS)
        valid = ", ".join(BENCHMARKS)
        raise UserError(f"unknown benchmark '{b.name}'{hint}; valid choices: {valid}")
    for key in POSITIVE_INTS:
        _int_in(key, OmegaConf.select(cfg, key), 1, MAX_INT, "a positive integer")
    _int_in("plasticity.every", cfg.plasticity.every, 0, MAX_INT, "an integer >= 0 (0 = off)")
    _int_in("plasticity.probe_every", cfg.plasticity.probe_every, 0, MAX_INT, "an integer >= 0")
    _int_in("run.threads", cfg.run.threads, 0, 4096, "an integer >= 0 (0 = auto)")
    _int_in("run.row_chunk", cfg.run.row_chunk, 0, MAX_INT, "an integer >= 0 (0 = auto)")
    _int_in("run.nproc", cfg.run.nproc, 1, 4096, "an integer >= 1")
    ef = cfg.metrics.example_forgetting
    _int_in("metrics.example_forgetting.train_probe", ef.train_probe, 0, MAX_INT, "an integer >= 0")
    _int_in("metrics.example_forgetting.window", ef.window, 0, MAX_INT, "an integer >= 0")
    if cfg.benchmark.samples_per_task is not None:
        n = cfg.benchmark.samples_per_task
        _int_in("benchmark.samples_per_task", n, 1, MAX_INT, "a positive integer or null")
    for key in ("seed", "benchmark.split_seed"):
        _int_in(key, OmegaConf.select(cfg, key), 0, MAX_SEED, f"an integer in 0 .. {MAX_SEED}")
    for name, values in (("model.hidden", m.hidden), ("model.channels", m.channels)):
        for v in values:
            _int_in(name, v, 1, MAX_INT, "a list of positive widths")
    for key, (lo, hi, lo_in, hi_in, text) in FLOAT_RANGES.items():
        v = OmegaConf.select(cfg, key)
        if not ((lo <= v if lo_in else lo < v) and (v <= hi if hi_in else v < hi)):
            raise UserError(f"{key}={v} must be {text}")
    _check_benchmark(cfg)
    if cfg.optim.name == "tag" and cfg.optim.weight_decay:
        raise UserError("optim=tag has no weight decay (as the paper's); set optim.weight_decay=0")
    if m.activation == "hard_ash" and m.name != "mlp":
        raise UserError(f"model.activation=hard_ash is for model=mlp, not model={m.name}")
    if m.name in ("cnn", "resnet18") and b.source == "mnist1d":
        raise UserError(
            f"model={m.name} needs image inputs; benchmark.source=mnist1d is 1-D: use model=mlp"
        )
    if m.name == "resnet18" and b.scenario == "permuted":
        raise UserError(
            "model=resnet18 with a permuted stream destroys spatial structure; use model=mlp"
        )
    if not cfg.metrics.windows or any(w < 2 for w in cfg.metrics.windows):
        raise UserError(f"metrics.windows={list(cfg.metrics.windows)} must be integers >= 2")
    _check_run_and_wandb(cfg)
    if not cfg.strategy:
        raise UserError(f"strategy is empty; valid choices: {', '.join(STRATEGIES)}")
    family = plugins.family_of(cfg.strategy)  # each family checks its own strategies
    cfg.strategy = family.check(as_plain(cfg.strategy))
    typed = OmegaConf.to_object(cfg)
    family.check_run(typed)
    return typed


def as_plain(cfg: DictConfig | ListConfig) -> Any:
    """The config tree as plain dicts and lists, interpolations resolved."""
    return OmegaConf.to_container(cfg, resolve=True)


def _check_finite(tree: Any, prefix: str) -> None:
    if isinstance(tree, dict):
        for k, v in tree.items():
            _check_finite(v, f"{prefix}{k}.")
    elif isinstance(tree, list):
        for v in tree:
            _check_finite(v, prefix)
    elif isinstance(tree, float) and not math.isfinite(tree):
        raise UserError(f"{prefix[:-1]}={tree} must be a finite number")


def _int_in(key: str, value: Any, lo: int, hi: int, text: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        shown = str(value)
        shown = shown if len(shown) <= 40 else f"{shown[:20]}...({len(shown)} digits)"
        raise UserError(f"{key}={shown} must be {text}")


def _check_benchmark(cfg: DictConfig) -> None:
    b = cfg.benchmark
    scenario = plugins.scenario(b.scenario)  # each scenario checks its own keys
    if scenario.source and b.args:
        takes = "|".join(n for n, s in plugins.scenarios().items() if not s.source)
        raise UserError(
            f"benchmark.args is only for benchmark.scenario={takes or '(none installed)'}"
        )
    scenario.check(b)


def check_source_benchmark(b: DictConfig) -> None:
    """The keys of cl's own scenarios (streams built from `benchmark.source`)."""
    n_classes = SOURCE_CLASSES[b.source]
    if b.incremental == "task" and b.scenario != "split":
        raise UserError(
            f"benchmark.incremental=task needs benchmark.scenario=split (got {b.scenario}): "
            "permuted and rotated streams share all classes across tasks"
        )
    if b.scenario == "split" and b.n_tasks > n_classes:
        raise UserError(
            f"benchmark.n_tasks={b.n_tasks}: a split stream of {b.source}'s {n_classes} classes "
            f"needs 1 to {n_classes} tasks"
        )
    if b.class_order is not None and sorted(b.class_order) != list(range(n_classes)):
        raise UserError(
            f"benchmark.class_order={list(b.class_order)} must be a permutation of "
            f"0..{n_classes - 1}"
        )
    if b.angles is not None and len(b.angles) != b.n_tasks:
        raise UserError(
            f"benchmark.angles has {len(b.angles)} values but benchmark.n_tasks={b.n_tasks}"
        )
    if b.tasks is not None:
        tasks, n = list(b.tasks), b.n_tasks
        if not tasks or len(set(tasks)) != len(tasks) or not all(0 <= t < n for t in tasks):
            raise UserError(
                f"benchmark.tasks={tasks} must list distinct experiences among 0..{n - 1} "
                "(or be null for all)"
            )


def _check_run_and_wandb(cfg: DictConfig) -> None:
    r, w = cfg.run, cfg.wandb
    if r.name is not None and (not RUN_NAME.fullmatch(r.name) or r.name in (".", "..")):
        shown = r.name if len(r.name) <= 60 else f"{r.name[:40]}...({len(r.name)} characters)"
        raise UserError(
            f"run.name={shown!r} must be a single folder name of at most 200 characters: "
            "letters, digits and _ . + = , @ - (not starting with . or -); "
            "use run.dir to choose where it goes"
        )
    if not str(r.dir).strip():
        raise UserError("run.dir is empty; give the folder that holds run folders (default runs)")
    if not DEVICE.fullmatch(str(r.device)):
        raise UserError(f"run.device={r.device!r}; valid choices: auto, cpu, cuda, cuda:N, mps")
    if w.job_type is not None and len(w.job_type) > 64:
        raise UserError(f"wandb.job_type={w.job_type!r} is longer than W&B's 64 characters")
    for key in ("project", "entity", "group"):
        value = w[key]
        if value is not None and (not value.strip() or WANDB_FORBIDDEN & set(value)):
            raise UserError(
                f"wandb.{key}={value!r} is not a valid W&B name: it must be non-empty and "
                "contain none of / \\ # ? % :"
            )
