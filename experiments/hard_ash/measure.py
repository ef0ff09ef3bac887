"""This reproduction's figure: average accuracy over seen tasks along training, per arm
(mean over seeds), with each arm's final ACC in the legend."""

from __future__ import annotations

from pathlib import Path

from cl.reproduce_figures import seen_accuracy


def figure(runs: dict, path: Path) -> None:
    seen_accuracy(runs, path)
