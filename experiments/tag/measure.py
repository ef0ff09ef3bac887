"""This reproduction's figure: average accuracy over seen tasks along training, per arm
(mean over seeds), with each arm's final ACC in the legend."""

from __future__ import annotations

from pathlib import Path


def figure(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

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
