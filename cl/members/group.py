"""Which configs can train as a group of members, and the stacking itself: `stack` joins
the members' run states (built by `api.build_state`, fresh or from their checkpoints) into
one run state for the single run's loop; `unstack` leaves each member where the group stands.
"""

from __future__ import annotations

from typing import Any

from cl.members.checkpoint import join
from cl.members.context import MemberContext, MemberWise
from cl.members.monitor import GroupMonitor
from cl.members.optimizer import MemberOptimizer, StackedOptimizer
from cl.members.stacked import StackedModel, StackedStream
from cl.runner import Cursor, RunState, make_optimizer
from cl.schema import OptimConfig

ELEMENTWISE = ("sgd", "adam", "rmsprop", "adagrad")


def unsupported(cfg) -> str | None:
    """Why `cfg` cannot train as a member of a stacked group (None: it can)."""
    from cl import plugins
    from cl.strategy import strategy_class

    if plugins.family_of(cfg.strategy).name != plugins.NATIVE:
        return "add-on strategies train through their own loop"
    for name in cfg.strategy:
        if not getattr(strategy_class(name), "member_wise", False):
            return f"strategy {name} does not declare member_wise = True"
    if cfg.optim.name not in ELEMENTWISE:
        return f"optim={cfg.optim.name} is not elementwise"
    if cfg.model.name == "resnet" or cfg.model.name not in ("mlp", "cnn"):
        return f"model={cfg.model.name} (batch norm) cannot be stacked"
    return None


def stack(
    states: list[RunState], optim: OptimConfig, ckpts: list[dict[str, Any]] | None = None
) -> RunState:
    """One run state that trains `states` (built by `api.build_state`) as one stacked model,
    with the optimizer of their config's `optim` section over the stacked parameters; with
    `ckpts` (the members' checkpoints, from which `states` were built) where they stopped."""
    members = [s.ctx for s in states]
    model = StackedModel([c.model for c in members])
    stream = StackedStream([c.stream for c in members])
    masks = stream.class_mask(members[0].device) if stream.task_incremental else None
    group = MemberContext(
        model=model,
        optimizer=None,  # type: ignore[arg-type]
        stream=stream,  # type: ignore[arg-type]
        device=members[0].device,
        epochs=states[0].train.epochs,
        class_mask=masks,
    )
    group.members = members
    group.optimizer = StackedOptimizer(make_optimizer(optim, model), model, members)  # type: ignore
    for m, c in enumerate(members):
        c.optimizer = MemberOptimizer(group.optimizer, c.model, m)  # type: ignore[assignment]
    strategies = []
    for i in range(len(states[0].strategies)):
        instances = [s.strategies[i] for s in states]
        for s, c in zip(instances, members, strict=True):
            s.setup(c)  # again, now that the member's parameters are views of the stack
        strategies.append(MemberWise(instances, members, group))
    monitor = GroupMonitor([s.monitor for s in states], members, masks)
    train, spec = states[0].train, states[0].spec
    state = RunState(train, group, strategies, monitor, Cursor(), spec)  # type: ignore[arg-type]
    if ckpts is not None:
        join(state, ckpts)
    return state


def unstack(group: RunState, states: list[RunState]) -> None:
    """Leave each member's own state where the group stands (counters, cursor)."""
    group.ctx.sync()
    for s in states:
        s.ctx.seen_classes = s.ctx.seen_classes or list(group.ctx.seen_classes)
