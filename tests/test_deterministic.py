"""`run.deterministic`: torch's determinism flags during a run, restored after it, and where
the setting is recorded (environment.json, summary.json, the console summary)."""

import json

import pytest
import torch

import cl
import cl.runner
from cl import api
from cl.errors import UserError
from cl.sweep.executors import run_trial
from cl.sweep.spec import from_overrides


def flags() -> tuple:
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )


@pytest.fixture
def during(monkeypatch):
    """The flags and CUBLAS_WORKSPACE_CONFIG as the runner saw them (last run)."""
    seen = {}
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    run_stream = cl.runner.run_stream

    def spy(*args, **kwargs):
        import os

        seen["flags"] = flags()
        seen["cublas"] = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
        return run_stream(*args, **kwargs)

    monkeypatch.setattr(cl.runner, "run_stream", spy)
    return seen


def test_a_run_is_deterministic_by_default_and_restores_the_flags_after(fast, during):
    before = flags()
    run = cl.run([*fast, "strategy=naive", "benchmark.n_tasks=2"], quiet=True)
    assert during["flags"] == (True, True, False) and during["cublas"] == ":4096:8"
    assert flags() == before  # the process's flags are back as they were
    env = json.loads((run.path / "environment.json").read_text())
    assert env["deterministic"] is True
    assert env["determinism"] == {
        "deterministic_algorithms": True,
        "warn_only": False,
        "cudnn_deterministic": True,
        "cudnn_benchmark": False,
        "cublas_workspace_config": ":4096:8",
    }
    assert run.summary["deterministic"] is True


def test_deterministic_false_leaves_torch_alone_and_says_so(fast, during, capsys):
    before = flags()
    run = cl.run([*fast, "strategy=naive", "benchmark.n_tasks=2", "run.deterministic=false"])
    assert during["flags"] == before and during["cublas"] is None
    assert run.summary["deterministic"] is False
    env = json.loads((run.path / "environment.json").read_text())
    assert env["deterministic"] is False
    assert env["determinism"]["deterministic_algorithms"] is before[0]
    assert "run.deterministic=false, so results may not be bit-reproducible" in (
        capsys.readouterr().out
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_flags_are_restored_when_a_run_fails_to_start(fast):
    before = flags()
    with pytest.raises(UserError, match="no CUDA device"):
        cl.run([*fast, "run.device=cuda"], quiet=True)
    assert flags() == before


def test_deterministic_cannot_change_on_resume(fast):
    run = cl.run([*fast, "strategy=naive", "benchmark.n_tasks=2"], quiet=True)
    with pytest.raises(UserError, match="'run.deterministic' cannot change on resume"):
        api.resume(run.path, ["run.deterministic=false"], quiet=True)


def test_sweeps_pass_it_through_like_any_key(fast, during):
    spec = from_overrides(["run.deterministic=true,false"])
    assert [t.values for t in spec.trials] == [
        {"run.deterministic": "true"},
        {"run.deterministic": "false"},
    ]
    job = {
        "mode": "start",
        "threads": torch.get_num_threads(),
        "overrides": [*fast, "strategy=naive", "benchmark.n_tasks=2", "run.deterministic=false"],
    }
    assert run_trial(job)["status"] == "finished"
    assert during["flags"][0] is False  # the default (true) would have set it
