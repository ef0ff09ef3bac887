"""Checkpoints load device-independently: every tensor onto the CPU, then the run state's
tensors to the run's device while RNG states stay CPU ByteTensors. On CPU-only machines the
target device is torch's `meta` device (any non-CPU device exercises the same path); the
`gpu` tests kill and resume real CUDA runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import cl
from cl import api, checkpoint
from cl.store import read_rows
from strategies.shrink_perturb import ShrinkPerturb

HELPER = Path(__file__).parent / "helpers" / "kill_at.py"
TINY = [
    "run.progress=false",
    "run.report=false",
    "wandb.mode=disabled",
    "benchmark.source=digits",
    "benchmark.n_tasks=3",
    "model.hidden=[32]",
    "eval.subset=100",
    "run.checkpoint_every=7",
]
# every kind of state: memories, generator states in strategies and in the monitor
STATEFUL = [
    "strategy=[replay,shrink_perturb,cbp,center_loss]",
    "strategy.replay.mem_size=60",
    "plasticity.trainability_probe=true",
    "plasticity.probe_steps=2",
]


def tensors(tree, where=""):
    """(path, tensor) for every tensor in a nested dict/list."""
    if isinstance(tree, torch.Tensor):
        yield where, tree
    elif isinstance(tree, dict):
        for k, v in tree.items():
            yield from tensors(v, f"{where}/{k}")
    elif isinstance(tree, list | tuple):
        for i, v in enumerate(tree):
            yield from tensors(v, f"{where}/{i}")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A run whose checkpoint holds every kind of state."""
    root = tmp_path_factory.mktemp("runs")
    return cl.run([*TINY, *STATEFUL, f"run.dir={root}", "run.name=state"], quiet=True)


def test_load_reads_cpu_tensors_and_to_device_moves_all_but_rng_states(finished_run):
    ckpt = checkpoint.load(finished_run.path)
    assert all(t.device.type == "cpu" for _, t in tensors(ckpt))
    moved = checkpoint.to_device(ckpt, "meta")
    rng_states = 0
    for where, t in tensors(moved):
        part = where.split("/")[1]
        if part in ("model", "strategies", "monitor") and t.dtype != torch.uint8:
            assert t.device.type == "meta", where
        else:  # RNG states, the optimizer's state (it moves its own), plain data
            assert t.device.type == "cpu", where
            rng_states += t.dtype == torch.uint8
    # run generator, torch, shrink_perturb, cbp and the trainability probe's targets
    assert rng_states == 5
    assert moved["strategies"]["shrink_perturb"]["rng"].device.type == "cpu"
    checkpoint.set_rng_state(moved["rng"])  # CPU ByteTensors, whatever the run's device
    torch.Generator().set_state(moved["rng"]["generator"])


def test_mapping_everything_to_the_run_device_breaks_the_rng_restore(finished_run):
    """What the old loader did (map_location=device): the bug this layout avoids."""
    path = finished_run.path / checkpoint.FILE
    mapped = torch.load(path, map_location="meta", weights_only=True)
    with pytest.raises(TypeError, match="RNG state must be a torch.ByteTensor"):
        checkpoint.set_rng_state(mapped["rng"])


def test_cuda_rng_states_are_restored_only_for_devices_that_exist(monkeypatch):
    done = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda s, i: done.append((int(s[0]), i)))
    state = checkpoint.rng_state()
    state["cuda"] = [torch.full((16,), 7, dtype=torch.uint8), torch.zeros(16, dtype=torch.uint8)]
    checkpoint.set_rng_state(state)
    assert done == [(7, 0)]  # the second GPU's state is ignored on a one-GPU machine
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    done.clear()
    checkpoint.set_rng_state(state)  # a CPU-only machine ignores them all
    assert done == []


def test_shrink_perturb_takes_a_generator_state_from_another_device_type():
    from types import SimpleNamespace

    ctx = SimpleNamespace(device=torch.device("cpu"), generator=torch.Generator().manual_seed(0))

    def noise(state):
        s = ShrinkPerturb()
        s.load_state_dict({"rng": state})
        s.setup(ctx)
        return torch.randn(4, generator=s.rng.gen)

    cpu_state = torch.Generator().manual_seed(3).get_state()
    exact = torch.randn(4, generator=torch.Generator().set_state(cpu_state))
    assert torch.equal(noise(cpu_state), exact)  # same device type: the state itself
    cuda_like = torch.arange(16, dtype=torch.uint8)  # a CUDA (Philox) state: seed and offset
    a, b = noise(cuda_like), noise(cuda_like.clone())
    c = noise(torch.zeros(16, dtype=torch.uint8))
    assert torch.equal(a, b) and not torch.equal(a, c)  # reseeded from the state, repeatably


def test_device_can_change_on_resume(finished_run):
    """run.device is a resume override (auto runs move machines; an explicit one must too)."""
    from cl.config import load_saved

    cfg, _ = load_saved(finished_run.path / "config.yaml", ["run.device=cpu"])
    assert cfg.run.device == "cpu"


# --- on a GPU -------------------------------------------------------------------------------

CUDA_CASE = [*TINY, "train.epochs=2", "strategy=[replay,shrink_perturb]"]


def kill(tmp_path: Path, args: list[str], at: int, name: str) -> Path:
    job = {"signal": "KILL", "at": at, "args": ["-q", *args, f"run.name={name}"]}
    job["stderr"] = str(tmp_path / f"{name}.err")
    (tmp_path / f"{name}.json").write_text(json.dumps([job]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, str(HELPER), str(tmp_path / f"{name}.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert json.loads(out.stdout) == [-9], (tmp_path / f"{name}.err").read_text()
    return tmp_path / name


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.gpu
def test_cuda_run_killed_and_resumed_equals_the_uninterrupted_one(tmp_path, one_thread):
    args = [*CUDA_CASE, "run.device=cuda", f"run.dir={tmp_path}"]
    folder = kill(tmp_path, args, 40, "killed")
    ckpt = torch.load(folder / checkpoint.FILE, weights_only=True)
    assert ckpt["rng"]["cuda"], "a CUDA run saves its CUDA RNG states"
    resumed = api.resume(folder, quiet=True)
    reference = cl.run([*args, "run.name=reference"], quiet=True)
    assert resumed.summary["status"] == "finished"
    rows = (folder / "metrics.jsonl").read_bytes()
    assert rows == (reference.path / "metrics.jsonl").read_bytes()


@pytest.mark.gpu
@pytest.mark.parametrize("first, then", [("cpu", "cuda"), ("cuda", "cpu")])
def test_a_run_moves_between_cpu_and_cuda_on_resume(tmp_path, one_thread, first, then):
    """Continues correctly on the other device (not bit for bit: the kernels differ)."""
    args = [*CUDA_CASE, f"run.device={first}", f"run.dir={tmp_path}"]
    folder = kill(tmp_path, args, 40, "killed")
    kept = read_rows(folder / "metrics.jsonl")[: checkpoint.load(folder)["rows"]]
    resumed = api.resume(folder, [f"run.device={then}"], quiet=True)
    reference = cl.run([*args, "run.name=reference"], quiet=True)
    rows = read_rows(folder / "metrics.jsonl")
    assert resumed.summary["status"] == "finished"
    assert rows[: len(kept)] == kept and len(rows) == len(
        read_rows(reference.path / "metrics.jsonl")
    )
    env = json.loads((folder / "environment.json").read_text())
    assert env["resumes"][0]["device"].startswith(then)
    assert abs(resumed.summary["acc"] - reference.summary["acc"]) < 0.1
