"""`cl l2metrics`: a real run exported in L2Logger's format, l2metrics run on it, its values
read back from summary.json and checked against hand computations from the run's rows."""

import json
import os
import shutil
import sys

import numpy as np
import pandas as pd
import pytest

import cl
from cl.cli import main
from cl.errors import UserError

pytest.importorskip("l2metrics")

TINY = [  # 3 tasks of 10 iterations: few enough learning rows that l2metrics does not smooth
    "strategy=naive",
    "benchmark.n_tasks=3",
    "benchmark.samples_per_task=320",
    "eval.subset=100",
    "plasticity.every=0",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    parent = tmp_path_factory.mktemp("l2m")
    args = [f"run.dir={parent}", "run.name=lifetime", "run.progress=false", "run.report=false"]
    args += ["wandb.mode=disabled", "model.hidden=[64]", "train.epochs=1", *TINY]
    return cl.run(args, quiet=True).path


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    return shutil.copytree(tiny_run, tmp_path / "run")


def _norm(acc):
    return 1 + 100 * np.asarray(acc)  # l2metrics' task normalisation on the range [0, 1]


def test_l2metrics_values_match_hand_computation(run_copy, capsys):
    assert main(["l2metrics", str(run_copy)]) == 0
    out = capsys.readouterr().out
    assert "performance maintenance" in out and "n/a" in out
    run = cl.load_run(run_copy)
    s = run.summary
    R = np.array(s["accuracy_matrix"])
    T = len(R)
    b = run.metrics[run.task_columns()].iloc[0].to_numpy(dtype=float)
    P = _norm(np.vstack([b, R]))  # P[e, j]: task j in evaluation block e (0 = before training)
    # performance maintenance: later evaluations minus the one right after learning the task
    pm = [np.mean([P[e + 1, i] - P[i + 1, i] for e in range(i + 1, T)]) for i in range(T - 1)]
    assert s["l2m/perf_maintenance_mrlep"] == pytest.approx(np.mean(pm), abs=1e-8)
    # transfer of learning task a onto task j: evaluation after / before that learning block
    fwd = [(a, j) for a in range(T) for j in range(a + 1, T)]
    bwd = [(a, j) for a in range(T) for j in range(a)]
    ratio = [P[a + 1, j] / P[a, j] for a, j in fwd]
    assert s["l2m/forward_transfer_ratio"] == pytest.approx(np.mean(ratio), abs=1e-8)
    contrast = [(P[a + 1, j] - P[a, j]) / (P[a + 1, j] + P[a, j]) for a, j in bwd]
    assert s["l2m/backward_transfer_contrast"] == pytest.approx(np.mean(contrast), abs=1e-8)
    ratio = [P[a + 1, j] / P[a, j] for a, j in bwd]
    assert s["l2m/backward_transfer_ratio"] == pytest.approx(np.mean(ratio), abs=1e-8)
    assert s["l2m/avg_eval_perf"] == pytest.approx(P.mean(), abs=1e-8)
    rows = run.metrics[run.metrics["iteration"] > 0]
    train = [_norm(rows[rows["experience"] == k]["train/online_acc"]).mean() for k in range(T)]
    assert s["l2m/avg_train_perf"] == pytest.approx(np.mean(train), abs=1e-8)
    # each task is learned once: no performance recovery; no experts: no RP / SE
    assert s["l2m/perf_recovery"] is None and s["l2m/ste_rel_perf"] is None
    assert s["acc"] == pytest.approx(R[-1].mean())  # the run's own keys are kept

    # the export is L2Logger's format: info files and one data-log.tsv per block
    log = run_copy / "l2logger" / "lifetime"
    info = json.loads((log / "logger_info.json").read_text())
    assert info["metrics_columns"] == ["accuracy"] and info["log_format_version"] == "1.1"
    blocks = sorted(p.name for p in (log / "cl").iterdir())
    expected = [f"{2 * k}-test" for k in range(T + 1)] + [f"{2 * k + 1}-train" for k in range(T)]
    assert blocks == sorted(expected)
    block = pd.read_csv(log / "cl" / "3-train" / "data-log.tsv", sep="\t")
    online = rows[rows["experience"] == 1]["train/online_acc"].to_numpy()
    assert set(block["task_name"]) == {"task1_splitmnist"}
    np.testing.assert_allclose(block["accuracy"], online)


def test_single_task_experts_give_relative_performance(run_copy, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("L2DATA", raising=False)
    assert main(["l2metrics", str(run_copy), "--ste"]) == 0
    assert capsys.readouterr().out.count(": trained") == 3
    base = run_copy / "l2logger"
    names = [f"task{i}_splitmnist" for i in range(3)]
    assert sorted(p.name for p in (base / "taskinfo").iterdir()) == [f"{n}.pickle" for n in names]
    assert not (tmp_path / "home" / "l2data").exists() and "L2DATA" not in os.environ
    for i, name in enumerate(names):
        expert = cl.load_run(base / "ste_runs" / name)
        assert list(expert.config["strategy"]) == ["naive"]
        assert expert.config["benchmark"]["tasks"] == [i] and expert.summary["status"] == "finished"
    s = cl.load_run(run_copy).summary
    assert s["l2m/ste_rel_perf"] is not None and s["l2m/sample_efficiency"] is not None
    # a naive lifetime learns task 0 exactly as its expert does (same init, data, budget)
    per_task = json.loads((base / "l2metrics_metrics.json").read_text())["task_metrics"]
    assert per_task["task0_splitmnist"]["ste_rel_perf"] == pytest.approx(1.0, abs=1e-12)
    assert per_task["task0_splitmnist"]["sample_efficiency"] == pytest.approx(1.0, abs=1e-12)
    assert main(["l2metrics", str(run_copy), "--ste"]) == 0  # finished experts are reused
    assert capsys.readouterr().out.count(": reused") == 3
    assert cl.load_run(run_copy).summary["l2m/ste_rel_perf"] == s["l2m/ste_rel_perf"]


def _error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    return err[0]


def test_bad_inputs_exit_2(run_copy, tmp_path, monkeypatch, capsys):
    assert "not a cl run folder" in _error(capsys, ["l2metrics", str(tmp_path / "nowhere")])
    summary = run_copy / "summary.json"
    finished = summary.read_text()
    summary.write_text(json.dumps({**json.loads(finished), "status": "interrupted"}))
    assert "cl run --resume" in _error(capsys, ["l2metrics", str(run_copy)])
    summary.write_text(finished)
    rows = run_copy / "metrics.jsonl"
    lines = rows.read_text().splitlines()
    rows.write_text("\n".join(lines[1:]) + "\n")  # no evaluation before training
    assert "iteration 0" in _error(capsys, ["l2metrics", str(run_copy)])
    rows.write_text("")
    assert "no per-iteration evaluation rows" in _error(capsys, ["l2metrics", str(run_copy)])
    monkeypatch.setitem(sys.modules, "l2metrics", None)
    assert "extra l2m" in _error(capsys, ["l2metrics", str(run_copy)])


def test_benchmark_tasks_keeps_the_same_experiences():
    from cl.data import load_source
    from cl.schema import BenchmarkConfig
    from cl.streams import build_stream

    data = load_source("mnist5k", "data", False, 0.2, 0)
    full = build_stream(BenchmarkConfig(n_tasks=3), data, 4, 50)
    part = build_stream(BenchmarkConfig(n_tasks=3, tasks=[2, 0]), data, 4, 50)
    assert [e.index for e in part.experiences] == [0, 1]
    for e, ref in zip(part.experiences, (full.experiences[2], full.experiences[0]), strict=True):
        assert e.classes == ref.classes
        assert e.x.equal(ref.x) and e.eval_x.equal(ref.eval_x) and e.eval_y.equal(ref.eval_y)
    for bad in ("[3]", "[]", "[1,1]"):
        with pytest.raises(UserError, match="benchmark.tasks"):
            cl.config.load(["benchmark.n_tasks=3", f"benchmark.tasks={bad}"])
