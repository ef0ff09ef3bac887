"""Plots of a run: per-task accuracy over iterations (the stability-gap picture) and R."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def accuracy_curves(metrics, path: Path, title: str = "") -> Path:
    """Accuracy of every task over training iterations; dashed lines mark task switches.

    Each task is drawn from the start of its own experience (boundary evaluations of
    future tasks are left out).
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    it = metrics["iteration"].to_numpy()
    exp = metrics["experience"].to_numpy()
    cols = sorted(
        (c for c in metrics.columns if c.startswith("eval/acc/task_")),
        key=lambda c: int(c.rsplit("_", 1)[1]),
    )
    for col in cols:
        i = int(col.rsplit("_", 1)[1])
        starts = np.flatnonzero(exp >= i)
        if not len(starts):
            continue
        first = starts[0] - (1 if starts[0] > 0 else 0)  # include the row just before the task
        sel = slice(first, None)
        ax.plot(it[sel], metrics[col].to_numpy()[sel], lw=1.2, label=f"task {i}")
    for switch in switch_iterations(metrics):
        ax.axvline(switch, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("training iteration")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title or "per-task accuracy (dashed: task switch)")
    ax.legend(loc="lower left", fontsize=8, ncol=min(5, len(cols)))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def switch_iterations(metrics) -> list[int]:
    """Iterations after which the training experience changed."""
    exp = metrics["experience"].to_numpy()
    it = metrics["iteration"].to_numpy()
    return [int(it[n - 1]) for n in range(1, len(exp)) if exp[n] != exp[n - 1]]


def accuracy_matrix(R: np.ndarray, path: Path) -> Path:
    """Heatmap of R[i, j] = accuracy on task j after training on task i."""
    plt = _plt()
    T = len(R)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * T, 0.8 + 0.6 * T))
    im = ax.imshow(np.nan_to_num(R, nan=0.0), vmin=0, vmax=1, cmap="viridis")
    for i in range(T):
        for j in range(T):
            if np.isfinite(R[i, j]) and T <= 20:
                ax.text(
                    j,
                    i,
                    f"{R[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if R[i, j] < 0.6 else "black",
                )
    ax.set_xlabel("evaluated task")
    ax.set_ylabel("after training task")
    ax.set_xticks(range(T))
    ax.set_yticks(range(T))
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
