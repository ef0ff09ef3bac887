"""One run over two ranks (torch.distributed, gloo on the CPU, 127.0.0.1, a free port each)
equals the one-process run up to reduction order; every rank holds the same state; resume
over 2 or 1 ranks; a killed rank ends the job; what ranks cannot run is one `error:` line.

Two-rank runs are `cl run run.nproc=2` subprocesses (torchrun underneath, ~5-10 s each);
their one-rank references run in this process.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import TINY

import cl
from cl.context import Batch, Context
from cl.distributed import Collective
from cl.launch import free_port
from cl.store import read_rows

HELPER = Path(__file__).parent / "helpers" / "signal_rank.py"
BASE = [
    *TINY,
    "train.epochs=1",
    "train.batch_size=25",  # the epochs' last batches do not split evenly over 2 ranks
    "eval.subset=101",  # nor do the evaluation subsets
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
COMPARED = (  # (also per-sample hits, gathered from the ranks: example forgetting, NFR)
    "eval/acc/", "eval/loss/", "train/loss", "train/online_acc", "example_forgetting/",
    "forgetting/nfr",
)  # fmt: skip


def cl_run(args, tmp_path, env=None, timeout=300) -> subprocess.CompletedProcess:
    """`python -m cl run ARGS` (timeout: a guard against a hang, never a measurement)."""
    cmd = [sys.executable, "-m", "cl", "run", *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, env=env or ENV, timeout=timeout, cwd=tmp_path
    )


def two_ranks(args, tmp_path, name, checksums=True) -> Path:
    """A 2-rank run; each rank's fingerprints per experience in `tmp_path/<name>-ck/`."""
    ck = tmp_path / f"{name}-ck"
    ck.mkdir()
    env = {**ENV, "CL_DIST_CHECKSUMS": str(ck)} if checksums else ENV
    r = cl_run([*args, "run.nproc=2", f"run.dir={tmp_path}", f"run.name={name}"], tmp_path, env)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return tmp_path / name


def assert_close(rows, reference, n=20, tol=1e-5):
    assert len(rows) == len(reference)  # rank 0 alone writes: no row twice
    for row, ref in zip(rows[:n], reference[:n], strict=True):
        assert row.keys() == ref.keys()
        for key, value in ref.items():
            if key.startswith(COMPARED):
                assert row[key] == pytest.approx(value, abs=tol), (row["iteration"], key)


def assert_ranks_agree(ck: Path, n_tasks=3):
    """Every rank's model and strategy states (SHA-256) equal after every experience."""
    ranks = [read_rows(ck / f"rank{r}.jsonl") for r in (0, 1)]
    assert [f["experience"] for f in ranks[0]] == list(range(n_tasks))
    assert ranks[0] == ranks[1]


