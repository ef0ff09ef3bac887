"""Trainability quantities: how well each task is fitted early and late in the stream, and the
figure of that per task for every method."""

from __future__ import annotations

from pathlib import Path


def per_task(run):
    """Per experience: the accuracy on its own training data at its end (random labels: the
    evaluation set is the training set) or the mean online accuracy over it (permuted)."""
    m = run.metrics
    if run.path.name.split("-s")[0].endswith("_labels"):
        last = m.dropna(subset=["eval/acc/task_0"]).groupby("experience").last()
        return last.apply(lambda row: row[f"eval/acc/task_{int(row.name)}"], axis=1)
    return m.dropna(subset=["train/online_acc"]).groupby("experience")["train/online_acc"].mean()


def quantities(run) -> dict[str, float]:
    """`fit_early`: mean over tasks 2..k+1, `fit_late`: over the last k tasks (k a fifth of the
    tasks, at least 1); `dead_units_last`: after the last task."""
    fit = per_task(run)
    k = max(1, len(fit) // 5)
    dead = run.metrics["plasticity/dead_units"].dropna()
    return {
        "fit_early": fit.iloc[1 : k + 1].mean(),
        "fit_late": fit.iloc[-k:].mean(),
        "dead_units_last": dead.iloc[-1] if len(dead) else float("nan"),
    }


def figure(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = {"labels": "random-label MNIST: training accuracy at each task's end",
              "permuted": "online permuted MNIST: online accuracy per task"}  # fmt: skip
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, (stream, title) in zip(axes, titles.items(), strict=True):
        for i, method in enumerate(("naive", "l2", "l2_init", "spectral")):
            for s, run in enumerate(runs.get(f"{method}_{stream}", [])):
                fit = per_task(run)
                label = method if s == 0 else None
                ax.plot(fit.index + 1, fit.to_numpy(), color=f"C{i}", lw=1, alpha=0.8, label=label)
        ax.set(title=title, xlabel="task", ylim=(0, 1))
        ax.title.set_fontsize(10)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
