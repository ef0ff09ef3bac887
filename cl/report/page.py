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


def _table(header: list[str], rows: list[list[str]], sortable: bool = False) -> str:
    cls = ' class="sortable"' if sortable else ""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _summary_table(summary: dict) -> str:
    rows = [
        [f"<code>{html.escape(k)}</code>", _fmt(v), html.escape(definition(k))]
        for k, v in summary.items()
        if isinstance(v, int | float)
        and not isinstance(v, bool)
        or (v is None and k in TABLE_METRICS)
    ]
    return _table(["metric", "value", "definition (docs/metrics.md)"], rows)


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
        runs = [r for r in report.runs if r.group == label]
        done = [r for r in runs if r.status == "finished"]
        row = [html.escape(label), str(len(done)), str(len(runs))]
        row += [_mean_std([r.summary.get(m) for r in done]) for m in TABLE_METRICS]
        rows.append(row)
    head = ["configuration", "finished", "runs", *TABLE_METRICS]
    return _table(head, rows, sortable=True)


def _runs_table(report: Report) -> str:
    rows = [
        [
            html.escape(r.name),
            html.escape(r.group),
            f'<span class="status {html.escape(r.status)}">{html.escape(r.status)}</span>',
            str(int(r.metrics["iteration"].max()) if len(r.metrics) else 0),
            *[_fmt(r.summary.get(m)) for m in TABLE_METRICS],
        ]
        for r in report.runs
    ]
    return _table(["run", "configuration", "status", "iteration", *TABLE_METRICS], rows, True)


def _gap_table(stats: list[dict]) -> str:
    rows = [
        [
            str(k + 1),
            _fmt(s["min"]),
            f"+{s['at']}",
            _fmt(s["depth"]),
            "n/a" if s["recovery"] is None else f"{s['recovery']:.1f}",
        ]
        for k, s in enumerate(stats)
    ]
    head = ["switch", "min old-task mean acc", "at (iterations)", "gap depth", "recovery (it)"]
    return _table(head, rows)


def tables(report: Report, gap_stats: list[dict]) -> str:
    """The tables as HTML: status, metrics with definitions, the gap per switch, config."""
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
        out.append("<h3>Stability gap per task switch</h3>" + _gap_table(gap_stats))
    r = report.runs[0]
    env = {k: r.environment.get(k) for k in ("time", "host", "device", "git", "python")}
    env["versions"] = r.environment.get("versions")
    cfg = yaml.safe_dump(r.config, sort_keys=False, default_flow_style=None)
    env_text = yaml.safe_dump(env, sort_keys=False, default_flow_style=None)
    which = "" if len(report.runs) == 1 else f" (of {html.escape(r.name)})"
    out.append(f"<details><summary>Config{which}</summary><pre>{html.escape(cfg)}</pre></details>")
    out.append(
        f"<details><summary>Environment{which}</summary><pre>{html.escape(env_text)}</pre>"
        "</details>"
    )
    return "\n".join(out)


def payload(report: Report) -> dict:
    """What the page shows: figures (id, Plotly figure) and the tables' HTML."""
    shown = Report(  # chart labels escaped (Plotly renders a little HTML in them)
        report.title,
        [replace(r, group=html.escape(r.group)) for r in report.runs],
        report.sweep,
        [html.escape(g) for g in report.groups],
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
      const r = await fetch('data', {cache: 'no-store'});
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
        "<h1 id='title'></h1><div id='tables'></div><div id='charts'></div>"
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
