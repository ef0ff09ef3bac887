"""Rows leave the device in chunks (`run.row_chunk`): one host copy per chunk, every row
still written in order, and a run killed mid-chunk resumes to the same bytes."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode

import cl
from cl import api, config
from cl.monitor import HostCopy
from cl.runner import run_stream
from cl.store import read_rows

HELPER = Path(__file__).parent / "helpers" / "kill_at.py"
SMALL = [
    "run.progress=false",
    "wandb.mode=disabled",
    "benchmark.source=digits",
    "model.hidden=[32]",
    "eval.subset=100",
]
HOST_COPIES = {"item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__"}


class CountHostCopies(TorchFunctionMode):
    """Counts the tensor methods that bring values to the host (`.item()`, `float(t)` ...)
    outside `HostCopy` (`inside` is set while it copies)."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []
        self.inside = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_COPIES and not self.inside:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("chunk", [1, 4])
def test_one_host_copy_per_chunk_of_rows(chunk, monkeypatch):
    cfg, _ = config.load(
        [
            *SMALL,
            "strategy=naive",
            "benchmark.tasks=[0]",
            "plasticity.every=0",
            f"run.row_chunk={chunk}",
        ]
    )
    state = api.build_state(cfg)
    rows: list[dict] = []
    counted, copy = CountHostCopies(), HostCopy.__call__

    def marked_copy(self, tensors):
        counted.inside = True
        try:
            return copy(self, tensors)
        finally:
            counted.inside = False

    monkeypatch.setattr(HostCopy, "__call__", marked_copy)
    with counted:
        run_stream(state, rows.append)
    iterations = state.ctx.iteration
    assert [r["iteration"] for r in rows] == list(range(iterations + 1))  # all, in order
    assert state.monitor.copy.copies == math.ceil(len(rows) / chunk)
    # nothing else in the loop (runner, monitor, trackers) copies to the host: a stray
    # `.item()` per iteration adds `iterations` here
    assert counted.calls == []


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_run_killed_mid_chunk_resumes_to_the_same_bytes(tmp_path, one_thread):
    base = [*SMALL, "benchmark.n_tasks=3", "run.checkpoint_every=7", "eval.every=1"]
    chunked = [*base, "run.row_chunk=5", f"run.dir={tmp_path}"]
    at = 26  # checkpoint (and flush) at 21; the chunk of rows 22.. is still on the device
    jobs = tmp_path / "jobs.json"
    job = {"signal": "KILL", "at": at, "args": ["-q", *chunked, "run.name=killed"]}
    jobs.write_text(json.dumps([{**job, "stderr": str(tmp_path / "killed.err")}]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, str(HELPER), str(jobs)], env=env, capture_output=True, text=True
    )
    assert json.loads(out.stdout) == [-9], (tmp_path / "killed.err").read_text()
    folder = tmp_path / "killed"
    kept = read_rows(folder / "metrics.jsonl")
    saved = torch.load(folder / "checkpoint.pt", weights_only=True)["context"]["iteration"]
    assert saved == 21 and len(kept) < at  # the rows not yet copied are lost ...
    assert [r["iteration"] for r in kept] == list(range(len(kept)))  # ... the rest in order
    api.resume(folder, quiet=True)  # ... and recomputed from the checkpoint
    reference = cl.run(
        [*base, "run.row_chunk=1", f"run.dir={tmp_path}", "run.name=ref"], quiet=True
    )
    assert (folder / "metrics.jsonl").read_bytes() == (
        reference.path / "metrics.jsonl"
    ).read_bytes()


@pytest.mark.gpu
def test_no_host_synchronisation_between_chunks_on_cuda(monkeypatch):
    """On CUDA the loop runs under `set_sync_debug_mode("error")`: any synchronising call
    (`.item()`, a device-to-host copy ...) other than the chunk's one copy raises."""
    from cl import monitor as monitor_mod
    from cl import runner

    cfg, _ = config.load(
        [
            *SMALL,
            "strategy=naive",
            "benchmark.tasks=[0]",
            "plasticity.every=0",
            "run.device=cuda",
            "run.row_chunk=8",
        ]
    )
    state = api.build_state(cfg)
    copy, step = monitor_mod.HostCopy.__call__, runner.train_step

    def allowed_copy(self, tensors):
        torch.cuda.set_sync_debug_mode(0)
        try:
            return copy(self, tensors)
        finally:
            torch.cuda.set_sync_debug_mode("error")

    def strict_step(*args, **kwargs):  # from the first iteration on (the data is on the GPU)
        torch.cuda.set_sync_debug_mode("error")
        return step(*args, **kwargs)

    monkeypatch.setattr(monitor_mod.HostCopy, "__call__", allowed_copy)
    monkeypatch.setattr(runner, "train_step", strict_step)
    rows: list[dict] = []
    try:
        run_stream(state, rows.append)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert [r["iteration"] for r in rows] == list(range(state.ctx.iteration + 1))
    assert state.monitor.copy.copies == math.ceil(len(rows) / 8)
    reference = api.build_state(
        config.load(
            [
                *SMALL,
                "benchmark.tasks=[0]",
                "plasticity.every=0",
                "run.device=cuda",
                "run.row_chunk=1",
            ]
        )[0]
    )
    ref_rows: list[dict] = []
    run_stream(reference, ref_rows.append)
    assert [r["eval/acc/task_0"] for r in rows] == [r["eval/acc/task_0"] for r in ref_rows]
