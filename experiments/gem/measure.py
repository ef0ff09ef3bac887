"""The GEM reproduction's figure, in the paper's Fig. 1 form: ACC, BWT and FWT per method on
permuted and rotated MNIST (mean over seeds, the seeds as dots)."""

from __future__ import annotations

from pathlib import Path

METHODS = ("single", "agem", "gem")
METRICS = ("acc", "bwt", "fwt")


def figure(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, bench in zip(axes, ("permuted", "rotated"), strict=True):
        for j, method in enumerate(METHODS):
            seeds = runs.get(f"{method}_{bench}", [])
            for i, metric in enumerate(METRICS):
                values = [r.summary.get(metric, np.nan) for r in seeds]
                x = i + (j - 1) * 0.27
                ax.bar(
                    x, np.mean(values), width=0.25, color=f"C{j}", label=method if i == 0 else None
                )
                ax.plot([x] * len(values), values, "k.", ms=3)
        ax.axhline(0, color="grey", lw=0.6)
        ax.set(xticks=range(len(METRICS)), xticklabels=[m.upper() for m in METRICS])
        ax.set_title(f"MNIST {bench}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
