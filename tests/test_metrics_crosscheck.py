"""Cross-checks on a real run: Avalanche's metric classes fed the same evaluation sequence,
and the stability-gap metrics recomputed directly from the per-iteration accuracy table."""

import math

import numpy as np
import pytest
import torch

import cl
from cl import config
from cl.data import load_source
from cl.models import build_model
from cl.streams import build_stream


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    return cl.run(
        [
            f"run.dir={tmp}",
            "run.progress=false",
            "wandb.mode=disabled",
            "model.hidden=[64]",
            "benchmark.n_tasks=3",
            "train.epochs=1",
            "plasticity.every=10",
            "seed=2",
        ],
        quiet=True,
    )


def table(run):
    m = run.metrics
    cols = run.task_columns()
    A = m[cols].to_numpy(dtype=float)
    return A, m["experience"].to_numpy(), m["iteration"].to_numpy()


def test_forgetting_bwt_fwt_match_avalanche_metric_classes(run):
    from avalanche.evaluation.metrics import BWT, Forgetting, ForwardTransfer

    A, exp, _ = table(run)
    T = A.shape[1]
    forgetting, bwt, fwt = Forgetting(), BWT(), ForwardTransfer()
    for k in range(T):  # the first evaluation of every task (before training)
        fwt.update(k, A[0, k], initial=True)
    for n in range(len(A)):  # Avalanche's ExperienceForgetting / ForwardTransfer plugin rules
        e = int(exp[n])
        for k in range(e + 1):
            forgetting.update(k, A[n, k], initial=(k == e))
            bwt.update(k, A[n, k], initial=(k == e))
        if e + 1 < T and not math.isnan(A[n, e + 1]):
            fwt.update(e + 1, A[n, e + 1])  # last score of task e+1 while e is trained
    s = run.summary
    f = forgetting.result()  # the task trained last has no "last" value: excluded, as here
    assert sorted(f) == list(range(T - 1))
    assert np.mean(list(f.values())) == pytest.approx(s["forgetting_initial_last"], abs=1e-12)
    assert [f[k] for k in range(T - 1)] == pytest.approx(s["forgetting_initial_last_per_task"])
    assert np.mean(list(bwt.result().values())) == pytest.approx(s["bwt"], abs=1e-12)
    assert np.mean(list(fwt.result().values())) == pytest.approx(s["fwt"], abs=1e-12)


def test_final_accuracy_matches_avalanche_accuracy_on_the_checkpoint(run):
    """Avalanche's stream accuracy is sample-weighted: sum_i n_i R[T-1, i] / sum_i n_i."""
    from avalanche.evaluation.metrics import Accuracy

    cfg, _ = config.load(
        [f"{k}={v}" for k, v in (("model.hidden", "[64]"), ("benchmark.n_tasks", 3), ("seed", 2))]
    )
    b = cfg.benchmark
    stream = build_stream(b, load_source(b.source, test_fraction=b.test_fraction), 2, 1000)
    model = build_model(cfg.model, stream.input_shape, stream.n_classes)
    state = torch.load(run.path / "checkpoint.pt", weights_only=True)
    model.load_state_dict(state["model"])
    model.eval()
    stream_acc, per_task, sizes = Accuracy(), [], []
    with torch.no_grad():
        for e in stream.experiences:
            pred = model(e.eval_x)
            task_acc = Accuracy()
            task_acc.update(pred, e.eval_y)
            stream_acc.update(pred, e.eval_y)
            per_task.append(task_acc.result())
            sizes.append(len(e.eval_y))
    R_last = np.array(run.summary["accuracy_matrix"][-1])
    assert per_task == pytest.approx(R_last.tolist(), abs=1e-12)
    assert stream_acc.result() == pytest.approx(
        cl.metrics.sample_weighted_acc(R_last, np.array(sizes)), abs=1e-12
    )
    assert np.mean(per_task) == pytest.approx(run.summary["acc"], abs=1e-12)