def test_two_ranks_equal_one_rank_and_rank_0_alone_writes(tmp_path):
    args = [*BASE, "strategy.replay.mem_size=60"]  # the default strategy: class-balanced replay
    folder = two_ranks(args, tmp_path, "two")
    reference = cl.run([*args, f"run.dir={tmp_path}", "run.name=one"], quiet=True)
    rows = read_rows(folder / "metrics.jsonl")
    assert_close(rows, read_rows(reference.path / "metrics.jsonl"), n=len(rows))
    assert any("example_forgetting/eval/events" in r for r in rows)
    assert_ranks_agree(tmp_path / "two-ck")
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "finished"
    assert summary["acc"] == pytest.approx(reference.summary["acc"], abs=0.02)
    assert json.loads((folder / "environment.json").read_text())["ranks"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two", "two-ck"]


STRATEGIES = {
    "reservoir": ["strategy=replay", "strategy.replay.buffer=reservoir",
                  "strategy.replay.mem_size=60"],
    "agem": ["strategy=agem", "strategy.agem.patterns_per_exp=32", "strategy.agem.sample_size=21"],
    "gem": ["strategy=gem", "strategy.gem.patterns_per_exp=21"],
    "replay+agem": ["strategy=[replay,agem]", "strategy.replay.mem_size=60"],
    # replacements from the 6th iteration on: every rank must pick the same units
    "cbp": ["strategy=cbp", "strategy.cbp.maturity_threshold=5",
            "strategy.cbp.replacement_rate=0.05"],
    "replay+center_loss": ["strategy=[replay,center_loss]", "strategy.replay.mem_size=60"],
}  # fmt: skip


@pytest.mark.parametrize("label", STRATEGIES)
def test_strategies_over_two_ranks_equal_one_rank(label, tmp_path):
    args = [*BASE, *STRATEGIES[label]]
    folder = two_ranks(args, tmp_path, "two")
    reference = cl.run([*args, f"run.dir={tmp_path}", "run.name=one"], quiet=True)
    assert_close(read_rows(folder / "metrics.jsonl"), read_rows(reference.path / "metrics.jsonl"))
    assert_ranks_agree(tmp_path / "two-ck")


RESUMABLE = [*BASE, "strategy.replay.mem_size=60", "eval.every=3", "run.checkpoint_every=5"]


def test_resume_over_two_and_over_one_rank_ends_equal_to_the_uninterrupted_run(tmp_path):
    whole = two_ranks(RESUMABLE, tmp_path, "whole", checksums=False)
    # rank 1 gets SIGTERM inside iteration 13 (between rows, after the checkpoint of 10):
    # every rank stops after it, rank 0 checkpoints it
    port = str(free_port())
    status = tmp_path / "status"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={port}", str(HELPER), "1", "TERM", "13",
        "run", *RESUMABLE, "run.nproc=2", f"run.dir={tmp_path}", "run.name=cut",
    ]  # fmt: skip
    env = {**ENV, "CL_DIST_STATUS": str(status)}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert status.read_text() == "143", r.stderr  # rank 0: interrupted by SIGTERM
    cut = tmp_path / "cut"
    s = json.loads((cut / "summary.json").read_text())
    assert s["status"] == "interrupted" and s["checkpoint_iteration"] == 13
    shutil.copytree(cut, tmp_path / "cut1")
    expected = read_rows(whole / "metrics.jsonl")

    r = cl_run(["--resume", str(cut)], tmp_path)  # the saved run.nproc=2
    assert r.returncode == 0, r.stderr
    assert (cut / "metrics.jsonl").read_bytes() == (whole / "metrics.jsonl").read_bytes()

    r = cl_run(["--resume", str(tmp_path / "cut1"), "run.nproc=1"], tmp_path)
    assert r.returncode == 0, r.stderr
    rows = read_rows(tmp_path / "cut1" / "metrics.jsonl")
    kept = [row for row in expected if row["iteration"] <= 13]
    assert rows[: len(kept)] == kept  # before the stop: rank 0's rows, unchanged
    assert_close(rows, expected, n=len(rows))
    final = json.loads((tmp_path / "cut1" / "summary.json").read_text())
    assert final["status"] == "finished"
    assert final["acc"] == pytest.approx(json.loads((whole / "summary.json").read_text())["acc"])


def test_a_killed_rank_ends_the_whole_job(tmp_path):
    port = str(free_port())
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={port}", "--monitor_interval=0.5",
        str(HELPER), "1", "KILL", "5", "run", *BASE, "run.nproc=2", f"run.dir={tmp_path}",
        "run.name=killed",
    ]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300, cwd=tmp_path)
    assert r.returncode != 0
    assert "exitcode: -9" in r.stderr, r.stderr[-2000:]  # torchrun saw rank 1 die
    assert not (tmp_path / "killed" / "summary.json").exists() or (
        json.loads((tmp_path / "killed" / "summary.json").read_text())["status"] != "finished"
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["strategy=avalanche.Naive", "run.nproc=2"], "run in one process"),
        (["strategy=bfp", "run.nproc=2"], "does not run over several ranks"),
        (["model=resnet18", "run.nproc=2"], "run.sync_bn=false"),
        (["run.nproc=0"], "run.nproc=0 must be an integer >= 1"),
    ],
    ids=["avalanche", "inexact-strategy", "batch-norm-on-cpu", "zero"],
)
def test_what_ranks_cannot_run_is_one_error_line(args, says, tmp_path):
    r = cl_run([*BASE, *args, f"run.dir={tmp_path}"], tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], r.stderr
    assert not any(tmp_path.glob("split_digits*"))


