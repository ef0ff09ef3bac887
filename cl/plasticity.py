"""Plasticity metrics: dead units, ranks of the penultimate features, weight magnitude,
gradient norm (Dohare et al., Nature 2024; Lyle et al., ICML 2023). docs/metrics.md defines
each one.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn import functional as F

from cl.models import ACTIVATIONS

# --- functions of a representation or a model -----------------------------------------------


def dead_fraction(h: torch.Tensor, threshold: float = 0.0) -> tuple[int, int]:
    """(dead units, units) of activations h (N, units) or (N, C, H, W) (a channel is a unit):
    dead = |h| <= threshold on every input of the probe (LoP Permuted-MNIST definition)."""
    a = h.abs()
    peak = a.amax(dim=(0, 2, 3)) if a.dim() == 4 else a.amax(dim=0)
    return int((peak <= threshold).sum()), peak.numel()


def singular_values(features: torch.Tensor) -> torch.Tensor:
    """Singular values (descending) of the (N, d) feature matrix, via the smaller Gram matrix."""
    f = features.double().flatten(1)
    gram = f @ f.T if f.shape[0] < f.shape[1] else f.T @ f
    eig = torch.linalg.eigvalsh(gram).clamp_min(0.0)
    return eig.flip(0).sqrt()


def effective_rank(sv: torch.Tensor) -> float:
    """exp(entropy of p_k = s_k / sum s) (Roy & Vetterli 2007; LoP `compute_effective_rank`)."""
    total = sv.abs().sum()
    if total <= 0:
        return 0.0
    p = sv.abs() / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def stable_rank(sv: torch.Tensor) -> float:
    """Classical stable rank ||F||_F^2 / ||F||_2^2 = sum s^2 / s_max^2."""
    return float((sv**2).sum() / sv[0] ** 2) if sv.numel() and sv[0] > 0 else 0.0


def srank(sv: torch.Tensor, mass: float = 0.99) -> int:
    """Smallest k whose top-k singular values hold `mass` of sum s (Kumar et al. srank_delta,
    delta = 0.01; the LoP CIFAR code's "stable rank")."""
    if sv.numel() == 0 or sv.sum() <= 0:
        return 0
    cum = torch.cumsum(sv, 0) / sv.sum()
    return int((cum < mass).sum()) + 1


def weight_magnitude(module: nn.Module) -> tuple[float, int]:
    """(sum |theta|, #parameters) of a module's own parameters."""
    params = list(module.parameters(recurse=False))
    return float(sum(p.detach().abs().sum() for p in params)), sum(p.numel() for p in params)


def gradient_norm(model: nn.Module) -> float:
    """Global L2 norm of the gradients: sqrt(sum_params ||dL/dtheta||^2)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))


# --- the probe ---------------------------------------------------------------------------------


class PlasticityProbe:
    """Measures a model on a fixed probe batch per experience, in one forward pass.

    Hidden layers are the model's activation modules (their outputs); models without any
    (e.g. the ResNet's functional ReLUs) are measured on their penultimate features only.
    The features are `model.features(x)` for cl's models (`features` + `head`), else the
    last activation module's output (e.g. Avalanche's SimpleMLP), else the model's output.
    """

    def __init__(self, model: nn.Module, probes: list[torch.Tensor], threshold: float = 0.0):
        self.probes = probes
        self.threshold = threshold
        act_types = tuple(ACTIVATIONS.values())
        self.activations = [(n, m) for n, m in model.named_modules() if isinstance(m, act_types)]
        self.layers = [
            (n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)
        ]

    def __call__(self, model: nn.Module, experience: int) -> dict[str, float]:
        captured: list[torch.Tensor] = []
        handles = [
            m.register_forward_hook(lambda _m, _i, out: captured.append(out))
            for _, m in self.activations
        ]
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                x = self.probes[experience]
                cl_model = hasattr(model, "features") and hasattr(model, "head")
                features = model.features(x) if cl_model else model(x)
        finally:
            for h in handles:
                h.remove()
            model.train(was_training)
        if not cl_model and captured:  # other models (e.g. Avalanche's): the last hidden layer
            features = captured[-1]
        row: dict[str, float] = {}
        names = [n for n, _ in self.activations] or ["features"]
        outputs = captured or [features]
        dead = units = 0
        for name, h in zip(names, outputs, strict=True):
            d, u = dead_fraction(h, self.threshold)
            row[f"plasticity/dead_units/{name}"] = d / u
            dead, units = dead + d, units + u
        row["plasticity/dead_units"] = dead / units
        sv = singular_values(features)
        row["plasticity/effective_rank"] = effective_rank(sv)
        row["plasticity/stable_rank"] = stable_rank(sv)
        row["plasticity/srank_99"] = srank(sv, 0.99)
        for name, layer in self.layers:
            s, n = weight_magnitude(layer)
            row[f"plasticity/weight_mag/{name}"] = s / n
        params = [p.detach() for p in model.parameters()]
        count = sum(p.numel() for p in params)
        total = float(sum(p.abs().sum() for p in params))
        row["plasticity/weight_mag"] = total / count if count else math.nan
        return row


# --- the trainability probe -------------------------------------------------------------------


def bare_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` without its hooks (strategies' hooks must not see the copy)."""
    memo: dict = {}
    for m in model.modules():
        for name, value in vars(m).items():
            if "hooks" in name and isinstance(value, dict):
                memo[id(value)] = type(value)()
    return copy.deepcopy(model, memo)


def adam(params, lr: float) -> torch.optim.Adam:
    """The probe copy's fresh Adam: torch's fused kernel (one pass over each tensor; the
    same update as the default implementation up to float rounding, in 10-20% less time per
    probe step of a 256-unit MLP on one CPU thread)."""
    return torch.optim.Adam(params, lr=lr, fused=True)


class TrainabilityProbe:
    """Plasticity as trainability on a fresh task (Lyle, Zheng, Nikishin, Avila Pires, Pascanu,
    Dabney, "Understanding plasticity in neural networks", ICML 2023, arXiv 2303.01486).

    Trains throwaway copies of the model (train mode, no hooks, a fresh Adam each) for `steps`
    full-batch steps on a fixed batch of `n_inputs` training inputs (drawn once, uniformly over
    all tasks), regressing the outputs by mean squared error onto fresh random targets:
    `gaussian`, y ~ N(0, 1) of the output size (b(theta): the final loss, lower = more
    plastic), and `offset`, y = f(x) + N(0, 1) around the copy's own initial outputs f(x)
    (scale-free: its initial loss is about 1 whatever the outputs' magnitude). Inputs and
    targets come from the probe's own generators, so the run itself is untouched.
    """

    def __init__(self, stream, seed: int, n_inputs: int, steps: int, lr: float):
        gen = torch.Generator().manual_seed(seed + 15485863)
        exps = stream.experiences
        task = torch.randint(len(exps), (n_inputs,), generator=gen)
        rows = []
        for t, e in enumerate(exps):
            k = int((task == t).sum())
            if k:
                rows.append(e.x[torch.randint(len(e.y), (k,), generator=gen).to(e.x.device)])
        self.x = torch.cat(rows)
        self.steps, self.lr = steps, lr
        self.targets = torch.Generator().manual_seed(seed + 32452843)

    def fit(self, model: nn.Module, offset: bool) -> tuple[float, float]:
        """(initial, final) MSE of a copy of `model` trained on fresh random targets."""
        probe = bare_copy(model).train()
        for p in probe.parameters():
            p.grad = None
        opt = adam(probe.parameters(), self.lr)
        y = initial = None
        for _ in range(self.steps):
            out = probe(self.x)
            if y is None:
                y = torch.randn(out.shape, generator=self.targets).to(out.device)
                y = y + out.detach() if offset else y
            loss = F.mse_loss(out, y)
            initial = float(loss.detach()) if initial is None else initial
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            return initial, float(F.mse_loss(probe(self.x), y))

    def __call__(self, model: nn.Module) -> dict[str, float]:
        row = {}
        for kind, suffix in (("gaussian", ""), ("offset", "_offset")):
            initial, final = self.fit(model, kind == "offset")
            row[f"plasticity/probe_loss{suffix}"] = final
            row[f"plasticity/probe_loss_initial{suffix}"] = initial
            row[f"plasticity/probe_gain{suffix}"] = 1.0 - final / initial if initial else math.nan
        return row

    def state_dict(self) -> dict:
        return {"targets": self.targets.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.targets.set_state(state["targets"])
