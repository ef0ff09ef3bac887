"""The BFP reproduction's figure: final ACC and BWT per arm (bars: mean over seeds; dots: seeds)."""

from __future__ import annotations

from pathlib import Path

from cl.reproduce_figures import final_bars

ARMS = (("er", "ER"), ("er_bfp", "ER + BFP"))


def figure(runs: dict, path: Path) -> None:
    final_bars(runs, path, ARMS, "class-incremental Split-MNIST (mnist5k), memory 200")
