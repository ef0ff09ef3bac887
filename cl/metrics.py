"""Continual-learning metrics, defined on the per-evaluation accuracy record of a run.

Conventions (docs/metrics.md has every formula and its source): tasks are 0-based; `A[n, i]`
is the accuracy on task i at evaluation n (NaN where task i was not evaluated); `exp[n]` is
the experience being trained at evaluation n; `it[n]` the training iterations done;
`R[i, j]` the accuracy on task j at the last evaluation of experience i; `b[j]` the accuracy
on task j before any training.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

# --- forgetting family ---------------------------------------------------------------------


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


def sample_weighted_acc(accs: np.ndarray, sizes: np.ndarray) -> float:
    """sum_i n_i a_i / sum_i n_i: one accuracy over all samples (Avalanche `Top1_Acc_Stream`)."""
    return float(np.sum(accs * sizes) / np.sum(sizes))


def seen_only(A: np.ndarray, exp: np.ndarray) -> np.ndarray:
    """A with tasks not yet reached (i > exp[n]) blanked: boundary rows also score the future."""
    return np.where(np.arange(A.shape[1])[None, :] <= exp[:, None], A, np.nan)


def aaa(A: np.ndarray, exp: np.ndarray, it: np.ndarray) -> float:
    """Average anytime accuracy: mean over evaluations during training (it > 0) of the mean
    accuracy on the tasks seen so far (Caccia et al.; ocl_survey's iteration-free form)."""
    S = seen_only(A, exp)[it > 0]
    return float(np.mean(np.nanmean(S, axis=1))) if len(S) else math.nan


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


def forgetting_initial_last_per_task(R: np.ndarray) -> np.ndarray:
    """f_j = R[j, j] - R[T-1, j] for j < T-1 (Avalanche's ExperienceForgetting; = -BWT terms)."""
    return np.diag(R)[:-1] - R[-1, :-1]


def forgetting_initial_last(R: np.ndarray) -> float:
    f = forgetting_initial_last_per_task(R)
    return float(np.mean(f)) if len(f) else math.nan


def negative_flip_rate(old_correct: np.ndarray, new_correct: np.ndarray) -> float:
    """NFR = #{old correct and new wrong} / N (Yan et al., CVPR 2021)."""
    return float(np.mean(old_correct & ~new_correct))


# --- stability-gap family (De Lange et al., ICLR 2023; semantics of their code) ------------


def min_acc_per_task(A: np.ndarray, exp: np.ndarray) -> dict[int, float]:
    """For each task i finished before the last experience: min accuracy over evaluations made
    strictly after task i's experience."""
    return {i: float(np.nanmin(A[exp > i, i])) for i in range(int(exp[-1]))}


def min_acc(A: np.ndarray, exp: np.ndarray) -> float:
    """min-ACC: mean over old tasks of their minimum accuracy after they were learned."""
    per_task = min_acc_per_task(A, exp)
    return float(np.mean(list(per_task.values()))) if per_task else math.nan


def wc_acc(A: np.ndarray, exp: np.ndarray) -> float:
    """WC-ACC = (1/k) A_k(final) + (1 - 1/k) min-ACC, with k the number of seen tasks."""
    k = int(exp[-1])
    return float(np.mean([A[-1, k], *min_acc_per_task(A, exp).values()]))


def windowed_per_task(A: np.ndarray, exp: np.ndarray, w: int, kind: str) -> dict[int, float]:
    """Largest drop (kind="forgetting") or rise ("plasticity") between two evaluations of a task
    at most w-1 evaluation steps apart, floored at 0; every task from its first evaluation,
    the one being learned included (WF^w / WP^w of the stability-gap code)."""
    S = seen_only(A, exp)
    out = {}
    for i in range(int(exp[-1]) + 1):
        v = S[:, i][~np.isnan(S[:, i])]
        best = 0.0
        for b in range(1, len(v)):
            prior = v[max(0, b - w + 1) : b]
            delta = prior.max() - v[b] if kind == "forgetting" else v[b] - prior.min()
            best = max(best, float(delta))
        out[i] = best
    return out


def wp_official_per_task(A: np.ndarray, exp: np.ndarray, w: int) -> dict[int, float]:
    """WP^w as the stability-gap code computes it (`WindowedPlasticityPluginMetric`): it reuses
    the forgetting loop, whose start points are only the running maxima of the window, so a
    rise that starts from a dip is missed ([0.5, 0.2, 0.9]: 0.4, where `wp_{w}` gives 0.7)."""
    S = seen_only(A, exp)
    return {i: _wp_official(S[:, i][~np.isnan(S[:, i])], w) for i in range(int(exp[-1]) + 1)}


def _wp_official(v: np.ndarray, w: int) -> float:
    """The code's loop over every window v[b-w+1 .. b] in one pass: a rise v[c] - v[a]
    (a < c <= a+w-1) counts when some window holds both with v[a] a running maximum of it.
    For a <= L-w the window starting at a does; a later a lies in the last window, which
    starts at L-w and holds every c > a, so it counts iff v[a] >= max(v[L-w .. a-1])."""
    n = len(v)
    if n < 2 or w < 2:
        return 0.0
    last = max(n - w, 0)  # where the last window starts
    ahead = np.concatenate([v[1:], np.full(w - 1, -np.inf)])
    later = np.lib.stride_tricks.sliding_window_view(ahead, w - 1).max(1)[:n]  # v[a+1 .. a+w-1]
    before = np.maximum.accumulate(np.concatenate([[-np.inf], v[last:-1]]))
    starts = np.concatenate([np.ones(last, bool), v[last:] >= before])
    rises = (later - v)[starts[:n] & np.isfinite(later)]
    return max(0.0, float(rises.max())) if len(rises) else 0.0


def windowed(A: np.ndarray, exp: np.ndarray, w: int, kind: str, tasks: str = "all") -> float:
    """WF^w / WP^w averaged over all seen tasks (the code's form) or over old tasks only;
    kind="plasticity_official": WP^w as the stability-gap code computes it."""
    if kind == "plasticity_official":
        per_task = wp_official_per_task(A, exp, w)
    else:
        per_task = windowed_per_task(A, exp, w, kind)
    if tasks == "old":
        per_task = {i: v for i, v in per_task.items() if i < int(exp[-1])}
    return float(np.mean(list(per_task.values()))) if per_task else math.nan


def lca(A: np.ndarray, exp: np.ndarray, beta: int = 10) -> float:
    """LCA^beta (stability-gap code form): per task, the mean of the first beta evaluations
    made while it is the learning task; then the mean over tasks with beta such evaluations."""
    per_task = []
    for k in range(int(exp[-1]) + 1):
        v = A[exp == k, k][:beta]
        if len(v) == beta:
            per_task.append(float(np.mean(v)))
    return float(np.mean(per_task)) if per_task else math.nan


@dataclass
class SwitchEffect:
    """What task switch k did to old task i (our measures; docs/metrics.md)."""

    switch: int  # the experience that starts
    task: int
    before: float  # accuracy at the last evaluation before the switch
    depth: float  # before - min accuracy during experience `switch`
    recovery: int | None  # iterations until back within tolerance of `before` after falling
    # below it; None if it did not fall (`fell` false) or never got back
    fell: bool = True  # the accuracy fell below before - tolerance during the experience


def switch_effects(
    A: np.ndarray, exp: np.ndarray, it: np.ndarray, tolerance: float = 0.05
) -> list[SwitchEffect]:
    """Gap depth and recovery time of every old task at every task switch."""
    out = []
    for k in range(1, int(exp[-1]) + 1):
        prev = np.flatnonzero(exp == k - 1)
        during = np.flatnonzero(exp == k)
        if not len(prev) or not len(during):
            continue
        start = it[prev[-1]]
        for i in range(k):
            before = A[prev[-1], i]
            v = A[during, i]
            low = int(np.argmin(v))
            fell = bool(v[low] < before - tolerance)
            recovery = None
            if fell:
                back = np.flatnonzero(v[low:] >= before - tolerance)
                recovery = int(it[during[low + back[0]]] - start) if len(back) else None
            depth = float(before - v[low])
            out.append(SwitchEffect(k, i, float(before), depth, recovery, fell))
    return out


def recovery(effects: list[SwitchEffect]) -> dict:
    """Over the (switch, old task) pairs whose accuracy fell below `before` − tolerance: the
    mean iterations to get back (those that did; None if none did), the share that did (None
    if none fell), and how many never did. Pairs that did not fall count in none of them."""
    fell = [e for e in effects if e.fell]
    times = [e.recovery for e in fell if e.recovery is not None]
    return {
        "recovery_time": float(np.mean(times)) if times else None,
        "recovery_rate": len(times) / len(fell) if fell else None,
        "n_unrecovered": len(fell) - len(times),
    }


# --- per-evaluation updates --------------------------------------------------------------


@dataclass
class StreamingMetrics:
    """The metrics that are defined during the run, updated at every evaluation."""

    windows: tuple[int, ...] = (10, 100)
    min_acc: dict[int, float] = field(default_factory=dict)
    history: dict[int, deque] = field(default_factory=dict)  # last max(windows) accs per task
    wf: dict[tuple[int, int], float] = field(default_factory=dict)  # (w, task) -> WF so far
    wp: dict[tuple[int, int], float] = field(default_factory=dict)

    def update(self, experience: int, accs: list[float]) -> dict[str, float]:
        """Fold in one evaluation (accuracy of tasks 0..len-1); returns the series to log."""
        # plain Python arithmetic: numpy calls on tiny lists dominate this per-evaluation path
        for i in range(min(experience, len(accs))):
            self.min_acc[i] = min(self.min_acc.get(i, math.inf), accs[i])
        for i in range(min(experience + 1, len(accs))):
            past = self.history.setdefault(i, deque(maxlen=max(self.windows, default=2) - 1))
            hist = list(past)
            for w in self.windows:
                prior = hist[-(w - 1) :] if w > 1 else []
                if prior:
                    self.wf[w, i] = max(self.wf.get((w, i), 0.0), max(prior) - accs[i])
                    self.wp[w, i] = max(self.wp.get((w, i), 0.0), accs[i] - min(prior))
                else:
                    self.wf.setdefault((w, i), 0.0)
                    self.wp.setdefault((w, i), 0.0)
            past.append(accs[i])
        old = [self.min_acc[i] for i in range(experience)]
        seen = experience + 1
        row = {"eval/acc/avg_seen": sum(accs[:seen]) / seen}
        if old:
            row["sg/min_acc"] = sum(old) / len(old)
        row["sg/wc_acc"] = (accs[experience] + sum(old)) / (len(old) + 1)
        for w in self.windows:
            row[f"sg/wf_{w}"] = sum(self.wf[w, i] for i in range(seen)) / seen
            row[f"sg/wp_{w}"] = sum(self.wp[w, i] for i in range(seen)) / seen
        return row

    def state_dict(self) -> dict:
        return {
            "min_acc": dict(self.min_acc),
            "history": {i: list(d) for i, d in self.history.items()},
            "wf": dict(self.wf),
            "wp": dict(self.wp),
        }

    def load_state_dict(self, state: dict) -> None:
        size = max(self.windows, default=2) - 1
        self.min_acc = dict(state["min_acc"])
        self.history = {i: deque(v, maxlen=size) for i, v in state["history"].items()}
        self.wf, self.wp = dict(state["wf"]), dict(state["wp"])


# --- the summary -------------------------------------------------------------------------


def _finite(v):
    if isinstance(v, list | tuple | np.ndarray):
        return [_finite(x) for x in v]
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def summarize(
    A: np.ndarray,
    exp: np.ndarray,
    it: np.ndarray,
    n_tasks: int,
    windows: tuple[int, ...] = (10, 100),
    lca_beta: int = 10,
    normaliser: str = "paper",
    tolerance: float = 0.05,
) -> dict:
    """Final forgetting and stability-gap metrics from a run's evaluation record.

    Row 0 must be the evaluation before training (b for FWT).
    """
    R = accuracy_matrix(A, exp, n_tasks)
    done = int(exp[-1]) + 1  # experiences reached (a failed run may stop early)
    Rd = R[:done, :done]
    effects = switch_effects(A, exp, it, tolerance)
    out = {
        "acc": acc(Rd),
        "aaa": aaa(A, exp, it),
        "bwt": bwt(Rd, normaliser),
        "fwt": fwt(Rd, A[0], normaliser),
        "forgetting": forgetting(Rd),
        "forgetting_per_task": forgetting_per_task(Rd).tolist(),
        "forgetting_initial_last": forgetting_initial_last(Rd),
        "forgetting_initial_last_per_task": forgetting_initial_last_per_task(Rd).tolist(),
        "min_acc": min_acc(A, exp),
        "wc_acc": wc_acc(A, exp),
        "lca": lca(A, exp, lca_beta),
        "gap_depth": float(np.mean([e.depth for e in effects])) if effects else None,
        **recovery(effects),
        "accuracy_matrix": R.tolist(),
    }
    for w in windows:
        out[f"wf_{w}"] = windowed(A, exp, w, "forgetting")
        out[f"wp_{w}"] = windowed(A, exp, w, "plasticity")
        out[f"wp_official_{w}"] = windowed(A, exp, w, "plasticity_official")
    return {k: _finite(v) for k, v in out.items()}


# --- plasticity: online accuracy ----------------------------------------------------------


def learning_speed(online: list[float], target: float = 0.9, window: int = 10) -> int | None:
    """Iterations into a task until the moving average (over `window` iterations) of the
    online batch accuracy first reaches `target`; None if it never does."""
    v = np.asarray(online, dtype=float)
    if len(v) < window:
        return None
    ma = np.convolve(v, np.ones(window) / window, mode="valid")
    hit = np.flatnonzero(ma >= target)
    return int(hit[0] + window) if len(hit) else None
