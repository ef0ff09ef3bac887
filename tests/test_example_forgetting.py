"""Example forgetting (Toneva et al., ICLR 2019) and the trainability probe (Lyle et al., ICML
2023): hand-computed event counts, an independent per-sample reference, the per-sample table of
a real run, exact resume, and the probe's isolation from training."""

import random

import pytest
import torch

import cl
from cl import api, runner
from cl.errors import UserError
from cl.example_forgetting import Tracker
from cl.interrupt import Interrupted
from cl.store import read_rows

TINY = [
    "run.progress=false",
    "run.report=false",
    "wandb.mode=disabled",
    "benchmark.source=digits",
    "benchmark.n_tasks=3",
    "model.hidden=[32]",
    "train.epochs=1",
    "eval.subset=60",
    "plasticity.every=0",
]


def test_hand_computed_sequence():
    """Tasks of 3 and 2 samples; task 1 begins after iteration 3; window 2 iterations."""
    t = Tracker([3, 5], "cpu", window=2)
    seq = [  # (iteration, experience, correctness of the scored samples)
        (1, 0, [1, 0, 1]),
        (2, 0, [0, 1, 1]),
        (3, 0, [0, 1, 0, 1, 1]),  # experience end: task 1 scored too, but not yet seen
        (4, 1, [1, 1, 0, 0, 1]),
        (5, 1, [1, 0, 0, 1, 0]),
        (8, 1, [0, 0, 0, 1, 1]),
    ]
    events = [t.update(torch.tensor(h, dtype=torch.bool), k, it) for it, k, h in seq]
    assert events == [0, 1, 1, 0, 2, 1]
    assert t.forgets.tolist() == [2, 1, 1, 0, 1]
    assert t.learns.tolist() == [2, 1, 1, 1, 2]
    assert t.first.tolist() == [1, 2, 1, 5, 4]
    assert t.correct.tolist() == [False, False, False, True, True]
    s = t.summary("ef")
    assert s["ef/unforgettable"] == pytest.approx(1 / 5)  # only sample 3 never forgotten
    assert s["ef/never_learned"] == 0.0
    assert s["ef/events_per_sample"] == pytest.approx(1.0)
    assert s["ef/events_per_sample_per_task"] == pytest.approx([4 / 3, 1 / 2])
    assert (s["ef/events_after_switch"], s["ef/events_inside"]) == (2, 3)  # iterations 4, 5
    assert s["ef/switch_share"] == pytest.approx(0.4)
    assert (s["ef/rate_after_switch"], s["ef/rate_inside"]) == (1.0, 0.75)
    # old tasks (task 0 while task 1 trains): sample 1 at iteration 5, sample 0 at iteration 8
    assert (s["ef/old_events_after_switch"], s["ef/old_events_inside"]) == (1, 1)
    assert (s["ef/old_rate_after_switch"], s["ef/old_rate_inside"]) == (0.5, 1.0)
    assert s["ef/old_switch_share"] == 0.5
    table = t.table("eval")
    assert table["task"] == [0, 0, 0, 1, 1] and table["index"] == [0, 1, 2, 0, 1]


def reference(seq, ends):
    """Per-sample Python loops, written from the paper's definitions."""
    n = ends[-1]
    state, forgets, learns, first = [None] * n, [0] * n, [0] * n, [-1] * n
    old = 0
    for it, k, hits in seq:
        for i in range(ends[k]):
            was = bool(state[i])  # never scored counts as incorrect
            forgets[i] += was and not hits[i]
            old += was and not hits[i] and k > 0 and i < ends[k - 1]
            learns[i] += hits[i] and not was
            if hits[i] and first[i] < 0:
                first[i] = it
            state[i] = hits[i]
    return forgets, learns, first, old


def test_matches_a_per_sample_reference_and_resumes_from_its_state():
    rng = random.Random(0)
    ends = [7, 12, 20]
    seq, k = [], 0
    for it in range(1, 80):
        k = min(2, k + (rng.random() < 0.05))
        seq.append((it, k, [rng.random() < 0.6 for _ in range(20)]))
    t, half = Tracker(ends, "cpu", 5), None
    for j, (it, k, hits) in enumerate(seq):
        t.update(torch.tensor(hits), k, it)
        if j == 40:
            half = Tracker(ends, "cpu", 5)
            half.load_state_dict(t.state_dict())
        elif half is not None:
            half.update(torch.tensor(hits), k, it)
    forgets, learns, first, old = reference(seq, ends)
    assert t.forgets.tolist() == forgets and sum(forgets) > 0
    s = t.summary("x")
    assert s["x/old_events_after_switch"] + s["x/old_events_inside"] == old > 0
    assert t.learns.tolist() == learns and t.first.tolist() == first
    assert half.summary("x") == t.summary("x") and half.table("e") == t.table("e")


