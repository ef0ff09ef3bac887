"""W&B never takes a run down, agrees with the run folder on how the run ended, and resumes
count what earlier processes already sent."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import cl
from cl.wandb_sink import rows_held

HELPER = Path(__file__).parent / "helpers" / "kill_at.py"
WANDB = Path(sys.executable).parent / "wandb"
SMALL = [
    "run.progress=false",
    "benchmark.source=digits",
    "benchmark.n_tasks=3",
    "model.hidden=[32]",
    "eval.subset=100",
]


def inspect_summary(folder: Path) -> dict:
    (segment,) = (folder / "wandb").glob("offline-run-*")
    r = subprocess.run(
        [str(WANDB), "leet", "inspect", "--summary", "--json", str(segment)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_killing_wandb_core_mid_run_loses_nothing(tmp_path):
    folder = tmp_path / "run"
    cmd = [sys.executable, "-m", "cl", "run", "-q", *SMALL, "train.epochs=20"]
    cmd += [f"run.dir={tmp_path}", "run.name=run", "wandb.mode=offline"]
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}  # its own wandb-core
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        metrics, deadline = folder / "metrics.jsonl", time.time() + 300
        while not metrics.exists() or metrics.read_bytes().count(b"\n") < 50:
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.05)
        core = [c for c in psutil.Process(proc.pid).children(recursive=True) if "wandb" in c.name()]
        assert core, "no wandb-core process"
        for c in core:
            c.kill()
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert err.count("warning: W&B failed") == 1 and "Traceback" not in err, err
    run = cl.load_run(folder)
    assert run.summary["status"] == "finished"
    assert len(run.metrics) == run.summary["n_eval_rows"] == run.summary["n_iterations"] + 1
    assert (folder / "plots" / "accuracy_curves.png").is_file()


@pytest.mark.parametrize("signal_name, code", [("INT2", 130), ("TERM", 143)])
def test_wandb_and_the_run_folder_agree_on_an_interrupted_run(tmp_path, signal_name, code):
    """A double Ctrl-C used to leave W&B 'finished, exit 0' and summary.json 'failed'."""
    job = {
        "signal": signal_name,
        "at": 20,
        "args": ["-q", *SMALL, f"run.dir={tmp_path}", "run.name=run", "wandb.mode=offline"],
        "stderr": str(tmp_path / "err"),
    }
    (tmp_path / "jobs.json").write_text(json.dumps([job]))
    r = subprocess.run(
        [sys.executable, str(HELPER), str(tmp_path / "jobs.json")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert json.loads(r.stdout) == [code], (tmp_path / "err").read_text()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    w = inspect_summary(tmp_path / "run")
    assert summary["status"] == w["summary"]["status"] == "interrupted"
    assert w["exit_code"] == code and w["state"] != "finished"


def test_rows_held_reads_the_last_row_of_each_process(tmp_path):
    """The .wandb file's tail is enough, over 32 KiB blocks and a torn end."""
    args = [*SMALL, "train.epochs=3", f"run.dir={tmp_path}", "run.name=run"]
    run = cl.run([*args, "wandb.mode=offline"], quiet=True)
    (segment,) = (run.path / "wandb").glob("offline-run-*")
    run_id = segment.name.rsplit("-", 1)[1]
    (file,) = segment.glob("*.wandb")
    assert file.stat().st_size > 4 * 32768
    assert rows_held(run.path / "wandb", run_id) == len(run.metrics)
    assert rows_held(run.path / "wandb", "otherid") == 0
    data = file.read_bytes()
    counts = []
    for cut in (len(data) - 5, len(data) * 3 // 4, len(data) // 2, 40_000, 100):
        file.write_bytes(data[:cut])
        counts.append(rows_held(run.path / "wandb", run_id))
    assert counts == sorted(counts, reverse=True) and counts[-1] == 0
    assert 0 < counts[2] < len(run.metrics)
    os.remove(file)
