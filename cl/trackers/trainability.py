"""Trainability probe (Lyle et al., ICML 2023): the loss a copy of the model reaches on fresh
random targets, before training, at experience ends and every `plasticity.probe_every`
iterations; the summary compares the last probe with the first."""

from __future__ import annotations

from cl.plasticity import TrainabilityProbe
from cl.schema import PlasticityConfig
from cl.trackers.base import Env, Evaluation, Tracker

SUFFIXES = ("", "_offset")


class Trainability(Tracker):
    keys = tuple(
        f"{k}{s}"
        for s in SUFFIXES
        for k in (
            "plasticity/probe_loss", "plasticity/probe_loss_initial", "plasticity/probe_gain",
            "probe_loss", "probe_loss_initial", "plasticity_loss",
        )
    )  # fmt: skip

    def __init__(self, cfg: PlasticityConfig, probe: TrainabilityProbe):
        self.every, self.probe = cfg.probe_every, probe
        self.losses: dict[str, float] = {}  # initial{suffix}, last{suffix}: probe losses

    def due(self, iteration: int) -> bool:
        return self.every > 0 and iteration % self.every == 0

    def row(self, ev: Evaluation) -> dict:
        if not (ev.boundary or self.due(ev.iteration)):
            return {}
        row = self.probe(ev.model)
        for suffix in SUFFIXES:
            loss = row[f"plasticity/probe_loss{suffix}"]
            self.losses.setdefault(f"initial{suffix}", loss)
            self.losses[f"last{suffix}"] = loss
        return row

    def summary(self) -> dict:
        out = {}
        for suffix in SUFFIXES:
            first, last = self.losses.get(f"initial{suffix}"), self.losses.get(f"last{suffix}")
            out[f"probe_loss{suffix}"], out[f"probe_loss_initial{suffix}"] = last, first
            out[f"plasticity_loss{suffix}"] = None if last is None else last - first
        return out

    def state_dict(self) -> dict:
        return {"losses": dict(self.losses), "probe": self.probe.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.losses = dict(state["losses"])
        self.probe.load_state_dict(state["probe"])


def make(cfg: PlasticityConfig, env: Env) -> Trainability | None:
    if not cfg.trainability_probe:
        return None
    probe = TrainabilityProbe(env.stream, env.seed, cfg.probe_inputs, cfg.probe_steps, cfg.probe_lr)
    return Trainability(cfg, probe)
