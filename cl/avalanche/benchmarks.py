"""Avalanche classic benchmarks as cl streams, materialised once as tensors.

`benchmark=avalanche benchmark.name=SplitMNIST benchmark.args.n_experiences=5` builds the
benchmark `avalanche.benchmarks.classic.SplitMNIST(n_experiences=5, seed=<seed>,
dataset_root=<data.root>)` and turns each of its experiences into a cl `Experience`: the
training data (through the benchmark's *eval* transforms: augmentation would be frozen by
materialising), and a fixed, seeded evaluation subset of the matching test experience. Class
order and permutations/rotations are the benchmark's own, drawn from cl's `seed`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from cl import signatures
from cl.errors import UserError

# Classic benchmarks whose data are torchvision-style files under `dataset_root`.
NAMES = (
    "SplitMNIST",
    "PermutedMNIST",
    "RotatedMNIST",
    "SplitFMNIST",
    "SplitCIFAR10",
    "SplitCIFAR100",
    "SplitOmniglot",
    "SplitTinyImageNet",
    "SplitCUB200",
)
# Arguments cl fills itself: from its own config, or fixed by materialising.
OWNED = {
    "seed": "cl's `seed`",
    "dataset_root": "`data.root`",
    "train_transform": "the benchmark's default (cl materialises the data once)",
    "eval_transform": "the benchmark's default (cl materialises the data once)",
}


def _constructor(name: str):
    if name not in NAMES:
        raise UserError(
            f"benchmark.name={name!r} is not a supported Avalanche benchmark; valid choices: "
            f"{', '.join(NAMES)}"
        )
    from avalanche.benchmarks import classic

    return getattr(classic, name)


def check(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Validate `args` against the benchmark's constructor; returns them converted to its types.
    UserError naming the valid ones."""
    params = signatures.parameters(_constructor(name))
    valid = [p for p in params if p not in OWNED]
    out = {}
    for key, value in args.items():
        if key in OWNED:
            raise UserError(
                f"benchmark.args.{key} is set by cl ({OWNED[key]}); remove it. "
                f"{name} takes: {', '.join(valid)}"
            )
        if key not in params:
            raise UserError(
                f"benchmark.args.{key}: {name} has no argument '{key}'; valid: {', '.join(valid)}"
            )
        arg, out[key] = params[key], value
        if arg.plain:  # other types (transforms, ...) are left to the constructor
            try:
                out[key] = signatures.convert(value, arg.hint)
            except TypeError:
                raise UserError(
                    f"benchmark.args.{key}={value!r} does not fit {name}'s type "
                    f"{signatures.type_name(arg.hint)}"
                ) from None
    missing = [p for p in valid if params[p].required and p not in args]
    if missing:
        raise UserError(
            f"benchmark=avalanche {name} needs benchmark.args.{missing[0]} "
            f"(e.g. benchmark.args.{missing[0]}=5); it takes: {', '.join(valid)}"
        )
    return out


# benchmark.* keys of cl's own streams that an Avalanche benchmark has no use for: the
# stream, its class order and its tasks are the benchmark's own (benchmark.args).
UNSUPPORTED = {
    "class_order": "the class order is the benchmark's own, drawn from `seed`",
    "shuffle_classes": "the class order is the benchmark's own, drawn from `seed`",
    "angles": "set the benchmark's own arguments (benchmark.args.<arg>)",
    "max_angle": "set the benchmark's own arguments (benchmark.args.<arg>)",
    "tasks": "every experience of the benchmark runs (benchmark.args.n_experiences sets them)",
}


def check_config(b) -> None:
    """Validate `benchmark.*` (a DictConfig) for `scenario=avalanche`: the name and arguments
    against the constructor, no key of cl's own streams; fills `incremental` and `n_tasks`
    from the arguments (what config.yaml shows)."""
    from cl.schema import BenchmarkConfig

    default = BenchmarkConfig()
    for key, why in UNSUPPORTED.items():
        value = b[key]
        if value != getattr(default, key):
            shown = list(value) if isinstance(value, Sequence) else value
            raise UserError(
                f"benchmark.{key}={shown} is not supported by benchmark.scenario=avalanche ({why})"
            )
    if b.incremental == "task" and not b.args.get("return_task_id"):
        raise UserError(
            "benchmark.incremental=task is not supported by benchmark.scenario=avalanche; "
            "set benchmark.args.return_task_id=true (task labels from the benchmark)"
        )
    from omegaconf import OmegaConf

    check(b.name, OmegaConf.to_container(b.args, resolve=True))
    b.incremental = "task" if b.args.get("return_task_id") else "class"  # task-aware heads
    b.n_tasks = b.args.get("n_experiences", b.n_tasks)


def materialise(dataset, indices: torch.Tensor | None = None, batch_size: int = 1000):
    """(x, y) tensors of an Avalanche (or any map-style) dataset, or of its `indices`."""
    from torch.utils.data import DataLoader, Subset

    if indices is not None:
        dataset = Subset(dataset, indices.tolist())
    xs, ys = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        xs.append(batch[0])
        ys.append(torch.as_tensor(batch[1]))
    if not xs:
        return torch.empty(0), torch.empty(0, dtype=torch.long)
    return torch.cat(xs).float(), torch.cat(ys).long()


def pick(n: int, size: int | None, gen: torch.Generator) -> torch.Tensor | None:
    """`size` of range(n) drawn with `gen`, sorted (None: all of them, nothing drawn)."""
    if size is None or n <= size:
        return None
    return torch.randperm(n, generator=gen)[:size].sort().values


def eval_view(dataset):
    """The dataset with its eval transforms (deterministic), when it has such a view."""
    return dataset.eval() if hasattr(dataset, "eval") else dataset


def build(name: str, args: dict[str, Any], seed: int, root: str):
    """The Avalanche benchmark object (its data read from `root`)."""
    from pathlib import Path

    try:
        return _constructor(name)(**args, seed=seed, dataset_root=str(Path(root).expanduser()))
    except (RuntimeError, OSError) as e:  # torchvision: missing files and no download
        raise UserError(
            f"Avalanche {name} could not load its data under data.root={root} ({e}); put the "
            "torchvision files there (e.g. MNIST/raw/ for the MNIST benchmarks)"
        ) from None


def build_stream(cfg, root: str, seed: int, eval_subset: int):
    """A cl `Stream` of the Avalanche benchmark `cfg.name(**cfg.args)` (a BenchmarkConfig)."""
    from cl.streams import Experience, Stream

    bench = build(cfg.name, dict(cfg.args), seed, root)
    gen = torch.Generator().manual_seed(seed)  # eval subsets, as cl's own streams draw them
    take = torch.Generator().manual_seed(seed)  # training subsets (benchmark.samples_per_task)
    experiences = []
    for i, (train, test) in enumerate(zip(bench.train_stream, bench.test_stream, strict=True)):
        tr, te = eval_view(train.dataset), eval_view(test.dataset)
        x, y = materialise(tr, pick(len(tr), cfg.samples_per_task, take))
        ex, ey = materialise(te, pick(len(te), eval_subset, gen))
        classes = sorted(int(c) for c in train.classes_in_this_experience)
        experiences.append(Experience(i, x, y, ex, ey, classes))
    return Stream(
        name=cfg.name,
        experiences=experiences,
        n_classes=int(bench.n_classes),
        input_shape=tuple(experiences[0].x.shape[1:]),
        task_incremental=cfg.incremental == "task",  # return_task_id=True (validation)
    )
