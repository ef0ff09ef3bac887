"""Figures that several paper reproductions draw from their runs (`experiments/*/measure.py`):
`runs` maps each arm to its seeds' runs (`cl.load_run`, None where a seed did not finish)."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def seen_accuracy(runs: dict, path: Path) -> None:
    """Average accuracy over seen tasks along training, per arm (mean over seeds), with each
    arm's final ACC in the legend."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i, (arm, seeds) in enumerate(runs.items()):
        done = [r for r in seeds if r is not None]
        if not done:
            continue
        curves = [r.metrics[["iteration", "eval/acc/avg_seen"]].dropna() for r in done]
        n = min(len(c) for c in curves)
        it = curves[0]["iteration"].to_numpy()[:n]
        mean = np.mean([c["eval/acc/avg_seen"].to_numpy()[:n] for c in curves], axis=0)
        acc = np.mean([r.summary.get("acc", np.nan) for r in done])
        ax.plot(it, mean, color=f"C{i}", label=f"{arm} (ACC {acc:.3f})")
    ax.set(xlabel="training iteration", ylabel="accuracy, seen tasks", ylim=(0, 1))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def final_bars(runs: dict, path: Path, arms: tuple[tuple[str, str], ...], title: str) -> None:
    """Final ACC and BWT per arm ((key, shown name) pairs): bars the mean over seeds, dots the
    seeds."""
    import numpy as np

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
    for ax, key, label in zip(axes, ("acc", "bwt"), ("final ACC", "BWT"), strict=True):
        for j, (arm, _) in enumerate(arms):
            values = [r.summary.get(key, np.nan) for r in runs.get(arm, []) if r is not None]
            ax.bar(j, np.mean(values), width=0.6, color=f"C{j}")
            ax.plot([j] * len(values), values, "k.", ms=4)
        ax.set(xticks=range(len(arms)), xticklabels=[n for _, n in arms], ylabel=label)
        ax.axhline(0, color="grey", lw=0.6)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
