"""Vectorized seeds (cl/members.py, sweep.executor=vectorized): a member's rows equal the
single run's with its seed."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cl import api, config, members
from cl.sweep.vectorized import run_members

TINY = [
    "benchmark.source=digits",
    "benchmark.n_tasks=3",
    "model.hidden=[32]",
    "eval.subset=100",
    "train.epochs=1",
    "wandb.mode=disabled",
    "run.progress=false",
]


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_rows_equal(single: list[dict], member: list[dict], seed: int) -> None:
    """Row by row the same keys, every number within 1e-5."""
    for a, b in zip(single, member, strict=True):
        assert a.keys() == b.keys()
        for k, v in a.items():
            if isinstance(v, int | float):
                assert b[k] == pytest.approx(v, abs=1e-5), (seed, k)


CBP = ["strategy.cbp.maturity_threshold=5", "strategy.cbp.replacement_rate=0.05"]  # replaces
AGEM = ["strategy.agem.patterns_per_exp=32", "strategy.agem.sample_size=16"]
MEMBER_WISE = [
    ("naive", []),
    ("joint", []),
    ("l2", []),
    ("replay", []),
    ("l2_init", []),
    ("shrink_perturb", []),
    ("agem", AGEM),
    ("spectral", []),
    ("wasserstein", []),
    ("cbp", CBP),
    ("center_loss", []),
    ("[replay,agem]", ["strategy.replay.mem_size=60"]),
    ("[replay,center_loss]", ["strategy.replay.mem_size=60"]),
    ("[l2_init,cbp]", CBP),
    ("gem", ["strategy.gem.patterns_per_exp=32"]),
    ("[replay,gem]", ["strategy.replay.mem_size=60", "strategy.gem.sample_size=8"]),
    ("weight_aligning", ["strategy.weight_aligning.mem_size=60"]),
    ("rer", ["strategy.rer.mem_size=60", "strategy.rer.warm_start=0", "strategy.rer.meta_every=2"]),
    ("[replay,bfp]", ["strategy.replay.mem_size=60"]),
]


@pytest.mark.parametrize(("strategy", "extra"), MEMBER_WISE, ids=[s for s, _ in MEMBER_WISE])
def test_member_rows_equal_single_runs(tmp_path, strategy, extra):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seeds = [0, 3]
        loaded = [
            config.load(
                [
                    *TINY,
                    f"strategy={strategy}",
                    *extra,
                    f"seed={s}",
                    f"run.dir={tmp_path}/g",
                    f"run.name=s{s}",
                ]
            )  # fmt: skip
            for s in seeds
        ]
        assert members.unsupported(loaded[0][0]) is None  # stacked, not member by member
        statuses = run_members([c for c, _ in loaded], [config.as_plain(t) for _, t in loaded])
        assert statuses == ["finished"] * len(seeds)
        for s in seeds:
            if "cbp" in strategy:  # units were replaced in the group (their ages restarted)
                ckpt = torch.load(tmp_path / "g" / f"s{s}" / "checkpoint.pt", weights_only=True)
                age = ckpt["strategies"]["cbp"]["age"][0]
                assert int(age.min()) < ckpt["context"]["iteration"]
            api.run([*TINY, f"strategy={strategy}", *extra, f"seed={s}", f"run.dir={tmp_path}/one",
                     f"run.name=s{s}"], quiet=True)  # fmt: skip
            single = rows(tmp_path / "one" / f"s{s}" / "metrics.jsonl")
            member = rows(tmp_path / "g" / f"s{s}" / "metrics.jsonl")
            assert len(single) == len(member)
            assert_rows_equal(single[:20], member[:20], s)
            one = json.loads((tmp_path / "one" / f"s{s}" / "summary.json").read_text())
            two = json.loads((tmp_path / "g" / f"s{s}" / "summary.json").read_text())
            assert two["acc"] == pytest.approx(one["acc"], abs=1e-4)
            assert (tmp_path / "g" / f"s{s}" / "config.yaml").read_text().count(f"seed: {s}")
    finally:
        torch.set_num_threads(threads)


def test_unsupported_configs_run_member_by_member(tmp_path, monkeypatch):
    """optim=tag cannot be stacked: each member runs `api.start`; after a stop the members
    not begun yet are not started (interrupted: the sweep's resume starts them)."""
    import signal

    from cl.interrupt import Interrupted

    loaded = [config.load([*TINY, "optim=tag", f"seed={s}"]) for s in (0, 1, 2)]
    assert "not elementwise" in members.unsupported(loaded[0][0])
    began = []

    def start(cfg, plain, quiet=False):
        began.append(cfg.seed)
        if cfg.seed == 1:
            raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(api, "start", start)
    statuses = run_members([c for c, _ in loaded], [config.as_plain(t) for _, t in loaded])
    assert statuses == ["finished", "interrupted", "interrupted"] and began == [0, 1]


def test_sweep_vectorized_end_to_end(tmp_path):
    from cl.sweep.driver import new_sweep

    code = new_sweep(
        ["seed=range(0,2)", "sweep.executor=vectorized", f"sweep.dir={tmp_path}",
         "sweep.name=v", *TINY],
        None,
        quiet=True,
    )  # fmt: skip
    assert code == 0
    import cl

    sweep = cl.load_sweep(tmp_path / "v")
    assert sweep is not None
    runs = sorted((tmp_path / "v" / "runs").iterdir())
    assert len(runs) == 2
    assert all(cl.load_run(r).summary["status"] == "finished" for r in runs)


KILL_HELPER = Path(__file__).parent / "helpers" / "kill_sweep_at.py"
GROUP = [
    "seed=0,3",
    "strategy=replay",
    "strategy.replay.mem_size=60",
    "benchmark.source=digits",
    "benchmark.n_tasks=3",
    "model.hidden=[32]",
    "train.epochs=2",  # the kill lands mid-epoch of a multi-epoch experience
    "eval.subset=100",
    "plasticity.every=5",
    "run.checkpoint_every=7",
    "wandb.mode=disabled",
    "sweep.executor=vectorized",
    "sweep.workers=1",  # one group of both seeds, as on resume
    "sweep.threads=1",
]


def test_a_killed_or_stopped_group_resumes_to_the_uninterrupted_group(tmp_path):
    """SIGKILL of the whole sweep inside iteration 40 of the group, `cl sweep --resume`: every
    member's rows equal the uninterrupted group's, byte for byte; the same after a Ctrl-C; a
    member folder also resumes alone (`cl run --resume`), as a single run."""
    from cl.cli import main

    at, env = 40, {**os.environ, "CL_TEST_KILL_AT": "40", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(KILL_HELPER), "-q", *GROUP, f"sweep.dir={tmp_path}"]
    killed = subprocess.run([*cmd, "sweep.name=killed"], env=env, capture_output=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]
    runs = sorted((tmp_path / "killed" / "runs").iterdir())
    assert len(runs) == 2
    its = set()
    for run in runs:
        assert not (run / "summary.json").exists()
        ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
        its.add(ckpt["context"]["iteration"])
        assert ckpt["rows"] == 1 + ckpt["context"]["iteration"]  # eval.every=1, no task end yet
        assert len(rows(run / "metrics.jsonl")) == at  # rows of iterations 0 .. at - 1
    assert len(its) == 1 and 0 < min(its) < at  # one safe point for every member
    (saved,) = its
    alone = tmp_path / "alone"
    shutil.copytree(runs[1], alone)

    assert main(["sweep", "-q", "--resume", str(tmp_path / "killed")]) == 0
    assert main(["sweep", "-q", *GROUP, f"sweep.dir={tmp_path}", "sweep.name=reference"]) == 0
    journal = (tmp_path / "killed" / "trials.jsonl").read_text()
    assert journal.count('"mode": "resume"') >= 2
    for run in runs:
        reference = tmp_path / "reference" / "runs" / run.name
        assert (run / "metrics.jsonl").read_bytes() == (reference / "metrics.jsonl").read_bytes()
        one, two = (json.loads((r / "summary.json").read_text()) for r in (run, reference))
        one.pop("wall_time_s"), two.pop("wall_time_s")
        assert one == two and one["status"] == "finished"
        assert [r["iteration"] for r in json.loads((run / "environment.json").read_text())[
            "resumes"]] == [saved]  # fmt: skip

    # Ctrl-C to the sweep (forwarded to the worker) inside iteration 50: the group stops after
    # it with a checkpoint; `cl sweep --resume` ends as the uninterrupted group too
    env |= {"CL_TEST_KILL_AT": "50", "CL_TEST_SIGNAL": "INT"}
    cmd = [*cmd, "sweep.name=stopped"]
    stopped = subprocess.run(cmd, env=env, capture_output=True, timeout=600)
    assert stopped.returncode == 130, stopped.stderr[-2000:]
    for run in sorted((tmp_path / "stopped" / "runs").iterdir()):
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "interrupted"
        assert summary["checkpoint_iteration"] == summary["n_iterations"] == 50
        assert summary["resume"] == f"cl run --resume {run}"
    assert main(["sweep", "-q", "--resume", str(tmp_path / "stopped")]) == 0
    for run in runs:
        again = tmp_path / "stopped" / "runs" / run.name
        assert (again / "metrics.jsonl").read_bytes() == (run / "metrics.jsonl").read_bytes()

    api.resume(alone, quiet=True)  # one member on its own: the single run's code from here
    single, group = rows(alone / "metrics.jsonl"), rows(runs[1] / "metrics.jsonl")
    assert len(single) == len(group)
    for a, b in zip(single, group, strict=True):
        for k, v in a.items():
            if isinstance(v, float):
                assert b[k] == pytest.approx(v, abs=1e-4), k


def test_members_checkpointed_at_different_iterations_resume_as_separate_groups(tmp_path):
    """Checkpoints are ordinary ones: `resume_members` takes any member folders of one config
    (here two single runs killed at different iterations, as after a kill between two
    members' checkpoint writes, or a sweep resumed with another executor); those standing at
    the same iteration train on together, each from its own checkpoint."""
    from cl.sweep.vectorized import resume_members

    base = [*TINY, "strategy=replay", "run.checkpoint_every=5", f"run.dir={tmp_path}"]
    jobs = [
        {"signal": "KILL", "at": at, "args": ["-q", *base, f"seed={s}", f"run.name=s{s}"],
         "stderr": str(tmp_path / f"s{s}.err")}
        for s, at in ((0, 12), (3, 23))
    ]  # fmt: skip
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    helper = Path(__file__).parent / "helpers" / "kill_at.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(helper), str(tmp_path / "jobs.json")], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert json.loads(done.stdout) == [-9, -9], done.stderr
    folders = [tmp_path / "s0", tmp_path / "s3"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert resume_members(folders) == ["finished", "finished"]
        for folder, saved in zip(folders, (10, 20), strict=True):
            env = json.loads((folder / "environment.json").read_text())
            assert [r["iteration"] for r in env["resumes"]] == [saved]
            seed = folder.name[1:]
            api.run([*base, f"seed={seed}", f"run.dir={tmp_path}/one", f"run.name=s{seed}"],
                    quiet=True)  # fmt: skip
            single = rows(tmp_path / "one" / folder.name / "metrics.jsonl")
            member = rows(folder / "metrics.jsonl")
            assert [r["iteration"] for r in single] == [r["iteration"] for r in member]
            for a, b in zip(single, member, strict=True):
                for k, v in a.items():
                    if isinstance(v, float):
                        assert b[k] == pytest.approx(v, abs=1e-5), k
    finally:
        torch.set_num_threads(threads)


def test_member_probes_equal_single_runs(tmp_path):
    """With the plasticity probe and the trainability probe on (every few iterations), each
    member's probe rows and summary equal its single run's (its own probe inputs and target
    draws), including every `plasticity/*` key."""
    probe = [
        "plasticity.trainability_probe=true", "plasticity.probe_every=7",
        "plasticity.probe_steps=6", "plasticity.probe_inputs=48", "plasticity.every=5",
    ]  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seeds = [0, 3, 5]
        args = {s: [*TINY, *probe, f"seed={s}", f"run.name=s{s}"] for s in seeds}
        loaded = [config.load([*args[s], f"run.dir={tmp_path}/g"]) for s in seeds]
        statuses = run_members([c for c, _ in loaded], [config.as_plain(t) for _, t in loaded])
        assert statuses == ["finished"] * len(seeds)
        for s in seeds:
            api.run([*args[s], f"run.dir={tmp_path}/one"], quiet=True)
            single = rows(tmp_path / "one" / f"s{s}" / "metrics.jsonl")
            member = rows(tmp_path / "g" / f"s{s}" / "metrics.jsonl")
            probed = [r for r in single if "plasticity/probe_loss_offset" in r]
            assert len(probed) >= 5  # before training, every 7 iterations, task ends
            assert sum("plasticity/effective_rank" in r for r in single) >= 5  # every 5
            assert len(single) == len(member)
            assert_rows_equal(single, member, s)
            one = json.loads((tmp_path / "one" / f"s{s}" / "summary.json").read_text())
            two = json.loads((tmp_path / "g" / f"s{s}" / "summary.json").read_text())
            for k in ("probe_loss", "probe_loss_offset", "plasticity_loss_offset"):
                assert two[k] == pytest.approx(one[k], abs=1e-5), (s, k)
        # the members' probes differ (own inputs and targets): not one member's row copied
        firsts = [rows(tmp_path / "g" / f"s{s}" / "metrics.jsonl")[0] for s in seeds]
        assert len({r["plasticity/probe_loss"] for r in firsts}) == len(seeds)
    finally:
        torch.set_num_threads(threads)
