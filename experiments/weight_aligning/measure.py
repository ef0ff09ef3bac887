"""Weight Aligning quantities from each run's final model (checkpoint.pt): the head's weight
norms and the share of predictions that go to the last task's classes; the figure of the
head's per-class weight norms (the paper's Fig. 2 form)."""

from __future__ import annotations

from pathlib import Path


def final_model(run):
    """The run's model and stream as its last checkpoint left them."""
    from cl import api, checkpoint, config

    cfg, _ = config.load_saved(run.path / "config.yaml")
    state = api.build_state(cfg, checkpoint.load(run.path))
    return state.ctx.model.eval(), state.ctx.stream


def quantities(run) -> dict[str, float]:
    """`norm_ratio`: mean ||W_c|| over the last task's classes / over the older classes;
    `new_share`: share of all tasks' evaluation samples predicted as a last-task class (0.2
    when unbiased with 5 balanced tasks)."""
    import torch

    model, stream = final_model(run)
    new = stream.experiences[-1].classes
    old = [c for e in stream.experiences[:-1] for c in e.classes]
    norms = model.head.weight.detach().norm(dim=1)
    with torch.no_grad():
        x = torch.cat([e.eval_x for e in stream.experiences])
        predicted = model(x).argmax(1)
    return {
        "norm_ratio": (norms[new].mean() / norms[old].mean()).item(),
        "new_share": torch.isin(predicted, torch.tensor(new)).float().mean().item(),
    }


def figure(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(4 * len(runs), 3.2), sharey=True)
    for ax, (arm, seeds) in zip(axes, runs.items(), strict=True):
        model, stream = final_model(seeds[0])
        order = [c for e in stream.experiences for c in e.classes]
        norms = model.head.weight.detach().norm(dim=1)[order].numpy()
        colours = [f"C{i // 2}" for i in range(len(order))]
        ax.bar(range(len(order)), norms, color=colours)
        ax.set(title=f"{arm} (seed 0)", xticks=range(len(order)), xticklabels=order)
        ax.set_xlabel("class (in task order; colour = task)")
    axes[0].set_ylabel("||W_c|| of the head")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
