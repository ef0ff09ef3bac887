"""GEM and A-GEM: projection mechanics against direct solutions, and the outcome on PMNIST."""

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

import cl
from cl.context import Context
from cl.distributed import SINGLE
from cl.models import MLP
from strategies.agem import AGEM, project
from strategies.gem import GEM, dual_weights
from strategies.task_grads import linear_only, rows


def solve_dual(G, g, margin, eps=1e-3):
    """GEM's projected gradient g~ = G^T v* + g for flat rows G and gradient g."""
    return dual_weights(G @ G.T, G @ g, margin, eps) @ G + g


def flat_grad(model):
    return torch.cat([p.grad.flatten() for p in model.parameters()])


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # small models: threads only fight over the shared cores
    yield
    torch.set_num_threads(n)


def violated_case(seed, t=4, p=30):
    gen = torch.Generator().manual_seed(seed)
    G = torch.randn(t, p, generator=gen, dtype=torch.float64)
    g = torch.randn(p, generator=gen, dtype=torch.float64)
    g = g - 1.5 * G[0] * (g @ G[0]).abs() / (G[0] @ G[0])  # make sure <g, g_0> < 0
    assert (G @ g < 0).any()
    return G, g


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gem_projection_matches_the_primal_qp(seed):
    G, g = violated_case(seed)
    z = solve_dual(G, g, margin=0.0, eps=1e-10)
    assert (G @ z).min() >= -1e-8 * G.norm() * g.norm()  # every constraint holds
    primal = minimize(
        lambda v: 0.5 * np.sum((v - g.numpy()) ** 2),
        g.numpy(),
        jac=lambda v: v - g.numpy(),
        constraints=[{"type": "ineq", "fun": lambda v: G.numpy() @ v, "jac": lambda v: G.numpy()}],
        method="SLSQP",
        options={"ftol": 1e-14, "maxiter": 500},
    )
    assert primal.success
    assert np.allclose(z.numpy(), primal.x, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_gem_margin_is_a_lower_bound_on_the_dual_variables(seed):
    G, g = violated_case(seed)
    gamma, eps = 0.5, 1e-3
    z = solve_dual(G, g, margin=gamma, eps=eps)
    P = (G @ G.T + eps * torch.eye(len(G), dtype=G.dtype)).numpy()
    q = (G @ g).numpy()
    dual = minimize(
        lambda v: 0.5 * v @ P @ v + q @ v,
        np.full(len(G), gamma),
        jac=lambda v: P @ v + q,
        bounds=[(gamma, None)] * len(G),
        method="L-BFGS-B",
        options={"ftol": 1e-15, "gtol": 1e-12},
    )
    v = np.linalg.lstsq(G.numpy().T, (z - g).numpy(), rcond=None)[0]  # z = G^T v + g
    assert np.allclose(v, dual.x, atol=1e-4)
    assert v.min() >= gamma - 1e-6  # every past gradient enters with weight >= gamma
    assert (G @ z).min() > 0


def memories(gem, n_tasks, n=32, seed=0, sizes=None):
    gen, m = torch.Generator().manual_seed(seed), gem.memory
    sizes = torch.tensor(sizes or [n] * n_tasks)
    m.x = torch.rand(int(sizes.sum()), 1, 5, 5, generator=gen)
    m.y = torch.randint(6, (len(m.x),), generator=gen)
    m.task = torch.repeat_interleave(torch.arange(n_tasks), sizes)


class Ctx:
    collective = SINGLE  # one process (cl/distributed.py)
    mean_gradient = Context.mean_gradient

    def __init__(self, model, class_mask=None):
        self.model, self.class_mask, self.generator = model, class_mask, None

    def logits(self, output, task):
        if self.class_mask is None:
            return output
        return output.masked_fill(~self.class_mask[task], float("-inf"))


@pytest.mark.parametrize("layer_norm", [False, True])  # one pass for all tasks / one per task
@pytest.mark.parametrize("sizes", [[32, 32, 32], [32, 7, 20]])
@pytest.mark.parametrize("task_incremental", [False, True])
def test_gem_memory_gradients_are_per_task_mean_loss_gradients(task_incremental, sizes, layer_norm):
    torch.manual_seed(0)
    model = MLP(25, [16, 12], 6, layer_norm=layer_norm)
    assert linear_only(model) is not layer_norm
    mask = None
    gem = GEM()
    memories(gem, 3, sizes=sizes)
    task = torch.repeat_interleave(torch.arange(3), torch.tensor(sizes))
    if task_incremental:
        mask = torch.zeros(3, 6, dtype=torch.bool)
        for k in range(3):
            mask[k, 2 * k : 2 * k + 2] = True
        gem.memory.y = 2 * task + gem.memory.y % 2  # labels inside each task's classes
    G = rows(gem.memory_grads(Ctx(model, mask)))
    assert G.shape == (3, sum(p.numel() for p in model.parameters()))
    for k in range(3):  # reference: .backward() of task k's mean loss, masked to its classes
        model.zero_grad()
        out = model(gem.memory.x[task == k])
        if mask is not None:
            out = out.masked_fill(~mask[k], float("-inf"))
        torch.nn.functional.cross_entropy(out, gem.memory.y[task == k]).backward()
        assert torch.allclose(G[k], flat_grad(model), atol=1e-6)
    if mask is not None:  # task k's gradient reaches only its own head rows
        w = model.head.weight.numel()
        head_w = G[:, -w - 6 : -6].reshape(3, 6, 12).abs().sum(2)
        assert torch.equal(head_w > 0, mask)


def test_gem_after_backward_projects_onto_all_memory_constraints():
    torch.manual_seed(0)
    model = MLP(25, [16], 6)
    gem = GEM(memory_strength=0.0)
    memories(gem, 3)
    ctx = Ctx(model)
    G = rows(gem.memory_grads(ctx))
    for p in model.parameters():  # a current gradient opposed to past task 0
        p.grad = torch.zeros_like(p)
    start = 0
    for p in model.parameters():
        p.grad = -G[0, start : start + p.numel()].view_as(p).clone()
        start += p.numel()
    g = flat_grad(model)
    assert (G @ g).min() < 0
    gem.after_backward(ctx)
    z = flat_grad(model)
    # KKT of the regularised dual (P = G G^T + eps I): G z + eps v >= 0 with v >= 0, so each
    # constraint holds up to eps * v_k (eps = 1e-3, the official regulariser).
    v = torch.linalg.lstsq(G.T.double(), (z - g).double()[:, None]).solution.squeeze(1)
    assert v.min() >= -1e-6
    assert (G.double() @ z.double() + 1e-3 * v).min() >= -1e-6
    assert (G @ z).min() >= -1e-3 * v.max() - 1e-6
    assert (G @ z).min() > (G @ g).min() / 10  # the violation itself is gone


def test_gem_state_dict_round_trip():
    a, b = GEM(), GEM()
    memories(a, 2)
    b.load_state_dict(a.state_dict())
    _, _, sizes, tasks = b.memories(Ctx(None))
    assert tasks == [0, 1] and sizes == [32, 32] and torch.equal(a.memory.x, b.memory.x)


def test_agem_closed_form_projection():
    g, g_ref = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    assert torch.allclose(project(g, g_ref), torch.tensor([0.5, 0.5]))  # g - (-1/2) g_ref
    assert project(g, g_ref) @ g_ref == pytest.approx(0.0, abs=1e-7)
    assert torch.equal(project(g, torch.tensor([1.0, 1.0])), g)  # no conflict: unchanged


def test_agem_state_dict_round_trip():
    a = AGEM(patterns_per_exp=5)
    m = a.memory
    m.x, m.y, m.task = torch.rand(10, 3), torch.arange(10), torch.zeros(10, dtype=torch.long)
    b = AGEM()
    b.load_state_dict(a.state_dict())
    assert torch.equal(m.x, b.memory.x) and torch.equal(m.y, b.memory.y)


PMNIST = [
    "benchmark=permuted_mnist",
    "benchmark.n_tasks=6",  # 4 tasks: naive's forgetting varies so much that the gap fell to 0.1
    "model.hidden=[100,100]",
    "train.batch_size=32",
    "optim.momentum=0.9",
    "optim.lr=0.05",
    "eval.every=100000",
    "plasticity.every=0",
]


@pytest.mark.outcome
def test_gem_forgets_less_than_naive_on_permuted_mnist(fast, seed_offset, outcome):
    args = fast + PMNIST + [f"seed={seed_offset}"]
    naive = cl.run(args + ["strategy=naive"], quiet=True).summary
    gem = cl.run(args + ["strategy=gem", "strategy.gem.patterns_per_exp=64"], quiet=True).summary
    outcome.above("gem - naive bwt", gem["bwt"] - naive["bwt"], 0.12, null=0)
    outcome.above("gem - naive acc", gem["acc"] - naive["acc"], 0.1, null=0)


class Twice(torch.nn.Module):
    """One Linear applied twice: the one-pass path must detect it and take per-task passes."""

    def __init__(self):
        super().__init__()
        self.inner, self.head = torch.nn.Linear(25, 25), torch.nn.Linear(25, 6)

    def forward(self, x):
        return self.head(torch.relu(self.inner(torch.relu(self.inner(x.flatten(1))))))


def test_gem_memory_gradients_of_a_reused_layer():
    torch.manual_seed(0)
    model, gem = Twice(), GEM()
    memories(gem, 2, sizes=[16, 16])
    assert linear_only(model)
    G = rows(gem.memory_grads(Ctx(model)))
    for k in range(2):
        model.zero_grad()
        sl = slice(16 * k, 16 * k + 16)
        loss = torch.nn.functional.cross_entropy(model(gem.memory.x[sl]), gem.memory.y[sl])
        loss.backward()
        assert torch.allclose(G[k], flat_grad(model), atol=1e-6)


def test_agem_reference_batch_is_drawn_without_replacement():
    # sample_size >= memory: without replacement the batch is the whole memory, so g_ref is
    # the full-memory gradient (drawing with replacement would repeat some samples and not
    # others, and miss it)
    torch.manual_seed(0)
    model = MLP(25, [16], 6)
    agem = AGEM(sample_size=64)
    m = agem.memory
    m.x, m.y, m.task = torch.rand(40, 1, 5, 5), torch.randint(6, (40,)), torch.zeros(40).long()
    ctx = Ctx(model)
    ctx.generator = torch.Generator().manual_seed(0)
    refs = agem.reference_grads(ctx)
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(m.x), m.y).backward()
    assert torch.allclose(torch.cat([r.flatten() for r in refs]), flat_grad(model), atol=1e-6)
