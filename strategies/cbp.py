"""Continual backprop (CBP): Dohare et al., Nature 2024; LoP code `lop/algos/gnt.py`."""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
from torch import nn

from cl.context import Context
from cl.strategy import Strategy
from strategies.rng import RngStream

NORMS = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d)
ACTS = (nn.ReLU, nn.Tanh, nn.LeakyReLU, nn.GELU, nn.Sigmoid, nn.ELU, nn.SiLU)


class ContinualBackprop(Strategy):
    """Replace low-utility mature hidden units after every optimizer step.

    Dohare, Hernandez-Garcia, Lan, Rahman, Mahmood, Sutton, "Loss of plasticity in deep
    continual learning", Nature 632:768-774 (2024), arXiv 2306.13812.

    Per hidden unit i of layer l (a Linear output or a Conv2d channel), with decay eta:
        u[i] <- eta * u[i] + (1 - eta) * mean|h_i| * sum_k |w_out[k, i]|    (contribution utility)
        f[i] <- eta * f[i] + (1 - eta) * mean h_i                            (mean activation)
        a[i] <- a[i] + 1;   u_hat[i] = u[i] / (1 - eta^a[i])                 (bias correction)
    (means over batch and spatial positions). Mature units are those with a > maturity_threshold;
    with none, nothing accumulates. Otherwise c <- c + replacement_rate * #mature, n = floor(c),
    c <- c - n, and the n mature units with the smallest u_hat are replaced: b_next += w_out[:,
    i] * f[i] / (1 - eta^a[i]) (`bias_transfer`: the unit's mean contribution moves into the
    next layer's bias), w_out[:, i] <- 0, incoming weights <- U(-b, b) with b = 1/sqrt(fan_in)
    (`init="default"`: torch's default Linear/Conv2d init, used by cl's models and LoP's conv
    layers) or b = sqrt(2) * sqrt(3/fan_in) (`init="kaiming"`: LoP's ReLU MLP), incoming bias <-
    0, normalisation affine (and running stats) of the unit reset, u = f = a = 0, and every
    optimizer-state tensor shaped like a touched parameter (SGD momentum unless
    `reset_momentum=false`; Adam exp_avg, exp_avg_sq, max_exp_avg_sq; a per-element step) zeroed
    at those rows / columns (torch's Adam keeps a scalar `step`, which cannot be reset per
    unit).

    Official code (`lop/algos/gnt.py`) vs the defaults here: gnt.py zeroes f[i] before it reads
    it, so its bias transfer adds 0 (`convGnT`, `res_gnt` have none), and it leaves SGD
    momentum of replaced units untouched; the published results come from that behaviour:
    `bias_transfer=false reset_momentum=false` reproduces gnt.py step for step (tests/test_cbp.py
    lock-step test). The defaults stay `true`: the transfer is what gnt.py's comment and the
    paper's "function unchanged" intend (the replaced unit's removal leaves the output mean
    unchanged), and a reset unit whose momentum survives keeps moving along its
    predecessor's direction; both defaults keep earlier cl results unchanged.
    Hidden layers: the Linear/Conv2d layers of `model.body` (nn.Sequential) before `model.head`;
    activations are captured by forward hooks (training mode only) on their activation modules.
    """

    name = "cbp"
    member_wise = True

    def __init__(
        self,
        replacement_rate: float = 1e-4,
        maturity_threshold: int = 100,
        decay_rate: float = 0.99,
        init: str = "default",
        bias_transfer: bool = True,
        reset_momentum: bool = True,
    ):
        if init not in ("default", "kaiming"):
            raise ValueError(f"init must be 'default' or 'kaiming', got {init!r}")
        if not 0.0 <= replacement_rate <= 1.0:
            raise ValueError(f"replacement_rate must be in [0, 1], got {replacement_rate}")
        if maturity_threshold < 0:
            raise ValueError(f"maturity_threshold must be >= 0, got {maturity_threshold}")
        if not 0.0 <= decay_rate < 1.0:
            raise ValueError(f"decay_rate must be in [0, 1), got {decay_rate}")
        self.rate, self.maturity = replacement_rate, maturity_threshold
        self.decay, self.init = decay_rate, init
        self.bias_transfer, self.reset_momentum = bias_transfer, reset_momentum
        self.layers: list[tuple[nn.Module, nn.Module, list]] = []  # (layer, next, norms)
        self.state: dict[str, Any] | None = None
        self.rng = RngStream()  # fresh incoming weights
        self.hooks: list = []  # the forward hooks' handles (a second `setup` replaces them)

    @classmethod
    def check(cls, cfg) -> None:
        if cfg.model.name not in ("mlp", "cnn"):
            raise ValueError(
                f"needs a model with an nn.Sequential body (mlp, cnn), not model={cfg.model.name}"
            )

    def setup(self, ctx: Context) -> None:
        body, head = getattr(ctx.model, "body", None), getattr(ctx.model, "head", None)
        if not isinstance(body, nn.Sequential) or not isinstance(head, nn.Linear):
            raise ValueError("cbp needs a model with an nn.Sequential `body` (mlp, cnn)")
        mods = list(body)
        for handle in self.hooks:  # set up again (a vectorised group's member): no duplicates
            handle.remove()
        self.layers, self.hooks = [], []
        where = [i for i, m in enumerate(mods) if isinstance(m, nn.Linear | nn.Conv2d)]
        for j, i in enumerate(where):
            nxt = mods[where[j + 1]] if j + 1 < len(where) else head
            between = mods[i + 1 : where[j + 1] if j + 1 < len(where) else len(mods)]
            acts = [m for m in between if isinstance(m, ACTS)]
            norms = [m for m in between if isinstance(m, NORMS)]
            self.layers.append((mods[i], nxt, norms))
            tap = acts[0] if acts else mods[i]
            self.hooks.append(tap.register_forward_hook(partial(self._capture, j)))
        self.acts = [None] * len(self.layers)
        if self.state is None:
            z = [layer.weight.new_zeros(len(layer.weight)) for layer, _, _ in self.layers]
            self.state = dict(util=z, mean=[t.clone() for t in z], age=[t.clone() for t in z])
            self.state.update(acc=[0.0] * len(z))
        self.rng.setup(ctx)

    def _capture(self, j: int, module: nn.Module, inputs, output: torch.Tensor) -> None:
        if module.training:  # not the evaluator's forwards
            self.acts[j] = output.detach()

    @torch.no_grad()
    def after_step(self, ctx: Context) -> None:
        s, eta = self.state, self.decay
        for j, (layer, nxt, norms) in enumerate(self.layers):
            h, self.acts[j] = self.acts[j], None
            if h is None:
                continue
            n = layer.weight.shape[0]
            h = h.transpose(0, 1).reshape(n, -1)
            w_out = nxt.weight.view(nxt.weight.shape[0], n, -1)
            h_abs, h_mean = self._means(ctx, h)
            util = h_abs * w_out.abs().sum((0, 2))
            s["util"][j].mul_(eta).add_((1 - eta) * util)
            s["mean"][j].mul_(eta).add_((1 - eta) * h_mean)
            s["age"][j] += 1
            mature = torch.nonzero(s["age"][j] > self.maturity).flatten()
            if len(mature) == 0:
                continue
            s["acc"][j] += self.rate * len(mature)
            k = min(int(s["acc"][j]), len(mature))
            s["acc"][j] -= k
            if k == 0:
                continue
            corr = 1 - eta ** s["age"][j][mature]
            r = mature[torch.topk(-s["util"][j][mature] / corr, k).indices]
            if self.bias_transfer and nxt.bias is not None:
                f = s["mean"][j][r] / (1 - eta ** s["age"][j][r])
                nxt.bias += (w_out[:, r, :].sum(2) * f).sum(1)
            self._replace(ctx, layer, nxt, norms, r, w_out)
            for key in ("util", "mean", "age"):
                s[key][j][r] = 0

    @staticmethod
    def _means(ctx: Context, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per unit (rows of `h`), the mean |activation| and mean activation over the batch:
        over all ranks' shares (summed), so every rank replaces the same units."""
        c = ctx.collective
        if c.world == 1:
            return h.abs().mean(1), h.mean(1)
        count = h.new_full((len(h),), h.shape[1])
        sums = c.all_reduce_sum(torch.stack([h.abs().sum(1), h.sum(1), count]))
        return sums[0] / sums[2], sums[1] / sums[2]

    def _replace(self, ctx, layer, nxt, norms, r, w_out) -> None:
        fan_in = layer.weight[0].numel()
        bound = 1 / math.sqrt(fan_in) if self.init == "default" else math.sqrt(6 / fan_in)
        fresh = torch.rand((len(r), *layer.weight.shape[1:]), generator=self.rng.gen)
        layer.weight[r] = ((2 * fresh - 1) * bound).to(layer.weight)
        w_out[:, r, :] = 0
        rows = [p for p in (layer.weight, layer.bias) if p is not None]
        if layer.bias is not None:
            layer.bias[r] = 0
        for norm in norms:
            if getattr(norm, "weight", None) is not None and len(norm.weight) == len(layer.weight):
                norm.weight[r], norm.bias[r] = 1.0, 0.0
                rows += [norm.weight, norm.bias]
            if getattr(norm, "running_mean", None) is not None:
                norm.running_mean[r], norm.running_var[r] = 0.0, 1.0
        keep = () if self.reset_momentum else ("momentum_buffer",)
        for p in rows:
            for key, v in ctx.optimizer.state.get(p, {}).items():
                if torch.is_tensor(v) and v.shape == p.shape and key not in keep:
                    v[r] = 0
        for key, v in ctx.optimizer.state.get(nxt.weight, {}).items():
            if torch.is_tensor(v) and v.shape == nxt.weight.shape and key not in keep:
                v.view(v.shape[0], len(layer.weight), -1)[:, r, :] = 0

    def state_dict(self) -> dict[str, Any]:
        return {**self.state, "rng": self.rng.state_dict()} if self.state is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = {k: v for k, v in state.items() if k != "rng"}
        self.rng.load_state_dict(state["rng"])
