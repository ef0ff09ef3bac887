"""A strategy's private random stream (CBP's fresh weights, shrink & perturb's noise)."""

from __future__ import annotations

import hashlib

import torch

from cl.context import Context


class RngStream:
    """A torch.Generator on `device`, seeded from the run's generator at the first `setup`
    (one draw from it, so the run's other random numbers do not depend on how many this
    stream takes), saved and restored through the owner's state dict so a resumed run draws
    the same numbers. A saved state of another device type (a run resumed on a new device)
    reseeds the stream from that state (`derived_seed`), repeatably."""

    def __init__(self):
        self.state: torch.Tensor | None = None  # the saved state, until `setup` builds `gen`
        self.gen: torch.Generator | None = None

    def setup(self, ctx: Context, device: torch.device | str = "cpu") -> None:
        if self.state is None:
            seed = int(torch.randint(2**62, (1,), generator=ctx.generator))
            self.state = torch.Generator(device).manual_seed(seed).get_state()
        self.gen = torch.Generator(device)
        self._set(self.state)

    def _set(self, state: torch.Tensor) -> None:
        try:
            self.gen.set_state(state)
        except RuntimeError:  # a state from another device type
            self.gen.manual_seed(derived_seed(state))

    def state_dict(self) -> torch.Tensor | None:
        return self.gen.get_state() if self.gen is not None else self.state

    def load_state_dict(self, state: torch.Tensor) -> None:
        self.state = state
        if self.gen is not None:
            self._set(state)


def derived_seed(state: torch.Tensor) -> int:
    """A seed drawn from a generator state: CPU (Mersenne twister) and CUDA (Philox) states
    differ in kind, so a run resumed on the other device type reseeds from the saved state."""
    return int.from_bytes(hashlib.sha256(state.numpy().tobytes()).digest()[:8], "little")
