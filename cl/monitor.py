"""What the runner records: evaluation rows, online accuracy, plasticity probes (including the
trainability probe), flips, example forgetting.

The runner calls `step` after every training iteration and `row` when `due`; the monitor
turns the model's state into one logged row and keeps what the summary needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from cl import example_forgetting, metrics
from cl.context import Context
from cl.errors import RunFailed
from cl.evaluation import Evaluator
from cl.plasticity import PlasticityProbe, TrainabilityProbe
from cl.schema import RunConfig


@dataclass
class Record:
    """Per evaluation: accuracies (NaN where not scored), experience, iteration; per task:
    online batch accuracies; per switch: negative flip rate; the last plasticity row."""

    accs: list[list[float]] = field(default_factory=list)
    experience: list[int] = field(default_factory=list)
    iteration: list[int] = field(default_factory=list)
    online: dict[int, list[float]] = field(default_factory=dict)
    nfr: list[float] = field(default_factory=list)
    plasticity: dict[str, float] = field(default_factory=dict)
    trainability: dict[str, float] = field(default_factory=dict)  # first and last probe rows


class Monitor:
    def __init__(self, cfg: RunConfig, ctx: Context):
        self.cfg, self.stream = cfg, ctx.stream
        self.evaluator = Evaluator(ctx.stream, ctx.device, cfg.eval.batch_size)
        self.streaming = metrics.StreamingMetrics(tuple(cfg.metrics.windows))
        self.record = Record()
        self.window: dict[str, list] = {"loss": [], "correct": [], "seen": []}
        self.grad_norm: float | None = None
        self.stats: dict[str, list[float]] = {}  # strategy metrics since the last row
        self.stats_total: dict[str, list[float]] = {}  # key -> [sum, count] over the run
        self.boundary_hits: torch.Tensor | None = None  # per-sample correctness at last switch
        self.probe = None
        self.iteration = 0
        p = cfg.plasticity
        if p.every > 0:
            gen = torch.Generator().manual_seed(cfg.seed + 7919)  # training RNG stays untouched
            probes = [
                e.x[torch.randperm(len(e.y), generator=gen)[: p.probe_size].to(e.x.device)]
                for e in ctx.stream.experiences
            ]
            self.probe = PlasticityProbe(ctx.model, probes, p.dead_threshold)
        self.trainability = None
        if p.trainability_probe:
            self.trainability = TrainabilityProbe(
                ctx.stream, cfg.seed, p.probe_inputs, p.probe_steps, p.probe_lr
            )
        ef = cfg.metrics.example_forgetting
        # set name -> (its evaluator, or None for the row's own evaluation, tracker)
        self.forgetting: dict[str, tuple] = {}
        if ef.enabled:
            sets = {"eval": None}
            if ef.train_probe:
                sets["train"] = example_forgetting.train_probe(
                    ctx.stream, ef.train_probe, cfg.seed, ctx.device, cfg.eval.batch_size
                )
            for name, ev in sets.items():
                ends = (ev or self.evaluator).ends
                tracker = example_forgetting.Tracker(ends, ctx.device, ef.window)
                self.forgetting[name] = (ev, tracker)

    def probe_due(self, iteration: int) -> bool:
        return self.probe is not None and iteration % self.cfg.plasticity.every == 0

    def trainability_due(self, iteration: int) -> bool:
        every = self.cfg.plasticity.probe_every
        return self.trainability is not None and every > 0 and iteration % every == 0

    def due(self, iteration: int) -> bool:
        return (
            iteration % self.cfg.eval.every == 0
            or self.probe_due(iteration)
            or self.trainability_due(iteration)
        )

    def step(
        self,
        loss: torch.Tensor,
        correct: torch.Tensor,
        grad_norm: float | None,
        stats: dict[str, float],
        n: int,
    ) -> None:
        self.window["loss"].append(loss)
        self.window["correct"].append(correct)
        self.window["seen"].append(n)
        if grad_norm is not None:
            self.grad_norm = grad_norm
        for key, value in stats.items():
            self.stats.setdefault(key, []).append(float(value))
            total = self.stats_total.setdefault(key, [0.0, 0.0])
            total[0], total[1] = total[0] + float(value), total[1] + 1

    def row(self, ctx: Context, epoch: int, boundary: bool) -> dict:
        """Evaluate and return the row for this iteration (all tasks at boundaries)."""
        k, n_tasks = ctx.experience, self.stream.n_tasks
        self.iteration = ctx.iteration
        n_eval = n_tasks if boundary or self.cfg.eval.unseen else k + 1
        accs, losses, hits = self.evaluator(ctx.model, n_eval)
        row: dict = {"iteration": ctx.iteration, "experience": k, "epoch": epoch}
        row.update(self._train_stats(k))
        row.update({key: sum(v) / len(v) for key, v in self.stats.items()})
        self.stats = {}
        for i, (a, lo) in enumerate(zip(accs, losses, strict=True)):
            row[f"eval/acc/task_{i}"] = a
            row[f"eval/loss/task_{i}"] = lo
        row.update(self.streaming.update(k, accs))
        if boundary and ctx.iteration > 0:
            row.update(self._flips(k, hits))
        if self.probe_due(ctx.iteration) and ctx.iteration > 0:
            self.record.plasticity = self.probe(ctx.model, k)
            if self.grad_norm is not None:
                self.record.plasticity["plasticity/grad_norm"] = self.grad_norm
            row.update(self.record.plasticity)
        if ctx.iteration > 0:
            row.update(self._example_forgetting(ctx, hits))
        if self.trainability is not None and (boundary or self.trainability_due(ctx.iteration)):
            probe = self.trainability(ctx.model)
            for suffix in ("", "_offset"):
                loss = probe[f"plasticity/probe_loss{suffix}"]
                self.record.trainability.setdefault(f"initial{suffix}", loss)
                self.record.trainability[f"last{suffix}"] = loss
            row.update(probe)
        r = self.record
        r.accs.append(accs + [float("nan")] * (n_tasks - len(accs)))
        r.experience.append(k)
        r.iteration.append(ctx.iteration)
        return row

    def _train_stats(self, k: int) -> dict:
        w = self.window
        if not w["loss"]:
            return {}
        steps = len(w["loss"])
        loss = (w["loss"][0] if steps == 1 else torch.stack(w["loss"]).sum()).item() / steps
        if not math.isfinite(loss):
            raise RunFailed(
                f"the training loss became {loss} in the {steps} iteration(s) before iteration "
                f"{self.iteration} (experience {k}); lower optim.lr or check the data. Rows "
                "logged so far are kept."
            )
        hits = w["correct"][0].item() if steps == 1 else torch.stack(w["correct"]).tolist()
        hits = [hits] if steps == 1 else hits
        self.record.online.setdefault(k, []).extend(
            h / n for h, n in zip(hits, w["seen"], strict=True)
        )
        out = {"train/loss": loss, "train/online_acc": sum(hits) / sum(w["seen"])}
        for values in w.values():
            values.clear()
        return out

    def _example_forgetting(self, ctx: Context, hits: torch.Tensor) -> dict:
        """Forgetting events of the seen tasks' samples at this evaluation (Toneva et al.)."""
        out, k, it = {}, ctx.experience, ctx.iteration
        for name, (ev, tracker) in self.forgetting.items():
            h = hits if ev is None else ev(ctx.model, k + 1)[2]
            out[f"example_forgetting/{name}/events"] = tracker.update(h, k, it)
            out[f"example_forgetting/{name}/cumulative"] = tracker.total
        return out

    def forgetting_tables(self) -> list[dict[str, list]]:
        """The per-sample tables of example forgetting (one per tracked set)."""
        return [t.table(name) for name, (_, t) in self.forgetting.items()]

    def _flips(self, k: int, hits: torch.Tensor) -> dict:
        """Negative flip rate on tasks 0..k-1 between the ends of experiences k-1 and k."""
        out = {}
        if self.boundary_hits is not None and k > 0:
            n = self.evaluator.ends[k - 1]
            nfr = metrics.negative_flip_rate(
                self.boundary_hits[:n].cpu().numpy(), hits[:n].cpu().numpy()
            )
            self.record.nfr.append(nfr)
            out["forgetting/nfr"] = nfr
        self.boundary_hits = hits
        return out

    def state_dict(self) -> dict:
        """Everything recorded so far, as tensors and plain data (for checkpoints)."""
        r, w = self.record, self.window
        f64 = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731 - exact for floats
        return {
            "accs": f64(r.accs).reshape(len(r.accs), self.stream.n_tasks),
            "experience": list(r.experience),
            "iteration": list(r.iteration),
            "online": {k: f64(v) for k, v in r.online.items()},
            "nfr": list(r.nfr),
            "plasticity": dict(r.plasticity),
            "trainability": dict(r.trainability),
            "trainability_rng": self.trainability.state_dict() if self.trainability else None,
            "example_forgetting": {n: t.state_dict() for n, (_, t) in self.forgetting.items()},
            "window": {
                "loss": torch.stack(w["loss"]) if w["loss"] else None,
                "correct": torch.stack(w["correct"]) if w["correct"] else None,
                "seen": list(w["seen"]),
            },
            "grad_norm": self.grad_norm,
            "stats": {k: list(v) for k, v in self.stats.items()},
            "stats_total": {k: list(v) for k, v in self.stats_total.items()},
            "boundary_hits": self.boundary_hits,
            "iteration_at_row": self.iteration,
            "streaming": self.streaming.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        w = state["window"]
        self.record = Record(
            accs=state["accs"].tolist(),
            experience=list(state["experience"]),
            iteration=list(state["iteration"]),
            online={k: v.tolist() for k, v in state["online"].items()},
            nfr=list(state["nfr"]),
            plasticity=dict(state["plasticity"]),
            trainability=dict(state["trainability"]),
        )
        if self.trainability is not None:
            self.trainability.load_state_dict(state["trainability_rng"])
        for name, (_, tracker) in self.forgetting.items():
            tracker.load_state_dict(state["example_forgetting"][name])
        self.window = {
            "loss": [] if w["loss"] is None else list(w["loss"].unbind()),
            "correct": [] if w["correct"] is None else list(w["correct"].unbind()),
            "seen": list(w["seen"]),
        }
        self.grad_norm = state["grad_norm"]
        self.stats = {k: list(v) for k, v in state.get("stats", {}).items()}
        self.stats_total = {k: list(v) for k, v in state.get("stats_total", {}).items()}
        self.boundary_hits = state["boundary_hits"]
        self.iteration = state["iteration_at_row"]
        self.streaming.load_state_dict(state["streaming"])

    def summary(self) -> dict:
        """Final values of every metric (those defined on what was recorded so far)."""
        r, m = self.record, self.cfg.metrics
        out = {}
        if r.accs:
            A, exp, it = np.array(r.accs), np.array(r.experience), np.array(r.iteration)
            out.update(
                metrics.summarize(
                    A,
                    exp,
                    it,
                    self.stream.n_tasks,
                    tuple(m.windows),
                    m.lca_beta,
                    m.transfer_normaliser,
                    m.recovery_tolerance,
                )
            )
        tasks = sorted(r.online)
        all_online = [a for k in tasks for a in r.online[k]]
        speeds = [
            metrics.learning_speed(r.online[k], m.speed_target, m.speed_window) for k in tasks
        ]
        reached = [s for s in speeds if s is not None]
        out |= {
            "online_acc": float(np.mean(all_online)) if all_online else None,
            "online_acc_per_task": [float(np.mean(r.online[k])) for k in tasks],
            "learning_speed": float(np.mean(reached)) if reached else None,
            "learning_speed_per_task": speeds,
            "nfr": float(np.mean(r.nfr)) if r.nfr else None,
            "nfr_per_switch": r.nfr,
        }
        for key in (
            "dead_units",
            "effective_rank",
            "stable_rank",
            "srank_99",
            "weight_mag",
            "grad_norm",
        ):
            out[key] = r.plasticity.get(f"plasticity/{key}")
        out |= {key: total / count for key, (total, count) in self.stats_total.items()}
        for name, (_, tracker) in self.forgetting.items():
            out.update(tracker.summary(f"example_forgetting/{name}"))
        for suffix in ("", "_offset") if self.trainability is not None else ():
            first, last = (
                r.trainability.get(f"initial{suffix}"),
                r.trainability.get(f"last{suffix}"),
            )
            out[f"probe_loss{suffix}"], out[f"probe_loss_initial{suffix}"] = last, first
            out[f"plasticity_loss{suffix}"] = None if last is None else last - first
        return out
