"""Members: many seeds of one configuration trained as one stacked model, in one loop.

Each member's state is built by `api.build_state`, exactly as its single run builds it (same
initial weights, stream, evaluation subset, RNG streams), then `stack` joins them:

- the model: `StackedModel` holds every parameter as one tensor with a leading member axis
  and runs the members with `torch.func.vmap(functional_call)`; each member's own model keeps
  its parameters as views of its slice, so whatever reads the member model (its strategies,
  its trackers) sees its current weights;
- the data: experiences, batches and evaluation samples are `[members, samples, ...]`;
- the optimizer steps the stacked parameters (SGD, momentum, Adam, RMSprop, Adagrad and
  weight decay are elementwise, so members stay independent);
- the context (`MemberContext`) gives the loop its per-member order, gather and loss (one loss
  per member: their sum is backpropagated, so each member gets its own gradient);
- strategies that declare `member_wise = True` are called once per member with that member's
  own context (its generator, stream, memory and model): `MemberWise` stacks what they return
  and moves gradients between the member models and the stack (see the README);
- the monitor (`GroupMonitor`) scores every member in one batched pass and fans the rows out
  to each member's trackers and sinks.

The runner (`cl.runner.run_stream`) is the single run's loop, unchanged.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from cl.context import Batch, Context
from cl.errors import UserError
from cl.evaluation import Evaluator
from cl.runner import Cursor, RunState, make_optimizer
from cl.schema import OptimConfig
from cl.strategy import Strategy
from cl.trackers.base import Evaluation

ELEMENTWISE = ("sgd", "adam", "rmsprop", "adagrad")


def unsupported(cfg) -> str | None:
    """Why `cfg` cannot train as a member of a stacked group (None: it can)."""
    from cl import plugins
    from cl.strategy import strategy_class

    if plugins.family_of(cfg.strategy).name != plugins.NATIVE:
        return "add-on strategies train through their own loop"
    for name in cfg.strategy:
        if not getattr(strategy_class(name), "member_wise", False):
            return f"strategy {name} does not declare member_wise = True"
    if cfg.optim.name not in ELEMENTWISE:
        return f"optim={cfg.optim.name} is not elementwise"
    if cfg.model.name == "resnet" or cfg.model.name not in ("mlp", "cnn"):
        return f"model={cfg.model.name} (batch norm) cannot be stacked"
    return None


# --- the model ---------------------------------------------------------------------------------


class _Method(nn.Module):
    """`base.<method>` as a module's forward, so functional_call can run it."""

    def __init__(self, base: nn.Module, method: str):
        super().__init__()
        self.m, self.method = base, method

    def forward(self, x):
        return getattr(self.m, self.method)(x)


class _Part:
    """A stacked model's `head` (callable like the member models' heads)."""

    def __init__(self, model: StackedModel, method: str):
        self.model, self.method = model, method

    def __call__(self, x):
        return self.model.run(self.method, x)