def direct_windowed(A, exp, w, drop):
    """Every pair (a < b) of a task's evaluations at most w-1 steps apart, floored at 0."""
    per_task = []
    for i in range(int(exp[-1]) + 1):
        v = [A[n, i] for n in range(len(A)) if exp[n] >= i and not math.isnan(A[n, i])]
        best = 0.0
        for b in range(len(v)):
            for a in range(max(0, b - w + 1), b):
                best = max(best, (v[a] - v[b]) if drop else (v[b] - v[a]))
        per_task.append(best)
    return float(np.mean(per_task))


def test_stability_gap_metrics_recomputed_from_the_accuracy_table(run):
    A, exp, it = table(run)
    s, last = run.summary, run.metrics.iloc[-1]
    for w in (10, 100):
        assert s[f"wf_{w}"] == pytest.approx(direct_windowed(A, exp, w, True), abs=1e-12)
        assert s[f"wp_{w}"] == pytest.approx(direct_windowed(A, exp, w, False), abs=1e-12)
        assert last[f"sg/wf_{w}"] == pytest.approx(s[f"wf_{w}"], abs=1e-12)
        assert last[f"sg/wp_{w}"] == pytest.approx(s[f"wp_{w}"], abs=1e-12)
    mins = [min(A[n, i] for n in range(len(A)) if exp[n] > i) for i in range(int(exp[-1]))]
    assert s["min_acc"] == pytest.approx(np.mean(mins), abs=1e-12)
    assert last["sg/min_acc"] == pytest.approx(s["min_acc"], abs=1e-12)
    assert s["wc_acc"] == pytest.approx(np.mean([A[-1, -1], *mins]), abs=1e-12)
    firsts = [A[exp == k, k][:10].mean() for k in range(3)]
    assert s["lca"] == pytest.approx(np.mean(firsts), abs=1e-12)
    seen = [np.mean([A[n, i] for i in range(int(exp[n]) + 1)]) for n in range(1, len(A))]
    assert s["aaa"] == pytest.approx(np.mean(seen), abs=1e-12)


def test_summary_holds_every_metric_and_plasticity_series_are_logged(run):
    s = run.summary
    keys = [
        "acc",
        "aaa",
        "bwt",
        "fwt",
        "forgetting",
        "forgetting_initial_last",
        "nfr",
        "min_acc",
        "wc_acc",
        "wf_10",
        "wp_10",
        "wf_100",
        "wp_100",
        "lca",
        "gap_depth",
        "recovery_time",
        "online_acc",
        "learning_speed",
        "dead_units",
        "effective_rank",
        "stable_rank",
        "srank_99",
        "weight_mag",
        "grad_norm",
    ]
    missing = [k for k in keys if k not in s]
    assert not missing
    assert all(s[k] is not None for k in keys if k not in ("recovery_time", "learning_speed"))
    m = run.metrics
    probed = m.dropna(subset=["plasticity/dead_units"])
    assert probed["iteration"].tolist() == list(range(10, s["n_iterations"] + 1, 10))
    assert probed["plasticity/grad_norm"].gt(0).all()
    assert len(m["forgetting/nfr"].dropna()) == 2  # one per task switch
    online = m["train/online_acc"].dropna().to_numpy()
    assert s["online_acc"] == pytest.approx(online.mean(), abs=1e-9)  # equal batch sizes


def test_plasticity_probe_does_not_change_training(tmp_path):
    args = [
        f"run.dir={tmp_path}",
        "run.progress=false",
        "wandb.mode=disabled",
        "model.hidden=[32]",
        "benchmark.n_tasks=2",
        "train.epochs=1",
    ]
    on = cl.run(args + ["plasticity.every=5"], quiet=True).metrics
    off = cl.run(args + ["plasticity.every=0"], quiet=True).metrics
    cols = ["eval/acc/task_0", "eval/acc/task_1", "train/loss"]
    assert on[cols].equals(off[cols])
