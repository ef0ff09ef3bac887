"""The stacked model, data and optimizer of a group of members (one tensor per parameter,
with a leading member axis).

- `StackedModel` runs the members with `torch.func.vmap(functional_call)`; each member's own
  model keeps its parameters as views of its slice, so whatever reads the member model (its
  strategies, its trackers) sees its current weights, and forward hooks registered on a
  member model's modules (CBP's activation taps) fire with that member's slice;
- experiences, batches and evaluation samples are `[members, samples, ...]`;
- `StackedOptimizer` steps the stacked parameters (SGD, momentum, Adam, RMSprop, Adagrad and
  weight decay are elementwise, so members stay independent); `MemberOptimizer` is one
  member's view of it (parameter groups, per-parameter state, state dict).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from cl.context import Context
from cl.errors import UserError

# --- the model ---------------------------------------------------------------------------------


class _Method(nn.Module):
    """`base.<method>` as a module's forward, so functional_call can run it."""

    def __init__(self, base: nn.Module, method: str):
        super().__init__()
        self.m, self.method = base, method

    def forward(self, x):
        return getattr(self.m, self.method)(x)


class _Part:
    """A stacked model's `head` (callable like the member models' heads)."""

    def __init__(self, model: StackedModel, method: str):
        self.model, self.method = model, method

    def __call__(self, x):
        return self.model.run(self.method, x)


class StackedModel(nn.Module):
    """The members' models as one: parameter `name` is `params[name]` with a leading member
    axis; `forward`, `features`, `head` take and return `[members, batch, ...]`."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        params, buffers = stack_module_state(models)
        self.names = list(params)
        self.params = nn.ParameterList([nn.Parameter(params[n]) for n in self.names])
        self.buffer_names = list(buffers)
        for i, n in enumerate(self.buffer_names):
            self.register_buffer(f"buffer{i}", buffers[n])
        base = copy.deepcopy(models[0]).to("meta")
        self._calls = {m: _Method(base, m) for m in ("forward", "features", "head")}
        self.head = _Part(self, "head")
        self.members = len(models)
        self.member_models = list(models)  # a plain list: not submodules of the stack
        # each member model's parameters become views of its slice of the stack
        for m, model in enumerate(models):
            named = dict(model.named_parameters())
            for n, p in zip(self.names, self.params, strict=True):
                named[n].data = p.data[m]

    def _tapped(self) -> list[str]:
        """The modules (by name) on which the member models have forward hooks."""
        return [n for n, mod in self.member_models[0].named_modules() if mod._forward_hooks]

    def run(self, method: str, x: torch.Tensor) -> torch.Tensor:
        state = {f"m.{n}": p for n, p in zip(self.names, self.params, strict=True)}
        for i, n in enumerate(self.buffer_names):
            state[f"m.{n}"] = getattr(self, f"buffer{i}")
        call = self._calls[method]
        taps = self._tapped()
        if not taps:
            return vmap(lambda s, x: functional_call(call, s, (x,)))(state, x)
        # forward hooks of the member models: capture the tapped modules' inputs and outputs
        # inside vmap (returned as extra outputs), then call each member's hooks on its slice
        seen: dict[str, tuple] = {}
        modules = dict(call.m.named_modules())
        handles = [
            modules[n].register_forward_hook(lambda mod, i, o, n=n: seen.__setitem__(n, (i, o)))
            for n in taps
        ]

        def one(s, x):
            seen.clear()
            out = functional_call(call, s, (x,))
            return out, dict(seen)

        try:
            out, captured = vmap(one)(state, x)
        finally:
            for h in handles:
                h.remove()
        for n, (inputs, output) in captured.items():
            for m, model in enumerate(self.member_models):
                mod = model.get_submodule(n)
                for hook in list(mod._forward_hooks.values()):
                    hook(mod, tuple(t[m] for t in inputs), output[m])
        return out

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.run("features", x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run("forward", x)

    def train(self, mode: bool = True):
        for call in self._calls.values():
            call.m.train(mode)
        for model in self.member_models:  # what their hooks read (`module.training`)
            model.train(mode)
        return super().train(mode)


# --- the stream ---------------------------------------------------------------------------------


class StackedExperience:
    def __init__(self, experiences):
        e0 = experiences[0]
        self.index = e0.index
        self.classes = sorted({c for e in experiences for c in e.classes})
        self.x = torch.stack([e.x for e in experiences])
        self.y = torch.stack([e.y for e in experiences])
        self.eval_x = torch.stack([e.eval_x for e in experiences])
        self.eval_y = torch.stack([e.eval_y for e in experiences])


class StackedStream:
    def __init__(self, streams):
        s0 = streams[0]
        sizes = {tuple(len(e.y) for e in s.experiences) for s in streams}
        if len(sizes) != 1:
            raise UserError("the members' experiences differ in size; use sweep.executor=local")
        self.name, self.n_classes = s0.name, s0.n_classes
        self.input_shape, self.task_incremental = s0.input_shape, s0.task_incremental
        self.experiences = [
            StackedExperience(es) for es in zip(*[s.experiences for s in streams], strict=True)
        ]
        self.streams = streams

    @property
    def n_tasks(self) -> int:
        return len(self.experiences)

    def class_mask(self, device) -> torch.Tensor:
        return torch.stack([s.class_mask(device) for s in self.streams])


# --- the optimizer -----------------------------------------------------------------------------


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
