"""The report page: one self-contained HTML file (Plotly's JavaScript inlined, no network)
holding the charts and tables of a `Report`; the dashboard serves the same page and feeds it
fresh data (`payload`) every second.

Every string that comes from a config or a run name is HTML-escaped, in tables and in chart
labels, and the data embedded in the page cannot close its <script> element.
"""

from __future__ import annotations

import contextlib
import html
import json
import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from cl import metric_registry
from cl.errors import UserError
from cl.report import figures
from cl.report.collect import Report

TABLE_METRICS = tuple(m.key for m in metric_registry.shown("report"))


def definition(key: str) -> str:
    """The one-line definition of summary key `key`, from the metric registry."""
    from cl import l2m  # noqa: F401 - registers the l2m/* keys

    m = metric_registry.find(key)
    return "; ".join(p for p in (m.definition, m.formula) if p) if m else ""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.4f}"
    return "n/a" if v is None else html.escape(str(v))


def _table(header: list[str], rows: list[list[str]], sortable: bool = False, kind: str = "") -> str:
    """A table (CSS classes `sortable` and `kind`); header and body cells are HTML already."""
    classes = " ".join(c for c in ("sortable" if sortable else "", kind) if c)
    cls = f' class="{classes}"' if classes else ""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _th(text: str, key: str | None = None) -> str:
    """A header cell's content: `text`, its tooltip the registry's label and definition of
    `key` (and whether lower is better), marked ↓ when it is."""
    m = metric_registry.find(key) if key else None
    if m is None:
        return html.escape(text)
    tip = "; ".join(p for p in (m.label, definition(key)) if p)
    tip += "; lower is better" if m.lower_is_better else ""
    arrow = " ↓" if m.lower_is_better else ""
    return f'<span title="{html.escape(tip)}">{html.escape(text)}{arrow}</span>'


def _name(report: Report, group: str) -> str:
    """A configuration's (short) name, its full name as tooltip."""
    full = report.full.get(group, group)
    return f'<span class="config" title="{html.escape(full)}">{html.escape(group)}</span>'


def _summary_table(summary: dict) -> str:
    rows = [
        [f"<code>{html.escape(k)}</code>", _fmt(v), html.escape(definition(k))]
        for k, v in summary.items()
        if isinstance(v, int | float)
        and not isinstance(v, bool)
        or (v is None and k in TABLE_METRICS)
    ]
    return _table(["metric", "value", "definition (docs/metrics.md)"], rows, kind="summary")


def _mean_std(values: list[float]) -> str:
    vals = [v for v in values if isinstance(v, int | float) and not math.isnan(v)]
    if not vals:
        return "n/a"
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return f"{mean:.4f}"
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return f"{mean:.4f} ± {std:.4f}"


def _groups_table(report: Report) -> str:
    rows = []
    for label in report.groups:
        runs = report.members(label)
        done = [r for r in runs if r.status == "finished"]
        row = [_name(report, label), str(len(done)), str(len(runs))]
        row += [_mean_std([r.summary.get(m) for r in done]) for m in TABLE_METRICS]
        rows.append(row)
    head = ["configuration", "finished", "runs", *(_th(m, m) for m in TABLE_METRICS)]
    return _table(head, rows, sortable=True)


def _runs_table(report: Report) -> str:
    rows = [
        [
            html.escape(r.name),
            _name(report, r.group),
            html.escape(str(r.seed)),
            f'<span class="status {html.escape(r.status)}">{html.escape(r.status)}</span>',
            str(int(r.metrics["iteration"].max()) if len(r.metrics) else 0),
            *[_fmt(r.summary.get(m)) for m in TABLE_METRICS],
        ]
        for r in report.runs
    ]
    head = ["run", "configuration", "seed", "status", "iteration"]
    return _table([*head, *(_th(m, m) for m in TABLE_METRICS)], rows, True)


