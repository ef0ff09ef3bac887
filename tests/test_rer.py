"""Relational ER: the meta-net's sample weights from given losses and logit norms, the loss
they give, the warm start, and the meta-step (its gradient by the chain rule, by hand)."""

import pytest
import torch
from torch.nn import functional as F

from cl.context import Batch, Context
from cl.models import MLP
from strategies.rer import RER, MetaNet, pair_stats


def set_meta(meta: MetaNet, loss_w, norm_w, out_w) -> None:
    with torch.no_grad():
        for layer, w in ((meta.loss_in, loss_w), (meta.norm_in, norm_w), (meta.out, out_w)):
            layer.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
            layer.bias.zero_()


def make(n=4, d=3, classes=2, seed=0, **kw):
    torch.manual_seed(seed)
    model = MLP(d, [], classes)  # a linear model: logits = W x + b
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    ctx = Context(model, opt, None, torch.device("cpu"), experience=1, epochs=4, epoch=3)
    ctx.generator = torch.Generator().manual_seed(seed)
    s = RER(mem_size=50, **kw)
    s.setup(ctx)
    s.memory.add(torch.randn(20, d), torch.randint(classes, (20,)), torch.zeros(20).long())
    x = torch.randn(n, d)
    batch = s.batch(ctx, Batch(x, torch.randint(classes, (n,)), torch.ones(n).long(), n))
    return s, ctx, batch


def test_weights_by_hand_from_losses_and_norms():
    meta = MetaNet(hidden=2)
    eye, zero = [[1.0, 0.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]]
    losses, norms = torch.tensor([[0.5, 2.0], [-1.0, 0.0]]), torch.tensor([[3.0, 1.0], [1.0, -2]])
    set_meta(meta, eye, zero, eye)  # w = sigmoid(relu(l))
    assert torch.allclose(meta(losses, norms), torch.sigmoid(losses.clamp(min=0)))
    set_meta(meta, zero, eye, eye)  # w = sigmoid(relu(z))
    assert torch.allclose(meta(losses, norms), torch.sigmoid(norms.clamp(min=0)))
    set_meta(meta, eye, eye, [[1.0, 0.0], [-1.0, 0.0]])  # w_new = s(l0+ + z0+), w_mem = s(-(..))
    h = losses[:, 0].clamp(min=0) + norms[:, 0].clamp(min=0)
    assert torch.allclose(meta(losses, norms), torch.sigmoid(torch.stack([h, -h], 1)))


def test_pair_stats_pairs_new_sample_i_with_replayed_sample_i():
    logits = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, float("-inf")], [0.0, 2.0]])
    y = torch.tensor([1, 0, 0, 1])
    losses, norms = pair_stats(logits, y, 2)
    ce = F.cross_entropy(logits, y, reduction="none")
    assert torch.allclose(losses, torch.stack([ce[:2], ce[2:]], 1))
    assert torch.allclose(norms, torch.tensor([[5.0, 1.0], [0.0, 2.0]]))  # -inf (masked) -> 0


@pytest.mark.parametrize("new_weight", [0.3, None])
def test_loss_reweights_replay_with_the_meta_weights(new_weight):
    s, ctx, batch = make(new_weight=new_weight, meta_every=1000)
    assert batch.n_new == 4 and len(batch.y) == 8  # one replayed sample per new sample
    logits = ctx.model(batch.x)
    a = batch.weight if new_weight is not None else torch.full((8,), 1 / 8)
    ce = F.cross_entropy(logits, batch.y, reduction="none")
    task = (ce * a).sum() if new_weight is not None else ce.mean()
    total = task + s.loss(ctx, batch, logits)
    losses, norms = pair_stats(logits.detach(), batch.y, 4)
    w = s.meta(losses, norms).detach()
    assert torch.allclose(total, (a * torch.cat([w[:, 0], w[:, 1]]) * ce).sum())
    m = s.metrics()
    assert m["w_new"] == pytest.approx(w[:, 0].mean().item())
    assert m["w_mem"] == pytest.approx(w[:, 1].mean().item())


def test_plain_replay_before_the_warm_start_and_in_the_first_experience():
    s, ctx, batch = make(meta_every=1000, warm_start=0.5)
    logits = ctx.model(batch.x)
    ctx.epoch = 2  # 2 > 0.5 * 4 is false: warm-up
    assert s.loss(ctx, batch, logits) is None
    ctx.epoch, ctx.experience = 3, 0
    assert s.loss(ctx, batch, logits) is None
    ctx.experience = 1
    assert s.loss(ctx, batch, logits) is not None


