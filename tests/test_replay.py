"""Replay buffers, the replay strategy's batch and loss weighting, its NCM classifier."""

import pytest
import torch
from torch.nn import functional as F

from cl.context import Batch, Context
from cl.data import load_source
from cl.evaluation import Evaluator
from cl.models import MLP
from cl.schema import BenchmarkConfig
from cl.strategy import inference_hook
from cl.streams import build_stream
from strategies.memory import ClassBalancedMemory, ReservoirMemory
from strategies.naive import Naive
from strategies.replay import FAR, Replay


def data(classes, per_class=50, dim=3):
    y = torch.tensor(classes).repeat_interleave(per_class)
    x = torch.randn(len(y), dim) + y[:, None].float()
    return x, y, torch.zeros_like(y)


def test_class_balanced_memory_shares_capacity_equally():
    mem = ClassBalancedMemory(100)
    g = torch.Generator().manual_seed(0)
    mem.update(*data([0, 1]), generator=g)
    assert torch.bincount(mem.y).tolist() == [50, 50]
    x, y, t = data([2, 3, 4, 5])
    mem.update(x, y, t + 1, generator=g)
    assert len(mem) == 96 and torch.bincount(mem.y).tolist() == [16] * 6
    # every stored sample is a real sample of its class, kept with its task id
    assert set(mem.task[mem.y >= 2].tolist()) == {1} and set(mem.task[mem.y < 2].tolist()) == {0}


@pytest.mark.outcome
def test_reservoir_keeps_a_uniform_sample_of_the_stream(seed_offset, outcome):
    counts = torch.zeros(10)
    # 500 runs: the largest deviation of a chunk's share from 0.1 was at most 0.012 over 200
    # blocks of seeds (over 200 runs: up to 0.016, against the tolerance of 0.02)
    for seed in range(500):
        mem = ReservoirMemory(20)
        g = torch.Generator().manual_seed(seed + 500 * seed_offset)  # a new block of 500 seeds
        for chunk in range(10):  # 10 chunks of 20 samples, chunk id as label
            y = torch.full((20,), chunk)
            mem.add(torch.zeros(20, 1), y, y, generator=g)
        assert len(mem) == 20 and mem.n_seen == 200
        counts += torch.bincount(mem.y, minlength=10)
    share = counts / counts.sum()  # uniform: 0.1 per chunk
    outcome.within("max |share - 0.1|", (share - 0.1).abs().max(), 0.02)


def test_replay_batch_mixes_memory_and_weights_the_loss():
    torch.manual_seed(0)
    replay = Replay(mem_size=40, mem_batch_size=8, new_weight=0.3)
    x, y, t = data([0, 1], per_class=20)
    replay.memory.update(x, y, t)

    class Ctx:
        generator = torch.Generator().manual_seed(0)

    new = Batch(torch.randn(4, 3), torch.tensor([2, 3, 2, 3]), torch.ones(4, dtype=torch.long), 4)
    out = replay.batch(Ctx(), new)
    assert len(out.y) == 12 and out.n_new == 4 and torch.equal(out.y[:4], new.y)
    assert set(out.y[4:].tolist()) <= {0, 1}
    logits = torch.randn(12, 4)
    ce = F.cross_entropy(logits, out.y, reduction="none")
    want = 0.3 * ce[:4].mean() + 0.7 * ce[4:].mean()
    assert (ce * out.weight).sum().item() == pytest.approx(want.item(), rel=1e-6)


def test_replay_without_weight_uses_the_plain_mean_and_empty_memory_is_skipped():
    replay = Replay(mem_size=10, new_weight=None)

    class Ctx:
        generator = None

    batch = Batch(torch.randn(4, 3), torch.arange(4), torch.zeros(4, dtype=torch.long), 4)
    assert replay.batch(Ctx(), batch) is batch  # nothing stored yet
    replay.memory.update(*data([5], per_class=10))
    out = replay.batch(Ctx(), batch)
    assert out.weight is None and len(out.y) == 8  # mem_batch_size defaults to n_new


def test_replay_state_dict_round_trip():
    a = Replay(mem_size=30, buffer="reservoir")
    a.memory.add(*data([0, 1], per_class=25))
    b = Replay(mem_size=30, buffer="reservoir")
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.memory.x, b.memory.x) and b.memory.n_seen == 50


def test_replay_rejects_bad_options():
    with pytest.raises(ValueError, match="buffer"):
        Replay(buffer="fifo")
    with pytest.raises(ValueError, match="new_weight"):
        Replay(new_weight=1.5)


class TwoD(torch.nn.Module):
    """features(x) = x (2-D), so class means can be worked out by hand."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(2, 3)

    def features(self, x):
        return x

    def forward(self, x):
        return self.head(x)


def test_ncm_hook_ranks_classes_by_distance_to_the_memory_class_means():
    replay = Replay(mem_size=10, classifier="ncm")
    m = replay.memory  # class 0 at (2, 0) and (0, 1): normalised mean (1, 1)/sqrt 2; class 2
    m.x, m.y = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, -3.0]]), torch.tensor([0, 0, 2])
    m.task = torch.zeros(3, dtype=torch.long)  # at (0, -1); class 1 has no sample
    ctx = Context(TwoD(), None, None, torch.device("cpu"))
    hook = inference_hook([Replay(), replay], ctx)  # linear replay leaves the logits alone
    x = torch.tensor([[1.0, 1.0], [1.0, -5.0]])
    scores = hook(x, torch.zeros(2, 3), x)
    f, mu0, mu2 = F.normalize(x), torch.tensor([0.5, 0.5]).sqrt(), torch.tensor([0.0, -1.0])
    want = torch.stack([-(f - mu0).norm(dim=1), torch.full((2,), -FAR), -(f - mu2).norm(dim=1)])
    assert torch.allclose(scores, want.T, atol=1e-6)
    assert scores.argsort(1, descending=True).tolist() == [[0, 2, 1], [2, 0, 1]]
    assert inference_hook([Naive()], ctx) is None  # no override: the evaluator's plain path
    empty = Replay(classifier="ncm")
    logits = torch.randn(2, 3)
    assert inference_hook([empty], ctx)(x, logits, x) is logits  # empty memory: the head


def test_evaluator_scores_the_nearest_class_mean_of_replays_memory():
    stream = build_stream(BenchmarkConfig(n_tasks=5), load_source("digits"), 0, 200)
    torch.manual_seed(0)
    model = MLP(64, [16], 10)
    replay = Replay(mem_size=40, classifier="ncm")
    for e in stream.experiences[:3]:
        replay.memory.update(e.x, e.y, torch.full_like(e.y, e.index), torch.Generator())
    ev = Evaluator(stream, "cpu", batch_size=97)
    linear = ev(model, 3)
    ev.hook = inference_hook([replay], Context(model, None, stream, torch.device("cpu")))
    accs, _, hits = ev(model, 3)
    with torch.no_grad():  # by hand: per sample, the class of the nearest normalised mean
        f = F.normalize(model.features(ev.x[: len(hits)]))
        m = F.normalize(model.features(replay.memory.x))
        classes = replay.memory.y.unique()
        means = F.normalize(torch.stack([m[replay.memory.y == c].mean(0) for c in classes]))
        pred = classes[torch.cdist(f, means).argmin(1)]
    assert torch.equal(hits, pred == ev.y[: len(hits)])
    assert accs != linear[0] and model.training  # a different classifier; train mode restored
