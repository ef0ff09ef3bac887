"""Seeding and the record of the software and hardware a run used."""

from __future__ import annotations

import os
import platform
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

# what decides a run's numbers: the libraries that compute or load its data, and the GEM QP
PACKAGES = (
    "cl", "torch", "torchvision", "numpy", "scipy", "quadprog", "scikit-learn", "mlxtend",
    "mnist1d", "omegaconf", "wandb", "avalanche-lib",
)  # fmt: skip


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns the generator that orders the training data."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


CUBLAS_WORKSPACE = ":4096:8"  # what cuBLAS needs for deterministic results (CUDA >= 10.2)


@contextmanager
def determinism(on: bool) -> Iterator[None]:
    """`run.deterministic`: with `on`, deterministic algorithms only (an op without one
    raises), cuDNN deterministic and not benchmarking, and CUBLAS_WORKSPACE_CONFIG set if
    unset (enter before any CUDA work). Off leaves torch's flags as they are. The previous
    global flags come back on exit; the environment variable stays."""
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        algorithms, warn_only, cudnn_deterministic, benchmark = saved
        torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
        torch.backends.cudnn.deterministic = cudnn_deterministic
        torch.backends.cudnn.benchmark = benchmark


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat (Linux), or None."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return sum(v) - v[3] - v[4], sum(v)


def busy_cpus(window: float = 0.1) -> float:
    """CPUs kept busy by other processes: the busy share of all CPUs over `window` seconds
    (/proc/stat, while this process sleeps) times their number; else the 1-minute load."""
    n = os.cpu_count() or 1
    start = _cpu_ticks()
    if start is None:
        return min(float(n), os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0.0
    time.sleep(window)
    end = _cpu_ticks()
    busy, total = end[0] - start[0], end[1] - start[1]
    return n * busy / total if total > 0 else 0.0


@contextmanager
def threads(setting: int, adapt: bool = True) -> Iterator[dict]:
    """`run.threads`: torch's intra-op threads for the run (restored on exit). 0 (auto): with
    `adapt`, the CPUs free at the start, rounded, at least 1, never more than torch's count
    before (which honours OMP_NUM_THREADS), so a run beside busy neighbours does not fight them
    with a thread that only waits; without it (a deterministic run, whose numbers must not
    depend on the machine's load), torch's count. Yields the record for environment.json."""
    before = torch.get_num_threads()
    record = {"setting": setting, "before": before}
    if setting:
        chosen = setting
    elif not adapt:
        chosen = before
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else before
        busy = busy_cpus()
        chosen = max(1, min(before, round(cores - busy)))
        record |= {"cpus": cores, "busy_cpus": round(busy, 2)}
    record["chosen"] = chosen
    torch.set_num_threads(chosen)
    try:
        yield record
    finally:
        torch.set_num_threads(before)


def determinism_flags() -> dict:
    """torch's flags that decide whether results are bit-reproducible, as they are now."""
    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def git_revision() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def container() -> dict | None:
    """The container this process runs in (None on a host). Its image names itself through
    the variables its build sets: from inside, podman and docker tell neither image nor source."""
    engine = None
    if Path("/run/.containerenv").exists():
        engine = "podman"
    elif Path("/.dockerenv").exists():
        engine = "docker"
    image = os.environ.get("CL_IMAGE")
    if engine is None and image is None:
        return None
    return {"engine": engine, "image": image, "git": os.environ.get("CL_GIT_REVISION")}


def environment(seed: int, device: torch.device, deterministic: bool | None = None) -> dict:
    """The record of environment.json; `deterministic`: the run's `run.deterministic` (None
    when cl does not set torch's flags, e.g. in a user's Avalanche script)."""
    import importlib.metadata as md

    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    versions["torch"] = torch.__version__  # with the wheel's build, e.g. 2.14.1+cu130
    box = container()
    return {
        "seed": seed,
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "device": str(device),
        "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "deterministic": deterministic,
        "determinism": determinism_flags(),  # the effective flags
        "git": git_revision() or (box or {}).get("git"),
        "container": box,
        "versions": versions,
        "argv": sys.argv,
    }
