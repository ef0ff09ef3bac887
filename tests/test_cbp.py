"""Continual backprop: replacement count and schedule, maturity, outgoing weights, bias
correction, optimiser-state reset (SGD momentum, Adam moments), conv nets, state round trip."""

import copy
from fractions import Fraction
from math import floor

import pytest
import torch

from cl.context import Batch, Context
from cl.models import MLP, SmallCNN
from cl.runner import train_step
from strategies.cbp import ContinualBackprop


def make(model, opt="sgd", seed=0):
    if opt == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    return Context(model, optimizer, None, torch.device("cpu"), generator=torch.Generator())


def batches(n, shape, classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(8, *shape, generator=g)
        y = torch.randint(classes, (8,), generator=g)
        yield Batch(x, y, torch.zeros_like(y), 8)


def hidden_pairs(cbp):
    return [(layer, nxt) for layer, nxt, _ in cbp.layers]


def test_cbp_replaces_the_accumulated_number_of_mature_units_only():
    torch.manual_seed(0)
    model = MLP(10, [16, 16], 4, activation="tanh")
    ctx = make(model)
    rate, m = 3 / 64, 5  # exact in binary: the float accumulator equals the Fraction one
    cbp = ContinualBackprop(replacement_rate=rate, maturity_threshold=m, decay_rate=0.9)
    cbp.setup(ctx)
    ref_age = [torch.zeros(16, dtype=torch.long) for _ in range(2)]
    ref_acc = [Fraction(0)] * 2
    first, total = [None, None], [0, 0]
    for step, batch in enumerate(batches(80, (10,), 4), start=1):
        train_step(ctx, [cbp], batch)
        for j, (layer, nxt) in enumerate(hidden_pairs(cbp)):
            ref_age[j] += 1
            mature = ref_age[j] > m
            replaced = torch.nonzero(cbp.state["age"][j] == 0).flatten()
            expected = 0
            if mature.any():
                ref_acc[j] += Fraction(rate) * int(mature.sum())
                expected = floor(ref_acc[j])
                ref_acc[j] -= expected
            assert len(replaced) == expected, (step, j)
            assert bool(mature[replaced].all())  # never an immature unit
            if expected:
                first[j] = first[j] or step
                total[j] += expected
                # outgoing weights zeroed, except rows of next-layer units re-drawn this step
                rows = cbp.state["age"][j + 1] > 0 if j + 1 < 2 else slice(None)
                assert torch.all(nxt.weight[rows][:, replaced] == 0)
                assert torch.all(layer.bias[replaced] == 0)
                for p, dim in ((layer.weight, 0), (layer.bias, 0), (nxt.weight, 1)):
                    buf = ctx.optimizer.state[p]["momentum_buffer"]
                    buf = buf[rows] if p is nxt.weight else buf
                    assert torch.all(buf.index_select(dim, replaced) == 0)
            ref_age[j][replaced] = 0
    # mature from step 6 (age > 5): accumulator 0.75 then 1.5 -> first replacement at step 7
    assert first == [7, 7]
    assert total[0] > 20 and total[1] > 20


def test_cbp_moves_the_mean_contribution_into_the_next_bias_and_reinitialises():
    torch.manual_seed(1)
    model = MLP(10, [32], 4, activation="relu")
    ctx = make(model)
    cbp = ContinualBackprop(replacement_rate=0.05, maturity_threshold=3, decay_rate=0.5)
    cbp.setup(ctx)
    layer, head = hidden_pairs(cbp)[0]
    for batch in batches(40, (10,), 4, seed=1):
        train_step(ctx, [], batch)  # the hook captures the activations
        w_in, w_out, b_out = layer.weight.clone(), head.weight.clone(), head.bias.clone()
        age, mean = cbp.state["age"][0].clone() + 1, cbp.state["mean"][0].clone()
        h = cbp.acts[0]
        cbp.after_step(ctx)
        r = torch.nonzero(cbp.state["age"][0] == 0).flatten()
        if len(r) == 0:
            assert torch.equal(head.bias, b_out) and torch.equal(layer.weight, w_in)
            continue
        f = (0.5 * mean + 0.5 * h.mean(0))[r] / (1 - 0.5 ** age[r])
        assert torch.allclose(head.bias, b_out + (w_out[:, r] * f).sum(1), atol=1e-6)
        keep = torch.ones(32, dtype=torch.bool)
        keep[r] = False
        assert torch.equal(layer.weight[keep], w_in[keep]) and torch.equal(
            head.weight[:, keep], w_out[:, keep]
        )
        assert not torch.equal(layer.weight[r], w_in[r])
        assert layer.weight[r].abs().max() <= 1 / 10**0.5  # U(-1/sqrt(fan_in), 1/sqrt(fan_in))


def test_cbp_resets_adam_moments_of_replaced_units():
    torch.manual_seed(2)
    model = MLP(10, [16], 4)
    ctx = make(model, opt="adam")
    cbp = ContinualBackprop(replacement_rate=0.1, maturity_threshold=4)
    cbp.setup(ctx)
    layer, head = hidden_pairs(cbp)[0]
    seen = 0
    for batch in batches(20, (10,), 4, seed=2):
        train_step(ctx, [cbp], batch)
        r = torch.nonzero(cbp.state["age"][0] == 0).flatten()
        for p, dim in ((layer.weight, 0), (layer.bias, 0), (head.weight, 1)):
            for key in ("exp_avg", "exp_avg_sq"):
                t = ctx.optimizer.state[p][key]
                assert torch.all(t.index_select(dim, r) == 0)
                if len(r) < 16:  # the other units keep their moments
                    assert t.abs().sum() > 0
        seen += len(r)
    assert seen >= 10


def test_cbp_on_a_conv_net_replaces_channels_and_their_flattened_outgoing_columns():
    torch.manual_seed(3)
    model = SmallCNN((1, 8, 8), [4, 6], [8], 3)
    ctx = make(model)
    cbp = ContinualBackprop(replacement_rate=0.2, maturity_threshold=2)
    cbp.setup(ctx)
    assert [type(a).__name__ for a, _ in hidden_pairs(cbp)] == ["Conv2d", "Conv2d", "Linear"]
    hits = 0
    for batch in batches(12, (1, 8, 8), 3, seed=3):
        train_step(ctx, [cbp], batch)
        (c1, c2), (c2_, lin), _ = hidden_pairs(cbp)
        r1 = torch.nonzero(cbp.state["age"][0] == 0).flatten()
        r2 = torch.nonzero(cbp.state["age"][1] == 0).flatten()
        rows = cbp.state["age"][1] > 0
        assert torch.all(c2.weight[rows][:, r1] == 0) and torch.all(c1.bias[r1] == 0)
        rows = cbp.state["age"][2] > 0  # units of `lin` not re-drawn themselves this step
        cols = lin.weight.view(8, 6, 4)[rows][:, r2]  # 6 channels x (2 x 2) after pooling
        assert torch.all(cols == 0) and torch.all(c2_.bias[r2] == 0)
        buf = ctx.optimizer.state[lin.weight]["momentum_buffer"].view(8, 6, 4)
        assert torch.all(buf[rows][:, r2] == 0)
        hits += len(r1) + len(r2)
    assert hits > 0


def test_cbp_state_dict_round_trip_continues_identically():
    def fresh():
        torch.manual_seed(4)
        model = MLP(10, [16], 4, activation="tanh")
        return model, make(model)

    model_a, ctx_a = fresh()
    a = ContinualBackprop(replacement_rate=0.05, maturity_threshold=3)
    a.setup(ctx_a)
    data = list(batches(30, (10,), 4, seed=4))
    for batch in data[:15]:
        train_step(ctx_a, [a], batch)
    model_b, ctx_b = fresh()
    model_b.load_state_dict(model_a.state_dict())
    ctx_b.optimizer.load_state_dict(copy.deepcopy(ctx_a.optimizer.state_dict()))
    b = ContinualBackprop(replacement_rate=0.05, maturity_threshold=3)
    saved = a.state_dict()
    b.load_state_dict(
        {
            k: [t.clone() if torch.is_tensor(t) else t for t in v]
            if isinstance(v, list)
            else v.clone()
            for k, v in saved.items()
        }
    )
    b.setup(ctx_b)
    for batch in data[15:]:
        train_step(ctx_a, [a], batch)
        train_step(ctx_b, [b], batch)
    assert all(
        torch.equal(p, q) for p, q in zip(model_a.parameters(), model_b.parameters(), strict=True)
    )
    assert torch.equal(a.state["util"][0], b.state["util"][0])


def test_cbp_rejects_unsupported_models_and_options():
    with pytest.raises(ValueError, match="init"):
        ContinualBackprop(init="xavier")
    cbp = ContinualBackprop()
    with pytest.raises(ValueError, match="body"):
        cbp.setup(make(torch.nn.Sequential(torch.nn.Linear(3, 3))))


def test_cbp_ranks_by_the_bias_corrected_utility():
    torch.manual_seed(5)
    model = MLP(10, [16], 4, activation="tanh")
    ctx = make(model)
    cbp = ContinualBackprop(replacement_rate=1e-4, maturity_threshold=100, decay_rate=0.99)
    cbp.setup(ctx)
    s = cbp.state
    s["util"][0][:] = 10.0
    s["age"][0][:] = 1000
    s["util"][0][0], s["age"][0][0] = 5.0, 100  # young: raw 5 but corrected 5/(1-.99^101) = 7.8
    s["util"][0][1] = 7.0  # old: corrected ~7, the lowest
    s["acc"][0] = 0.999  # + 16 * 1e-4 -> exactly one replacement this step
    train_step(ctx, [cbp], next(batches(1, (10,), 4, seed=5)))
    assert torch.nonzero(s["age"][0] == 0).flatten().tolist() == [1]


def official_gnt_step(net, state, feats, rate, m, eta):
    """Hand-written reference of the official `lop/algos/gnt.py` GnT step (accumulate=True,
    util_type=contribution) on a Sequential [Linear, act, Linear, act, ..., Linear]: it zeroes
    the mean activation before reading it (bias transfer adds 0) and touches no optimizer
    state under SGD. Returns the replaced indices per layer; fresh incoming rows are drawn by
    the caller."""
    linears = [mod for mod in net if isinstance(mod, torch.nn.Linear)]
    out = []
    for i, h in enumerate(feats):
        cur, nxt = linears[i], linears[i + 1]
        state["age"][i] += 1
        corr = 1 - eta ** state["age"][i]
        state["util"][i] *= eta
        state["mean"][i] = state["mean"][i] * eta + (1 - eta) * h.mean(0)
        state["util"][i] += (1 - eta) * nxt.weight.abs().mean(0) * h.abs().mean(0)
        bc_util = state["util"][i] / corr
        mature = torch.where(state["age"][i] > m)[0]
        r = torch.empty(0, dtype=torch.long)
        if len(mature):
            state["acc"][i] += rate * len(mature)
            n = int(state["acc"][i])
            state["acc"][i] -= n
            if n:
                r = mature[torch.topk(-bc_util[mature], n)[1]]
                state["util"][i][r] = 0
                state["mean"][i][r] = 0.0  # before gen_new_features reads it
        out.append(r)
    for i, r in enumerate(out):
        if len(r):
            cur, nxt = linears[i], linears[i + 1]
            cur.bias[r] = 0
            f = state["mean"][i][r] / (1 - eta ** state["age"][i][r])  # zeroed: adds 0
            nxt.bias += (nxt.weight[:, r] * f).sum(1)
            nxt.weight[:, r] = 0
            state["age"][i][r] = 0
    return out


def test_cbp_official_options_match_a_reference_of_gnt_py_in_lock_step():
    torch.manual_seed(3)
    model = MLP(6, [12, 10], 3, activation="relu")
    ref = torch.nn.Sequential(*copy.deepcopy(list(model.body)[1:]), copy.deepcopy(model.head))
    ctx = make(model)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9)
    rate, m, eta = 3 / 32, 4, 0.9
    cbp = ContinualBackprop(rate, m, eta, bias_transfer=False, reset_momentum=False)
    cbp.setup(ctx)
    widths = (12, 10)
    st = {"age": [torch.zeros(w) for w in widths], "util": [torch.zeros(w) for w in widths]}
    st.update(mean=[torch.zeros(w) for w in widths], acc=[0.0, 0.0])
    feats = []
    for mod in ref:
        if isinstance(mod, torch.nn.ReLU):
            mod.register_forward_hook(lambda mod, i, o: feats.append(o.detach()))
    total = 0
    for batch in batches(60, (6,), 3, seed=4):
        train_step(ctx, [cbp], batch)
        feats.clear()
        loss = torch.nn.functional.cross_entropy(ref(batch.x), batch.y)
        ref_opt.zero_grad()
        loss.backward()
        ref_opt.step()
        with torch.no_grad():
            replaced = official_gnt_step(ref, st, feats, rate, m, eta)
            for j, (r, (layer, _)) in enumerate(zip(replaced, hidden_pairs(cbp), strict=True)):
                total += len(r)
                ours = torch.nonzero(cbp.state["age"][j] == 0).flatten()
                assert ours.sort().values.tolist() == r.sort().values.tolist()
                ref[2 * j].weight[r] = layer.weight[r]  # the fresh draw (its law is tested above)
        for p, q in zip(model.parameters(), ref.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-6)
    assert total > 10
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):  # momentum survives
        mom, ref_mom = ctx.optimizer.state[p], ref_opt.state[q]
        torch.testing.assert_close(mom["momentum_buffer"], ref_mom["momentum_buffer"])
