"""train.amp, run.compile and run.threads: config keys that change speed, not the protocol."""

import json

import pytest
import torch

import cl
from cl import config
from cl.errors import UserError

SMALL = [
    "run.progress=false",
    "wandb.mode=disabled",
    "benchmark.source=digits",
    "benchmark.n_tasks=2",
    "model.hidden=[32]",
    "eval.subset=100",
    "strategy=naive",
    "run.report=false",
]


def test_bf16_autocast_trains_under_deterministic_algorithms(tmp_path):
    run = cl.run([*SMALL, "train.amp=bf16", "run.deterministic=true", f"run.dir={tmp_path}"])
    assert run.summary["status"] == "finished"
    assert run.metrics["train/loss"].dropna().map(lambda v: 0 < v < 10).all()


@pytest.mark.slow
def test_compile_runs_under_deterministic_algorithms_on_cpu(tmp_path):
    run = cl.run([*SMALL, "run.compile=true", "run.deterministic=true", f"run.dir={tmp_path}"])
    assert run.summary["status"] == "finished"


def test_threads_are_pinned_or_chosen_recorded_and_restored(tmp_path):
    before = torch.get_num_threads()
    run = cl.run([*SMALL, "run.threads=1", f"run.dir={tmp_path}", "run.name=one"], quiet=True)
    env = json.loads((run.path / "environment.json").read_text())
    assert env["threads"]["chosen"] == env["torch_threads"] == 1
    run = cl.run([*SMALL, f"run.dir={tmp_path}", "run.name=auto"], quiet=True)
    fixed = json.loads((run.path / "environment.json").read_text())["threads"]
    assert fixed["setting"] == 0 and fixed["chosen"] == before  # deterministic: not the load
    free = [*SMALL, f"run.dir={tmp_path}", "run.name=adapt", "run.deterministic=false"]
    run = cl.run(free, quiet=True)
    auto = json.loads((run.path / "environment.json").read_text())["threads"]
    assert auto["setting"] == 0 and 1 <= auto["chosen"] <= before and "busy_cpus" in auto
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("bad", ["train.amp=fp16", "run.threads=-1", "run.row_chunk=-2"])
def test_bad_speed_settings_are_refused(bad):
    with pytest.raises(UserError, match=bad.split("=")[0]):
        config.load([bad])
