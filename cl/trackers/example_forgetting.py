"""Example forgetting (Toneva et al., ICLR 2019) on the evaluation subsets (set `eval`, from
the row's own evaluation) and optionally on a probe of training samples (set `train`, one more
forward per row); the per-sample work is in cl/example_forgetting.py."""

from __future__ import annotations

from cl import example_forgetting
from cl.evaluation import Evaluator
from cl.schema import ExampleForgettingConfig
from cl.trackers.base import Env, Evaluation, Tracker

SUMMARY = (
    "unforgettable", "never_learned", "events_per_sample", "events_per_sample_per_task",
    "events_after_switch", "events_inside", "switch_share", "rate_after_switch", "rate_inside",
    "old_events_after_switch", "old_events_inside", "old_switch_share", "old_rate_after_switch",
    "old_rate_inside",
)  # fmt: skip


class ExampleForgetting(Tracker):
    keys = tuple(f"example_forgetting/{{set}}/{k}" for k in ("events", "cumulative", *SUMMARY))

    def __init__(self, sets: dict[str, tuple[Evaluator | None, example_forgetting.Tracker]]):
        self.sets = sets  # name -> (its evaluator, None for the row's own; its tracker)

    def row(self, ev: Evaluation) -> dict:
        """Forgetting events of the seen tasks' samples at this evaluation."""
        if ev.iteration == 0:
            return {}
        out, k, it = {}, ev.experience, ev.iteration
        for name, (evaluator, tracker) in self.sets.items():
            hits = ev.hits if evaluator is None else evaluator.device(ev.model, k + 1)[1]
            out[f"example_forgetting/{name}/events"] = tracker.update(hits, k, it)
            out[f"example_forgetting/{name}/cumulative"] = tracker.total
        return out

    def tables(self) -> list[dict[str, list]]:
        """The per-sample tables (one per tracked set)."""
        return [t.table(name) for name, (_, t) in self.sets.items()]

    def summary(self) -> dict:
        out = {}
        for name, (_, tracker) in self.sets.items():
            out.update(tracker.summary(f"example_forgetting/{name}"))
        return out

    def state_dict(self) -> dict:
        return {name: t.state_dict() for name, (_, t) in self.sets.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, (_, tracker) in self.sets.items():
            tracker.load_state_dict(state[name])


def make(cfg: ExampleForgettingConfig, env: Env) -> ExampleForgetting | None:
    if not cfg.enabled:
        return None
    sets: dict[str, Evaluator | None] = {"eval": None}
    if cfg.train_probe:
        sets["train"] = example_forgetting.train_probe(
            env.stream, cfg.train_probe, env.seed, env.device, env.eval_batch_size
        )
    track = lambda ev: example_forgetting.Tracker(  # noqa: E731
        (ev or env.evaluator).ends, env.device, cfg.window
    )
    return ExampleForgetting({name: (ev, track(ev)) for name, ev in sets.items()})
