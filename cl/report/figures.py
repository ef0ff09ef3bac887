"""The report's charts, as Plotly figures (dicts): per-task accuracy, the stability-gap view
around each task switch, the accuracy matrix, training loss and online accuracy, plasticity.

One run: one trace per task. Several runs: one colour per configuration, the mean over its
seeds with a min-max band. Long series are downsampled keeping every dip (`downsample`).
"""

from __future__ import annotations

import warnings

import numpy as np

from cl import metric_registry
from cl.metrics import accuracy_matrix, switch_effects
from cl.report.collect import Report, RunView
from cl.report.downsample import minmax

POINTS = 2000  # per trace
PLASTICITY = tuple(m.key.removeprefix("plasticity/") for m in metric_registry.shown("figure"))


def _colour(i: int) -> str:
    import plotly.colors

    palette = plotly.colors.qualitative.Plotly
    return palette[i % len(palette)]


def _fig(**layout):
    import plotly.graph_objects as go

    fig = go.Figure()
    base = dict(
        template="plotly_white",
        margin=dict(l=60, r=20, t=50, b=50),
        hovermode="x unified",
        legend=dict(orientation="h", y=-0.2),
    )
    fig.update_layout(**(base | layout))
    return fig


def _line(fig, x, y, name, colour, group=None, width=1.5, **kw):
    import plotly.graph_objects as go

    x, y = minmax(np.asarray(x, float), np.asarray(y, float), POINTS)
    fig.add_trace(
        go.Scatter(
            x=x, y=y, name=name, mode="lines", legendgroup=group or name,
            line=dict(color=colour, width=width), **kw,
        )
    )  # fmt: skip


def _band(fig, x, lo, hi, colour, group):
    """A min-max band (two traces, the second filled to the first)."""
    import plotly.colors
    import plotly.graph_objects as go

    rgb = plotly.colors.hex_to_rgb(colour)
    fill = f"rgba({rgb[0]},{rgb[1]},{rgb[2]},0.18)"
    for y, extra in ((lo, {}), (hi, {"fill": "tonexty", "fillcolor": fill})):
        xs, ys = minmax(np.asarray(x, float), np.asarray(y, float), POINTS)
        fig.add_trace(
            go.Scatter(
                x=xs, y=ys, mode="lines", line=dict(width=0, color=colour), hoverinfo="skip",
                showlegend=False, legendgroup=group, **extra,
            )
        )  # fmt: skip


def _switches(run: RunView) -> list[int]:
    """Iteration of the last evaluation of each experience but the final one."""
    m = run.metrics
    if not len(m):
        return []
    last = m.groupby("experience")["iteration"].max()
    return [int(v) for k, v in last.items() if k < m["experience"].max()]


def _mark_switches(fig, switches: list[int]) -> None:
    for s in switches:
        fig.add_vline(x=s, line=dict(color="#888", dash="dash", width=1))


def _series(runs: list[RunView], column: str, from_experience: int = 0):
    """(iterations, mean, min, max) of `column` over `runs` (rows of experiences from
    `from_experience` on), aligned on the iteration; None if no run has it."""
    import pandas as pd

    frames = []
    for r in runs:
        m = r.metrics
        if column in m:
            frames.append(m[m["experience"] >= from_experience].set_index("iteration")[column])
    if not frames:
        return None
    table = pd.concat(frames, axis=1)
    return table.index.to_numpy(), table.mean(1), table.min(1), table.max(1)


def _tasks(runs: list[RunView]) -> list[str]:
    cols = {c for r in runs for c in r.metrics.columns if c.startswith("eval/acc/task_")}
    return sorted(cols, key=lambda c: int(c.rsplit("_", 1)[1]))


def _by_group(report: Report):
    for g, label in enumerate(report.groups):
        yield g, label, [r for r in report.runs if r.group == label]


def accuracy(report: Report) -> dict:
    """Per-task accuracy over training iterations (each task from its own experience on),
    task switches dashed."""
    fig = _fig(title="Accuracy per task", xaxis_title="training iteration", yaxis_title="accuracy")
    single = len(report.runs) == 1
    for g, label, runs in _by_group(report):
        for col in _tasks(runs):
            task = int(col.rsplit("_", 1)[1])
            s = _series(runs, col, from_experience=task)
            if s is None:
                continue
            it, mean, lo, hi = s
            colour = _colour(task if single else g)
            name = f"task {task}" if single else f"{label} · task {task}"
            if len(runs) > 1:
                _band(fig, it, lo, hi, colour, name)
            _line(fig, it, mean, name, colour)
    _mark_switches(fig, _switches(report.runs[0]))
    fig.update_yaxes(range=[0, 1.02])
    return fig.to_plotly_json()


