"""Example forgetting: per-sample forgetting and learning events between consecutive evaluations
(Toneva, Sordoni, Combes, Trischler, Bengio, Gordon, "An Empirical Study of Example Forgetting
during Deep Neural Network Learning", ICLR 2019). docs/metrics.md defines every quantity.

A `Tracker` follows one fixed set of samples (the evaluation subsets, or a probe of training
samples) laid out task after task; `update` takes the correctness of the first `n` of them at
one evaluation. A sample counts only once its task has been trained on (the caller passes the
seen tasks' prefix); its state before its first evaluation counts as incorrect. All state is
tensors on the samples' device, updated with a few whole-tensor ops (no per-sample Python).
"""

from __future__ import annotations

from itertools import pairwise

import torch

from cl.evaluation import Evaluator

FILE = "example_forgetting.csv"
COLUMNS = (
    "set",
    "task",
    "index",
    "forgetting_events",
    "learning_events",
    "first_learned",
    "last_correct",
)


class Tracker:
    """Forgetting events (correct -> incorrect), learning events (incorrect -> correct, the
    first evaluation included), first-learned iteration (-1: never) and last state per sample;
    events are tallied, all and on old tasks only (tasks before the current one), at rows
    within `window` iterations after a task switch and at the other rows."""

    def __init__(self, ends: list[int], device: torch.device | str, window: int):
        n = ends[-1]
        self.ends, self.window = ends, window
        self.correct = torch.zeros(n, dtype=torch.bool, device=device)
        self.forgets = torch.zeros(n, dtype=torch.int32, device=device)
        self.learns = torch.zeros(n, dtype=torch.int32, device=device)
        self.first = torch.full((n,), -1, dtype=torch.int64, device=device)
        # after a switch, then elsewhere: [events, old-task events] (on the device), and
        # [rows, rows with old tasks] (on the host)
        self.events = torch.zeros(4, dtype=torch.int64, device=device)
        self.rows = [0] * 4
        self.experience, self.switch, self.last = 0, 0, 0  # switch: iteration task k began
        self.total = torch.zeros((), dtype=torch.int64, device=device)

    @property
    def tally(self) -> list[int]:
        """After a switch, then elsewhere: [events, old-task events, rows, rows with old
        tasks] (a host copy)."""
        a, oa, b, ob = self.events.tolist()
        ra, roa, rb, rob = self.rows
        return [a, oa, ra, roa, b, ob, rb, rob]

    def update(self, hits: torch.Tensor, experience: int, iteration: int) -> torch.Tensor:
        """Record the correctness `hits` (bool, the first samples of tasks 0..experience, in
        order) at `iteration`; returns the number of forgetting events it holds (a device
        scalar: no host copy here)."""
        n = self.ends[experience]
        prev, hits = self.correct[:n], hits[:n]
        forget, learn = prev > hits, hits > prev
        first = self.first[:n]
        first.masked_fill_(learn & (first < 0), iteration)
        self.forgets[:n] += forget
        self.learns[:n] += learn
        prev.copy_(hits)
        old = self.ends[experience - 1] if experience else 0
        counts = torch.stack([forget.sum(), forget[:old].sum()])
        if experience != self.experience:
            self.experience, self.switch = experience, self.last
        self.last = iteration
        b = 0 if experience > 0 and iteration - self.switch <= self.window else 2
        self.events[b : b + 2] += counts
        self.rows[b] += 1
        self.rows[b + 1] += old > 0
        self.total = self.total + counts[0]
        return counts[0]

    def per_task_mean(self) -> list[float]:
        """Mean forgetting events per sample of each task tracked so far."""
        bounds = pairwise([0, *self.ends[: self.experience + 1]])
        return [float(self.forgets[a:b].double().mean()) for a, b in bounds if b > a]

    def summary(self, prefix: str) -> dict:
        """Unforgettable fraction, events per sample (overall and per task), and events right
        after task switches vs inside tasks (counts and rates per evaluation)."""
        n = self.ends[self.experience]
        learned = self.first[:n] >= 0
        never = (self.forgets[:n] == 0) & learned
        unforgettable = float(never.sum() / learned.sum()) if learned.any() else None
        a, oa, ra, roa, b, ob, rb, rob = self.tally
        return {
            f"{prefix}/unforgettable": unforgettable,
            f"{prefix}/never_learned": float((~learned).double().mean()) if n else None,
            f"{prefix}/events_per_sample": float(self.forgets[:n].double().mean()) if n else None,
            f"{prefix}/events_per_sample_per_task": self.per_task_mean(),
            f"{prefix}/events_after_switch": a,
            f"{prefix}/events_inside": b,
            f"{prefix}/switch_share": a / (a + b) if a + b else None,
            f"{prefix}/rate_after_switch": a / ra if ra else None,
            f"{prefix}/rate_inside": b / rb if rb else None,
            f"{prefix}/old_events_after_switch": oa,
            f"{prefix}/old_events_inside": ob,
            f"{prefix}/old_switch_share": oa / (oa + ob) if oa + ob else None,
            f"{prefix}/old_rate_after_switch": oa / roa if roa else None,
            f"{prefix}/old_rate_inside": ob / rob if rob else None,
        }

    def table(self, name: str) -> dict[str, list]:
        """The per-sample table (columns COLUMNS) of the samples tracked so far."""
        n = self.ends[self.experience]
        spans = list(pairwise([0, *self.ends]))
        task = [t for t, (a, b) in enumerate(spans) for _ in range(b - a)][:n]
        index = [i - spans[t][0] for i, t in enumerate(task)]
        return {
            "set": [name] * n,
            "task": task,
            "index": index,
            "forgetting_events": self.forgets[:n].tolist(),
            "learning_events": self.learns[:n].tolist(),
            "first_learned": self.first[:n].tolist(),
            "last_correct": self.correct[:n].int().tolist(),
        }

    def state_dict(self) -> dict:
        return {
            "correct": self.correct.clone(),
            "forgets": self.forgets.clone(),
            "learns": self.learns.clone(),
            "first": self.first.clone(),
            "tally": self.tally,
            "marks": [self.experience, self.switch, self.last, int(self.total)],
        }

    def load_state_dict(self, state: dict) -> None:
        for key in ("correct", "forgets", "learns", "first"):
            getattr(self, key).copy_(state[key])
        a, oa, ra, roa, b, ob, rb, rob = state["tally"]
        self.events = torch.tensor([a, oa, b, ob], device=self.events.device)
        self.rows = [ra, roa, rb, rob]
        self.experience, self.switch, self.last, total = state["marks"]
        self.total = torch.tensor(total, device=self.events.device)


def train_probe(stream, n: int, seed: int, device, batch_size: int = 4096) -> Evaluator:
    """An evaluator over `n` training samples per task (fewer if a task has fewer), drawn once
    with their own generator (seeded from the run seed), so the training RNG is untouched."""
    gen = torch.Generator().manual_seed(seed + 104729)
    samples = []
    for e in stream.experiences:
        idx = torch.randperm(len(e.y), generator=gen)[:n].to(e.x.device)
        samples.append((e.x[idx], e.y[idx]))
    return Evaluator(stream, device, batch_size, samples=samples)


def write_table(path, tables: list[dict[str, list]]) -> None:
    """Write the per-sample tables (one after another) as one CSV file."""
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for t in tables:
            w.writerows(zip(*(t[c] for c in COLUMNS), strict=True))
