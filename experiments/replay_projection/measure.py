"""The replay-plus-projection reproduction's quantities and figure.

Quantities beyond the summary: `projection_rate` (share of iterations with a memory in which
the projection changed the gradient: the summary's `strategy/<agem|gem>/projected`) and
`early_online_acc` (learning speed: the online accuracy on the new task's batches over the
first EARLY iterations of each task after the first, mean over those tasks). Figure: per
benchmark, the old tasks' mean accuracy over every iteration (seed 0, one line per arm), and
the projection rate over a moving window of 25 iterations.
"""

from __future__ import annotations

from pathlib import Path

EARLY = 25
ARMS = (("er", "ER", "tab:blue"), ("er_agem", "ER + A-GEM", "tab:orange"))
ARMS += (("er_gem", "ER + GEM", "tab:green"),)


def projection_key(summary: dict) -> str | None:
    return next(
        (k for k in ("strategy/agem/projected", "strategy/gem/projected") if k in summary), None
    )


def quantities(run) -> dict:
    m = run.metrics.dropna(subset=["train/online_acc"])
    per_task = [
        rows.sort_values("iteration")["train/online_acc"].head(EARLY).mean()
        for k, rows in m.groupby("experience")
        if k >= 1
    ]
    out = {"early_online_acc": sum(per_task) / len(per_task)}
    key = projection_key(run.summary)
    if key is not None:
        out["projection_rate"] = run.summary[key]
    return out


def old_tasks_mean(m):
    """Per row of experience k >= 1: the mean accuracy of tasks 0..k-1."""
    rows = m[m["experience"] >= 1].dropna(subset=["eval/acc/task_0"])
    cols = [f"eval/acc/task_{i}" for i in range(int(rows["experience"].max()))]
    acc = rows[cols].fillna(0.0).to_numpy()
    keep = rows["experience"].to_numpy()[:, None] > range(len(cols))
    return rows["iteration"], (acc * keep).sum(1) / keep.sum(1)


def figure(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {"split": "class-incremental Split-MNIST", "rotated": "Rotated MNIST (0, 80, 160)"}
    fig, axes = plt.subplots(2, 2, figsize=(11, 6.5), sharex="col")
    for c, (bench, title) in enumerate(panels.items()):
        for arm, label, colour in ARMS:
            seeds = runs.get(f"{arm}_{bench}", [])
            if not seeds:
                continue
            m = seeds[0].metrics
            axes[0, c].plot(*old_tasks_mean(m), color=colour, lw=0.8, label=label)
            key = projection_key(seeds[0].summary)
            if key is not None:
                p = m.dropna(subset=[key])
                rate = p[key].rolling(25, min_periods=1).mean()
                axes[1, c].plot(p["iteration"], rate, color=colour, lw=0.8, label=label)
            if arm == "er":
                for x in m.groupby("experience")["iteration"].min().iloc[1:]:
                    for ax in axes[:, c]:
                        ax.axvline(x, color="grey", lw=0.6, ls="--", alpha=0.6)
        axes[0, c].set_title(title)
        axes[1, c].set_xlabel("training iteration")
    axes[0, 0].set_ylabel("old tasks' mean accuracy (seed 0)")
    axes[1, 0].set_ylabel("projection rate (25-iteration window)")
    for ax in axes.flat:
        ax.set_ylim(0, 1.02)
        ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
