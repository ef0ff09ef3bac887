"""Negative flip rate at every task switch (Yan et al., CVPR 2021)."""

from __future__ import annotations

import numpy as np
import torch

from cl import metrics
from cl.trackers.base import Env, Evaluation, Tracker


class NegativeFlips(Tracker):
    keys = ("forgetting/nfr", "nfr", "nfr_per_switch")

    def __init__(self):
        self.nfr: list[float] = []
        self.hits: torch.Tensor | None = None  # per-sample correctness at the last switch

    def row(self, ev: Evaluation) -> dict:
        """On tasks 0..k-1, between the ends of experiences k-1 and k."""
        if not ev.boundary or ev.iteration == 0:
            return {}
        out, k = {}, ev.experience
        if self.hits is not None and k > 0:
            n = ev.ends[k - 1]
            nfr = metrics.negative_flip_rate(self.hits[:n].cpu().numpy(), ev.hits[:n].cpu().numpy())
            self.nfr.append(nfr)
            out["forgetting/nfr"] = nfr
        self.hits = ev.hits
        return out

    def summary(self) -> dict:
        return {"nfr": float(np.mean(self.nfr)) if self.nfr else None, "nfr_per_switch": self.nfr}

    def state_dict(self) -> dict:
        return {"nfr": list(self.nfr), "hits": self.hits}

    def load_state_dict(self, state: dict) -> None:
        self.nfr, self.hits = list(state["nfr"]), state["hits"]


def make(cfg: None, env: Env) -> NegativeFlips:
    return NegativeFlips()
