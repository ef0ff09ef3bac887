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
    s = metrics.summarize(A, exp, 3, A[0])
    for key in ("acc", "bwt", "fwt", "forgetting", "min_acc", "wc_acc", "accuracy_matrix"):
        assert key in s
    assert s["acc"] == pytest.approx(0.86)
    assert s["min_acc"] == pytest.approx(0.30)
    assert s["fwt"] is None  # future tasks never evaluated in this sequence
