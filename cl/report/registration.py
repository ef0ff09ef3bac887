"""Registers the report with the core (entry point `cl.plugins: report`): a run finisher
that writes the run folder's report.html when `run.report` is on."""

from __future__ import annotations

from pathlib import Path

from cl import plugins


def _finish(folder: Path, options) -> Path | None:
    if not options.report:  # the config's `run` section
        return None
    from cl.report import build

    return build([folder])


def register() -> None:
    plugins.FINISHERS["report"] = _finish
