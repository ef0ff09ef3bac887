"""The report's charts, as Plotly figures (dicts): per-task accuracy, the stability-gap view
around each task switch, the accuracy matrix, training loss and online accuracy, plasticity.

One configuration: one colour per task. Several: one colour per configuration (the mean over
its seeds, with a min-max band), one panel per task or per switch; never a mean over different
configurations. Long series are downsampled keeping every dip (`downsample`).
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


def _hover(text: str) -> str:
    """A hover template naming the trace by `text` (a configuration's full name)."""
    return f"{text.replace('%', '%%')}: %{{y:.4f}}<extra></extra>"


def _line(fig, x, y, name, colour, group=None, width=1.5, cell=None, hover=None, **kw):
    import plotly.graph_objects as go

    x, y = minmax(np.asarray(x, float), np.asarray(y, float), POINTS)
    trace = go.Scatter(
        x=x, y=y, name=name, mode="lines", legendgroup=group or name,
        line=dict(color=colour, width=width, **kw.pop("line", {})),
        hovertemplate=_hover(hover) if hover else None, **kw,
    )  # fmt: skip
    fig.add_trace(trace, **(cell or {}))


def _band(fig, x, lo, hi, colour, group, cell=None):
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
            ),
            **(cell or {}),
        )  # fmt: skip


def _switches(run: RunView) -> list[int]:
    """Iteration of the last evaluation of each experience but the final one."""
    m = run.metrics
    if not len(m):
        return []
    last = m.groupby("experience")["iteration"].max()
    return [int(v) for k, v in last.items() if k < m["experience"].max()]


def _mark_switches(fig, switches: list[int], panels: int = 1) -> None:
    """Dashed vertical lines at `switches` in each of the first `panels` subplots (shapes
    added in one go: plotly's add_vline is slow by the hundred)."""
    line = dict(color="#888", dash="dash", width=1)
    shapes = [
        dict(type="line", x0=s, x1=s, y0=0, y1=1, xref=f"x{a}", yref=f"y{a} domain", line=line)
        for a in ["", *range(2, panels + 1)]
        for s in switches
    ]
    fig.update_layout(shapes=[*fig.layout.shapes, *shapes])


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
    """(index, name, full name, runs) of each configuration."""
    for g, name in enumerate(report.groups):
        yield g, name, report.full.get(name, name), report.members(name)


