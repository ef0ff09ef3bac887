"""Plasticity probe: dead units, feature ranks, weight magnitude and the gradient norm every
`plasticity.every` iterations (cl/plasticity.py); the summary holds the last probe's values."""

from __future__ import annotations

import torch

from cl.plasticity import PlasticityProbe
from cl.schema import PlasticityConfig
from cl.trackers.base import Env, Evaluation, Step, Tracker

FINAL = ("dead_units", "effective_rank", "stable_rank", "srank_99", "weight_mag", "grad_norm")


class Plasticity(Tracker):
    keys = (
        "plasticity/dead_units", "plasticity/dead_units/{layer}", "plasticity/effective_rank",
        "plasticity/stable_rank", "plasticity/srank_99", "plasticity/weight_mag",
        "plasticity/weight_mag/{layer}", "plasticity/grad_norm", *FINAL,
    )  # fmt: skip

    def __init__(self, cfg: PlasticityConfig, probe: PlasticityProbe | None):
        self.every, self.probe = cfg.every, probe
        self.grad_norm: float | None = None
        self.last: dict[str, float] = {}  # the last probe's row

    def due(self, iteration: int) -> bool:
        return self.probe is not None and iteration % self.every == 0

    def wants_grad_norm(self, iteration: int) -> bool:
        return self.due(iteration)

    def step(self, step: Step) -> None:
        if step.grad_norm is not None:
            self.grad_norm = step.grad_norm

    def row(self, ev: Evaluation) -> dict:
        if not self.due(ev.iteration) or ev.iteration == 0:
            return {}
        self.last = self.probe(ev.model, ev.experience)
        if self.grad_norm is not None:
            self.last["plasticity/grad_norm"] = self.grad_norm
        return self.last

    def summary(self) -> dict:
        return {key: self.last.get(f"plasticity/{key}") for key in FINAL}

    def state_dict(self) -> dict:
        return {"last": dict(self.last), "grad_norm": self.grad_norm}

    def load_state_dict(self, state: dict) -> None:
        self.last, self.grad_norm = dict(state["last"]), state["grad_norm"]


def make(cfg: PlasticityConfig, env: Env) -> Plasticity:
    probe = None
    if cfg.every > 0:
        gen = torch.Generator().manual_seed(env.seed + 7919)  # training RNG stays untouched
        probes = [
            e.x[torch.randperm(len(e.y), generator=gen)[: cfg.probe_size].to(e.x.device)]
            for e in env.stream.experiences
        ]
        probe = PlasticityProbe(env.model, probes, cfg.dead_threshold)
    return Plasticity(cfg, probe)