def _pm(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def _gap_table(report: Report, stats: list[dict]) -> str:
    """One row per configuration and switch (mean ± std over the configuration's seeds)."""
    rows = [
        [
            _name(report, s["group"]),
            str(s["switch"]),
            str(s["runs"]),
            _pm(s["min"], s["min_std"]),
            f"+{s['at']}",
            _pm(s["depth"], s["depth_std"]),
            "n/a" if s["recovery"] is None else f"{s['recovery']:.1f}",
        ]
        for s in stats
    ]
    head = [
        "configuration", "switch", "runs", "min old-task mean acc", "at (iterations, median)",
        _th("gap depth", "gap_depth"), _th("recovery (it)", "recovery_time"),
    ]  # fmt: skip
    return _table(head, rows, kind="gap")


def _differ_table(report: Report) -> str:
    """What sets the configurations apart: one row each, one column per differing key."""
    keys = list(dict.fromkeys(k for g in report.groups for k in report.differ.get(g, {})))
    rows = [
        [
            _name(report, g),
            ", ".join(html.escape(r.name) for r in report.members(g)),
            *(html.escape(report.differ.get(g, {}).get(k, "")) for k in keys),
        ]
        for g in report.groups
    ]
    return _table(["configuration", "runs", *map(html.escape, keys)], rows, kind="differ")


def _yaml(data: Any) -> str:
    return html.escape(yaml.safe_dump(data, sort_keys=False, default_flow_style=None))


def _settings(report: Report) -> str:
    """Config and environment of each configuration (of its first run)."""
    out = []
    for g in report.groups:
        runs = report.members(g)
        r = runs[0]
        env = {k: r.environment.get(k) for k in ("time", "host", "device", "git", "python")}
        env["versions"] = r.environment.get("versions")
        which = "" if len(report.runs) == 1 else f" of {_name(report, g)}"
        run = f" (run <code>{html.escape(r.name)}</code>)" if len(runs) > 1 else ""
        out.append(
            f"<details><summary>Config{which}{run}</summary><pre>{_yaml(r.config)}</pre>"
            f"</details><details><summary>Environment{which}{run}</summary>"
            f"<pre>{_yaml(env)}</pre></details>"
        )
    return "\n".join(out)


def tables(report: Report, gap_stats: list[dict]) -> str:
    """The tables as HTML: status, metrics with definitions, the gap per configuration and
    switch, what differs, config and environment per configuration."""
    out = []
    if len(report.runs) == 1:
        r = report.runs[0]
        out.append(f"<h2>Run <code>{html.escape(r.name)}</code></h2>")
        status = html.escape(r.status)
        error = f" — {html.escape(str(r.summary['error']))}" if r.summary.get("error") else ""
        out.append(f'<p>status: <span class="status {status}">{status}</span>{error}</p>')
        out.append("<h3>Summary metrics</h3>" + _summary_table(r.summary))
    else:
        out.append("<h2>Configurations (mean ± std over seeds; click a header to sort)</h2>")
        out.append(_groups_table(report))
        out.append("<h3>Runs</h3>" + _runs_table(report))
    if gap_stats:
        what = "" if len(report.groups) == 1 else " (per configuration: mean ± std over seeds)"
        out.append(f"<h3>Stability gap per task switch{what}</h3>")
        out.append(_gap_table(report, gap_stats))
    if len(report.groups) > 1:
        out.append("<h3>What differs between the configurations</h3>" + _differ_table(report))
    out.append(_settings(report))
    return "\n".join(out)


def payload(report: Report) -> dict:
    """What the page shows: figures (id, Plotly figure) and the tables' HTML."""
    esc = html.escape
    shown = replace(  # chart labels escaped (Plotly renders a little HTML in them)
        report,
        runs=[replace(r, group=esc(r.group)) for r in report.runs],
        groups=[esc(g) for g in report.groups],
        full={esc(g): esc(f) for g, f in report.full.items()},
    )
    gap_fig, stats = figures.gap(shown)
    figs = [
        ("accuracy", figures.accuracy(shown)),
        ("gap", gap_fig),
        ("average", figures.average(shown)),
        ("matrix", figures.matrix(shown)),
        ("training", figures.training(shown)),
    ]
    plast = figures.plasticity(shown)
    if plast is not None:
        figs.append(("plasticity", plast))
    names = dict(zip(shown.groups, report.groups, strict=True))
    stats = [s | {"group": names[s["group"]]} for s in stats]  # the table escapes itself
    return {
        "title": report.title,  # set as text by the page's script
        "figures": [{"id": i, "figure": f} for i, f in figs],
        "tables": tables(report, stats),
    }


def _json(data: Any) -> str:
    """JSON that is safe inside <script>: no `</` can end the element."""
    from plotly.utils import PlotlyJSONEncoder

    return json.dumps(data, cls=PlotlyJSONEncoder).replace("</", "<\\/")


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.2em; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.7em; text-align: left; }
table.sortable th { cursor: pointer; }
.status { padding: 0.05em 0.5em; border-radius: 0.6em; background: #eee; }
.status.finished { background: #d8f0d8; } .status.failed { background: #f6d0d0; }
.status.interrupted { background: #f6ecc8; } .status.running { background: #d6e6f8; }
.chart { margin-bottom: 1.5em; } pre { background: #f6f6f6; padding: 0.8em; overflow: auto; }
"""

SCRIPT = """
function render(d) {
  document.title = d.title;
  document.getElementById('title').textContent = d.title;
  document.getElementById('tables').innerHTML = d.tables;
  const charts = document.getElementById('charts');
  for (const f of d.figures) {
    let el = document.getElementById('chart-' + f.id);
    if (!el) { el = document.createElement('div'); el.id = 'chart-' + f.id;
               el.className = 'chart'; charts.appendChild(el); }
    Plotly.react(el, f.figure.data, f.figure.layout, {responsive: true, displaylogo: false});
  }
}
document.addEventListener('click', (ev) => {
  const th = ev.target.closest('table.sortable th');
  if (!th) return;
  const table = th.closest('table'), i = [...th.parentNode.children].indexOf(th);
  const rows = [...table.tBodies[0].rows], up = th.dataset.up !== '1';
  const key = (r) => { const t = r.cells[i].textContent, n = parseFloat(t);
                       return isNaN(n) ? t : n; };
  rows.sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (up ? 1 : -1));
  th.dataset.up = up ? '1' : '0';
  rows.forEach((r) => table.tBodies[0].appendChild(r));
});
render(DATA);
if (LIVE) {
  setInterval(async () => {
    try {
      const r = await fetch('data' + location.search, {cache: 'no-store'});
      if (r.ok) render(await r.json());
    } catch (e) { /* the server went away: keep the last view */ }
  }, 1000);
}
"""


def html_page(data: dict, live: bool = False) -> str:
    from plotly.offline import get_plotlyjs

    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><link rel='icon' href='data:,'>"
        f"{GENERATOR}"
        f"<title>{html.escape(data['title'])}</title><style>{STYLE}</style>"
        f"<script>{get_plotlyjs()}</script></head><body>"
        "<h1 id='title'></h1><div id='charts'></div><div id='tables'></div>"
        f"<script>const LIVE = {'true' if live else 'false'}; const DATA = {_json(data)};"
        f"{SCRIPT}</script></body></html>\n"
    )


# The mark of a page cl wrote: `-o` replaces only such a file (or a page written before the
# mark existed, which began with LEGACY), never a run's data or anything else.
GENERATOR = "<meta name='generator' content='cl report'>"
LEGACY = "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><link rel='icon' href='data:,'>"


def is_report(path: Path) -> bool:
    """Whether the file `path` is a page `cl report` wrote."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096).decode("utf-8", "replace")
    except OSError:
        return False
    return GENERATOR in head or (head.startswith(LEGACY) and "<title>" in head)


def check_output(path: Path) -> None:
    """UserError unless `path` may receive a report: a new file, or a report cl wrote."""
    if path.is_dir():
        raise UserError(f"{path} is a folder; give a file name, e.g. -o {path / 'report.html'}")
    if path.exists() and not is_report(path):
        raise UserError(
            f"{path} exists and is not a report cl wrote; refusing to overwrite it "
            "(give another file name with -o)"
        )


def write_report(report: Report, path: Path) -> Path:
    """Write the self-contained report of `report` to `path` (atomically), creating missing
    parent folders; UserError if `path` is a folder or a file cl did not write. An OSError
    (unwritable, a full disk) leaves no temporary file behind and is raised."""
    check_output(path)
    text = html_page(payload(report))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise
    return path