def accuracy(report: Report) -> dict:
    """Per-task accuracy over training iterations (each task from its own experience on),
    task switches dashed. One configuration: a colour per task; several: a panel per task,
    a colour per configuration (mean over its seeds, min-max band)."""
    from plotly.subplots import make_subplots

    tasks = _tasks(report.runs)
    title = "Accuracy per task"
    if len(report.groups) == 1:
        fig = _fig(title=title, xaxis_title="training iteration", yaxis_title="accuracy")
        cells = dict.fromkeys(tasks, None)
    else:
        cols = min(3, len(tasks))
        rows = -(-len(tasks) // cols)
        names = [f"task {c.rsplit('_', 1)[1]}" for c in tasks]
        fig = make_subplots(rows, cols, subplot_titles=names, shared_xaxes="all", shared_yaxes=True)
        fig.update_layout(
            template="plotly_white", title=title + " (one panel per task)",
            height=300 * rows + 140, hovermode="x unified",
            legend=dict(orientation="h", y=-0.15), margin=dict(l=60, r=20, t=80, b=50),
        )  # fmt: skip
        cells = {c: dict(row=k // cols + 1, col=k % cols + 1) for k, c in enumerate(tasks)}
    switches = _switches(report.runs[0])
    for g, name, full, runs in _by_group(report):
        for col in tasks:
            task = int(col.rsplit("_", 1)[1])
            s = _series(runs, col, from_experience=task)
            if s is None:
                continue
            it, mean, lo, hi = s
            cell = cells[col]
            colour = _colour(task if cell is None else g)
            label = f"task {task}" if cell is None else name
            group = label
            if len(runs) > 1:
                _band(fig, it, lo, hi, colour, group, cell)
            shown = cell is None or task == int(tasks[0].rsplit("_", 1)[1])
            _line(fig, it, mean, label, colour, group, cell=cell, hover=None if cell is None
                  else f"{full}, task {task}", showlegend=shown)  # fmt: skip
    _mark_switches(fig, switches, 1 if len(report.groups) == 1 else len(tasks))
    fig.update_yaxes(range=[0, 1.02])
    return fig.to_plotly_json()


def average(report: Report) -> dict:
    """Mean accuracy over the tasks seen so far, per configuration (band: min-max over seeds)."""
    fig = _fig(title="Average accuracy on seen tasks", xaxis_title="training iteration")
    for g, label, full, runs in _by_group(report):
        s = _series(runs, "eval/acc/avg_seen")
        if s is None:
            continue
        it, mean, lo, hi = s
        if len(runs) > 1:
            _band(fig, it, lo, hi, _colour(g), label)
        _line(fig, it, mean, label, _colour(g), width=2, hover=full)
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
    one panel per switch, one line per configuration (the mean over its seeds), its minimum
    marked; returns the figure and, per configuration and each switch its runs reached, the
    statistics of `switch_stats` (with `group`, `switch` and `runs`, the runs that reached it)."""
    from plotly.subplots import make_subplots

    own = {id(r): _switches(r) for r in report.runs}  # runs may differ in length and tasks
    ref = max(report.runs, key=lambda r: len(own[id(r)]))
    switches = own[id(ref)]
    if not switches:
        return _fig(title="Stability gap: no task switch yet").to_plotly_json(), []
    cols = min(4, len(switches))
    rows = -(-len(switches) // cols)
    stats = [  # a configuration's switches that at least one of its runs reached
        {"group": name, "switch": k, "runs": len(reached)} | switch_stats(reached, k)
        for _, name, _, runs in _by_group(report)
        for k in range(1, len(switches) + 1)
        if (reached := [r for r in runs if len(own[id(r)]) >= k])
    ]
    if len(report.groups) == 1:  # the numbers in the panel titles; else in the table
        titles = [
            f"switch {s['switch']}: min {s['min']:.3f} at +{s['at']}<br>depth {s['depth']:.3f}"
            + ("" if s["recovery"] is None else f", recovery {s['recovery']:.0f} it")
            for s in stats
        ]
    else:
        titles = [f"switch {k + 1}" for k in range(len(switches))]
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, shared_yaxes=True)
    fig.update_annotations(font_size=12)
    single = len(report.runs) == 1
    for k in range(len(switches)):
        row, col = k // cols + 1, k % cols + 1
        before, shown = _window(ref, k + 1, after)
        for g, label, full, runs in _by_group(report):
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
            colour = "#222" if single else _colour(g)
            name = "old tasks (mean)" if single else label
            _panel(fig, row, col, x[:n], mean, name, k == 0, line=dict(color=colour, width=3),
                   hovertemplate=_hover(f"{full}, old tasks"))  # fmt: skip
            low = int(np.nanargmin(np.where(x[:n] >= 0, mean, np.inf)))
            marker = dict(size=10, color="red" if single else colour, symbol="x")
            _panel(fig, row, col, x[low : low + 1], mean[low : low + 1], "minimum",
                   k == 0 and g == 0, mode="markers", marker=marker,
                   hovertemplate=_hover(f"{full}, minimum"))  # fmt: skip
    _mark_switches(fig, [0], len(switches))
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


def switch_stats(runs: list[RunView], switch: int) -> dict:
    """Over `runs` (one configuration's seeds): the minimum of the old tasks' mean accuracy
    during experience `switch` (`min`, `min_std`) and where it falls (`at`, the median), the
    gap depth of cl.metrics (`depth`, `depth_std`: mean over old tasks, then over runs) and
    the mean recovery time (`recovery`; None when no old task recovered)."""
    mins, ats, depths, recoveries = [], [], [], []
    for r in runs:
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
        if effects:
            depths.append(float(np.mean([e.depth for e in effects])))
        recoveries += [e.recovery for e in effects if e.recovery is not None]

    def std(v: list[float]) -> float:
        return float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")

    nan = float("nan")
    return {
        "min": float(np.mean(mins)) if mins else nan,
        "min_std": std(mins),
        "at": int(np.median(ats)) if ats else 0,
        "depth": float(np.mean(depths)) if depths else nan,
        "depth_std": std(depths),
        "recovery": float(np.mean(recoveries)) if recoveries else None,
    }


def _record(run: RunView):
    m = run.metrics
    tasks = _tasks([run])
    A = m[tasks].to_numpy(dtype=float)
    return A, m["experience"].to_numpy(), m["iteration"].to_numpy()


def matrix(report: Report) -> dict:
    """The accuracy matrix R[i, j], one heatmap per configuration (mean over its seeds; the
    standard deviation on hover)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    cols = min(3, len(report.groups))
    rows = -(-len(report.groups) // cols)
    one = len(report.groups) == 1
    names = [f"R[i, j] ({n})" if one else n for n in report.groups]
    fig = make_subplots(rows, cols, subplot_titles=names, horizontal_spacing=0.08)
    for g, _, full, runs in _by_group(report):
        Rs = []
        for r in runs:
            A, exp, _ = _record(r)
            Rs.append(accuracy_matrix(A, exp, A.shape[1]))
        width = max(R.shape[1] for R in Rs)  # runs with fewer tasks: their cells stay empty
        Rs = [np.pad(R, ((0, width - len(R)), (0, width - R.shape[1])), constant_values=np.nan)
              for R in Rs]  # fmt: skip
        with warnings.catch_warnings():  # cells no run has (a run still going) stay empty
            warnings.simplefilter("ignore", RuntimeWarning)
            R = np.nanmean(Rs, axis=0)
            S = np.nanstd(Rs, axis=0, ddof=1) if len(Rs) > 1 else np.full_like(R, np.nan)
        text = [[("" if np.isnan(v) else f"{v:.2f}") for v in row] for row in R]
        spread = [[("" if np.isnan(v) else f" ± {v:.4f}") for v in row] for row in S]
        where = full.replace("%", "%%")
        fig.add_trace(
            go.Heatmap(
                z=np.where(np.isnan(R), None, R), text=text, texttemplate="%{text}",
                customdata=spread, zmin=0, zmax=1, colorscale="Viridis", showscale=g == 0,
                hovertemplate=f"{where}<br>after task %{{y}}, on task %{{x}}: "
                "%{z:.4f}%{customdata}<extra></extra>",
            ),
            row=g // cols + 1, col=g % cols + 1,
        )  # fmt: skip
    fig.update_xaxes(title="evaluated on task j", dtick=1)
    fig.update_yaxes(title="after training task i", dtick=1, autorange="reversed")
    title = "Accuracy matrix R[i, j]" + ("" if one else " per configuration (mean over seeds)")
    fig.update_layout(
        template="plotly_white", title=title, hovermode="closest", height=380 * rows + 80
    )
    return fig.to_plotly_json()


def training(report: Report) -> dict:
    """Training loss and online (prequential) accuracy."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss", "online accuracy"))
    for g, label, full, runs in _by_group(report):
        for c, column in enumerate(("train/loss", "train/online_acc")):
            s = _series(runs, column)
            if s is None:
                continue
            it, mean, _, _ = s
            x, y = minmax(np.asarray(it, float), np.asarray(mean, float), POINTS)
            fig.add_scatter(
                x=x, y=y, name=label, legendgroup=label, showlegend=c == 0, mode="lines",
                line=dict(color=_colour(g), width=1.5), hovertemplate=_hover(full),
                row=1, col=c + 1,
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
    for g, label, full, runs in _by_group(report):
        for c, p in enumerate(present):
            s = _series(runs, f"plasticity/{p}")
            if s is None:
                continue
            it, mean, _, _ = s
            keep = ~np.isnan(np.asarray(mean, float))
            fig.add_scatter(
                x=it[keep], y=np.asarray(mean)[keep], name=label, legendgroup=label,
                showlegend=c == 0, mode="lines+markers", marker=dict(size=3),
                line=dict(color=_colour(g), width=1.5), hovertemplate=_hover(full),
                row=1, col=c + 1,
            )  # fmt: skip
    fig.update_layout(
        template="plotly_white", title="Plasticity", hovermode="x unified", height=360
    )
    return fig.to_plotly_json()
