"""The member axis: many seeds of one configuration trained as one stacked model, in the
single run's loop (`cl.runner.run_stream`, unchanged).

Each member's state is built by `api.build_state`, exactly as its single run builds it (same
initial weights, stream, evaluation subset, RNG streams), then `group.stack` joins them:

- `cl/members/stacked.py` the stacked model (`torch.func.vmap(functional_call)`) and data;
  each member's own model keeps its parameters as views of its slice;
- `cl/members/optimizer.py` the stacked optimizer and each member's view of it;
- `cl/members/context.py` the group's context and `MemberWise`, which calls a strategy
  that declares `member_wise = True` once per member with that member's own context;
- `cl/members/monitor.py` every member scored in one batched pass, rows fanned out to each
  member's trackers and sinks;
- `cl/members/checkpoint.py` a group checkpoints as its members: one ordinary checkpoint
  per member run folder, cut from the stack and joined back on resume;
- `cl/members/group.py` which configs can be stacked, and the stacking itself.
"""

from cl.members.group import stack, unstack, unsupported

__all__ = ["stack", "unstack", "unsupported"]
