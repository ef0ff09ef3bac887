"""The center-loss reproduction's figure: final ACC per method on rotated and permuted MNIST
(bars: mean over seeds; dots: seeds)."""

from __future__ import annotations

from pathlib import Path

METHODS = ("finetune", "center", "replay", "replay_center")


def figure(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i, bench in enumerate(("rotated", "permuted")):
        for j, method in enumerate(METHODS):
            values = [r.summary.get("acc", np.nan) for r in runs.get(f"{method}_{bench}", [])]
            x = i + (j - 1.5) * 0.2
            ax.bar(x, np.mean(values), width=0.18, color=f"C{j}", label=None if i else method)
            ax.plot([x] * len(values), values, "k.", ms=3)
    ax.set(xticks=[0, 1], xticklabels=["Rotated MNIST", "Permuted MNIST"], ylabel="final ACC")
    ax.set_ylim(0, 1)
    ax.legend(ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