def average(report: Report) -> dict:
    """Mean accuracy over the tasks seen so far, per configuration (band: min-max over seeds)."""
    fig = _fig(title="Average accuracy on seen tasks", xaxis_title="training iteration")
    for g, label, runs in _by_group(report):
        s = _series(runs, "eval/acc/avg_seen")
        if s is None:
            continue
        it, mean, lo, hi = s
        if len(runs) > 1:
            _band(fig, it, lo, hi, _colour(g), label)
        _line(fig, it, mean, label, _colour(g), width=2)
    _mark_switches(fig, _switches(report.runs[0]))
    fig.update_yaxes(range=[0, 1.02])
    return fig.to_plotly_json()


def _window(run: RunView, switch: int, after: int) -> tuple[int, int]:
    """Iterations shown before and after task switch `switch` (its experience's length, at
    most `after`; a tenth of that before)."""
    m = run.metrics
    during = m[m["experience"] == switch]["iteration"]
    span = int(during.max() - during.min()) + 1 if len(during) else after
    after = max(10, min(after, span))
    return max(2, after // 10), after


def gap(report: Report, after: int = 300) -> tuple[dict, list[dict]]:
    """The stability-gap view: old tasks' accuracy around each switch, aligned at it (x = 0),
    one panel per switch, the minimum of the old tasks' mean marked; returns the figure and
    per switch its minimum, depth and recovery (cl.metrics.switch_effects)."""
    from plotly.subplots import make_subplots

    own = {id(r): _switches(r) for r in report.runs}  # runs may differ in length and tasks
    ref = max(report.runs, key=lambda r: len(own[id(r)]))
    switches = own[id(ref)]
    if not switches:
        return _fig(title="Stability gap: no task switch yet").to_plotly_json(), []
    cols = min(4, len(switches))
    rows = -(-len(switches) // cols)
    stats = [_switch_stats(report, k + 1) for k in range(len(switches))]
    titles = [
        f"switch {k + 1}: min {s['min']:.3f} at +{s['at']}<br>depth {s['depth']:.3f}"
        + ("" if s["recovery"] is None else f", recovery {s['recovery']:.0f} it")
        for k, s in enumerate(stats)
    ]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, shared_yaxes=True)
    fig.update_annotations(font_size=12)
    single = len(report.runs) == 1
    for k in range(len(switches)):
        row, col = k // cols + 1, k % cols + 1
        before, shown = _window(ref, k + 1, after)
        for g, label, runs in _by_group(report):
            curves = []
            for r in (r for r in runs if len(own[id(r)]) > k):
                s, m = own[id(r)][k], r.metrics
                w = m[(m["iteration"] >= s - before) & (m["iteration"] <= s + shown)]
                old = w[[f"eval/acc/task_{i}" for i in range(k + 1)]]
                curves.append(old.mean(1).to_numpy())
                x = w["iteration"].to_numpy() - s
                for i in range(k + 1) if single else ():
                    line = dict(color=_colour(i), width=1)
                    _panel(fig, row, col, x, old.iloc[:, i], f"task {i}", k == i, line=line)
            if not curves:
                continue
            n = min(len(c) for c in curves)
            mean = np.mean([c[:n] for c in curves], axis=0)
            line = dict(color="#222" if single else _colour(g), width=3)
            name = "old tasks (mean)" if single else label
            _panel(fig, row, col, x[:n], mean, name, k == 0, line=line)
            low = int(np.nanargmin(np.where(x[:n] >= 0, mean, np.inf)))
            marker = dict(size=10, color="red", symbol="x")
            legend = k == 0 and g == 0
            _panel(fig, row, col, x[low : low + 1], mean[low : low + 1], "minimum", legend,
                   mode="markers", marker=marker)  # fmt: skip
        fig.add_vline(x=0, line=dict(color="#888", dash="dash", width=1), row=row, col=col)
    fig.update_layout(
        template="plotly_white",
        title="Stability gap: old tasks around each task switch (x = iterations after it)",
        height=300 * rows + 120,
        hovermode="x unified",
        legend=dict(orientation="h", y=-0.12),
    )
    return fig.to_plotly_json(), stats


def _panel(fig, row, col, x, y, name, legend, mode="lines", **style):
    import plotly.graph_objects as go

    trace = go.Scatter(
        x=np.asarray(x), y=np.asarray(y), name=name, mode=mode, legendgroup=name,
        showlegend=legend, **style,
    )  # fmt: skip
    fig.add_trace(trace, row=row, col=col)


def _switch_stats(report: Report, switch: int) -> dict:
    """Over the report's runs: the minimum of the old tasks' mean accuracy during experience
    `switch` and where it falls, the mean gap depth and recovery time of cl.metrics."""
    mins, ats, depths, recoveries = [], [], [], []
    for r in report.runs:
        m = r.metrics
        during = m[m["experience"] == switch]
        if not len(during):
            continue
        start = int(m[m["experience"] == switch - 1]["iteration"].max())
        old = during[[f"eval/acc/task_{i}" for i in range(switch)]].mean(1).to_numpy()
        low = int(np.argmin(old))
        mins.append(old[low])
        ats.append(int(during["iteration"].iloc[low]) - start)
        A, exp, it = _record(r)
        effects = [e for e in switch_effects(A, exp, it) if e.switch == switch]
        depths += [e.depth for e in effects]
        recoveries += [e.recovery for e in effects if e.recovery is not None]
    return {
        "min": float(np.mean(mins)) if mins else float("nan"),
        "at": int(np.median(ats)) if ats else 0,
        "depth": float(np.mean(depths)) if depths else float("nan"),
        "recovery": float(np.mean(recoveries)) if recoveries else None,
    }


def _record(run: RunView):
    m = run.metrics
    tasks = _tasks([run])
    A = m[tasks].to_numpy(dtype=float)
    return A, m["experience"].to_numpy(), m["iteration"].to_numpy()


def matrix(report: Report) -> dict:
    """The accuracy matrix R[i, j] (mean over the runs of the first configuration)."""
    import plotly.graph_objects as go

    runs = [r for r in report.runs if r.group == report.groups[0]]
    Rs = []
    for r in runs:
        A, exp, _ = _record(r)
        Rs.append(accuracy_matrix(A, exp, A.shape[1]))
    with warnings.catch_warnings():  # cells no run has (a run still going) stay empty
        warnings.simplefilter("ignore", RuntimeWarning)
        R = np.nanmean(Rs, axis=0) if Rs else np.zeros((1, 1))
    fig = _fig(title=f"Accuracy matrix R[i, j] ({report.groups[0]})", hovermode="closest")
    text = [[("" if np.isnan(v) else f"{v:.2f}") for v in row] for row in R]
    fig.add_trace(
        go.Heatmap(
            z=np.where(np.isnan(R), None, R), text=text, texttemplate="%{text}", zmin=0, zmax=1,
            colorscale="Viridis",
            hovertemplate="after task %{y}, on task %{x}: %{z:.4f}<extra></extra>",
        )
    )  # fmt: skip
    fig.update_xaxes(title="evaluated on task j", dtick=1)
    fig.update_yaxes(title="after training task i", dtick=1, autorange="reversed")
    return fig.to_plotly_json()


def training(report: Report) -> dict:
    """Training loss and online (prequential) accuracy."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "online accuracy"))
    for g, label, runs in _by_group(report):
        for c, column in enumerate(("train/loss", "train/online_acc")):
            s = _series(runs, column)
            if s is None:
                continue
            it, mean, _, _ = s
            x, y = minmax(np.asarray(it, float), np.asarray(mean, float), POINTS)
            fig.add_scatter(
                x=x, y=y, name=label, legendgroup=label, showlegend=c == 0, mode="lines",
                line=dict(color=_colour(g), width=1.5), row=1, col=c + 1,
            )  # fmt: skip
    fig.update_layout(template="plotly_white", title="Training", hovermode="x unified", height=380)
    return fig.to_plotly_json()


def plasticity(report: Report) -> dict | None:
    """Dead units, effective rank, weight magnitude, gradient norm, when probed."""
    from plotly.subplots import make_subplots

    present = [p for p in PLASTICITY if any(f"plasticity/{p}" in r.metrics for r in report.runs)]
    if not present:
        return None
    fig = make_subplots(rows=1, cols=len(present), subplot_titles=present)
    for g, label, runs in _by_group(report):
        for c, p in enumerate(present):
            s = _series(runs, f"plasticity/{p}")
            if s is None:
                continue
            it, mean, _, _ = s
            keep = ~np.isnan(np.asarray(mean, float))
            fig.add_scatter(
                x=it[keep], y=np.asarray(mean)[keep], name=label, legendgroup=label,
                showlegend=c == 0, mode="lines+markers", marker=dict(size=3),
                line=dict(color=_colour(g), width=1.5), row=1, col=c + 1,
            )  # fmt: skip
    fig.update_layout(
        template="plotly_white", title="Plasticity", hovermode="x unified", height=360
    )
    return fig.to_plotly_json()
