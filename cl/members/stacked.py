"""The stacked model and data of a group of members (one tensor per parameter, with a
leading member axis).

- `StackedModel` runs the members with `torch.func.vmap(functional_call)`; each member's own
  model keeps its parameters as views of its slice, so whatever reads the member model (its
  strategies, its trackers) sees its current weights, and forward hooks registered on a
  member model's modules (CBP's activation taps) fire with that member's slice;
- experiences, batches and evaluation samples are `[members, samples, ...]`.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

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


def _grad_layout(w: torch.Tensor) -> torch.Tensor:
    """A stacked linear weight `[members, out, in]` stored as vmap's backward writes its
    gradient (`[members, in, out]` in memory, transposed): the gradient is then kept as it
    comes instead of being copied into the parameter's layout at every backward, and its
    elementwise optimizer state shares that layout (same values, about a third less time per
    step of a 256-unit MLP on one CPU thread)."""
    return w.transpose(1, 2).contiguous().transpose(1, 2)


class StackedModel(nn.Module):
    """The members' models as one: parameter `name` is `params[name]` with a leading member
    axis; `forward`, `features`, `head` take and return `[members, batch, ...]`."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        params, buffers = stack_module_state(models)
        self.names = list(params)
        mods = models[0].named_modules()
        linear = {f"{n}.weight".lstrip(".") for n, m in mods if isinstance(m, nn.Linear)}
        self.params = nn.ParameterList(
            [
                nn.Parameter(_grad_layout(params[n]) if n in linear else params[n])
                for n in self.names
            ]
        )
        self.buffer_names = list(buffers)
        for i, n in enumerate(self.buffer_names):
            self.register_buffer(f"buffer{i}", buffers[n])
        base = copy.deepcopy(models[0]).to("meta")
        for mod in base.modules():  # member 0's hooks (copied with it) are replayed in `run`
            mod._forward_hooks.clear()
            mod._forward_pre_hooks.clear()
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
