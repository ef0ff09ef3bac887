"""Metrics against the worked examples of the reference metrics.md (§§1-6)."""

import math

import numpy as np
import pytest

from cl import metrics

R = np.array([[0.90, 0.20, 0.15], [0.95, 0.85, 0.25], [0.60, 0.65, 0.80]])
B = np.array([0.10, 0.12, 0.08])

# §6 worked sequence: 3 tasks x 4 iterations, evaluation after every iteration on seen tasks.
NAN = math.nan
SEQ = np.array(
    [
        [0.50, NAN, NAN],
        [0.80, NAN, NAN],
        [0.90, NAN, NAN],
        [0.95, NAN, NAN],
        [0.40, 0.30, NAN],
        [0.70, 0.60, NAN],
        [0.85, 0.85, NAN],
        [0.90, 0.90, NAN],
        [0.60, 0.20, 0.40],
        [0.80, 0.50, 0.70],
        [0.85, 0.75, 0.80],
        [0.88, 0.80, 0.90],
    ]
)
EXP = np.repeat([0, 1, 2], 4)


def test_acc():
    assert metrics.acc(R) == pytest.approx(0.683333, abs=1e-6)


def test_bwt_paper_and_code_forms():
    assert metrics.bwt(R) == pytest.approx(-0.25, abs=1e-6)
    assert metrics.bwt(R, normaliser="code") == pytest.approx(-0.166667, abs=1e-6)


def test_fwt_paper_and_code_forms():
    assert metrics.fwt(R, B) == pytest.approx(0.125, abs=1e-6)
    assert metrics.fwt(R, B, normaliser="code") == pytest.approx(0.083333, abs=1e-6)


def test_forgetting_max_based():
    assert metrics.forgetting_per_task(R) == pytest.approx([0.35, 0.20], abs=1e-6)
    assert metrics.forgetting(R) == pytest.approx(0.275, abs=1e-6)


def test_single_task_transfer_metrics_are_undefined():
    one = np.array([[0.9]])
    assert math.isnan(metrics.bwt(one)) and math.isnan(metrics.forgetting(one))


def test_accuracy_matrix_takes_last_row_of_each_experience():
    got = metrics.accuracy_matrix(SEQ, EXP, 3)
    want = np.array([[0.95, NAN, NAN], [0.90, 0.90, NAN], [0.88, 0.80, 0.90]])
    np.testing.assert_allclose(got, want)
    assert metrics.acc(got) == pytest.approx(0.86, abs=1e-6)


def test_min_acc_and_wc_acc_on_the_sequence():
    assert metrics.min_acc_per_task(SEQ, EXP) == pytest.approx({0: 0.40, 1: 0.20})
    assert metrics.min_acc(SEQ, EXP) == pytest.approx(0.30, abs=1e-6)
    assert metrics.wc_acc(SEQ, EXP) == pytest.approx(0.50, abs=1e-6)
    assert metrics.min_acc(SEQ[:8], EXP[:8]) == pytest.approx(0.40, abs=1e-6)
    assert metrics.wc_acc(SEQ[:8], EXP[:8]) == pytest.approx(0.65, abs=1e-6)


def test_min_acc_ignores_future_tasks_evaluated_at_boundaries():
    seq = SEQ.copy()
    seq[3, 1] = 0.0  # task 1 scored (badly) at the end of experience 0: before it was learned
    seq[7, 2] = 0.0
    assert metrics.min_acc(seq, EXP) == pytest.approx(0.30, abs=1e-6)


def test_streaming_metrics_match_the_batch_definitions():
    tracker = metrics.StreamingMetrics()
    rows = [
        tracker.update(int(k), [a for a in acc if not math.isnan(a)])
        for k, acc in zip(EXP, SEQ, strict=True)
    ]
    assert "sg/min_acc" not in rows[3]
    assert rows[7]["sg/min_acc"] == pytest.approx(0.40)
    assert rows[7]["sg/wc_acc"] == pytest.approx(0.65)
    assert rows[11]["sg/min_acc"] == pytest.approx(metrics.min_acc(SEQ, EXP))
    assert rows[11]["sg/wc_acc"] == pytest.approx(metrics.wc_acc(SEQ, EXP))
    assert rows[11]["eval/acc/avg_seen"] == pytest.approx(0.86)


def test_summarize_has_the_contract_keys():
    A = np.vstack([[0.1, 0.12, 0.08], SEQ])
    exp = np.concatenate([[0], EXP])
    s = metrics.summarize(A, exp, np.arange(13), 3)
    for key in ("acc", "bwt", "fwt", "forgetting", "min_acc", "wc_acc", "accuracy_matrix"):
        assert key in s
    assert s["acc"] == pytest.approx(0.86)
    assert s["min_acc"] == pytest.approx(0.30)
    assert s["fwt"] is None  # future tasks never evaluated in this sequence


