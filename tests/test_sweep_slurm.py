"""`cl sweep ... sweep.executor=slurm` against a real single-node Slurm (tests/helpers/
slurm_cluster.py): a job array end to end, a resume that submits nothing, and a trial whose
job is preempted (`scancel --signal=TERM`) mid-run and resumed by a new job, ending equal to
the uninterrupted trial, every W&B row once. Bad `sweep.slurm.*` options need no cluster."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cl
from cl.cli import main

TESTS = Path(__file__).parent
ROOT = TESTS.parent
TINY = [
    "benchmark.source=digits",
    "benchmark.n_tasks=2",
    "model.hidden=[16]",
    "eval.subset=50",
    "train.epochs=2",
    "wandb.mode=offline",
]
EXTRA = [
    "sweep.executor=slurm",
    "sweep.slurm.partition=debug",
    "sweep.slurm.time_min=10",
    "sweep.slurm.cpus_per_trial=1",
    "sweep.slurm.mem_gb=0.25",
    "sweep.slurm.array_parallelism=2",
    "sweep.slurm.additional_parameters={comment: cl-test}",
    "sweep.slurm.setup=['export CL_SLURM_SETUP=1']",
]


def sweep(args, folder: Path, name: str) -> int:
    return main(["sweep", "-q", *args, f"sweep.dir={folder}", f"sweep.name={name}"])


def jobs(folder: Path) -> list[dict]:
    path = folder / "slurm" / "jobs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def journal(folder: Path, trial: str) -> list[str]:
    lines = (folder / "trials.jsonl").read_text().splitlines()
    return [r["state"] for r in map(json.loads, lines) if r["trial"] == trial]


@pytest.mark.parametrize(
    "args, message",
    [
        (["sweep.slurm.partiton=debug"], "unknown key 'sweep.slurm.partiton'; valid: sweep.slurm"),
        (["sweep.slurm.time_min=ten"], "sweep.slurm.time_min='ten' must be an integer"),
        (["sweep.slurm.mem_gb=0"], "sweep.slurm.mem_gb=0 must be positive"),
        (["sweep.slurm.setup=module load x"], "sweep.slurm.setup='module load x' must be a list"),
        (["sweep.slurm.gpus_per_trial=2"], "a trial uses one device for now"),
        (["sweep.slurm=gpu"], "sweep.slurm takes sub-keys"),
    ],
)
def test_bad_slurm_options_exit_2_before_any_submission(args, message, tmp_path, capsys):
    code = sweep(["seed=0,1", *TINY, "sweep.executor=slurm", *args], tmp_path, "bad")
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "bad").exists()


def test_no_sbatch_on_path_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert sweep(["seed=0,1", *TINY, "sweep.executor=slurm"], tmp_path, "nosb") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: sweep.executor=slurm needs Slurm's sbatch on PATH"), err


@pytest.fixture(scope="module")
def grid(slurm_cluster, tmp_path_factory):
    """Two trials as one job array (at most 2 running), with every kind of option."""
    folder = tmp_path_factory.mktemp("slurm-sweeps")
    began = time.perf_counter()
    code = sweep(["seed=0,1", *TINY, *EXTRA], folder, "grid")
    print(f"\n2-trial Slurm array sweep: {time.perf_counter() - began:.1f} s")
    return code, folder / "grid"


@pytest.mark.slurm
def test_a_sweep_runs_as_a_slurm_job_array(grid, slurm_cluster):
    code, folder = grid
    assert code == 0, slurm_cluster.log("slurmctld")
    assert set(cl.load_sweep(folder).trials["status"]) == {"finished"}
    submitted = jobs(folder)
    assert [j["trial"] for j in submitted] == ["000-seed=0", "001-seed=1"]
    array = {j["job_id"].split("_")[0] for j in submitted}
    assert len(array) == 1 and [j["job_id"][-2:] for j in submitted] == ["_0", "_1"]
    script = next((folder / "slurm").glob("*_submission.sh")).read_text()
    for line in [
        "#SBATCH --partition=debug",
        "#SBATCH --time=10",
        "#SBATCH --cpus-per-task=1",
        "#SBATCH --mem=256M",
        "#SBATCH --comment=cl-test",
        "#SBATCH --no-requeue",
        "%2",  # the array's cap
        "export CL_SLURM_SETUP=1",
    ]:
        assert line in script, (line, script)
    if os.environ.get("PYTHONPATH"):
        assert "export PYTHONPATH=" in script
    assert list((folder / "slurm").glob("*_log.out"))  # submitit's logs stay in the sweep


@pytest.mark.slurm
def test_resuming_a_finished_slurm_sweep_submits_nothing(grid, capsys):
    code, folder = grid
    before = jobs(folder)
    assert main(["sweep", "-q", "--resume", str(folder)]) == 0, capsys.readouterr().err
    assert jobs(folder) == before


@pytest.mark.slurm
@pytest.mark.parametrize("signal", ["TERM", "USR2"])
def test_a_stopped_trial_resumes_in_a_new_job_and_equals_the_uninterrupted_one(
    signal, grid, slurm_cluster, tmp_path
):
    """One trial pauses in iteration 3 (tests/helpers/slurm_pause); the test reads the sweep
    while the job runs and sends the job Slurm's signal: SIGTERM (preemption; `scancel
    --signal=TERM`, to every process of the job) or USR2 (submitit's warning before the time
    limit). The run checkpoints and stops `interrupted`; the driver submits it again as a
    resume, which ends bit-equal to the uninterrupted trial."""
    from test_resume import check_wandb_holds_each_row_once

    _, reference = grid
    pause = tmp_path / "pause"
    pause.mkdir()
    paths = [str(ROOT), str(TESTS / "helpers" / "slurm_pause"), os.environ.get("PYTHONPATH", "")]
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        "CL_TEST_PAUSE_DIR": str(pause),
        "CL_TEST_PAUSE_AT": "3",
    }
    args = ["seed=0,1", *TINY, "sweep.executor=slurm", f"sweep.dir={tmp_path}", "sweep.name=pre"]
    driver = subprocess.Popen(
        [sys.executable, "-m", "cl", "sweep", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    folder = tmp_path / "pre"
    try:
        deadline = time.monotonic() + 120
        while not (pause / "paused").exists() or not (pause / "paused").read_text():
            assert driver.poll() is None, driver.stdout.read()
            assert time.monotonic() < deadline, "no trial's job reached iteration 3"
            time.sleep(0.1)
        job_id = (pause / "paused").read_text()
        trial = next(j["trial"] for j in jobs(folder) if j["job_id"] == job_id)
        statuses = dict(cl.load_sweep(folder).trials[["trial", "status"]].values)
        assert statuses[trial] == "running"  # the sweep reads while its jobs run
        slurm_cluster.run("scancel", f"--signal={signal}", job_id)
        (pause / "go").touch()
        out, _ = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, out
    assert journal(folder, trial) == [
        "queued", "running", "interrupted", "queued", "running", "finished",
    ]  # fmt: skip
    assert [j["job"]["mode"] for j in jobs(folder) if j["trial"] == trial] == ["start", "resume"]
    assert set(cl.load_sweep(folder).trials["status"]) == {"finished"}
    run = folder / "runs" / trial
    assert len(json.loads((run / "environment.json").read_text())["resumes"]) == 1
    for name in ("000-seed=0", "001-seed=1"):
        expected = (reference / "runs" / name / "metrics.jsonl").read_bytes()
        assert (folder / "runs" / name / "metrics.jsonl").read_bytes() == expected  # bit for bit
    check_wandb_holds_each_row_once(run)  # SIGTERM kills W&B's own process: the resume
    # sends the rows it never wrote (cl.wandb_sink.rows_held)
