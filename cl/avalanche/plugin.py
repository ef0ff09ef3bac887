"""`ContinualEvaluation`: cl's evaluation, metrics and run folder inside an Avalanche script.

Add it to any Avalanche strategy's `plugins`. Built once, it materialises a fixed, seeded
subset of every test experience as tensors (and a plasticity probe from the training data);
at the first `train()` call it creates a cl run folder (config.yaml, environment.json,
metrics.jsonl) and a W&B run (offline by default) through cl's own sinks; then it evaluates
as cl's runner does (`MonitorPlugin`, the core that `cl run strategy=avalanche.<Name>` uses
too). After the last experience it writes summary.json, accuracy_matrix.csv, plots and
report.html, and finishes the W&B run. The folder reads back with `cl.load_run` and
`cl report`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cl.avalanche.benchmarks import eval_view, materialise, pick
from cl.avalanche.hook import MonitorPlugin
from cl.context import Context
from cl.errors import UserError
from cl.schema import RunConfig
from cl.streams import Experience, Stream


@dataclass
class _State:  # what cl.outputs.summary reads of a run
    monitor: Any
    ctx: Context


def make_stream(benchmark, subset: int, probe_size: int, seed: int, name: str) -> Stream:
    """A cl Stream whose experiences hold the test experiences' evaluation subsets (`subset`
    per experience, drawn with `seed`) and, as training data, `probe_size` samples of each
    training experience (the plasticity probe; none when only a test stream is given)."""
    tests = getattr(benchmark, "test_stream", benchmark)
    trains = getattr(benchmark, "train_stream", None)
    gen, probe_gen = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)
    experiences = []
    for i, test in enumerate(tests):
        data = eval_view(test.dataset)
        ex, ey = materialise(data, pick(len(data), subset, gen))
        x, y = ex[:0], ey[:0]
        if trains is not None and probe_size > 0:
            train = eval_view(trains[i].dataset)
            x, y = materialise(train, pick(len(train), probe_size, probe_gen))
        classes = sorted(int(c) for c in test.classes_in_this_experience)
        experiences.append(Experience(i, x, y, ex, ey, classes))
    if not experiences:
        raise UserError("ContinualEvaluation got an empty test stream")
    n_classes = getattr(benchmark, "n_classes", None)
    if n_classes is None:
        n_classes = 1 + max(int(e.eval_y.max()) for e in experiences if len(e.eval_y))
    shape = tuple(experiences[0].eval_x.shape[1:])
    return Stream(name, experiences, int(n_classes), shape, task_incremental=False)


def make_config(settings: dict, extra: dict | None) -> RunConfig:
    """The run's cl config: cl's defaults, the plugin's arguments, then `extra` sections."""
    try:
        tree = OmegaConf.merge(OmegaConf.structured(RunConfig), settings, extra or {})
        cfg = OmegaConf.to_object(tree)
    except OmegaConfBaseException as e:
        raise UserError(f"ContinualEvaluation config: {str(e).splitlines()[0]}") from None
    for key, value in (("every", cfg.eval.every), ("subset", cfg.eval.subset)):
        if not isinstance(value, int) or value < 1:
            raise UserError(f"ContinualEvaluation {key}={value!r} must be a positive integer")
    if cfg.wandb.mode not in ("offline", "online", "disabled"):
        raise UserError(f"wandb={cfg.wandb.mode!r}; valid choices: offline, online, disabled")
    return cfg


def _describe(cfg: RunConfig, strategy) -> None:
    """The Avalanche run's model, optimizer and batch sizes in its config.yaml."""
    cfg.model.name = type(strategy.model).__name__
    opt = strategy.optimizer
    group = opt.param_groups[0] if opt.param_groups else {}
    cfg.optim.name = type(opt).__name__.lower()
    cfg.optim.lr = float(group.get("lr", cfg.optim.lr))
    cfg.optim.momentum = float(group.get("momentum", 0.0))
    cfg.optim.weight_decay = float(group.get("weight_decay", 0.0))
    cfg.train.batch_size = int(strategy.train_mb_size)
    cfg.train.epochs = int(getattr(strategy, "train_epochs", 1))