IT = np.arange(1, 13)


def test_forgetting_initial_last_and_sample_weighted_accuracy():
    assert metrics.forgetting_initial_last_per_task(R) == pytest.approx([0.30, 0.20])
    assert metrics.forgetting_initial_last(R) == pytest.approx(0.25)
    assert metrics.sample_weighted_acc(R[-1], np.array([1000, 500, 500])) == pytest.approx(0.6625)
    assert metrics.sample_weighted_acc(R[0], np.array([1000, 500, 500])) == pytest.approx(0.5375)


def test_average_anytime_accuracy():
    assert metrics.aaa(SEQ, EXP, IT) == pytest.approx(0.718889, abs=1e-6)
    # the evaluation before training (iteration 0) is not part of AAA
    A = np.vstack([[0.1, NAN, NAN], SEQ])
    assert metrics.aaa(A, np.concatenate([[0], EXP]), np.arange(13)) == pytest.approx(
        0.718889, abs=1e-6
    )


def test_windowed_forgetting_and_plasticity_code_semantics():
    wf = metrics.windowed_per_task(SEQ, EXP, 3, "forgetting")
    assert wf == pytest.approx({0: 0.55, 1: 0.70, 2: 0.0})
    assert metrics.windowed(SEQ, EXP, 3, "forgetting") == pytest.approx(0.416667, abs=1e-6)
    assert metrics.windowed(SEQ, EXP, 3, "forgetting", tasks="old") == pytest.approx(0.625)
    wp = metrics.windowed_per_task(SEQ, EXP, 3, "plasticity")
    assert wp == pytest.approx({0: 0.45, 1: 0.55, 2: 0.40})
    assert metrics.windowed(SEQ, EXP, 3, "plasticity") == pytest.approx(0.466667, abs=1e-6)


def official_wp(record, w):
    """Mattdl/ContinualEvaluation's WindowedPlasticityPluginMetric, restated: a window of the
    last w accuracies, max_consec_delta_from_window with its running-maximum early exit."""
    best, window = 0.0, []
    for val in record:
        window = (window + [val])[-w:]
        delta, top = -math.inf, -math.inf
        for idx, first in enumerate(window):
            if first < top:
                continue
            top = first
            for other in window[idx + 1 :]:
                delta = max(delta, other - first)
        best = max(best, delta) if len(window) > 1 else best
    return best


def test_wp_official_misses_a_rise_from_a_dip_as_the_official_code_does():
    A, exp = np.array([[0.5], [0.2], [0.9]]), np.zeros(3, dtype=int)
    assert metrics.windowed(A, exp, 3, "plasticity") == pytest.approx(0.7)
    assert metrics.windowed(A, exp, 3, "plasticity_official") == pytest.approx(0.4)
    assert official_wp([0.5, 0.2, 0.9], 3) == pytest.approx(0.4)
    assert metrics.summarize(A, exp, np.arange(3), 1, windows=(3,))["wp_official_3"] == (
        pytest.approx(0.4)
    )
    rng = np.random.default_rng(0)
    for k in range(120):  # continuous values, then ties (accuracies of a small subset)
        n = int(rng.integers(2, 30 if k < 60 else 250))
        rec = rng.random(n) if k % 2 else rng.integers(0, 5, n) / 4
        for w in (1, 2, 3, 10, 100, n - 1, n, n + 1):
            ours = metrics.windowed(rec[:, None], np.zeros(len(rec), int), w, "plasticity_official")
            assert ours == pytest.approx(official_wp(list(rec), w), abs=1e-12)


def test_windows_are_counted_in_evaluations_and_floor_at_zero():
    exp = np.zeros(5, dtype=int)
    rising = np.array([[0.1], [0.2], [0.3], [0.4], [0.5]])
    assert metrics.windowed(rising, exp, 10, "forgetting") == 0.0
    drop = np.array([[0.9], [0.8], [0.7], [0.6], [0.5]])
    assert metrics.windowed(drop, exp, 2, "forgetting") == pytest.approx(0.1)
    assert metrics.windowed(drop, exp, 5, "forgetting") == pytest.approx(0.4)


def test_lca_code_form():
    assert metrics.lca(SEQ, EXP, beta=2) == pytest.approx(0.55)
    assert math.isnan(metrics.lca(SEQ, EXP, beta=5))  # no task has 5 evaluations


