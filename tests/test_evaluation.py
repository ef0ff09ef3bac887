"""The batched evaluator against a plain per-task loop of forwards."""

import pytest
import torch
from torch.nn import functional as F

from cl.data import load_source
from cl.evaluation import Evaluator
from cl.models import MLP
from cl.schema import BenchmarkConfig
from cl.streams import build_stream


@pytest.fixture(scope="module")
def digits():
    return load_source("digits")


def per_task_loop(model, stream, n, masked):
    accs, losses = [], []
    model.eval()
    with torch.no_grad():
        for e in stream.experiences[:n]:
            out = model(e.eval_x)
            if masked:
                keep = torch.zeros(out.shape[1], dtype=torch.bool)
                keep[e.classes] = True
                out = out.masked_fill(~keep, float("-inf"))
            accs.append((out.argmax(1) == e.eval_y).float().mean().item())
            losses.append(F.cross_entropy(out, e.eval_y).item())
    model.train()
    return accs, losses


@pytest.mark.parametrize("incremental", ["class", "task"])
def test_evaluator_matches_a_per_task_loop(digits, incremental):
    stream = build_stream(BenchmarkConfig(n_tasks=5, incremental=incremental), digits, 0, 1000)
    torch.manual_seed(0)
    model = MLP(64, [32], 10)
    ev = Evaluator(stream, "cpu", batch_size=97)  # chunking must not change results
    for n in (1, 3, 5):
        accs, losses, hits = ev(model, n)
        assert hits.dtype == torch.bool and len(hits) == sum(
            len(e.eval_y) for e in stream.experiences[:n]
        )
        assert hits.float().mean().item() == pytest.approx(
            sum(a * len(e.eval_y) for a, e in zip(accs, stream.experiences, strict=False))
            / len(hits)
        )
        want_accs, want_losses = per_task_loop(model, stream, n, incremental == "task")
        assert accs == pytest.approx(want_accs, abs=1e-6)
        assert losses == pytest.approx(want_losses, abs=1e-5)
    assert model.training


def test_task_aware_evaluation_scores_higher_than_class_incremental(digits):
    cil = build_stream(BenchmarkConfig(n_tasks=5), digits, 0, 1000)
    til = build_stream(BenchmarkConfig(n_tasks=5, incremental="task"), digits, 0, 1000)
    torch.manual_seed(0)
    model = MLP(64, [32], 10)
    a_cil = sum(Evaluator(cil, "cpu")(model, 5)[0])
    a_til = sum(Evaluator(til, "cpu")(model, 5)[0])
    assert a_til > a_cil


def test_evaluator_restores_eval_mode_and_keeps_gradients_off(digits):
    stream = build_stream(BenchmarkConfig(n_tasks=2), digits, 0, 1000)
    model = MLP(64, [16], 10)
    model.eval()
    Evaluator(stream, "cpu")(model, 2)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