class ContinualEvaluation(MonitorPlugin):
    """cl's continual evaluation as an Avalanche plugin (De Lange et al., ICLR 2023:
    evaluation after every training iteration exposes the stability gap).

    `benchmark`: an Avalanche benchmark (its `test_stream` is scored, its `train_stream` gives
    the plasticity probe) or a test stream. `every`: evaluate after every `every` training
    iterations (and at every experience end); `subset`: evaluation samples per experience;
    `unseen`: also score future experiences (FWT needs it). `run_dir`/`name`: where the run
    folder goes (default `<run_dir>/<benchmark>-avalanche.<Strategy>-s<seed>-<time>`).
    `benchmark_name`: its name in the run (default: the benchmark's class name).
    `wandb`: offline | online | disabled; `report`: write report.html. `config`: further cl
    config sections, e.g. `{"metrics": {"windows": [10, 50]}, "plasticity": {"every": 0}}`.
    After training, `folder` is the run folder; call `finish()` if the script stops before
    the last experience. First in `plugins`, the gradient norm is measured before any
    projection (GEM, AGEM).
    """

    def __init__(
        self,
        benchmark,
        *,
        every: int = 1,
        subset: int = 1000,
        seed: int = 0,
        unseen: bool = False,
        run_dir: str | Path = "runs",
        name: str | None = None,
        wandb: str = "offline",
        project: str = "cl",
        benchmark_name: str | None = None,
        report: bool = True,
        config: dict | None = None,
    ):
        super().__init__()
        bname = benchmark_name or type(benchmark).__name__
        settings = {
            "seed": seed,
            "benchmark": {"name": bname, "scenario": "avalanche"},
            "eval": {"every": every, "subset": subset, "unseen": unseen},
            "wandb": {"mode": wandb, "project": project},
            "run": {"dir": str(run_dir), "name": name, "report": report, "checkpoint": False},
        }
        self.cfg = make_config(settings, config)
        c, p = self.cfg, self.cfg.plasticity
        probe = p.probe_size if p.every else 0
        self.stream = make_stream(benchmark, c.eval.subset, probe, c.seed, bname)
        if not len(self.stream.experiences[0].x):
            self.cfg.plasticity.every = 0  # no training data to probe
        self.folder: Path | None = None
        self._sinks: tuple | None = None
        self._began = 0.0

    def before_training(self, strategy, **kwargs) -> None:
        if self.monitor is None:
            self._open(strategy)
        super().before_training(strategy, **kwargs)

    def after_training(self, strategy, **kwargs) -> None:
        super().after_training(strategy, **kwargs)  # the last experience's boundary row
        if self.ctx.experience == self.stream.n_tasks - 1:
            self.finish()

    def _open(self, strategy) -> None:
        from cl import config
        from cl.drive import open_sinks
        from cl.environment import environment
        from cl.monitor import Monitor
        from cl.store import create_run_folder, write_json
        from cl.wandb_sink import new_run_id

        cfg, device = self.cfg, torch.device(strategy.device)
        cfg.strategy = {f"avalanche.{type(strategy).__name__}": {}}
        cfg.run.device = str(device)
        cfg.benchmark.n_tasks = self.stream.n_tasks
        _describe(cfg, strategy)
        self.stream.to(device)
        self.ctx = Context(strategy.model, strategy.optimizer, self.stream, device)
        self.monitor = Monitor(
            self.ctx, cfg.eval, cfg.metrics, cfg.plasticity, cfg.seed, cfg.run.row_chunk
        )
        plain = OmegaConf.to_container(OmegaConf.structured(cfg))
        default = f"{cfg.benchmark.name}-{'+'.join(cfg.strategy)}-s{cfg.seed}"
        self.folder, _ = create_run_folder(cfg.run.dir, cfg.run.name, default)
        (self.folder / "plots").mkdir(exist_ok=True)
        (self.folder / "config.yaml").write_text(config.to_yaml(OmegaConf.create(plain)))
        write_json(self.folder / "environment.json", environment(cfg.seed, device))
        store, wandb, self.log = open_sinks(cfg.wandb, plain, self.folder, new_run_id())
        self._sinks = (store, wandb)
        self._began = time.perf_counter()

    def finish(self, status: str = "finished") -> Path | None:
        """Write the run's summary, plots and report and close its sinks (once)."""
        if self._sinks is None:
            return self.folder
        from cl import outputs
        from cl.naming import title

        store, wandb = self._sinks
        self._sinks = None
        wall = time.perf_counter() - self._began
        try:
            summary = outputs.summary(_State(self.monitor, self.ctx), status, None, wall)
            finished, cfg = status == "finished", self.cfg
            outputs.write(self.folder, summary, wandb, title(cfg), cfg.run, finished=finished)
        finally:
            store.close()
            if wandb is not None:
                wandb.close(0 if status == "finished" else 1)
        return self.folder
