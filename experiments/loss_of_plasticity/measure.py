"""Loss-of-plasticity quantities: the online (prequential) accuracy early and late in the
stream, the dead-unit fraction after the last task and the trainability probe's loss early and
late (Lyle et al.); the figure of online accuracy and probe loss per task."""

from __future__ import annotations

from pathlib import Path


def per_task(run):
    """Per experience: mean online accuracy (`train/online_acc` over its training batches)
    and the last dead-unit fraction (`plasticity/dead_units`)."""
    m = run.metrics
    acc = m.dropna(subset=["train/online_acc"]).groupby("experience")["train/online_acc"].mean()
    dead = m.dropna(subset=["plasticity/dead_units"]).groupby("experience")
    return acc, dead["plasticity/dead_units"].last()


def probe_per_task(run, key: str = "plasticity/probe_loss"):
    """The trainability probe's loss at the end of each experience (index: tasks trained)."""
    m = run.metrics
    if key not in m:
        return None
    ends = m.groupby("experience")["iteration"].max()
    rows = m[m["iteration"].isin(ends.to_numpy()) & m[key].notna()]
    return rows.groupby("experience")[key].last().set_axis(ends.index + 1)


def quantities(run) -> dict[str, float]:
    """`online_acc_early`: mean over tasks 2..k+1, `online_acc_late`: over the last k tasks
    (k a tenth of the tasks, at least 1); `dead_units_last`: after the last task;
    `probe_loss_early` / `_late` (and `_offset`): the trainability probe's loss after tasks
    1..k / the last k tasks."""
    acc, dead = per_task(run)
    k = max(1, len(acc) // 10)
    out = {
        "online_acc_early": acc.iloc[1 : k + 1].mean(),
        "online_acc_late": acc.iloc[-k:].mean(),
        "dead_units_last": dead.iloc[-1],
    }
    for suffix in ("", "_offset"):
        probe = probe_per_task(run, f"plasticity/probe_loss{suffix}")
        if probe is not None:
            out[f"probe_loss_early{suffix}"] = probe.iloc[:k].mean()
            out[f"probe_loss_late{suffix}"] = probe.iloc[-k:].mean()
    return out


def figure(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4))
    for i, (arm, seeds) in enumerate(runs.items()):
        for s, run in enumerate(seeds):
            acc, _ = per_task(run)
            label = arm if s == 0 else None
            ax.plot(acc.index + 1, acc.to_numpy(), color=f"C{i}", lw=1, alpha=0.8, label=label)
            probe = probe_per_task(run)
            if probe is not None:
                bx.plot(probe.index, probe.to_numpy(), color=f"C{i}", lw=1, alpha=0.8)
    ax.set(xlabel="task", ylabel="online accuracy (mean over the task)", ylim=(0, 1))
    ax.set_title("Online permuted MNIST (mnist5k), one line per seed")
    ax.legend()
    bx.set(xlabel="tasks trained", ylabel="probe loss after K steps (higher = less plastic)")
    bx.set_title("Trainability probe (Lyle et al.): Gaussian targets")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
