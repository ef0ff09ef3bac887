"""Continual-learning metrics, defined on the per-evaluation accuracy record of a run.

Conventions (see docs/metrics.md and shared reference metrics.md): tasks are 0-based here;
`A[n, i]` is the accuracy on task i at evaluation n (NaN where task i was not evaluated);
`exp[n]` is the experience being trained at evaluation n; `R[i, j]` is the accuracy on task j
at the last evaluation of experience i; `b[j]` is the accuracy on task j before any training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


def accuracy_matrix(A: np.ndarray, exp: np.ndarray, n_tasks: int) -> np.ndarray:
    """R (n_tasks x n_tasks): the last evaluation row of each experience (NaN if missing)."""
    R = np.full((n_tasks, n_tasks), np.nan)
    for i in range(n_tasks):
        rows = np.flatnonzero(exp == i)
        if len(rows):
            R[i] = A[rows[-1], :n_tasks]
    return R


def acc(R: np.ndarray) -> float:
    """ACC = (1/T) sum_i R[T-1, i]: final average accuracy (GEM)."""
    return float(np.mean(R[-1]))


def bwt(R: np.ndarray, normaliser: str = "paper") -> float:
    """BWT = 1/(T-1) sum_{i<T-1} (R[T-1, i] - R[i, i]); `normaliser="code"` divides by T.

    "paper" is the GEM paper's form; "code" reproduces the official GEM code's `.mean()`.
    """
    T = len(R)
    if T < 2:
        return math.nan
    total = float(np.sum(R[-1, :-1] - np.diag(R)[:-1]))
    return total / (T - 1 if normaliser == "paper" else T)


def fwt(R: np.ndarray, b: np.ndarray, normaliser: str = "paper") -> float:
    """FWT = 1/(T-1) sum_{i>=1} (R[i-1, i] - b[i]) (GEM); `normaliser="code"` divides by T."""
    T = len(R)
    if T < 2:
        return math.nan
    total = float(np.sum(np.array([R[i - 1, i] - b[i] for i in range(1, T)])))
    return total / (T - 1 if normaliser == "paper" else T)


def forgetting_per_task(R: np.ndarray) -> np.ndarray:
    """f_j = max_{l < T-1} R[l, j] - R[T-1, j] for j < T-1 (Chaudhry et al., RWalk / A-GEM)."""
    T = len(R)
    return np.array([np.nanmax(R[: T - 1, j]) - R[-1, j] for j in range(T - 1)])


def forgetting(R: np.ndarray) -> float:
    """Average max-based forgetting over the first T-1 tasks (Chaudhry et al.)."""
    return float(np.mean(forgetting_per_task(R))) if len(R) > 1 else math.nan


def min_acc_per_task(A: np.ndarray, exp: np.ndarray) -> dict[int, float]:
    """For each task i finished before the last experience: min accuracy over evaluations made
    strictly after task i's experience (De Lange et al., ICLR 2023)."""
    out = {}
    last = int(exp[-1])
    for i in range(last):
        vals = A[exp > i, i]
        out[i] = float(np.nanmin(vals))
    return out


def min_acc(A: np.ndarray, exp: np.ndarray) -> float:
    """min-ACC: mean over old tasks of their minimum accuracy after they were learned."""
    per_task = min_acc_per_task(A, exp)
    return float(np.mean(list(per_task.values()))) if per_task else math.nan


def wc_acc(A: np.ndarray, exp: np.ndarray) -> float:
    """WC-ACC = (1/k) A_k(final) + (1 - 1/k) min-ACC, with k the number of seen tasks."""
    k = int(exp[-1])
    mins = list(min_acc_per_task(A, exp).values())
    return float(np.mean([A[-1, k], *mins]))


@dataclass
class StreamingMetrics:
    """Per-evaluation updates of the metrics that are defined during the run."""

    min_acc: dict[int, float] = field(default_factory=dict)

    def update(self, experience: int, accs: list[float]) -> dict[str, float]:
        """Fold in one evaluation (accuracy of tasks 0..len-1); returns the series to log."""
        for i in range(min(experience, len(accs))):
            self.min_acc[i] = min(self.min_acc.get(i, math.inf), accs[i])
        # plain Python sums: numpy calls on tiny lists dominate this per-evaluation path
        old = [self.min_acc[i] for i in range(experience)]
        row = {"eval/acc/avg_seen": sum(accs[: experience + 1]) / (experience + 1)}
        if old:
            row["sg/min_acc"] = sum(old) / len(old)
        row["sg/wc_acc"] = (accs[experience] + sum(old)) / (len(old) + 1)
        return row


def summarize(A: np.ndarray, exp: np.ndarray, n_tasks: int, initial: np.ndarray) -> dict:
    """Final metrics of a run from its evaluation record. `initial` is b (pre-training row)."""
    R = accuracy_matrix(A, exp, n_tasks)
    done = int(exp[-1]) + 1  # experiences reached (a failed run may stop early)
    Rd = R[:done, :done]
    nan = lambda v: None if v is None or not math.isfinite(v) else v  # noqa: E731
    return {
        "acc": nan(acc(Rd)),
        "bwt": nan(bwt(Rd)),
        "fwt": nan(fwt(Rd, initial)),
        "forgetting": nan(forgetting(Rd)),
        "min_acc": nan(min_acc(A, exp)),
        "wc_acc": nan(wc_acc(A, exp)),
        "accuracy_matrix": [[nan(float(v)) for v in row] for row in R],
    }