def test_gap_depth_and_recovery_time():
    effects = metrics.switch_effects(SEQ, EXP, IT, tolerance=0.05)
    got = {(e.switch, e.task): (round(e.depth, 6), e.recovery) for e in effects}
    assert got == {(1, 0): (0.55, 4), (2, 0): (0.30, 3), (2, 1): (0.70, None)}
    s = metrics.summarize(SEQ, EXP, IT, 3, windows=(3,), lca_beta=2)
    assert s["gap_depth"] == pytest.approx(0.516667, abs=1e-6)
    assert s["recovery_time"] == pytest.approx(3.5)
    assert s["recovery_rate"] == pytest.approx(2 / 3) and s["n_unrecovered"] == 1
    assert s["wf_3"] == pytest.approx(0.416667, abs=1e-6) and s["lca"] == pytest.approx(0.55)


def test_a_task_that_never_drops_below_tolerance_has_nothing_to_recover():
    A = np.array([[0.9, NAN], [0.88, 0.5], [0.9, 0.8]])
    (e,) = metrics.switch_effects(A, np.array([0, 1, 1]), np.array([1, 2, 3]), tolerance=0.05)
    assert not e.fell and e.recovery is None and e.depth == pytest.approx(0.02)
    assert metrics.recovery([e]) == {
        "recovery_time": None, "recovery_rate": None, "n_unrecovered": 0
    }  # fmt: skip


def test_recovery_counts_only_the_pairs_that_fell_and_came_back():
    """By hand, 3 tasks x 3 evaluations each (iterations 1..9), tolerance 0.05:
    switch 1: task 0 falls 0.9 -> 0.2 and is back at 0.88 at iteration 6 (3 after the switch
    at iteration 3); switch 2: task 0 stays at 0.9 (did not fall), task 1 falls 0.8 -> 0.0
    and never comes back (a naive run's forgotten task)."""
    A = np.array(
        [
            [0.5, NAN, NAN], [0.8, NAN, NAN], [0.9, NAN, NAN],
            [0.2, 0.5, NAN], [0.6, 0.7, NAN], [0.88, 0.8, NAN],
            [0.9, 0.0, 0.4], [0.9, 0.0, 0.6], [0.9, 0.0, 0.8],
        ]
    )  # fmt: skip
    exp, it = np.repeat([0, 1, 2], 3), np.arange(1, 10)
    got = {(e.switch, e.task): (e.fell, e.recovery) for e in metrics.switch_effects(A, exp, it)}
    assert got == {(1, 0): (True, 3), (2, 0): (False, None), (2, 1): (True, None)}
    s = metrics.summarize(A, exp, it, 3, windows=(3,), lca_beta=2)
    assert s["recovery_time"] == 3.0  # the one pair that recovered, not 0 for the others
    assert s["recovery_rate"] == 0.5  # 1 of the 2 pairs that fell; the steady pair is out
    assert s["n_unrecovered"] == 1
    assert s["gap_depth"] == pytest.approx((0.7 - 0.02 + 0.8) / 3)  # (2, 0) rose: 0.88 -> 0.9
    # a naive-like record where every fallen task stays at 0: no recovery time, rate 0
    naive = A.copy()
    naive[3:, 0] = 0.0
    s = metrics.summarize(naive, exp, it, 3, windows=(3,), lca_beta=2)
    assert s["recovery_time"] is None and s["recovery_rate"] == 0.0 and s["n_unrecovered"] == 2


def test_streaming_windowed_metrics_match_the_batch_form():
    tracker = metrics.StreamingMetrics(windows=(3, 100))
    for k, acc in zip(EXP, SEQ, strict=True):
        row = tracker.update(int(k), [a for a in acc if not math.isnan(a)])
    assert row["sg/wf_3"] == pytest.approx(metrics.windowed(SEQ, EXP, 3, "forgetting"))
    assert row["sg/wp_3"] == pytest.approx(metrics.windowed(SEQ, EXP, 3, "plasticity"))
    assert row["sg/wf_100"] == pytest.approx(metrics.windowed(SEQ, EXP, 100, "forgetting"))


def test_negative_flip_rate():
    y = np.arange(10)
    old = np.array([0, 1, 2, 3, 4, 0, 0, 7, 8, 1]) == y
    new = np.array([0, 1, 9, 3, 4, 5, 0, 0, 8, 9]) == y
    assert metrics.negative_flip_rate(old, new) == pytest.approx(0.2)


def test_learning_speed():
    online = [0, 1, 1, 0, 1, 1, 1, 1]
    assert metrics.learning_speed(online, target=0.75, window=4) == 5
    assert metrics.learning_speed(online, target=1.0, window=4) == 8
    assert metrics.learning_speed([0.0] * 20, target=0.5, window=4) is None