def test_meta_step_gradient_is_the_chain_rule_by_hand_and_leaves_the_model_alone():
    """d outer / d w_j = -lr a_j <grad CE_val(theta'), grad CE_j(theta)> for the virtual
    step theta' = theta - lr sum_j a_j w_j grad CE_j(theta); the meta-net's gradient follows."""
    s, ctx, batch = make(meta_every=1000)
    model, lr = ctx.model, 0.5
    before = [p.clone() for p in model.parameters()]
    gen_state = ctx.generator.get_state()
    s.meta_opt.step = lambda: None  # keep the meta-net as it was for the comparison
    s.meta_step(ctx, batch)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before, strict=True))
    got = [p.grad.clone() for p in s.meta.parameters()]

    params = list(model.parameters())
    logits = model(batch.x)
    losses, norms = pair_stats(logits, batch.y, 4)
    w = s.meta(losses.detach(), norms.detach())
    a = batch.weight
    ce = F.cross_entropy(logits, batch.y, reduction="none")
    per_sample = [torch.autograd.grad(ce[j], params, retain_graph=True) for j in range(8)]
    wv = torch.cat([w[:, 0], w[:, 1]]).detach()
    theta = [
        p - lr * sum(a[j] * wv[j] * per_sample[j][i] for j in range(8))
        for i, p in enumerate(params)
    ]
    ctx.generator.set_state(gen_state)
    vx, vy, _ = s.memory.sample(4, ctx.generator)
    fresh = [t.detach().requires_grad_() for t in theta]
    val = F.cross_entropy(vx @ fresh[0].T + fresh[1], vy)
    g_val = torch.autograd.grad(val, fresh)
    dot = [sum((g * h).sum() for g, h in zip(g_val, gs, strict=True)) for gs in per_sample]
    d_w = torch.stack([-lr * a[j] * dot[j] for j in range(8)])
    d_w = torch.stack([d_w[:4], d_w[4:]], 1)
    expected = torch.autograd.grad(w, list(s.meta.parameters()), grad_outputs=d_w)
    for g, e in zip(got, expected, strict=True):
        assert torch.allclose(g, e, atol=1e-6, rtol=1e-4)


@pytest.mark.outcome
def test_meta_steps_down_weight_new_samples_that_hurt_the_memory(seed_offset, outcome):
    """New samples relabel the memory's inputs (a pure conflict): meta-steps, which score the
    virtual update on the memory, push the new samples' weights down."""
    seed = 11 + seed_offset
    s, ctx, _ = make(seed=seed, meta_every=1000, meta_lr=1e-2)
    gen = torch.Generator().manual_seed(seed)
    mx = torch.randn(20, 3, generator=gen)
    my = (mx[:, 0] > 0).long()
    s.memory.x, s.memory.y = mx, my
    with torch.no_grad():  # the model fits the memory
        ctx.model.head.weight.copy_(torch.tensor([[-3.0, 0, 0], [3.0, 0, 0]]))
        ctx.model.head.bias.zero_()

    def weights():
        idx, jdx = torch.randint(20, (2, 16), generator=gen)
        x, y = torch.cat([mx[idx], mx[jdx]]), torch.cat([1 - my[idx], my[jdx]])
        batch = Batch(x, y, torch.ones(32).long(), 16, torch.full((32,), 0.5 / 16))
        ctx.replayed = Batch(mx[jdx], my[jdx], torch.zeros(16).long(), 0)
        losses, norms = pair_stats(ctx.model(batch.x).detach(), batch.y, 16)
        return s.meta(losses, norms).mean(0).detach(), batch

    start, _ = weights()
    for _ in range(100):
        s.meta_step(ctx, weights()[1])
    end, _ = weights()
    # seeds 11-22: the new weight drops by 0.15-0.89, the gap w_mem - w_new widens by >= 0.55
    outcome.above("drop of the new samples' mean weight", start[0] - end[0], 0.05, 0.0)
    gap = (end[1] - end[0]) - (start[1] - start[0])
    outcome.above("widening of w_mem - w_new", gap, 0.2, 0.0)
