"""Streams: turn a data source into a sequence of experiences (tasks).

Scenarios: `split` (disjoint classes per task; class-incremental or task-incremental),
`permuted` and `rotated` (domain-incremental: same classes, transformed inputs), `random_labels`
(the same images with new random labels per task), `avalanche` (an Avalanche classic
benchmark, `cl.avalanche.benchmarks`). Each experience
carries its training tensors and a fixed evaluation subset drawn once with the run's seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cl import plugins
from cl.data import Dataset
from cl.errors import UserError
from cl.schema import BenchmarkConfig


@dataclass
class Experience:
    index: int
    x: torch.Tensor  # training inputs
    y: torch.Tensor
    eval_x: torch.Tensor  # fixed evaluation subset
    eval_y: torch.Tensor
    classes: list[int]  # classes present in this experience


@dataclass
class Stream:
    name: str
    experiences: list[Experience]
    n_classes: int
    input_shape: tuple[int, ...]
    task_incremental: bool  # task-aware: logits restricted to the task's classes

    @property
    def n_tasks(self) -> int:
        return len(self.experiences)

    def class_mask(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """(n_tasks, n_classes) bool: which output units belong to each task."""
        mask = torch.zeros(self.n_tasks, self.n_classes, dtype=torch.bool)
        for e in self.experiences:
            mask[e.index, e.classes] = True
        return mask.to(device)

    def to(self, device: torch.device | str) -> Stream:
        for e in self.experiences:
            e.x, e.y = e.x.to(device), e.y.to(device)
            e.eval_x, e.eval_y = e.eval_x.to(device), e.eval_y.to(device)
        return self


def class_order(cfg: BenchmarkConfig, n_classes: int, seed: int) -> list[int]:
    if cfg.class_order is not None:
        order = list(cfg.class_order)
        if sorted(order) != list(range(n_classes)):
            raise UserError(
                f"benchmark.class_order={order} must be a permutation of 0..{n_classes - 1}"
            )
        return order
    if cfg.shuffle_classes:
        return np.random.default_rng(seed).permutation(n_classes).tolist()
    return list(range(n_classes))


def _eval_subset(x: torch.Tensor, y: torch.Tensor, size: int, gen: torch.Generator):
    if len(x) <= size:
        return x, y
    idx = torch.randperm(len(x), generator=gen)[:size].sort().values
    return x[idx], y[idx]


def build_stream(
    cfg: BenchmarkConfig, data: Dataset | None, seed: int, eval_subset: int, root: str = "data"
) -> Stream:
    """Build the stream of `cfg` from `data`; all randomness comes from `seed`. The scenario's
    registry entry builds it (`cl.plugins`): cl's own from `data` (`source_stream`), an
    add-on's from its own data under `root` (e.g. an Avalanche benchmark; `data` is unused)."""
    return plugins.scenario(cfg.scenario).build(cfg, data, seed, eval_subset, root)


def source_stream(
    cfg: BenchmarkConfig, data: Dataset, seed: int, eval_subset: int, root: str = "data"
) -> Stream:
    """cl's own scenarios: the stream of `cfg` from the data source `data`."""
    gen = torch.Generator().manual_seed(seed)
    if cfg.scenario == "split":
        tasks = _split_tasks(cfg, data, seed)
    elif cfg.scenario == "permuted":
        tasks = _permuted_tasks(cfg, data, gen)
    elif cfg.scenario == "random_labels":
        tasks = _random_label_tasks(cfg, data, gen)
    else:
        tasks = _rotated_tasks(cfg, data)
    experiences = []
    pick = torch.Generator().manual_seed(seed)  # task subsets, apart from the eval-subset draws
    for i, (x, y, ex, ey, classes) in enumerate(tasks):
        if cfg.samples_per_task is not None and len(x) > cfg.samples_per_task:
            keep = torch.randperm(len(x), generator=pick)[: cfg.samples_per_task].sort().values
            x, y = x[keep], y[keep]  # a random subset: sources may be sorted by class
        sx, sy = _eval_subset(ex, ey, eval_subset, gen)
        experiences.append(Experience(i, x, y, sx, sy, classes))
    if cfg.tasks is not None:  # a sub-stream: the same data and evaluation subsets, renumbered
        experiences = [experiences[t] for t in cfg.tasks]
        for j, e in enumerate(experiences):
            e.index = j
    return Stream(
        name=cfg.name,
        experiences=experiences,
        n_classes=data.n_classes,
        input_shape=tuple(data.x_train.shape[1:]),
        task_incremental=cfg.incremental == "task",
    )


def _split_tasks(cfg: BenchmarkConfig, data: Dataset, seed: int):
    order = class_order(cfg, data.n_classes, seed)
    if not 1 <= cfg.n_tasks <= data.n_classes:
        raise UserError(
            f"benchmark.n_tasks={cfg.n_tasks}: a split stream of {data.n_classes} classes "
            f"needs 1 to {data.n_classes} tasks"
        )
    for group in np.array_split(np.array(order), cfg.n_tasks):
        classes = sorted(group.tolist())
        c = torch.tensor(classes)
        tr, te = torch.isin(data.y_train, c), torch.isin(data.y_test, c)
        yield data.x_train[tr], data.y_train[tr], data.x_test[te], data.y_test[te], classes


def _permuted_tasks(cfg: BenchmarkConfig, data: Dataset, gen: torch.Generator):
    shape = data.x_train.shape[1:]
    d = int(np.prod(shape))
    classes = list(range(data.n_classes))
    for _ in range(cfg.n_tasks):
        perm = torch.randperm(d, generator=gen)
        xs = data.x_train.reshape(len(data.x_train), d)[:, perm].reshape(-1, *shape)
        xt = data.x_test.reshape(len(data.x_test), d)[:, perm].reshape(-1, *shape)
        yield xs, data.y_train, xt, data.y_test, classes


def _random_label_tasks(cfg: BenchmarkConfig, data: Dataset, gen: torch.Generator):
    """The same training images in every task (`samples_per_task` drawn once), each task with
    its own uniformly random labels, evaluated on those images and labels: a pure test of how
    well the network can still fit (trainability; Lyle et al. 2023, Lewandowski et al. 2025)."""
    n = cfg.samples_per_task or len(data.x_train)
    x = data.x_train[torch.randperm(len(data.x_train), generator=gen)[:n].sort().values]
    classes = list(range(data.n_classes))
    for _ in range(cfg.n_tasks):
        y = torch.randint(data.n_classes, (len(x),), generator=gen)
        yield x, y, x, y, classes


def rotation_angles(cfg: BenchmarkConfig) -> list[float]:
    if cfg.angles is not None:
        return [float(a) for a in cfg.angles]
    if cfg.n_tasks == 1:
        return [0.0]
    return np.linspace(0.0, cfg.max_angle, cfg.n_tasks).tolist()


def _rotated_tasks(cfg: BenchmarkConfig, data: Dataset):
    from torchvision.transforms.functional import rotate

    if data.x_train.dim() != 4:
        raise UserError(f"benchmark.scenario=rotated needs images; source '{cfg.source}' is 1-D")
    classes = list(range(data.n_classes))
    for angle in rotation_angles(cfg):
        yield (
            rotate(data.x_train, angle),
            data.y_train,
            rotate(data.x_test, angle),
            data.y_test,
            classes,
        )
