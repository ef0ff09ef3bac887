"""Plasticity metrics on constructed matrices with known answers (metrics.md §7)."""

import pytest
import torch
from torch import nn

from cl.models import MLP, SmallCNN
from cl.plasticity import (
    PlasticityProbe,
    dead_fraction,
    effective_rank,
    gradient_norm,
    singular_values,
    srank,
    stable_rank,
    weight_magnitude,
)


def test_dead_units_worked_example():
    H = torch.tensor([[0, 0.5, 0], [0, 0, 0.2], [0, 1.2, 0], [0, 0.3, 0]])
    assert dead_fraction(H) == (1, 3)
    assert dead_fraction(H, threshold=0.25) == (2, 3)  # unit 3 peaks at 0.2


def test_dead_channels_of_a_conv_layer():
    h = torch.zeros(5, 4, 3, 3)
    h[2, 1, 0, 0] = 0.1  # channel 1 active once; channels 0, 2, 3 dead
    h[:, 3] = -0.0
    assert dead_fraction(h) == (3, 4)


@pytest.mark.parametrize(
    "phi, want",
    [
        ([[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]], 1.754765),
        (torch.eye(4).tolist(), 4.0),
    ],
)
def test_effective_rank_examples(phi, want):
    assert effective_rank(singular_values(torch.tensor(phi))) == pytest.approx(want, abs=1e-5)


def test_rank_measures_on_known_spectrum():
    sv = torch.tensor([10.0, 1.0, 0.5], dtype=torch.float64)
    assert effective_rank(sv) == pytest.approx(1.600372, abs=1e-6)
    assert srank(sv, 0.99) == 3
    assert stable_rank(sv) == pytest.approx(1.0125)


def test_singular_values_match_svdvals_for_wide_and_tall_matrices():
    torch.manual_seed(0)
    for shape in ((50, 8), (8, 50)):
        x = torch.randn(*shape)
        got = singular_values(x)
        want = torch.linalg.svdvals(x.double())
        assert got[: len(want)] == pytest.approx(want.tolist(), abs=1e-6)


def test_weight_magnitude_and_gradient_norm_examples():
    layer = nn.Linear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, -1.0], [0.0, 2.0]]))
        layer.bias.copy_(torch.tensor([0.5, -0.5]))
    total, n = weight_magnitude(layer)
    assert total / n == pytest.approx(0.75)
    model = nn.Module()
    model.a = nn.Parameter(torch.zeros(2))
    model.b = nn.Parameter(torch.zeros(1))
    model.a.grad = torch.tensor([3.0, 4.0])
    model.b.grad = torch.tensor([0.0])
    assert gradient_norm(model) == pytest.approx(5.0)


def test_probe_counts_dead_units_per_hidden_layer():
    torch.manual_seed(0)
    model = MLP(4, [6, 5], 3)
    with torch.no_grad():
        first = model.body[1]  # Linear(4, 6)
        first.weight[:2] = 0.0
        first.bias[:2] = -1.0  # two units of layer 1 never fire
    probe = PlasticityProbe(model, [torch.randn(64, 4)])
    row = probe(model, 0)
    assert row["plasticity/dead_units/body.2"] == pytest.approx(2 / 6)
    total_dead = 2 + round(row["plasticity/dead_units/body.4"] * 5)
    assert row["plasticity/dead_units"] == pytest.approx(total_dead / 11)
    assert 1.0 <= row["plasticity/effective_rank"] <= 5.0
    assert row["plasticity/srank_99"] <= 5 and row["plasticity/stable_rank"] >= 1.0
    assert model.training  # restored


def test_probe_on_a_cnn():
    model = SmallCNN((1, 8, 8), [4, 4], [8], 10)
    row = PlasticityProbe(model, [torch.rand(16, 1, 8, 8)])(model, 0)
    assert 0.0 <= row["plasticity/dead_units"] <= 1.0
    assert {"plasticity/weight_mag/body.0", "plasticity/weight_mag/head"} <= set(row)
