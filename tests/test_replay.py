"""Replay buffers and the replay strategy's batch and loss weighting."""

import pytest
import torch
from torch.nn import functional as F

from cl.context import Batch
from strategies.memory import ClassBalancedMemory, ReservoirMemory
from strategies.replay import Replay


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
