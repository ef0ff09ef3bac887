"""The stability-gap reproduction's figure: per benchmark, task 1's accuracy over every
iteration (the paper's Fig. 1 form) and the mean accuracy of the old tasks (those learned
before the current experience), ER and joint, one line per seed, each arm's switches dashed."""

from __future__ import annotations

from pathlib import Path

TASK1 = "eval/acc/task_0"
ARMS = (("er", "tab:blue"), ("joint", "tab:orange"))


def old_tasks_mean(m):
    """Per row of experience k >= 1: the mean accuracy of tasks 0..k-1."""
    rows = m[m["experience"] >= 1].dropna(subset=[TASK1])
    cols = [f"eval/acc/task_{i}" for i in range(int(rows["experience"].max()))]
    acc = rows[cols].fillna(0.0).to_numpy()  # tasks not seen yet are not evaluated
    keep = rows["experience"].to_numpy()[:, None] > range(len(cols))
    return rows["iteration"], (acc * keep).sum(1) / keep.sum(1)


def figure(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {
        "split": "class-incremental Split-MNIST",
        "rotated": "domain-incremental Rotated MNIST",
    }
    fig, axes = plt.subplots(2, 2, figsize=(11, 6.5), sharey=True)
    for c, (key, title) in enumerate(panels.items()):
        for arm, colour in ARMS:
            for s, run in enumerate(runs.get(f"{arm}_{key}", [])):
                m = run.metrics.dropna(subset=[TASK1])
                label = arm.upper() if s == 0 else None
                style = dict(color=colour, lw=0.8, alpha=0.7, label=label)
                axes[0, c].plot(m["iteration"], m[TASK1], **style)
                axes[1, c].plot(*old_tasks_mean(m), **style)
                if s == 0:
                    for x in m.groupby("experience")["iteration"].min().iloc[1:]:
                        for ax in axes[:, c]:
                            ax.axvline(x, color=colour, lw=0.6, ls="--", alpha=0.6)
        axes[0, c].set_title(title)
        axes[1, c].set_xlabel("training iteration")
    axes[0, 0].set_ylabel("task 1 accuracy")
    axes[1, 0].set_ylabel("old tasks' mean accuracy")
    for ax in axes.flat:
        ax.set_ylim(0, 1)
        ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
