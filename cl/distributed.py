"""The run's ranks: one run over several processes with torch.distributed (`run.nproc`, or
started by `torchrun`).

Data is replicated, compute is sharded: every rank builds the same stream, model and
generator, so every strategy hook sees the same global batch and keeps the same state with no
communication. Only the training forward/backward (`Context.shard`: each rank its share of
the batch, a DDP all-reduce of the gradients) and the evaluation (each rank its share of the
evaluation subsets, one fused all-reduce per row) are split. Strategies that reduce over a
batch themselves go through `Context.collective` (never torch.distributed).

`Collective` is the single process (world 1, every operation the identity); `Group` the
torch.distributed process group (gloo on the CPU, NCCL on CUDA) `init` joins under torchrun.
`cl/launch.py` starts the ranks for `run.nproc=N`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where used: `cl --help` does not import it
    import torch


class Collective:
    """One process: world 1, every collective the identity."""

    rank, world, local_rank, local_world = 0, 1, 0, 1

    @property
    def main(self) -> bool:
        """Whether this rank writes the run's outputs (rank 0)."""
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous share of `n` rows, in rank order (shares differ by at
        most one row; a rank may get none)."""
        return slice(n * self.rank // self.world, n * (self.rank + 1) // self.world)

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """The sum of `t` over the ranks (in place where it can; returns the result)."""
        return t

    def all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        """`t` of every rank (same shape on every rank), in rank order."""
        return [t]

    def broadcast(self, obj, src: int = 0):
        """Rank `src`'s `obj` (a tensor or any picklable object) on every rank."""
        return obj

    def gather_object(self, obj) -> list:
        """`obj` (picklable) of every rank, in rank order."""
        return [obj]

    def any(self, *flags: bool) -> list[bool]:
        """For each flag: whether it is true on any rank (one collective for all)."""
        return list(flags)


class Group(Collective):
    """The ranks of a torch.distributed process group."""

    def __init__(self, device: torch.device):
        import torch.distributed as dist

        self.dist, self.device = dist, device
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.local_world = int(os.environ.get("LOCAL_WORLD_SIZE", self.world))

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        self.dist.all_reduce(t)
        return t

    def all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        import torch

        out = [torch.empty_like(t) for _ in range(self.world)]
        self.dist.all_gather(out, t.contiguous())
        return out

    def broadcast(self, obj, src: int = 0):
        import torch

        if isinstance(obj, torch.Tensor):
            self.dist.broadcast(obj, src)
            return obj
        box = [obj]
        self.dist.broadcast_object_list(box, src)
        return box[0]

    def gather_object(self, obj) -> list:
        out = [None] * self.world
        self.dist.all_gather_object(out, obj)
        return out

    def any(self, *flags: bool) -> list[bool]:
        import torch

        t = torch.tensor([float(f) for f in flags], device=self.device)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX)
        return [bool(v) for v in t.tolist()]


SINGLE = Collective()
_current: Collective = SINGLE


def current() -> Collective:
    """The collective of this process's run (SINGLE outside torchrun)."""
    return _current


def under_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ


def env_world() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def init(device: torch.device) -> tuple[Collective, torch.device]:
    """Join the process group torchrun set up (WORLD_SIZE > 1): gloo on the CPU, NCCL on
    CUDA with device cuda:LOCAL_RANK. Returns (the collective, the rank's device); outside
    torchrun (or with one rank) the single process and `device` unchanged."""
    global _current
    if env_world() <= 1:
        return SINGLE, device
    import torch
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    _current = Group(device)
    return _current, device


