"""The typed run config: one dataclass per section, with its defaults and what each key means.

`cl.config` composes YAML and overrides into these; they are re-exported from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class BenchmarkConfig:
    name: str = "split_mnist"
    scenario: str = "split"  # split | permuted | rotated | random_labels | avalanche
    source: str = "mnist5k"
    n_tasks: int = 5
    incremental: str = "class"  # class | task (split only: task-aware heads)
    class_order: list[int] | None = None  # explicit order; null = 0..C-1 (or seeded shuffle)
    shuffle_classes: bool = False  # shuffle class order with the run seed
    angles: list[float] | None = None  # rotated: degrees per task; null = evenly in [0, max_angle]
    max_angle: float = 180.0
    samples_per_task: int | None = None  # N random training samples per task (seeded); null = all
    test_fraction: float = 0.2  # held-out share for sources without a test split
    split_seed: int = 0  # fixed train/test split for those sources, independent of `seed`
    tasks: list[int] | None = None  # keep only these experiences of the stream; null = all
    args: dict[str, Any] = field(default_factory=dict)  # scenario=avalanche: constructor args


@dataclass
class ModelConfig:
    name: str = "mlp"
    hidden: list[int] = field(default_factory=lambda: [400, 400])
    activation: str = "relu"  # relu | tanh | leaky_relu | gelu | sigmoid | hard_ash (mlp)
    ash_z: float = 1.0  # hard_ash: keep units above mean + ash_z * std of the layer, per sample
    layer_norm: bool = False
    channels: list[int] = field(default_factory=lambda: [32, 64])  # cnn conv widths
    width: int = 20  # resnet18 base channels


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adam | rmsprop | adagrad | tag
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    base: str = "rmsprop"  # tag: rmsprop | adam | adagrad
    b: float = 5.0  # tag: alpha(t, tau) = exp(-b * cos(M^t, M^tau))


@dataclass
class TrainConfig:
    epochs: int = 1
    batch_size: int = 32
    amp: str = "off"  # off | bf16: torch.autocast of the training forward and loss (CPU, CUDA)


@dataclass
class EvalConfig:
    every: int = 1  # evaluate after every `every` training iterations (and at each task end)
    subset: int = 1000  # fixed evaluation samples per task
    unseen: bool = False  # also score future tasks at every evaluation
    batch_size: int = 4096  # chunk size of the evaluation forward (memory bound only)


@dataclass
class ExampleForgettingConfig:
    enabled: bool = True  # per-sample forgetting events on the evaluation subsets (Toneva et al.)
    train_probe: int = 0  # also on N fixed training samples per task (0 = off)
    window: int = 10  # events within this many iterations after a task switch count as "after"


@dataclass
class MetricsConfig:
    windows: list[int] = field(default_factory=lambda: [10, 100])  # WF^w / WP^w, in evaluations
    lca_beta: int = 10  # LCA: first beta evaluations of each task
    transfer_normaliser: str = "paper"  # BWT/FWT: paper = divide by T-1; code = by T (GEM code)
    recovery_tolerance: float = 0.05  # recovery time: back within this of pre-switch accuracy
    speed_target: float = 0.9  # learning speed: online accuracy to reach ...
    speed_window: int = 10  # ... as a moving average over this many iterations
    example_forgetting: ExampleForgettingConfig = field(default_factory=ExampleForgettingConfig)


@dataclass
class PlasticityConfig:
    every: int = 50  # probe every N training iterations (0 = off)
    probe_size: int = 500  # fixed probe samples per experience (from its training data)
    dead_threshold: float = 0.0  # a unit is dead when |h| <= this on every probe input
    trainability_probe: bool = False  # Lyle et al.: train a copy on random targets, at task ends
    probe_every: int = 0  # ... and every N training iterations (0 = task ends only)
    probe_steps: int = 100  # K: Adam steps of the throwaway copy per probe
    probe_inputs: int = 256  # fixed input batch (training inputs of all tasks)
    probe_lr: float = 0.001  # the copy's Adam step size


@dataclass
class WandbConfig:
    mode: str = "offline"  # offline | online | disabled
    project: str = "cl"
    entity: str | None = None
    group: str | None = None  # W&B run group (a sweep sets its name)
    job_type: str | None = None  # W&B job type (a sweep sets the configuration without seed)
    tags: list[str] = field(default_factory=list)
    init_timeout: float = 15.0


@dataclass
class RunSection:
    dir: str = "runs"  # parent folder of the run folder
    name: str | None = None  # run folder name; null = <benchmark>-<strategies>-s<seed>-<time>
    label: str | None = None  # the configuration's name in reports; null = what differs
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    deterministic: bool = True  # deterministic algorithms only (bit-reproducible on one machine)
    progress: bool = True
    checkpoint: bool = True  # false: no checkpoints, so no resume
    checkpoint_every: int = 1000  # also checkpoint every N training iterations ...
    checkpoint_minutes: float = 10.0  # ... and every N minutes of wall time (0 = off)
    report: bool = True  # write report.html (and log it to W&B) when the run ends
    compile: bool = False  # torch.compile the model's top-level blocks (slow first iterations)
    threads: int = 0  # torch's CPU threads (0 = auto: the cores free at the start; README)
    row_chunk: int = 0  # rows copied to the host at once (0 = auto: 50 on CUDA, 1 on CPU)
    nproc: int = 1  # ranks (processes) of the run on this machine: torch.distributed, README
    sync_bn: bool = True  # several ranks: batch norm over the global batch (SyncBatchNorm, CUDA)


@dataclass
class DataConfig:
    root: str = "data"
    download: bool = True


@dataclass
class RunConfig:
    seed: int = 0
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    strategy: dict[str, Any] = field(default_factory=dict)  # name -> constructor kwargs, ordered
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    plasticity: PlasticityConfig = field(default_factory=PlasticityConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    run: RunSection = field(default_factory=RunSection)
    data: DataConfig = field(default_factory=DataConfig)