def test_torchrun_world_and_run_nproc_must_agree(tmp_path):
    env = {**ENV, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
    r = cl_run([*BASE, "run.nproc=3", f"run.dir={tmp_path}"], tmp_path, env)
    assert r.returncode == 2 and r.stderr.startswith("error: run.nproc=3 but torchrun started 2")


def test_sweeps_refuse_ranks_and_the_member_axis_with_ranks(tmp_path):
    cmd = [sys.executable, "-m", "cl", "sweep", *BASE, "seed=0,1", "run.nproc=2"]
    cases = [("vectorized", "either the member axis"), ("local", "devices_per_trial")]
    for executor, says in cases:
        r = subprocess.run(
            [*cmd, f"sweep.executor={executor}", f"sweep.dir={tmp_path}"],
            capture_output=True, text=True, env=ENV, timeout=120, cwd=tmp_path,
        )  # fmt: skip
        assert r.returncode == 2 and says in r.stderr and r.stderr.startswith("error:")


def test_devices_per_trial_needs_ray(tmp_path):
    cmd = [sys.executable, "-m", "cl", "sweep", *BASE, "seed=0,1", "sweep.devices_per_trial=2"]
    r = subprocess.run(
        [*cmd, f"sweep.dir={tmp_path}"], capture_output=True, text=True, env=ENV, timeout=120
    )
    assert r.returncode == 2 and r.stderr.startswith("error: sweep.devices_per_trial=2 needs")


def test_a_trial_over_two_ranks_runs_as_ray_would_run_it(tmp_path):
    """sweep.devices_per_trial=2 on Ray: the task runs `run_trial` with the job's ranks (here
    in this process, without Ray): a 2-rank run in the trial's folder, equal to one rank."""
    from cl.sweep.executors import run_trial

    args = [*BASE, "strategy.replay.mem_size=60"]
    job = {"mode": "start", "ranks": 2, "threads": 1, "run_dir": str(tmp_path / "trial")}
    # as the driver's trial_overrides: a key may come twice (common, then the trial's own)
    job["overrides"] = [*args, f"run.dir={tmp_path}", "run.name=trial", "run.progress=false"]
    assert run_trial(job)["status"] == "finished"
    assert "  nproc: 2\n" in (tmp_path / "trial" / "config.yaml").read_text()
    reference = cl.run([*args, f"run.dir={tmp_path}", "run.name=one"], quiet=True)
    rows = read_rows(tmp_path / "trial" / "metrics.jsonl")
    assert_close(rows, read_rows(reference.path / "metrics.jsonl"), n=len(rows))


class Rank(Collective):
    def __init__(self, rank, world):
        self.rank, self.world = rank, world


@pytest.mark.parametrize("weighted", [False, True])
def test_shares_partition_the_batch_and_weigh_it_as_one(weighted):
    """Over 3 ranks, a 7-sample batch (4 new, 3 replayed): the shares hold every sample once,
    new ones first in each; DDP's average of the ranks' weighted losses is the global loss."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(7, 2, generator=g), torch.randint(0, 3, (7,), generator=g)
    weight = torch.rand(7, generator=g) if weighted else None
    batch = Batch(x, y, torch.zeros(7, dtype=torch.long), 4, weight)
    ce = torch.nn.functional.cross_entropy(x, y % 2, reduction="none")  # any per-sample loss
    total, seen, news = 0.0, [], 0
    for r in range(3):
        ctx = Context(None, None, None, torch.device("cpu"), collective=Rank(r, 3))
        part = ctx.shard(batch)
        rows = [int((x == row).all(1).nonzero()) for row in part.x]
        assert all(i < 4 for i in rows[: part.n_new]) and all(i >= 4 for i in rows[part.n_new :])
        seen += rows
        news += part.n_new
        total += float((ce[rows] * part.weight).sum())
    assert sorted(seen) == list(range(7)) and news == 4
    expected = float((ce * weight).sum()) if weighted else float(ce.mean())
    assert total / 3 == pytest.approx(expected, rel=1e-6)
