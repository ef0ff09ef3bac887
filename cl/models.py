"""Models: MLP, a small CNN and the reduced ResNet-18 of the GEM / stability-gap papers.

Every model exposes `features(x)` (penultimate representation) and `head` (the linear
classifier), so strategies and metrics can reach both without knowing the architecture.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from cl.schema import ModelConfig


class HardASH(nn.Module):
    """Hard Adaptive SwisH (Keskinen, "Hard ASH: Sparsity and the right optimizer make a
    continual learner", arXiv 2404.17651, 2024), the hard form of ASH (Lee et al., "Stochastic
    Adaptive Activation Function", NeurIPS 2022: ASH(x) = x * sigmoid(a (x - mu_x - z sigma_x))).

        HardASH(x)_i = x_i * 1[x_i > mu_x + z * sigma_x],
        mu_x, sigma_x = mean and (population) std of x over the layer's units, per sample,

    so each sample keeps only its units above an adaptive threshold (for Gaussian
    pre-activations about the top 16% at z = 1, 2.3% at z = 2) and the rest are 0. The
    gradient flows through the kept units only (the step's derivative is 0 almost
    everywhere), which makes the gradient as sparse as the activations. The paper trains it
    with Adagrad on class-incremental Split-MNIST, no replay and no task boundaries. Its
    exact z and its text beyond the abstract were not available here (unverified: check the
    paper); `model.ash_z` sets z (default 1.0).
    """

    def __init__(self, z: float = 1.0):
        super().__init__()
        self.z = z

    def mask(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.detach().flatten(1)
        mu, sigma = flat.mean(1), flat.std(1, unbiased=False)
        shape = (-1,) + (1,) * (x.dim() - 1)
        return x.detach() > (mu + self.z * sigma).view(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask(x)

    def extra_repr(self) -> str:
        return f"z={self.z}"


ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "hard_ash": HardASH,
}


def forward(model: nn.Module, x: torch.Tensor):
    """(logits, penultimate features); features are None for models without `features`/`head`."""
    if hasattr(model, "features") and hasattr(model, "head"):
        features = model.features(x)
        return model.head(features), features
    return model(x), None


class MLP(nn.Module):
    """Fully connected network: flatten, [Linear, (LayerNorm), activation] * len(hidden), head."""

    def __init__(
        self,
        in_dim: int,
        hidden: list[int],
        n_classes: int,
        activation: str = "relu",
        layer_norm: bool = False,
        ash_z: float = 1.0,
    ):
        super().__init__()
        act = partial(HardASH, ash_z) if activation == "hard_ash" else ACTIVATIONS[activation]
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_dim
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if layer_norm:
                layers.append(nn.LayerNorm(h))
            layers.append(act())
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class SmallCNN(nn.Module):
    """Two conv blocks (conv 3x3, norm, activation, 2x2 max-pool), a hidden layer and a head."""

    def __init__(
        self,
        in_shape: tuple[int, ...],
        channels: list[int],
        hidden: list[int],
        n_classes: int,
        activation: str = "relu",
        layer_norm: bool = False,
    ):
        super().__init__()
        act = ACTIVATIONS[activation]
        layers: list[nn.Module] = []
        c, h, w = in_shape
        for out in channels:
            layers += [nn.Conv2d(c, out, 3, padding=1)]
            if layer_norm:
                layers += [nn.GroupNorm(1, out)]  # layer norm over (C, H, W)
            layers += [act(), nn.MaxPool2d(2)]
            c, h, w = out, h // 2, w // 2
        layers.append(nn.Flatten())
        width = c * h * w
        for units in hidden:
            layers += [nn.Linear(width, units)]
            if layer_norm:
                layers += [nn.LayerNorm(units)]
            layers += [act()]
            width = units
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _norm(channels: int, layer_norm: bool) -> nn.Module:
    return nn.GroupNorm(1, channels) if layer_norm else nn.BatchNorm2d(channels)


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, layer_norm: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = _norm(planes, layer_norm)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = _norm(planes, layer_norm)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), _norm(planes, layer_norm)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ReducedResNet18(nn.Module):
    """ResNet-18 with `width` base channels (20 in GEM and the stability-gap paper).

    Stem: 3x3 conv, stride 1; four stages of two basic blocks (width x 1, 2, 4, 8; strides
    1, 2, 2, 2); global average pooling; linear head. `layer_norm=True` swaps batch norm for
    a one-group GroupNorm (layer norm over C, H, W).
    """

    def __init__(
        self, in_shape: tuple[int, ...], n_classes: int, width: int = 20, layer_norm: bool = False
    ):
        super().__init__()
        c = in_shape[0]
        self.conv1 = nn.Conv2d(c, width, 3, 1, 1, bias=False)
        self.bn1 = _norm(width, layer_norm)
        stages, in_planes = [], width
        for mult, stride in ((1, 1), (2, 2), (4, 2), (8, 2)):
            planes = width * mult
            stages += [
                BasicBlock(in_planes, planes, stride, layer_norm),
                BasicBlock(planes, planes, 1, layer_norm),
            ]
            in_planes = planes
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(in_planes, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.stages(out)
        return F.adaptive_avg_pool2d(out, 1).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    if cfg.name == "mlp":
        return MLP(
            math.prod(input_shape),
            list(cfg.hidden),
            n_classes,
            cfg.activation,
            cfg.layer_norm,
            cfg.ash_z,
        )
    shape = input_shape if len(input_shape) == 3 else (1, *input_shape)
    if cfg.name == "cnn":
        return SmallCNN(
            shape, list(cfg.channels), list(cfg.hidden), n_classes, cfg.activation, cfg.layer_norm
        )
    return ReducedResNet18(shape, n_classes, cfg.width, cfg.layer_norm)
