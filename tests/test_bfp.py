"""BFP: the projected feature-distillation loss by hand, its gradients, the projector's reset
and its own optimiser, and that a learnt A absorbs any invertible linear change of features."""

import math

import pytest
import torch

from cl.context import Batch
from cl.models import MLP
from strategies.bfp import BFP


class Ctx:
    def __init__(self, model, experience=0):
        self.model, self.experience, self.device = model, experience, torch.device("cpu")
        self.generator = torch.Generator().manual_seed(0)
        self.features = None


def start(s, ctx, k):
    ctx.experience = k
    s.before_experience(ctx)


def features_loss(s, ctx, x):
    ctx.features = ctx.model.features(x)
    return s.loss(ctx, Batch(x, torch.zeros(len(x), dtype=torch.long), None, len(x)), None)


def test_no_loss_in_the_first_experience():
    torch.manual_seed(0)
    s, ctx = BFP(), Ctx(MLP(4, [3], 2))
    s.setup(ctx)
    start(s, ctx, 0)
    assert features_loss(s, ctx, torch.randn(5, 4)) is None and s.metrics() == {}


def test_loss_value_by_hand_and_gradients_reach_model_and_projector():
    torch.manual_seed(0)
    model = MLP(4, [3], 2)
    s, ctx = BFP(alpha_bfp=2.0, identity_init=True), Ctx(model)
    s.setup(ctx)
    start(s, ctx, 1)
    with torch.no_grad():  # the model moves on; A stays the identity: h - h_old by hand
        model.body[1].weight.add_(0.5)
    x = torch.randn(6, 4)
    old = s.old_model.features(x)
    loss = features_loss(s, ctx, x)
    expected = 2.0 * (ctx.features - old).norm(dim=1).mean() / math.sqrt(3)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6) and loss.item() > 0
    loss.backward()
    assert model.body[1].weight.grad.abs().sum() > 0
    assert s.projector.weight.grad.abs().sum() > 0
    assert s.metrics() == {"match_loss": pytest.approx(expected.item() / 2, rel=1e-6)}
    # the old model is frozen: a copy of the weights at the start of the experience
    assert all(not p.requires_grad for p in s.old_model.parameters())
    assert not torch.equal(s.old_model.body[1].weight, model.body[1].weight)


def test_projector_steps_with_its_own_sgd_and_resets_each_experience():
    torch.manual_seed(0)
    s, ctx = BFP(identity_init=True, proj_lr=0.1, momentum=0.9), Ctx(MLP(4, [3], 2))
    s.setup(ctx)
    start(s, ctx, 1)
    with torch.no_grad():
        ctx.model.body[1].bias.add_(1.0)
    features_loss(s, ctx, torch.randn(8, 4)).backward()
    grad = s.projector.weight.grad.clone()
    s.after_step(ctx)  # first SGD-momentum step: W <- I - lr * grad
    assert torch.allclose(s.projector.weight, torch.eye(3) - 0.1 * grad)
    assert s.opt.param_groups[0]["momentum"] == 0.9
    start(s, ctx, 2)
    assert torch.equal(s.projector.weight, torch.eye(3))
    assert s.opt.state == {}  # a fresh optimiser: no momentum carried over
    # the default reset is nn.Linear's random init, drawn from the run's generator
    r = BFP()
    r.setup(ctx)
    start(r, ctx, 1)
    w1 = r.projector.weight.clone()
    start(r, ctx, 2)
    assert not torch.equal(r.projector.weight, w1) and w1.abs().max() <= 1 / math.sqrt(3)


@pytest.mark.outcome
def test_a_learnt_projection_absorbs_an_invertible_change_of_features(seed_offset, outcome):
    """h_new = M h_old, M a random rotation: BFP's loss goes to ~0 by learning A = M^-1 (the
    model need not move); plain feature distillation (A = I) stays at ||M h - h||."""
    gen = torch.Generator().manual_seed(3 + seed_offset)
    d = 8
    M = torch.linalg.qr(torch.randn(d, d, generator=gen))[0]
    s, ctx = BFP(), Ctx(MLP(4, [d], 2))
    ctx.generator = gen
    s.setup(ctx)
    start(s, ctx, 1)

    class Old(torch.nn.Module):
        def features(self, x):
            return x

    s.old_model = Old()
    first = None
    for _ in range(400):
        h_old = torch.randn(64, d, generator=gen)
        ctx.features = h_old @ M.T
        loss = s.loss(ctx, Batch(h_old, torch.zeros(64, dtype=torch.long), None, 64), None)
        loss.backward()
        s.after_step(ctx)
        first = loss.item() if first is None else first
    fd = (h_old @ M.T - h_old).norm(dim=1).mean().item() / math.sqrt(d)
    # seeds 3-22: at most 0.015 after 400 steps, from about 1
    outcome.within("BFP loss after training A", loss.item(), 0.03)
    assert first > 0.3 and fd > 0.5


def test_state_dict_round_trip_rebuilds_old_model_projector_and_momentum():
    torch.manual_seed(0)
    a, ctx = BFP(), Ctx(MLP(4, [3], 2))
    a.setup(ctx)
    assert a.state_dict() == {"old": None}
    start(a, ctx, 1)
    with torch.no_grad():
        ctx.model.body[1].bias.add_(1.0)
    features_loss(a, ctx, torch.randn(8, 4)).backward()
    a.after_step(ctx)
    b = BFP()
    b.load_state_dict(a.state_dict())
    b.setup(ctx)
    x = torch.randn(5, 4)
    assert torch.equal(a.old_model.features(x), b.old_model.features(x))
    assert torch.equal(a.projector.weight, b.projector.weight)
    sa, sb = a.opt.state_dict()["state"][0], b.opt.state_dict()["state"][0]
    assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])


def test_rejects_bad_options():
    with pytest.raises(ValueError, match="alpha_bfp"):
        BFP(alpha_bfp=-1)
    with pytest.raises(ValueError, match="momentum"):
        BFP(momentum=1.0)