def test_a_run_writes_the_per_sample_table(tmp_path):
    run = cl.run(
        [*TINY, f"run.dir={tmp_path}", "metrics.example_forgetting.train_probe=40"], quiet=True
    )
    df, m, s = run.example_forgetting, run.metrics, run.summary
    assert list(df["set"].unique()) == ["eval", "train"]
    ev = df[df["set"] == "eval"]
    assert len(ev) == 3 * 60 and len(df) == len(ev) + 3 * 40
    # the last state of each sample: its task's accuracy in the last row
    last = m.iloc[-1]
    for task, group in ev.groupby("task"):
        assert group["last_correct"].mean() == pytest.approx(last[f"eval/acc/task_{task}"])
    assert ((df["learning_events"] - df["forgetting_events"]) == df["last_correct"]).all()
    learned = df["first_learned"] >= 0
    assert (learned == (df["learning_events"] > 0)).all()
    start = m.groupby("experience")["iteration"].min()  # each task's samples count from there
    assert (df.loc[learned, "first_learned"] >= df.loc[learned, "task"].map(start)).all()
    for name, part in (("eval", ev), ("train", df[df["set"] == "train"])):
        key = f"example_forgetting/{name}"
        total = part["forgetting_events"].sum()
        assert total == m[f"{key}/events"].sum() == m[f"{key}/cumulative"].iloc[-1]
        assert s[f"{key}/events_after_switch"] + s[f"{key}/events_inside"] == total
        never = (part["forgetting_events"] == 0) & learned[part.index]
        assert s[f"{key}/unforgettable"] == pytest.approx(never.sum() / learned[part.index].sum())
    assert ev["forgetting_events"].sum() > 0  # the tiny run forgets (class-incremental)


def test_off_writes_no_table(tmp_path):
    off = ["metrics.example_forgetting.enabled=false", "benchmark.n_tasks=2", "train.epochs=1"]
    run = cl.run([*TINY, f"run.dir={tmp_path}", *off], quiet=True)
    assert run.example_forgetting is None
    assert not any(k.startswith("example_forgetting") for k in run.summary)
    assert not any(c.startswith("example_forgetting") for c in run.metrics.columns)


def test_probe_leaves_training_bit_identical_and_falls_with_training(tmp_path):
    """CBP's forward hooks would see a copy made with them: the probe's copy has none."""
    base = [*TINY, "strategy=cbp", "strategy.cbp.replacement_rate=0.01"]
    on = cl.run(
        [*base, f"run.dir={tmp_path}", "run.name=on", "plasticity.trainability_probe=true"]
        + ["plasticity.probe_every=10", "plasticity.probe_steps=30", "plasticity.probe_inputs=64"],
        quiet=True,
    )
    off = cl.run([*base, f"run.dir={tmp_path}", "run.name=off"], quiet=True)
    probe_keys = {c for c in on.metrics.columns if c.startswith("plasticity/probe")}
    kinds = ("loss", "loss_initial", "gain")
    assert probe_keys == {f"plasticity/probe_{k}{s}" for k in kinds for s in ("", "_offset")}
    rows_on = read_rows(on.path / "metrics.jsonl")
    rows_off = {r["iteration"]: r for r in read_rows(off.path / "metrics.jsonl")}
    probed = [r for r in rows_on if "plasticity/probe_loss" in r]
    ends = {r["experience"]: r["iteration"] for r in rows_off.values()}  # experience ends
    due = {i for i in range(max(ends.values()) + 1) if i % 10 == 0} | set(ends.values())
    assert [r["iteration"] for r in probed] == sorted(due)
    for r in rows_on:  # probe_every adds rows; the rows both runs have are identical
        if r["iteration"] in rows_off:
            assert {k: v for k, v in r.items() if k not in probe_keys} == rows_off[r["iteration"]]
    assert set(rows_off) <= {r["iteration"] for r in rows_on}
    for r in probed:  # K steps of Adam lower the probe loss
        for s in ("", "_offset"):
            assert r[f"plasticity/probe_loss{s}"] < r[f"plasticity/probe_loss_initial{s}"]
    s = on.summary
    assert s["probe_loss_initial"] == probed[0]["plasticity/probe_loss"]
    assert s["plasticity_loss"] == pytest.approx(s["probe_loss"] - s["probe_loss_initial"])


def test_resume_gives_identical_rows_summary_and_table(tmp_path, monkeypatch):
    extra = [
        "metrics.example_forgetting.train_probe=30",
        "plasticity.trainability_probe=true",
        "plasticity.probe_every=9",
        "plasticity.probe_steps=10",
        "plasticity.probe_inputs=32",
        "run.checkpoint_every=7",
    ]
    args = [*TINY, *extra, f"run.dir={tmp_path}"]
    reference = cl.run([*args, "run.name=reference"], quiet=True)
    step, calls = runner.train_step, 0

    def stop_at_30(*a, **k):
        nonlocal calls
        calls += 1
        if calls == 30:
            raise KeyboardInterrupt
        return step(*a, **k)

    monkeypatch.setattr(runner, "train_step", stop_at_30)
    with pytest.raises(Interrupted):
        cl.run([*args, "run.name=cut"], quiet=True)
    monkeypatch.setattr(runner, "train_step", step)
    resumed = api.resume(tmp_path / "cut", quiet=True)
    for name in ("metrics.jsonl", "example_forgetting.csv"):
        assert (resumed.path / name).read_bytes() == (reference.path / name).read_bytes()
    drop = ("wall_time_s",)
    assert {k: v for k, v in resumed.summary.items() if k not in drop} == {
        k: v for k, v in reference.summary.items() if k not in drop
    }


@pytest.mark.parametrize(
    "bad",
    [
        "plasticity.probe_every=-1",
        "plasticity.probe_steps=0",
        "plasticity.probe_lr=0",
        "metrics.example_forgetting.train_probe=-3",
        "metrics.example_forgetting.window=x",
    ],
)
def test_bad_values_are_user_errors(bad):
    from cl import config

    with pytest.raises(UserError):
        config.load([bad])
