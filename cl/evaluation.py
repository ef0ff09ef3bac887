"""Continual evaluation: per-task accuracy and loss of the model from one batched forward pass."""

from __future__ import annotations

from collections.abc import Callable

import torch

from cl.distributed import SINGLE
from cl.models import forward
from cl.streams import Stream

# (inputs, logits, penultimate features or None) -> the scores to rank (see Strategy.eval_logits)
InferenceHook = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


def per_sample_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each row, as F.cross_entropy(..., reduction="none").

    log_softmax runs over dim 0 of the transposed logits: torch's CPU kernel over a short last
    dim (e.g. 10 classes) is 2-5x slower on 200-5,000 rows.
    """
    return -torch.log_softmax(logits.t(), dim=0).gather(0, y[None]).squeeze(0)


class Evaluator:
    """Scores the model on the fixed evaluation subsets of the first `n` tasks.

    The subsets of all tasks are concatenated once, in task order, so the seen tasks are a
    prefix: one forward over that prefix (in chunks of `batch_size`, under `inference_mode`,
    with the model in eval mode), then per-task sums by `index_add_`. `samples` (per task,
    (x, y)) replaces the evaluation subsets, e.g. by a probe of training samples.

    `hook` (an `InferenceHook`, set by whoever drives training: the runner from the
    strategies' `eval_logits`, the Avalanche bridge from its plugins' `after_eval_forward`)
    turns each chunk's logits into the scores to rank; the forward is then split into
    `features` and `head` (same arithmetic) so the hook gets both. Without it: `model(x)`.
    """

    def __init__(
        self,
        stream: Stream,
        device: torch.device | str,
        batch_size: int = 4096,
        samples: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ):
        samples = samples or [(e.eval_x, e.eval_y) for e in stream.experiences]
        self.x = torch.cat([x for x, _ in samples]).to(device)
        self.y = torch.cat([y for _, y in samples]).to(device)
        self.task = torch.cat(
            [torch.full((len(y),), i, dtype=torch.long) for i, (_, y) in enumerate(samples)]
        ).to(device)
        sizes = torch.tensor([len(y) for _, y in samples])
        self.ends = sizes.cumsum(0).tolist()
        self.sizes = sizes.to(device=device, dtype=torch.float64)
        self.mask = stream.class_mask(device) if stream.task_incremental else None
        self.batch_size = batch_size
        self.hook: InferenceHook | None = None
        # over several ranks (cl/distributed.py) each scores its share of the scored samples;
        # the sums meet in one all-reduce; per-sample `hits` are gathered only if `want_hits`
        self.collective = SINGLE
        self.want_hits = True

    @property
    def n_tasks(self) -> int:
        return len(self.ends)

    def __call__(self, model: torch.nn.Module, n: int):
        """Accuracy and mean cross-entropy on each of the first `n` tasks (two lists), and
        the per-sample correctness (bool tensor over those tasks' samples, in order)."""
        stats, hits = self.device(model, n)
        accs, losses = stats.tolist()
        return accs, losses, hits

    def device(self, model: torch.nn.Module, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """As `__call__`, left on the device: ((2, n) float64 accuracies and losses, hits)."""
        stats, hits, _ = self.evaluate(model, n)
        return stats, hits

    def evaluate(self, model: torch.nn.Module, n: int, extra: torch.Tensor | None = None):
        """As `device`, and `extra` (a (k, 2) tensor, or None) summed over the ranks in the
        same all-reduce as the evaluation's sums: (stats, hits, extra). Over several ranks
        `hits` is None unless `want_hits` (then gathered from every rank)."""
        end = self.ends[n - 1]
        c = self.collective
        share = c.shard(end)
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                sums = torch.zeros(n, 2, device=self.x.device, dtype=torch.float64)
                hits = []
                for start in range(share.start, share.stop, self.batch_size):
                    sl = slice(start, min(share.stop, start + self.batch_size))
                    if self.hook is None:
                        out = model(self.x[sl])
                    else:
                        out = self.hook(self.x[sl], *forward(model, self.x[sl]))
                    task = self.task[sl]
                    if self.mask is not None:
                        out = out.masked_fill(~self.mask[task], float("-inf"))
                    y = self.y[sl]
                    hits.append(out.argmax(1) == y)
                    hit_ce = torch.stack([hits[-1], per_sample_ce(out, y)], 1)
                    sums.index_add_(0, task, hit_ce.double())
                hits = hits[0] if len(hits) == 1 else torch.cat(hits) if hits else None
                if c.world > 1:
                    if extra is not None:
                        sums = torch.cat([sums, extra.to(sums)])
                    sums = c.all_reduce_sum(sums)
                    sums, extra = sums[:n], (None if extra is None else sums[n:])
                    hits = self._gather(hits, end) if self.want_hits else None
                stats = (sums / self.sizes[:n, None]).T
        finally:
            model.train(was_training)
        return stats, hits, extra

    def _gather(self, hits: torch.Tensor | None, end: int) -> torch.Tensor:
        """Every rank's hits over the first `end` samples, in order (shares padded to one
        size for the all-gather)."""
        c = self.collective
        size = -(-end // c.world)
        padded = torch.zeros(size, dtype=torch.bool, device=self.x.device)
        if hits is not None:
            padded[: len(hits)] = hits
        parts = c.all_gather(padded.to(torch.uint8))
        return torch.cat(
            [p[: len(range(end)[_share(end, r, c.world)])] for r, p in enumerate(parts)]
        ).bool()


def _share(n: int, rank: int, world: int) -> slice:
    return slice(n * rank // world, n * (rank + 1) // world)
