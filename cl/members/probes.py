"""The group's trainability probe: the members' throwaway copies fitted as one stacked model.

A single run's trainability probe (`cl.plasticity.TrainabilityProbe`) trains a copy of its
model with a fresh Adam on random targets, twice per probe. In a group, `stack_probes` gives
each member's trainability tracker a `MemberProbe` in place of its probe: the tracker calls it
as it calls its own (its `row`, unchanged), and the first member's call fits every member's
copy at once (`StackedModel`: vmap of functional_call; Adam is elementwise, so the members
stay independent), each on its own probe inputs with its own target generator's draws, in the
single run's order. The other members' calls take their results.
"""

from __future__ import annotations

import torch

from cl.members.stacked import StackedModel
from cl.plasticity import OFFSETS, TrainabilityProbe, bare_copy, probe_row


class StackedProbe:
    """The members' trainability probes (same steps, step size and input count), fitted
    together; `row(m, models)` is member m's row of the probe now."""

    def __init__(self, probes: list[TrainabilityProbe]):
        self.probes = probes
        self.x = torch.stack([p.x for p in probes])
        self.steps, self.lr = probes[0].steps, probes[0].lr
        self.rows: list[dict | None] = [None] * len(probes)

    def row(self, m: int, models: list[torch.nn.Module]) -> dict[str, float]:
        if self.rows[m] is None:  # a new probe (each member takes its row once per probe)
            fits = [self.fit(models, offset) for offset in OFFSETS]
            self.rows = [probe_row([f[i] for f in fits]) for i in range(len(models))]
        row, self.rows[m] = self.rows[m], None
        return row  # type: ignore[return-value]

    def fit(self, models: list[torch.nn.Module], offset: bool) -> list[tuple[float, float]]:
        """Each member's (initial, final) MSE of a copy of its model trained on fresh random
        targets: `TrainabilityProbe.fit`, the members' copies stacked."""
        probe = StackedModel([bare_copy(model) for model in models]).train()
        opt = torch.optim.Adam(probe.params, lr=self.lr)
        y = initial = None
        for _ in range(self.steps):
            out = probe(self.x)
            if y is None:
                y = torch.stack(
                    [p.target(o, offset) for p, o in zip(self.probes, out, strict=True)]
                )
            losses = (out - y).square().flatten(1).mean(1)  # each member's F.mse_loss
            initial = losses.detach().tolist() if initial is None else initial
            opt.zero_grad(set_to_none=True)
            losses.sum().backward()
            opt.step()
        with torch.no_grad():
            final = (probe(self.x) - y).square().flatten(1).mean(1).tolist()
        return list(zip(initial, final, strict=True))  # type: ignore[arg-type]


class MemberProbe:
    """Member m's trainability probe in a group: called by its tracker with its model, it
    answers from the group's stacked fit; its state is the member's own probe's (the target
    generator), so the member's checkpoint is a single run's."""

    def __init__(self, group: StackedProbe, m: int, models: list[torch.nn.Module]):
        self.group, self.m, self.models = group, m, models
        self.own = group.probes[m]

    def __call__(self, model: torch.nn.Module) -> dict[str, float]:
        return self.group.row(self.m, self.models)

    def state_dict(self) -> dict:
        return self.own.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.own.load_state_dict(state)


def stack_probes(monitors: list, models: list[torch.nn.Module]) -> None:
    """Give the members' trainability trackers (if on) one stacked probe."""
    trackers = [mon.trackers.get("trainability") for mon in monitors]
    if trackers[0] is None:
        return
    group = StackedProbe([t.probe for t in trackers])
    for m, t in enumerate(trackers):
        t.probe = MemberProbe(group, m, models)
