"""The BFP reproduction's figure: final ACC and BWT per arm (bars: mean over seeds; dots: seeds)."""

from __future__ import annotations

from pathlib import Path

ARMS = (("er", "ER"), ("er_bfp", "ER + BFP"))


def bars(runs: dict, path: Path, arms=ARMS) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
    for ax, key, label in zip(axes, ("acc", "bwt"), ("final ACC", "BWT"), strict=True):
        for j, (arm, _) in enumerate(arms):
            values = [r.summary.get(key, np.nan) for r in runs.get(arm, [])]
            ax.bar(j, np.mean(values), width=0.6, color=f"C{j}")
            ax.plot([j] * len(values), values, "k.", ms=4)
        ax.set(xticks=range(len(arms)), xticklabels=[n for _, n in arms], ylabel=label)
        ax.axhline(0, color="grey", lw=0.6)
    fig.suptitle("class-incremental Split-MNIST (mnist5k), memory 200")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def figure(runs: dict, path: Path) -> None:
    bars(runs, path)
