"""The stacked optimizer of a group of members: `StackedOptimizer` steps the stacked
parameters (SGD, momentum, Adam, RMSprop, Adagrad and weight decay are elementwise, so members
stay independent); `MemberOptimizer` is one member's view of it (parameter groups,
per-parameter state, a single run's state dict).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from cl.context import Context
from cl.members.stacked import StackedModel


def _mine(value, stacked: torch.Tensor, m: int):
    """Member m's slice of an optimizer-state value shaped like the stacked parameter (a view);
    anything else (Adam's scalar `step`) is shared by the members."""
    if torch.is_tensor(value) and value.dim() > 0 and value.shape == stacked.shape:
        return value[m]
    return value


class MemberOptimizer:
    """Member m's view of the stacked optimizer: its parameter groups hold the member model's
    parameters (views of its slice), `state` its slices of the per-parameter state (views:
    CBP zeroes a replaced unit's momentum through it), `state_dict` a single run's optimizer
    state dict (for the member's checkpoint)."""

    def __init__(self, stacked: StackedOptimizer, model: nn.Module, m: int):
        self.stacked, self.model, self.m = stacked, model, m

    @property
    def param_groups(self):
        params = [p for p in self.model.parameters()]
        return [{**g, "params": params} for g in self.stacked.param_groups[:1]]

    @property
    def state(self) -> dict:
        inner, out = self.stacked.inner.state, {}
        for s, p in zip(self.stacked.model.params, self.model.parameters(), strict=True):
            if s in inner:
                out[p] = {k: _mine(v, s, self.m) for k, v in inner[s].items()}
        return out

    def state_dict(self) -> dict:
        full = self.stacked.inner.state_dict()
        params = list(self.stacked.model.params)
        state = {
            i: {k: _clone(_mine(v, params[i], self.m)) for k, v in st.items()}
            for i, st in full["state"].items()
        }
        return {"state": state, "param_groups": copy.deepcopy(full["param_groups"])}


def _clone(value):
    return value.clone() if torch.is_tensor(value) else value


class StackedOptimizer:
    """The optimizer of the stacked parameters; `step` first adds the gradients the member
    models received (from member-wise strategy terms) to their slices of the stack.

    After gradient surgery (`unfold`) a member whose gradient of a parameter is None is not
    stepped on that parameter, as a single run's optimizer skips it (center loss's frozen
    head): with every member skipping it the stacked parameter is skipped; with some, their
    slices of the parameter and of its state are put back after the step."""

    def __init__(self, inner: torch.optim.Optimizer, model: StackedModel, members: list[Context]):
        self.inner, self.model, self.members = inner, model, members
        self.unfolded: set[int] = set()

    @property
    def param_groups(self):
        return self.inner.param_groups

    @property
    def state(self):
        return self.inner.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)
        self.unfolded = set()
        for c in self.members:
            for p in c.model.parameters():
                p.grad = None

    def fold(self) -> dict[int, list[int]]:
        """Member models' gradients -> their slices of the stacked gradients; returns the
        members skipping each parameter (index -> members) after surgery."""
        skipped: dict[int, list[int]] = {}
        for m, c in enumerate(self.members):
            for i, (s, p) in enumerate(zip(self.model.params, c.model.parameters(), strict=True)):
                if p.grad is None:
                    if m in self.unfolded:
                        skipped.setdefault(i, []).append(m)
                    continue
                if s.grad is None:
                    s.grad = torch.zeros_like(s)
                s.grad[m] += p.grad
                p.grad = None
        self.unfolded = set()
        return skipped

    def unfold(self, m: int) -> None:
        """Member m's whole gradient into its model's parameters (for gradient surgery)."""
        c = self.members[m]
        self.unfolded.add(m)
        for s, p in zip(self.model.params, c.model.parameters(), strict=True):
            g = torch.zeros_like(p) if s.grad is None else s.grad[m].clone()
            p.grad = g if p.grad is None else g + p.grad
            if s.grad is not None:
                s.grad[m].zero_()

    def step(self) -> None:
        kept = []
        for i, ms in self.fold().items():
            s = self.model.params[i]
            if len(ms) == len(self.members):
                s.grad = None
                continue
            state = {
                k: v[ms].clone()
                for k, v in self.inner.state.get(s, {}).items()
                if torch.is_tensor(v) and v.dim() > 0 and v.shape == s.shape
            }
            kept.append((s, ms, s.data[ms].clone(), state))
        self.inner.step()
        with torch.no_grad():
            for s, ms, data, state in kept:
                s.data[ms] = data
                for k, v in state.items():
                    self.inner.state[s][k][ms] = v

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)

    def load_members(self, dicts: list[dict]) -> None:
        """The members' optimizer state dicts (`MemberOptimizer.state_dict`) joined back."""
        state = {}
        for i, s in enumerate(self.model.params):
            per = [d["state"].get(i) for d in dicts]
            if per[0] is None:
                continue
            state[i] = {
                k: torch.stack([p[k] for p in per])
                if k != "step" and torch.is_tensor(v) and v.shape == s.shape[1:]
                else v
                for k, v in per[0].items()
            }
        self.inner.load_state_dict({"state": state, "param_groups": dicts[0]["param_groups"]})
