"""Loss-of-plasticity quantities: the online (prequential) accuracy early and late in the
stream and the dead-unit fraction after the last task; the figure of online accuracy per task."""

from __future__ import annotations

from pathlib import Path


def per_task(run):
    """Per experience: mean online accuracy (`train/online_acc` over its training batches)
    and the last dead-unit fraction (`plasticity/dead_units`)."""
    m = run.metrics
    acc = m.dropna(subset=["train/online_acc"]).groupby("experience")["train/online_acc"].mean()
    dead = m.dropna(subset=["plasticity/dead_units"]).groupby("experience")
    return acc, dead["plasticity/dead_units"].last()


def quantities(run) -> dict[str, float]:
    """`online_acc_early`: mean over tasks 2..k+1, `online_acc_late`: over the last k tasks
    (k a tenth of the tasks, at least 1); `dead_units_last`: after the last task."""
    acc, dead = per_task(run)
    k = max(1, len(acc) // 10)
    return {
        "online_acc_early": acc.iloc[1 : k + 1].mean(),
        "online_acc_late": acc.iloc[-k:].mean(),
        "dead_units_last": dead.iloc[-1],
    }


def figure(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (arm, seeds) in enumerate(runs.items()):
        for s, run in enumerate(seeds):
            acc, _ = per_task(run)
            label = arm if s == 0 else None
            ax.plot(acc.index + 1, acc.to_numpy(), color=f"C{i}", lw=1, alpha=0.8, label=label)
    ax.set(xlabel="task", ylabel="online accuracy (mean over the task)", ylim=(0, 1))
    ax.set_title("Online permuted MNIST (mnist5k), one line per seed")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
