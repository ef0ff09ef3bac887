"""What a run leaves when it ends: summary.json, accuracy_matrix.csv, example_forgetting.csv,
plots, the W&B summary."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from cl import plugins
from cl.schema import RunSection
from cl.store import SUMMARY_FILE, load_run, write_json


def summary(
    state, status: str, error: str | None, wall_time_s: float, deterministic: bool | None = None
) -> dict:
    """Every final metric of what was recorded so far, with the run's status (and its
    `run.deterministic`, when cl set torch's flags)."""
    out: dict = {"status": status, "complete": status == "finished"}
    if error:
        out["error"] = error
    if deterministic is not None:
        out["deterministic"] = deterministic
    out.update(state.monitor.summary())
    out["n_iterations"] = state.ctx.iteration
    out["covers"] = covers(state)
    out["n_eval_rows"] = len(state.monitor.record.accs)
    out["wall_time_s"] = round(wall_time_s, 3)
    return out


def covers(state) -> dict:
    """What a summary's numbers cover: iterations done, tasks seen (started), tasks in all."""
    ctx = state.ctx
    seen = ctx.experience + 1 if ctx.iteration else 0
    return {"iterations": ctx.iteration, "tasks_seen": seen, "of_tasks": ctx.stream.n_tasks}


def write_tables(folder: Path, state) -> None:
    """Per-sample tables: example_forgetting.csv (when example forgetting is on)."""
    tables = state.monitor.forgetting_tables()
    if tables:
        from cl.example_forgetting import FILE, write_table

        write_table(folder / FILE, tables)


def write(
    folder: Path, values: dict, wandb, title: str, options: RunSection, finished: bool
) -> None:
    """Write the summary (file and W&B), the accuracy matrix and, for a run with rows, the
    plots (`title`: the run's, `cl.naming.title`) and the finishers' outputs, report.html
    (each finisher gets `options`, the config's `run` section); logged to W&B only when the
    run finished: an interrupted one goes on later."""
    if values.get("accuracy_matrix"):
        R = np.array(values["accuracy_matrix"], dtype=float)
        np.savetxt(folder / "accuracy_matrix.csv", R, delimiter=",", fmt="%.6f")
    write_json(folder / SUMMARY_FILE, values)
    if wandb is not None:
        wandb.summary(values)
    run = load_run(folder)
    if not len(run.metrics):
        return
    from cl import plots

    (folder / "plots").mkdir(exist_ok=True)
    paths = [plots.accuracy_curves(run.metrics, folder / "plots" / "accuracy_curves.png", title)]
    if values.get("accuracy_matrix"):
        R = np.array(values["accuracy_matrix"], dtype=float)
        paths.append(plots.accuracy_matrix(R, folder / "plots" / "accuracy_matrix.png"))
    page = None  # an HTML page a finisher wrote (the report: cl.report.registration)
    for name, finish in plugins.finishers().items():
        try:
            page = finish(folder, options) or page
        except OSError:  # a full disk: the run's outputs are incomplete, the caller says so
            raise
        except Exception as e:  # noqa: BLE001 - the run's own outputs are written already
            why = f"{type(e).__name__}: {e}"
            print(f"warning: the {name} could not be built ({why})", file=sys.stderr)
    if wandb is not None and finished:
        wandb.images({f"plots/{p.stem}": p for p in paths}, page)
