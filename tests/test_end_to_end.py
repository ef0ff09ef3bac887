"""Whole runs on the embedded data: outputs, outcomes, W&B read-back, failures, crashes."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import cl
from cl.cli import main

OUTPUTS = [
    "config.yaml",
    "environment.json",
    "metrics.jsonl",
    "summary.json",
    "accuracy_matrix.csv",
    "checkpoint.pt",
    "plots/accuracy_curves.png",
    "plots/accuracy_matrix.png",
]


def test_tiny_run_writes_every_output(fast):
    run = cl.run(fast + ["benchmark.n_tasks=2", "seed=1"], quiet=True)
    for name in OUTPUTS:
        assert (run.path / name).is_file(), name
    s = run.summary
    assert s["status"] == "finished"
    for key in ("acc", "bwt", "fwt", "forgetting", "min_acc", "wc_acc"):
        assert isinstance(s[key], float), key
    assert s["n_eval_rows"] >= s["n_iterations"] > 0
    m = run.metrics
    assert len(m) == s["n_eval_rows"]
    assert {
        "iteration",
        "experience",
        "eval/acc/task_0",
        "eval/acc/task_1",
        "train/loss",
        "train/online_acc",
        "sg/wc_acc",
    } <= set(m.columns)
    assert m["iteration"].tolist() == list(range(s["n_iterations"] + 1))
    R = np.loadtxt(run.path / "accuracy_matrix.csv", delimiter=",")
    assert R.shape == (2, 2) and R[-1].mean() == pytest.approx(s["acc"])
    env = json.loads((run.path / "environment.json").read_text())
    assert env["seed"] == 1 and env["versions"]["torch"]
    assert run.config["seed"] == 1


def test_environment_names_the_image_it_ran_in(monkeypatch):
    from cl.environment import container

    monkeypatch.setenv("CL_IMAGE", "cl:0123abcd")  # what the Docker image's build sets
    monkeypatch.setenv("CL_GIT_REVISION", "0123abcd-dirty")
    box = container()
    assert box["image"] == "cl:0123abcd" and box["git"] == "0123abcd-dirty"
    assert box["engine"] in ("docker", "podman", None)


def test_same_seed_same_metrics_other_seed_differs(fast):
    a = cl.run(fast + ["benchmark.n_tasks=2"], quiet=True).metrics
    b = cl.run(fast + ["benchmark.n_tasks=2"], quiet=True).metrics
    c = cl.run(fast + ["benchmark.n_tasks=2", "seed=5"], quiet=True).metrics
    cols = [k for k in a.columns if k.startswith(("eval/", "train/", "sg/"))]
    assert a[cols].equals(b[cols])
    assert not a[cols].equals(c[cols])


@pytest.mark.outcome
def test_default_experiment_shows_the_stability_gap(tmp_path, seed_offset, outcome):
    """The default config: old tasks drop right after each switch, then recover part way."""
    args = [f"run.dir={tmp_path}", "run.progress=false", "wandb.mode=disabled"]
    run = cl.run(args + [f"seed={seed_offset}"], quiet=True)
    s, m = run.summary, run.metrics
    assert s["n_eval_rows"] >= s["n_iterations"]
    R = np.array(s["accuracy_matrix"], dtype=float)
    final_old = R[-1, :-1].mean()
    outcome.above("final old-task acc - min_acc", final_old - s["min_acc"], 0.08, null=0)
    exp = m["experience"].to_numpy()
    drops = []
    for k in range(1, 5):
        old = m[[f"eval/acc/task_{i}" for i in range(k)]].to_numpy().mean(1)
        before = old[np.flatnonzero(exp == k - 1)[-1]]
        during = old[exp == k]
        dip = during[:30].min()  # the first 30 iterations after the switch
        drops.append(before - dip)
        # Switch 1: with task 0 alone in memory, replay holds it. Switch 2: the drop (0.07 to
        # 0.16 over seeds) is within reach of the evaluation noise (the same statistic over
        # windows late in a task, with no switch, reaches 0.04 to 0.08): it only counts in
        # the mean below.
        if k >= 3:
            outcome.above(f"drop after switch {k}", before - dip, 0.07, null=0)
            # recovery: a share of the drop is regained by the end of the task
            share = (during[-1] - dip) / (before - dip)
            outcome.above(f"share of drop {k} recovered", share, 1 / 3, null=0)
    outcome.above("mean drop after switches 2-4", np.mean(drops[1:]), 0.08, null=0)
    outcome.above("acc", s["acc"], 0.6, null=0.2)  # naive keeps about the last task: 0.2


@pytest.mark.outcome
def test_replay_and_joint_beat_naive_on_split_mnist(fast, seed_offset, outcome):
    args = fast + ["train.epochs=2", "plasticity.every=0", f"seed={seed_offset}"]
    acc = {
        name: cl.run(args + [f"strategy={name}"], quiet=True).summary["acc"]
        for name in ("naive", "replay", "joint")
    }
    # class-incremental fine-tuning forgets almost everything (no forgetting: joint's acc)
    outcome.below("naive acc", acc["naive"], 0.45, null=acc["joint"])
    outcome.above("replay - naive acc", acc["replay"] - acc["naive"], 0.3, null=0)
    outcome.above("joint - replay acc", acc["joint"] - acc["replay"], 0, null=0)


COMBINATIONS = {  # name: (overrides, chance accuracy, bound on the final accuracy)
    "permuted": (["benchmark=permuted_mnist", "benchmark.n_tasks=3"], 0.1, 0.5),
    "rotated": (
        ["benchmark=rotated_mnist", "benchmark.n_tasks=3", "strategy=[replay,naive]"],
        0.1,
        0.4,
    ),
    # 1 epoch at lr 0.01 is 9 steps per task: 0.59 to 0.70 against chance 0.5
    "task-cnn": (
        ["benchmark.incremental=task", "benchmark.source=digits", "model=cnn", "optim.lr=0.05"],
        0.5,
        0.65,
    ),
    "mnist1d-joint-adam": (
        ["benchmark.source=mnist1d", "strategy=joint", "optim=adam", "train.epochs=5"],
        0.1,
        0.3,
    ),
    # 1 epoch: 0.17 to 0.51 over seeds and CPU kernels (chaotic); 2 epochs learn reliably
    "resnet-reservoir": (
        [
            "benchmark.source=digits",
            "model=resnet18",
            "model.width=4",
            "eval.every=5",
            "strategy.replay.buffer=reservoir",
            "train.epochs=2",
        ],
        0.1,
        0.3,
    ),
}


@pytest.mark.outcome
@pytest.mark.parametrize("name", COMBINATIONS)
def test_scenarios_models_and_options_run(fast, name, seed_offset, outcome):
    """Each combination runs to the end, writes every output and learns: well above chance."""
    overrides, chance, bound = COMBINATIONS[name]
    run = cl.run([*fast, *overrides, f"seed={seed_offset}"], quiet=True)
    s = run.summary
    assert s["status"] == "finished"
    for out in OUTPUTS:
        assert (run.path / out).is_file(), out
    every = 5 if "eval.every=5" in overrides else 1
    assert s["n_eval_rows"] >= s["n_iterations"] // every
    assert len(run.metrics) == s["n_eval_rows"]
    outcome.above("acc", s["acc"], bound, null=chance)


@pytest.mark.outcome
def test_task_incremental_scores_above_class_incremental(fast, seed_offset, outcome):
    args = fast + ["strategy=naive", "benchmark.source=digits", "train.epochs=3"]
    args += ["plasticity.every=0", f"seed={seed_offset}"]
    cil = cl.run(args, quiet=True).summary["acc"]
    til = cl.run(args + ["benchmark.incremental=task"], quiet=True).summary["acc"]
    outcome.above("task- - class-incremental acc", til - cil, 0.3, null=0)


def test_wandb_offline_run_holds_the_local_values(fast):
    args = [a for a in fast if not a.startswith("wandb.")]
    run = cl.run(args + ["benchmark.n_tasks=2", "wandb.mode=offline"], quiet=True)
    (wdir,) = (run.path / "wandb").glob("offline-run-*")
    wandb_bin = os.path.join(os.path.dirname(sys.executable), "wandb")
    out = subprocess.run(
        [wandb_bin, "leet", "inspect", "--json", str(wdir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    history = [r["history"]["item"] for r in records if r.get("type") == "history"]
    history = [h for h in history if "eval/acc/task_0" in h]  # not the plot images
    local = run.metrics.to_dict("records")
    assert len(history) == len(local) == run.summary["n_eval_rows"]
    compared = 0
    for h, row in zip(history, local, strict=True):
        for key, value in row.items():
            if value is None or (isinstance(value, float) and np.isnan(value)):
                assert key not in h
                continue
            assert h[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key
            compared += 1
    assert compared > 10 * len(local)
    metric_defs = [r for r in records if r.get("type") == "metric"]
    assert any("iteration" in json.dumps(r) for r in metric_defs)


def test_non_finite_loss_fails_clearly_and_keeps_rows(fast, capsys):
    code = main(["run", *fast, "optim.lr=1e12", "strategy=naive", "-q"])
    assert code == 1
    err = capsys.readouterr().err
    assert "run failed: the training loss became" in err and "Traceback" not in err
    (folder,) = [p for p in (p.parent for p in fast_runs(fast))]
    run = cl.load_run(folder)
    assert run.summary["status"] == "failed" and len(run.metrics) >= 1


def fast_runs(fast):
    root = next(a.split("=", 1)[1] for a in fast if a.startswith("run.dir="))
    from pathlib import Path

    return list(Path(root).glob("*/metrics.jsonl"))


def test_sigkill_keeps_every_flushed_row(fast):
    args = [a for a in fast if not a.startswith("train.epochs")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cl", "run", *args, "train.epochs=50", "-q"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            files = fast_runs(fast)
            if files and files[0].stat().st_size > 20_000:
                break
            time.sleep(0.2)
        lines_before = files[0].read_text().count("\n")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    run = cl.load_run(files[0].parent)
    assert len(run.metrics) >= lines_before > 10
    assert run.metrics["iteration"].tolist() == list(range(len(run.metrics)))
    assert run.summary == {}


def test_wandb_online_without_credentials_falls_back_to_offline(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["HOME"] = str(tmp_path)  # no ~/.netrc credentials
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cl",
            "run",
            f"run.dir={tmp_path}/runs",
            "run.progress=false",
            "model.hidden=[16]",
            "train.epochs=1",
            "benchmark.n_tasks=2",
            "wandb.mode=online",
            "wandb.init_timeout=5",
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert "W&B online mode failed" in r.stderr and "logging offline instead" in r.stderr
    assert list(tmp_path.glob("runs/*/wandb/offline-run-*/run-*.wandb"))
