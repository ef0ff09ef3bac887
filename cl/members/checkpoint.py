"""A group checkpoints as its members: at the group's safe points, each member's run folder
gets an ordinary checkpoint (`cl.checkpoint`'s format) cut from the stack, so `cl run
--resume <member folder>` continues that member alone and `cl sweep --resume` joins the
members' checkpoints back into the group (`join`), which then ends as an uninterrupted group.

What is the group's and not a member's: the stacked optimizer state (each member gets its
slices, Adam's scalar `step` is shared), the cursor (each member its slice of the epoch's
sample order), the counters and the process's global RNGs (the same in every member's file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cl import checkpoint
from cl.runner import Cursor, RunState
from cl.schema import RunSection


def _own(value: Any) -> Any:
    """`value` with every tensor copied: a member's parameters are views of the stack, and
    `torch.save` of a view writes the whole stacked storage."""
    if torch.is_tensor(value):
        return value.clone()
    if isinstance(value, dict):
        return {k: _own(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_own(v) for v in value)
    return value


def member_state_dicts(
    group: RunState, states: list[RunState], rows: list[int], run_ids: list[str], digests
) -> list[dict[str, Any]]:
    """Each member's checkpoint where the group stands (after its rows were logged)."""
    ctx, cur = group.ctx, group.cursor
    ctx.sync()  # type: ignore[attr-defined]
    out = []
    for m, s in enumerate(states):
        order = None if cur.order is None else cur.order[m]
        s.cursor = Cursor(cur.experience, cur.started, cur.epoch, cur.batch, order)
        s.ctx.seen_classes = s.ctx.seen_classes or list(ctx.seen_classes)
        out.append(_own(checkpoint.state_dict(s, rows[m], run_ids[m], digests[m])))
    return out


class GroupCheckpointer(checkpoint.Checkpointer):
    """The single run's schedule (`run.checkpoint_every`, minutes, experience ends, stops),
    decided once for the group; every member's folder gets its checkpoint at the same point."""

    def __init__(self, group: RunState, folders: list[Path], make, run: RunSection):
        super().__init__(group, folders[0], make, run)
        self.folders = folders

    def write(self) -> None:
        for folder, data in zip(self.folders, self.make(), strict=True):
            checkpoint.save(folder, data)


def join(group: RunState, ckpts: list[dict[str, Any]]) -> None:
    """The group as the members' checkpoints (one iteration) left it: the members' own parts
    (model, strategies, monitor, generator) were restored by `api.build_state`; here the
    stacked optimizer state, the cursor and the counters."""
    ctx = group.ctx
    ctx.optimizer.load_members([c["optimizer"] for c in ckpts])  # type: ignore[attr-defined]
    c0, cur = ckpts[0]["context"], ckpts[0]["cursor"]
    ctx.experience, ctx.iteration = c0["experience"], c0["iteration"]
    ctx.seen_classes = sorted({k for c in ckpts for k in c["context"]["seen_classes"]})
    orders = [c["cursor"]["order"] for c in ckpts]
    order = None if orders[0] is None else torch.stack(orders).to(ctx.device)
    group.cursor = Cursor(cur["experience"], cur["started"], cur["epoch"], cur["batch"], order)
    ctx.sync()  # type: ignore[attr-defined]
