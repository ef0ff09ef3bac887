"""The metric registry: every key a run logs is registered and declared by its tracker, and
docs/metrics.md carries the registry's index (CL_UPDATE_DOCS=1 rewrites it)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import cl
from cl import api, config, metric_registry
from cl.trackers import FAMILIES

DOCS = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"
BEGIN, END = "<!-- metric registry: begin -->\n", "<!-- metric registry: end -->\n"
TINY = [
    "run.progress=false",
    "run.report=false",
    "wandb.mode=disabled",
    "benchmark.source=digits",
    "benchmark.n_tasks=3",
    "model.hidden=[32]",
    "train.epochs=1",
    "eval.subset=60",
]
EVERYTHING = [  # every tracker on, with strategy statistics
    "strategy=agem",
    "plasticity.every=5",
    "plasticity.trainability_probe=true",
    "plasticity.probe_steps=2",
    "metrics.example_forgetting.train_probe=20",
    "eval.every=3",
]
RUN_KEYS = {  # what the monitor (row header) and the outputs (summary) add
    "iteration", "experience", "epoch", "status", "error", "deterministic", "n_iterations",
    "n_eval_rows", "wall_time_s", "complete", "covers",
}  # fmt: skip


def _index() -> str:
    from cl import l2m  # noqa: F401 - the add-on registers its l2m/* keys

    return BEGIN + metric_registry.markdown() + END


def test_every_logged_key_is_registered_and_declared_by_a_tracker(tmp_path):
    run = cl.run([*TINY, *EVERYTHING, f"run.dir={tmp_path}", "run.name=r"], quiet=True)
    folder = Path(run.path)
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    summary = json.loads((folder / "summary.json").read_text())
    logged = {k for r in rows for k in r} | set(summary)
    state = api.build_state(config.load([*TINY, *EVERYTHING])[0])
    assert list(state.monitor.trackers) == list(FAMILIES)  # every family is on
    declared = RUN_KEYS | {k for t in state.monitor.trackers.values() for k in t.keys}
    assert not declared - set(metric_registry.METRICS), "declared keys must be registry keys"
    for key in logged:
        m = metric_registry.find(key)
        assert m is not None, f"{key} is logged but not in cl/metric_registry.py"
        assert m.key in declared, f"{key} ({m.key}) is logged but no tracker declares it"
    for t in ("strategy/agem/cos", "example_forgetting/train/events", "plasticity/probe_loss"):
        assert t in logged  # the run did exercise the families


def test_patterns_match_their_keys_only():
    assert metric_registry.find("eval/acc/task_3").key == "eval/acc/task_{i}"
    assert metric_registry.find("wf_10").key == "wf_{w}"
    assert metric_registry.find("plasticity/dead_units").key == "plasticity/dead_units"
    assert metric_registry.find("plasticity/dead_units/body.2").key.endswith("{layer}")
    assert metric_registry.find("eval/acc/task_1/x") is None
    assert metric_registry.label("wf_100") == "WF^100 (windowed forgetting)"
    with pytest.raises(ValueError, match="twice"):
        metric_registry.register(metric_registry.Metric("acc", "other", "other"))


def test_docs_carry_the_registry_index():
    text, index = DOCS.read_text(), _index()
    if os.environ.get("CL_UPDATE_DOCS") == "1":
        head = text.split(BEGIN)[0] if BEGIN in text else text
        rest = text.split(END, 1)[1] if END in text else ""
        DOCS.write_text(head + index + rest)
        text = DOCS.read_text()
    assert index in text, "docs/metrics.md is stale: CL_UPDATE_DOCS=1 pytest " + __file__
    for key in metric_registry.METRICS:
        assert f"`{key}`" in text, key


def test_definitions_are_plain_text():
    """The report shows definitions and formulas as HTML text: no Markdown or LaTeX markup."""
    from cl import l2m  # noqa: F401 - the add-on's keys too

    for m in metric_registry.METRICS.values():
        for text in (m.label, m.definition, m.formula):
            bad = [c for c in ("`", "*", "\\", "$") if c in text]
            assert not bad, f"{m.key}: {text!r} has markup {bad}"
    gap, time, rate = (metric_registry.METRICS[k].definition for k in (
        "gap_depth", "recovery_time", "recovery_rate"))  # fmt: skip
    assert len({gap, time, rate}) == 3
