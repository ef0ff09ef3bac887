"""Checkpoints: the whole run state to one file and back, and when to write one.

A checkpoint holds the model, the optimizer, every strategy's `state_dict`, every metric
tracker's state (the monitor's, by tracker name), the cursor into the stream (experience,
epoch, batch and that epoch's sample order), every RNG (the run's generator, torch's global
and CUDA generators, Python's `random`, NumPy's), the number of rows logged and the W&B run
id. It is made of tensors and plain data only, written atomically (temp file, fsync, rename)
and read with `torch.load(weights_only=True)`, so loading a checkpoint can never run code.

Checkpoints load device-independently: `load` reads every tensor onto the CPU, then
`to_device` moves the model, strategy and monitor tensors to the run's device, except
generator states (uint8 tensors), which torch takes as CPU ByteTensors only; the optimizer
moves its own state to its parameters' devices. The RNG states (`rng`) stay on the CPU; CUDA
RNG states are restored for the CUDA devices that exist and ignored on a machine without any.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cl.errors import UserError
from cl.runner import Cursor, RunState
from cl.schema import RunSection
from cl.version import __version__

FORMAT = 2  # bump when the layout changes; older files are refused with a clear message
FILE = "checkpoint.pt"


def config_digest(folder: Path) -> str:
    """SHA-256 of the run folder's config.yaml: a checkpoint belongs to that config."""
    return hashlib.sha256((folder / "config.yaml").read_bytes()).hexdigest()


def rng_state() -> dict[str, Any]:
    py = random.getstate()
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the global RNGs; CUDA states only for the CUDA devices this machine has (a
    checkpoint written on a GPU resumes on a CPU-only machine without them)."""
    torch.set_rng_state(state["torch"])
    cuda = state["cuda"][: torch.cuda.device_count()] if state["cuda"] else []
    for index, cuda_state in enumerate(cuda):
        torch.cuda.set_rng_state(cuda_state, index)
    version, keys, gauss = state["python"]
    random.setstate((version, tuple(keys), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def state_dict(state: RunState, rows: int, run_id: str, digest: str) -> dict[str, Any]:
    ctx, cur = state.ctx, state.cursor
    return {
        "format": FORMAT,
        "cl_version": __version__,
        "config_sha256": digest,
        "model": ctx.model.state_dict(),
        "optimizer": ctx.optimizer.state_dict(),
        "strategies": {s.name: s.state_dict() for s in state.strategies},
        "monitor": state.monitor.state_dict(),
        "context": {
            "experience": ctx.experience,
            "iteration": ctx.iteration,
            "seen_classes": list(ctx.seen_classes),
        },
        "cursor": {
            "experience": cur.experience,
            "started": cur.started,
            "epoch": cur.epoch,
            "batch": cur.batch,
            "order": cur.order,
        },
        "rng": {"generator": ctx.generator.get_state(), **rng_state()},
        "rows": rows,
        "wandb_id": run_id,
    }


def load_strategies(state: RunState, ckpt: dict[str, Any]) -> None:
    """Strategy states first: `setup` runs after them and sees what they hold."""
    for s in state.strategies:
        s.load_state_dict(ckpt["strategies"][s.name])


def restore(state: RunState, ckpt: dict[str, Any]) -> None:
    """Everything else, after the strategies are set up (RNGs last)."""
    ctx = state.ctx
    ctx.model.load_state_dict(ckpt["model"])
    ctx.optimizer.load_state_dict(ckpt["optimizer"])
    state.monitor.load_state_dict(ckpt["monitor"])
    c = ckpt["context"]
    ctx.experience, ctx.iteration = c["experience"], c["iteration"]
    ctx.seen_classes = list(c["seen_classes"])
    state.cursor = Cursor(**ckpt["cursor"])
    ctx.generator.set_state(ckpt["rng"]["generator"])
    set_rng_state(ckpt["rng"])


def save(folder: Path, data: dict[str, Any]) -> None:
    """Write `data` as the folder's checkpoint, atomically: a reader sees the old or the new.
    A failed write (a full disk) raises OSError, removes the temp file and keeps the previous
    checkpoint. The bytes are made in memory first: torch.save turns a failed write into an
    opaque RuntimeError."""
    path = folder / FILE
    tmp = path.with_name(path.name + ".tmp")
    buffer = io.BytesIO()
    torch.save(data, buffer)
    try:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not e.filename:
            e.filename = str(tmp)
        raise


def load(folder: Path) -> dict[str, Any]:
    """The folder's checkpoint, every tensor on the CPU (`to_device` moves it to the run's
    device); UserError if absent, unreadable or from another format."""
    path = folder / FILE
    if not path.is_file():
        raise UserError(
            f"{folder} has no {FILE}: the run stopped before its first checkpoint or ran "
            "with run.checkpoint=false, so it cannot be resumed; start it again"
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated zip, bad pickle, unsafe type ...
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise UserError(f"{path} is corrupt or truncated and cannot be read ({reason})") from None
    version = data.get("format") if isinstance(data, dict) else None
    if version != FORMAT:
        raise UserError(
            f"{path} has checkpoint format {version!r} (written by cl "
            f"{data.get('cl_version', '?') if isinstance(data, dict) else '?'}); this cl "
            f"{__version__} reads format {FORMAT}. Resume it with the cl version that wrote it"
        )
    return data


# The parts of a checkpoint that live on the run's device. The optimizer's state is not moved:
# `Optimizer.load_state_dict` casts it to its parameters' devices and keeps Adam's `step` on
# the CPU, as torch does. All else is plain data or RNG state.
ON_DEVICE = ("model", "strategies", "monitor")


def to_device(ckpt: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    """`ckpt` with the tensors of its ON_DEVICE parts on `device`, except uint8 tensors
    (generator states: torch takes them as CPU ByteTensors only); the `rng` part and all
    else stay as loaded, on the CPU."""

    def move(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value if value.dtype == torch.uint8 else value.to(device)
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(move(v) for v in value)
        return value

    return {k: move(v) if k in ON_DEVICE else v for k, v in ckpt.items()}


class Checkpointer:
    """Decides when to checkpoint: at experience ends, every `run.checkpoint_every`
    iterations, every `run.checkpoint_minutes`, and when a stop was requested (never with
    `run.checkpoint` off); `run` is the config's `run` section."""

    def __init__(
        self,
        state: RunState,
        folder: Path,
        make: Callable[[], dict[str, Any]],
        run: RunSection,
    ):
        self.state, self.folder, self.make, self.run = state, folder, make, run
        self.last = time.monotonic()
        self.saved_at: int | None = None  # iteration of the last checkpoint written

    def __call__(self, boundary: bool, stop: bool = False) -> None:
        if self.due(boundary, stop):
            self.save()

    def due(self, boundary: bool, stop: bool = False) -> bool:
        r, it = self.run, self.state.ctx.iteration
        period = 60 * r.checkpoint_minutes
        late = period > 0 and time.monotonic() - self.last >= period
        return r.checkpoint and (boundary or stop or it % r.checkpoint_every == 0 or late)

    def save(self, write: bool = True) -> None:
        """Checkpoint now (`write=False`: only note it, for ranks that write nothing)."""
        if write:
            self.write()
        self.last, self.saved_at = time.monotonic(), self.state.ctx.iteration

    def write(self) -> None:
        save(self.folder, self.make())