class StackedModel(nn.Module):
    """The members' models as one: parameter `name` is `params[name]` with a leading member
    axis; `forward`, `features`, `head` take and return `[members, batch, ...]`."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        params, buffers = stack_module_state(models)
        self.names = list(params)
        self.params = nn.ParameterList([nn.Parameter(params[n]) for n in self.names])
        self.buffer_names = list(buffers)
        for i, n in enumerate(self.buffer_names):
            self.register_buffer(f"buffer{i}", buffers[n])
        base = copy.deepcopy(models[0]).to("meta")
        self._calls = {m: _Method(base, m) for m in ("forward", "features", "head")}
        self.head = _Part(self, "head")
        self.members = len(models)
        # each member model's parameters become views of its slice of the stack
        for m, model in enumerate(models):
            named = dict(model.named_parameters())
            for n, p in zip(self.names, self.params, strict=True):
                named[n].data = p.data[m]

    def run(self, method: str, x: torch.Tensor) -> torch.Tensor:
        state = {f"m.{n}": p for n, p in zip(self.names, self.params, strict=True)}
        for i, n in enumerate(self.buffer_names):
            state[f"m.{n}"] = getattr(self, f"buffer{i}")
        call = self._calls[method]
        return vmap(lambda s, x: functional_call(call, s, (x,)))(state, x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.run("features", x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run("forward", x)

    def train(self, mode: bool = True):
        for call in self._calls.values():
            call.m.train(mode)
        return super().train(mode)


# --- the stream, the context, the optimizer -----------------------------------------------------


class StackedExperience:
    def __init__(self, experiences):
        e0 = experiences[0]
        self.index = e0.index
        self.classes = sorted({c for e in experiences for c in e.classes})
        self.x = torch.stack([e.x for e in experiences])
        self.y = torch.stack([e.y for e in experiences])
        self.eval_x = torch.stack([e.eval_x for e in experiences])
        self.eval_y = torch.stack([e.eval_y for e in experiences])


class StackedStream:
    def __init__(self, streams):
        s0 = streams[0]
        sizes = {tuple(len(e.y) for e in s.experiences) for s in streams}
        if len(sizes) != 1:
            raise UserError("the members' experiences differ in size; use sweep.executor=local")
        self.name, self.n_classes = s0.name, s0.n_classes
        self.input_shape, self.task_incremental = s0.input_shape, s0.task_incremental
        self.experiences = [
            StackedExperience(es) for es in zip(*[s.experiences for s in streams], strict=True)
        ]
        self.streams = streams

    @property
    def n_tasks(self) -> int:
        return len(self.experiences)

    def class_mask(self, device) -> torch.Tensor:
        return torch.stack([s.class_mask(device) for s in self.streams])


class MemberOptimizer:
    """A member's view of the stacked optimizer: its parameter groups hold the member model's
    parameters (views of its slice), for strategies that act on the weights after a step."""

    def __init__(self, stacked: torch.optim.Optimizer, model: nn.Module):
        self.stacked, self.model = stacked, model

    @property
    def param_groups(self):
        params = [p for p in self.model.parameters()]
        return [{**g, "params": params} for g in self.stacked.param_groups[:1]]


class StackedOptimizer:
    """The optimizer of the stacked parameters; `step` first adds the gradients the member
    models received (from member-wise strategy terms) to their slices of the stack."""

    def __init__(self, inner: torch.optim.Optimizer, model: StackedModel, members: list[Context]):
        self.inner, self.model, self.members = inner, model, members

    @property
    def param_groups(self):
        return self.inner.param_groups

    @property
    def state(self):
        return self.inner.state

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)
        for c in self.members:
            for p in c.model.parameters():
                p.grad = None

    def fold(self) -> None:
        """Member models' gradients -> their slices of the stacked gradients."""
        for m, c in enumerate(self.members):
            for s, p in zip(self.model.params, c.model.parameters(), strict=True):
                if p.grad is None:
                    continue
                if s.grad is None:
                    s.grad = torch.zeros_like(s)
                s.grad[m] += p.grad
                p.grad = None

    def unfold(self, m: int) -> None:
        """Member m's whole gradient into its model's parameters (for gradient surgery)."""
        c = self.members[m]
        for s, p in zip(self.model.params, c.model.parameters(), strict=True):
            g = torch.zeros_like(p) if s.grad is None else s.grad[m].clone()
            p.grad = g if p.grad is None else g + p.grad
            if s.grad is not None:
                s.grad[m].zero_()

    def step(self) -> None:
        self.fold()
        self.inner.step()

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)