def shutdown() -> None:
    """Leave the process group (at the end of the process's run)."""
    global _current
    if _current is not SINGLE:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        _current = SINGLE


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The DDP module whose forward is the training forward `cl.models.forward(model, x)`
    (the plain model stays the strategies')."""
    import torch
    from torch.nn.parallel import DistributedDataParallel as DDP

    from cl.models import forward

    class Trainer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            return forward(self.model, x)

    ids = [device.index] if device.type == "cuda" else None
    return DDP(Trainer(), device_ids=ids)


def has_batch_norm(model: torch.nn.Module) -> bool:
    import torch

    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def check(cfg, world: int) -> None:
    """UserError for what `world` ranks cannot run (before any work, on every rank)."""
    from cl import plugins
    from cl.errors import UserError

    if world <= 1:
        return
    import torch

    family = plugins.family_of(cfg.strategy)
    if family.name != plugins.NATIVE:
        raise UserError(
            f"{family.title} strategies run in one process; drop run.nproc={world} (cl's own "
            "strategies run over several ranks)"
        )
    inexact = sorted(set(cfg.strategy) - EXACT)
    if inexact:
        raise UserError(
            f"strategy {', '.join(inexact)} does not run over several ranks yet (run.nproc="
            f"{world}); those that do: {', '.join(sorted(EXACT))}"
        )
    if cfg.run.device.startswith("cuda") or cfg.run.device == "auto":
        if torch.cuda.is_available() and torch.cuda.device_count() < _local(world):
            raise UserError(
                f"run.nproc={world} ranks on this machine but it has "
                f"{torch.cuda.device_count()} CUDA device(s); lower run.nproc"
            )


def _local(world: int) -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", world))


# cl's strategies that run over several ranks, equal to the one-process run up to reduction
# order (README "Several processes"): parameter-only ones need nothing; the others reduce
# through the context (sample_mean, mean_gradient, collective)
EXACT = {
    "naive", "joint", "replay", "agem", "gem", "center_loss", "cbp", "weight_aligning",
    "spectral", "wasserstein", "l2", "l2_init", "shrink_perturb",
}  # fmt: skip


def join(cfg) -> Collective:
    """The collective of a run of `cfg` in this process: under torchrun with WORLD_SIZE > 1
    the process group (joined once; `run.nproc` must be 1 or WORLD_SIZE), else SINGLE."""
    from cl.environment import resolve_device
    from cl.errors import UserError

    world = env_world()
    if world <= 1:
        return SINGLE
    if cfg.run.nproc not in (1, world):
        raise UserError(
            f"run.nproc={cfg.run.nproc} but torchrun started {world} ranks; leave run.nproc "
            "at 1 under torchrun or make them equal"
        )
    check(cfg, world)
    return init(resolve_device(cfg.run.device))[0]


def rank_device(device: torch.device) -> torch.device:
    """This rank's device: cuda:LOCAL_RANK for CUDA over several ranks."""
    if current().world > 1 and device.type == "cuda":
        import torch

        return torch.device("cuda", current().local_rank)
    return device


def attach(ctx, sync_bn: bool) -> None:
    """Give the run context the run's collective and, over several ranks, the DDP module of
    its training forward (batch norm as SyncBatchNorm if `sync_bn`: `run.sync_bn`)."""
    import torch

    from cl.errors import UserError

    ctx.collective = c = current()
    if c.world == 1:
        return
    if has_batch_norm(ctx.model) and sync_bn:
        if ctx.device.type != "cuda":
            raise UserError(
                "the model has batch norm, whose statistics over several ranks "
                "need CUDA (torch's SyncBatchNorm); on the CPU set run.sync_bn=false (each "
                "rank normalises its share; the running statistics are rank 0's)"
            )
        torch.nn.SyncBatchNorm.convert_sync_batchnorm(ctx.model)
    ctx.ddp = wrap(ctx.model, ctx.device)


CHECKSUMS_ENV = "CL_DIST_CHECKSUMS"  # a folder: each rank appends its fingerprints there (tests)


def fingerprints(state) -> dict[str, str]:
    """SHA-256 of the model's and of every strategy's state (tensors and plain data)."""
    import hashlib

    import torch

    def digest(obj, h) -> None:
        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(obj, dict):
            for k in sorted(obj, key=str):
                h.update(str(k).encode())
                digest(obj[k], h)
        elif isinstance(obj, list | tuple):
            for v in obj:
                digest(v, h)
        else:
            h.update(repr(obj).encode())

    out = {}
    for name, part in [("model", state.ctx.model.state_dict())] + [
        (f"strategy/{s.name}", s.state_dict()) for s in state.strategies
    ]:
        h = hashlib.sha256()
        digest(part, h)
        out[name] = h.hexdigest()
    return out


def verify(state) -> None:
    """At an experience end over several ranks: RunFailed unless every rank holds the same
    model and strategy states (replicated by construction; a divergence is a bug, found
    here rather than in the numbers)."""
    from cl.errors import RunFailed

    c = state.ctx.collective
    if c.world == 1:
        return
    mine = fingerprints(state)
    folder = os.environ.get(CHECKSUMS_ENV)
    if folder:
        import json

        line = json.dumps({"experience": state.ctx.experience, **mine})
        with open(Path(folder) / f"rank{c.rank}.jsonl", "a") as f:
            f.write(line + "\n")
    every = c.gather_object(mine)
    differ = sorted(k for k in mine if len({f[k] for f in every}) > 1)
    if differ:
        raise RunFailed(
            f"the ranks' states differ after experience {state.ctx.experience} "
            f"({', '.join(differ)}): a strategy kept rank-local state; run it with run.nproc=1"
        )
