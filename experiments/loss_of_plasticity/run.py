"""Loss of plasticity on online permuted MNIST: naive vs CBP, L2-init, shrink & perturb, spectral.

    .venv/bin/python experiments/loss_of_plasticity/run.py [--out runs/loss_of_plasticity]
        [--tasks N] [--workers 2]

Runs every strategy of config.yaml (one process per strategy, one torch thread each), then
writes results.csv (per task: online accuracy, dead-unit fraction), results.md (table) and
online_acc.png (one line per strategy) into --out.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml

HERE = Path(__file__).parent


def run_one(label: str, overrides: list[str]) -> tuple[str, str]:
    import torch

    torch.set_num_threads(1)
    import cl

    return label, str(cl.run(overrides, quiet=True).path)


def dead_from_checkpoint(path: Path, overrides: list[str]) -> float:
    """Fallback when the run has no plasticity/dead_units series: ReLU units of the final model
    that are zero on every image of a probe batch (the last task's first 2,000 images)."""
    import torch

    from cl.config import load
    from cl.data import load_source
    from cl.models import build_model
    from cl.streams import build_stream

    cfg, _ = load(overrides)
    b = cfg.benchmark
    data = load_source(b.source, cfg.data.root, cfg.data.download, b.test_fraction, b.split_seed)
    stream = build_stream(b, data, cfg.seed, cfg.eval.subset)
    model = build_model(cfg.model, stream.input_shape, stream.n_classes)
    model.load_state_dict(torch.load(path / "checkpoint.pt", weights_only=True)["model"])
    h, dead, units = stream.experiences[-1].x[:2000], 0, 0
    with torch.no_grad():
        for m in model.body:
            h = m(h)
            if isinstance(m, torch.nn.ReLU):
                dead, units = dead + int((h.abs().sum(0) == 0).sum()), units + h.shape[1]
    return dead / units


def per_task(path: Path):
    """Per task: mean online accuracy and the last dead-unit fraction; attrs: run wall time."""
    import cl

    run = cl.load_run(path)
    m = run.metrics
    rows = m.dropna(subset=["train/online_acc"])
    out = rows.groupby("experience")["train/online_acc"].mean().to_frame("online_acc")
    if "plasticity/dead_units" in m:
        dead = m.dropna(subset=["plasticity/dead_units"]).groupby("experience")
        out["dead_units"] = dead["plasticity/dead_units"].last()
    out.attrs["wall_time_s"] = run.summary.get("wall_time_s", float("nan"))
    return out


def report(out: Path, done: list[tuple[str, str]], jobs: dict, wall: float) -> str:
    """results.csv, results.md and online_acc.png from finished run folders."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    frames, lines = [], []
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, path in done:
        t = per_task(Path(path))
        seconds = t.attrs["wall_time_s"]
        if "dead_units" not in t:
            t["dead_units"] = float("nan")
            t.loc[t.index[-1], "dead_units"] = dead_from_checkpoint(Path(path), jobs[label])
        t["strategy"] = label
        frames.append(t.reset_index())
        ax.plot(t.index + 1, t["online_acc"], label=label)
        acc, k = t["online_acc"], max(1, len(t) // 10)  # a tenth of the tasks
        lines.append(
            f"| {label} | {acc.iloc[1 : k + 1].mean():.3f} | {acc.iloc[-k:].mean():.3f} | "
            f"{acc.iloc[0]:.3f} | {acc.iloc[-1]:.3f} | {t['dead_units'].iloc[1]:.3f} | "
            f"{t['dead_units'].iloc[-1]:.3f} | {seconds:.0f} |"
        )
    ax.set(xlabel="task", ylabel="online accuracy (mean over the task)", ylim=(0, 1))
    ax.set_title("Online permuted MNIST (mnist5k)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "online_acc.png", dpi=120)
    pd.concat(frames).to_csv(out / "results.csv", index=False)
    header = (
        "| strategy | online acc, tasks 2..k+1 | last k tasks | task 1 | last task | "
        "dead units after task 2 | after last task | run wall time (s) |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    table = (
        "\n".join([header, *lines])
        + f"\n\nk = a tenth of the tasks; this command's wall time {wall:.0f} s\n"
    )
    (out / "results.md").write_text(table)
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/loss_of_plasticity")
    ap.add_argument("--tasks", type=int, default=None, help="override benchmark.n_tasks")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=None, help="run only these labels")
    ap.add_argument("--report", action="store_true", help="only report the runs already in --out")
    args = ap.parse_args()
    cfg = yaml.safe_load((HERE / "config.yaml").read_text())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    common = list(cfg["overrides"]) + [f"run.dir={out}"]
    if args.tasks:
        common.append(f"benchmark.n_tasks={args.tasks}")
    jobs = {
        label: common + list(extra) + [f"run.name={label}"]
        for label, extra in cfg["strategies"].items()
        if args.only is None or label in args.only
    }
    start = time.perf_counter()
    if args.report:
        done = [(label, str(out / label)) for label in jobs]
    else:
        with ProcessPoolExecutor(args.workers) as pool:
            done = list(pool.map(run_one, jobs, jobs.values()))
    print(report(out, done, jobs, time.perf_counter() - start))


if __name__ == "__main__":
    main()