class MemberContext(Context):
    """The group's context: tensors carry a leading member axis; `members` are the members'
    own contexts (kept in step by `sync`)."""

    members: list[Context]

    def sync(self) -> None:
        for c in self.members:
            c.experience, c.iteration, c.epoch = self.experience, self.iteration, self.epoch

    def shuffle(self, n: int) -> torch.Tensor:
        return torch.stack([c.shuffle(n) for c in self.members])

    def take(self, t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(len(idx), device=idx.device)[:, None]
        return t[rows, idx]

    def task_loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        ce = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), batch.y.flatten(), reduction="none"
        ).view(batch.y.shape)
        return ce.mean(1) if batch.weight is None else (ce * batch.weight).sum(1)

    def grad_norm(self) -> list[float]:
        self.optimizer.fold()
        out = []
        for m in range(len(self.members)):
            grads = [p.grad[m] for p in self.model.params if p.grad is not None]
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
            out.append(float(norm) if grads else 0.0)
        return out

    def logits(self, output: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        if self.class_mask is None:
            return output
        rows = torch.arange(len(task), device=task.device)[:, None]
        return output.masked_fill(~self.class_mask[rows, task], float("-inf"))


# --- strategies ----------------------------------------------------------------------------------


class PerMember(list):
    """One value per member (a strategy statistic, a row value): split by the monitor."""


class MemberWise(Strategy):
    """The members' instances of one strategy, called member by member with each member's
    context on its slice of the batch; what they return is stacked along the member axis."""

    def __init__(self, instances: list[Strategy], members: list[Context], group: MemberContext):
        self.instances, self.members, self.group = instances, members, group
        self.name = instances[0].name
        cls = type(instances[0])
        self.surgery = cls.after_backward is not Strategy.after_backward
        self.scores = cls.eval_logits is not Strategy.eval_logits

    def _each(self, method: str) -> list:
        self.group.sync()
        return [getattr(s, method)(c) for s, c in zip(self.instances, self.members, strict=True)]

    def before_experience(self, ctx):
        for c in self.members:
            e = c.stream.experiences[ctx.experience]
            c.seen_classes = sorted(set(c.seen_classes) | set(e.classes))
        self._each("before_experience")

    def train_data(self, ctx, x, y, task):
        self.group.sync()
        out = [
            s.train_data(c, x[m], y[m], task[m])
            for m, (s, c) in enumerate(zip(self.instances, self.members, strict=True))
        ]
        return tuple(torch.stack(t) for t in zip(*out, strict=True))

    def batch(self, ctx, batch):
        self.group.sync()
        out = []
        for m, (s, c) in enumerate(zip(self.instances, self.members, strict=True)):
            w = None if batch.weight is None else batch.weight[m]
            b = Batch(batch.x[m], batch.y[m], batch.task[m], batch.n_new, w)
            out.append(s.batch(c, b))
        weights = [b.weight for b in out]
        weight = None if all(w is None for w in weights) else torch.stack(weights)
        return Batch(
            torch.stack([b.x for b in out]),
            torch.stack([b.y for b in out]),
            torch.stack([b.task for b in out]),
            out[0].n_new,
            weight,
        )

    def loss(self, ctx, batch, output):
        self.group.sync()
        terms = []
        for m, (s, c) in enumerate(zip(self.instances, self.members, strict=True)):
            c.features = None if ctx.features is None else ctx.features[m]
            w = None if batch.weight is None else batch.weight[m]
            b = Batch(batch.x[m], batch.y[m], batch.task[m], batch.n_new, w)
            terms.append(s.loss(c, b, output[m]))
        if all(t is None for t in terms):
            return None
        zero = output.new_zeros(())
        return torch.stack([zero if t is None else t.reshape(()) for t in terms])

    def after_backward(self, ctx):
        if not self.surgery:
            return
        self.group.sync()
        for m, (s, c) in enumerate(zip(self.instances, self.members, strict=True)):
            ctx.optimizer.unfold(m)
            s.after_backward(c)

    def after_step(self, ctx):
        self._each("after_step")

    def after_experience(self, ctx):
        self._each("after_experience")

    def eval_logits(self, ctx, x, logits, features):
        if not self.scores:
            return logits
        return torch.stack(
            [
                s.eval_logits(c, x[m], logits[m], None if features is None else features[m])
                for m, (s, c) in enumerate(zip(self.instances, self.members, strict=True))
            ]
        )

    def metrics(self):
        return _per_member([s.metrics() for s in self.instances])

    def experience_metrics(self):
        return _per_member([s.experience_metrics() for s in self.instances])


def _per_member(dicts: list[dict]) -> dict:
    keys = dict.fromkeys(k for d in dicts for k in d)
    return {k: PerMember(d.get(k) for d in dicts) for k in keys}


# --- the monitor ---------------------------------------------------------------------------------


class MemberRows(list):
    """One row per member; `update` splits `PerMember` values."""

    def update(self, values: dict) -> None:  # type: ignore[override]
        for m, row in enumerate(self):
            row.update(
                {
                    k: v[m] if isinstance(v, PerMember) else v
                    for k, v in values.items()
                    if not (isinstance(v, PerMember) and v[m] is None)
                }
            )


class StackedEvaluator:
    """Every member's evaluation subsets in one batched forward (`[members, chunk, ...]`)."""

    def __init__(self, evaluators: list[Evaluator], masks: torch.Tensor | None):
        e0 = evaluators[0]
        if any(e.ends != e0.ends for e in evaluators):
            raise UserError("the members' evaluation subsets differ in size; use executor=local")
        self.x = torch.stack([e.x for e in evaluators])
        self.y = torch.stack([e.y for e in evaluators])
        self.task, self.ends, self.sizes = e0.task, e0.ends, e0.sizes
        self.batch_size, self.masks = e0.batch_size, masks
        self.hook = None

    def __call__(self, model, n: int):
        from cl.models import forward

        end, members = self.ends[n - 1], self.x.shape[0]
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                sums = torch.zeros(members, n, 2, device=self.x.device, dtype=torch.float64)
                hits = []
                rows = torch.arange(members, device=self.x.device)[:, None]
                for start in range(0, end, self.batch_size):
                    sl = slice(start, min(end, start + self.batch_size))
                    x = self.x[:, sl]
                    out = model(x) if self.hook is None else self.hook(x, *forward(model, x))
                    task = self.task[sl]
                    if self.masks is not None:
                        out = out.masked_fill(~self.masks[rows, task[None]], float("-inf"))
                    y = self.y[:, sl]
                    hits.append(out.argmax(-1) == y)
                    ce = -torch.log_softmax(out, -1).gather(-1, y[..., None]).squeeze(-1)
                    sums.index_add_(1, task, torch.stack([hits[-1], ce], -1).double())
                stats = (sums / self.sizes[None, :n, None]).transpose(1, 2).tolist()
        finally:
            model.train(was_training)
        hits = torch.cat(hits, 1)
        return [(s[0], s[1], hits[m]) for m, s in enumerate(stats)]


class GroupMonitor:
    def __init__(self, monitors: list, members: list[Context], masks):
        self.monitors, self.members = monitors, members
        self.every, self.unseen = monitors[0].every, monitors[0].unseen
        self.stream_tasks = monitors[0].stream.n_tasks
        self.evaluator = StackedEvaluator([m.evaluator for m in monitors], masks)

    @property
    def record(self):
        return self.monitors[0].record

    def probe_due(self, iteration: int) -> bool:
        return self.monitors[0].probe_due(iteration)

    def due(self, iteration: int) -> bool:
        return self.monitors[0].due(iteration)

    def step(self, loss, correct, grad_norm, stats, n: int) -> None:
        for m, mon in enumerate(self.monitors):
            norm = None if grad_norm is None else grad_norm[m]
            mine = {k: v[m] for k, v in stats.items() if v[m] is not None}
            mon.step(loss[m], correct[m], norm, mine, n)

    def add(self, ctx: MemberContext, epoch: int, boundary: bool, log, extra=None) -> None:
        """Evaluate every member in one stacked pass and log their rows (`MemberRows`) at once:
        each member's monitor finishes its row as a one-row chunk (its `flush`)."""
        k = ctx.experience
        ctx.sync()
        n_eval = self.stream_tasks if boundary or self.unseen else k + 1
        rows = MemberRows()
        results = self.evaluator(ctx.model, n_eval)
        for mon, c, (accs, losses, hits) in zip(self.monitors, self.members, results, strict=True):
            ends = mon.evaluator.ends
            ev = Evaluation(c.model, k, ctx.iteration, boundary, (accs, losses), None, hits, ends)
            parts = {n: (t.window(ev), t.row(ev)) for n, t in mon.trackers.items() if not t.on_host}
            head = {"iteration": ctx.iteration, "experience": k, "epoch": epoch}
            mon.pending.append((head, ev, mon.steps, parts, {}))
            mon.steps = []
            mon.flush(rows.append)
        rows.update(extra or {})
        log(rows)

    def flush(self, log) -> None:
        """Nothing waits: a group logs its rows as it evaluates (`add`)."""


# --- the group -----------------------------------------------------------------------------------


def stack(states: list[RunState], optim: OptimConfig) -> RunState:
    """One run state that trains `states` (built by `api.build_state`) as one stacked model,
    with the optimizer of their config's `optim` section over the stacked parameters."""
    members = [s.ctx for s in states]
    model = StackedModel([c.model for c in members])
    stream = StackedStream([c.stream for c in members])
    masks = stream.class_mask(members[0].device) if stream.task_incremental else None
    group = MemberContext(
        model=model,
        optimizer=None,  # type: ignore[arg-type]
        stream=stream,  # type: ignore[arg-type]
        device=members[0].device,
        epochs=states[0].train.epochs,
        class_mask=masks,
    )
    group.members = members
    group.optimizer = StackedOptimizer(make_optimizer(optim, model), model, members)  # type: ignore
    for c in members:
        c.optimizer = MemberOptimizer(group.optimizer, c.model)  # type: ignore[assignment]
    strategies = []
    for i in range(len(states[0].strategies)):
        instances = [s.strategies[i] for s in states]
        for s, c in zip(instances, members, strict=True):
            s.setup(c)  # again, now that the member's parameters are views of the stack
        strategies.append(MemberWise(instances, members, group))
    monitor = GroupMonitor([s.monitor for s in states], members, masks)
    train, spec = states[0].train, states[0].spec
    return RunState(train, group, strategies, monitor, Cursor(), spec)  # type: ignore[arg-type]


def unstack(group: RunState, states: list[RunState]) -> None:
    """Leave each member's own state where the group stands (counters, cursor)."""
    group.ctx.sync()
    for s in states:
        s.ctx.seen_classes = s.ctx.seen_classes or list(group.ctx.seen_classes)


def member_values(values: Any, m: int) -> Any:
    return values[m] if isinstance(values, PerMember) else values
