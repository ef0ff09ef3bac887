"""`cl report` and `cl dashboard`, checked in a real headless Chromium (Debian's, driven by
Playwright): charts render with one trace per task, hover shows values, the stability-gap view
has a panel per switch, no console errors; the dashboard shows appended rows, refuses other
paths and shows hostile names as text. Plus downsampling and the 100,000-iteration size."""

import http.client
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import cl
from cl.cli import main
from cl.report import build
from cl.report.downsample import minmax
from cl.report.server import serve

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
HOSTILE = "<script>alert(1)</script>"


def test_downsampling_keeps_a_one_iteration_dip():
    x = np.arange(100_000, dtype=float)
    y = np.full_like(x, 0.9)
    y[54_321] = 0.1  # a one-evaluation drop
    y[77_777] = 1.0
    xs, ys = minmax(x, y, 2000)
    assert len(xs) <= 2000 and 54_321 in xs and 77_777 in xs
    assert ys.min() == 0.1 and ys.max() == 1.0 and xs[0] == 0 and xs[-1] == 99_999
    assert np.all(np.diff(xs) > 0)
    short = minmax(x[:10], y[:10], 2000)
    assert len(short[0]) == 10


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    args = [
        f"run.dir={root}",
        "run.name=run",
        "run.progress=false",
        "wandb.mode=disabled",
        "benchmark.source=digits",
        "model.hidden=[32]",
        "train.epochs=4",  # 184 iterations
        "plasticity.every=10",
        f"wandb.tags=[{json.dumps(HOSTILE)}]",  # a hostile string in the config
    ]
    run = cl.run(args, quiet=True)
    return run.path


@pytest.fixture(scope="module")
def browser():
    missing = None
    try:
        from playwright import sync_api as playwright
    except ImportError:
        missing = "playwright is not installed"
    if not Path(CHROMIUM).exists():
        missing = "no /usr/bin/chromium (apt-get install chromium)"
    if missing and os.environ.get("CL_REQUIRE_BROWSER"):
        pytest.fail(missing)  # CI installs both: there the browser tests must run
    if missing:
        pytest.skip(missing)
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def open_page(browser, url):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.errors, page.dialogs, page.requests = [], [], []
    page.on("request", lambda r: page.requests.append(r.url))
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.goto(url)
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length >= 5")
    return page


def traces(page, chart):
    return page.evaluate(f"document.getElementById('chart-{chart}').data.map(t => t.name)")


def test_the_run_writes_a_self_contained_report(small_run):
    report = small_run / "report.html"
    text = report.read_text()
    assert report.stat().st_size < 10e6
    assert HOSTILE not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_report_renders_in_chromium(small_run, browser, tmp_path):
    page = open_page(browser, (small_run / "report.html").as_uri())
    ids = page.evaluate("[...document.querySelectorAll('.js-plotly-plot')].map(e => e.id)")
    charts = ("accuracy", "gap", "average", "matrix", "training", "plasticity")
    assert [f"chart-{c}" for c in charts] == ids
    assert page.requests == [(small_run / "report.html").as_uri()]  # no network at all
    assert traces(page, "accuracy") == [f"task {i}" for i in range(5)]  # one trace per task
    # the stability-gap view: one panel per switch (4 switches in 5 tasks)
    axes = page.evaluate("Object.keys(document.getElementById('chart-gap').layout)")
    assert len([a for a in axes if a.startswith("xaxis")]) == 4
    titles = page.evaluate(
        "document.getElementById('chart-gap').layout.annotations.map(a => a.text)"
    )
    assert [t.split(":")[0] for t in titles] == [f"switch {k}" for k in range(1, 5)]
    page.locator("#chart-accuracy").scroll_into_view_if_needed()
    box = page.locator("#chart-accuracy .nsewdrag").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.5)
    layer = "document.querySelector('#chart-accuracy .hoverlayer').textContent"
    page.wait_for_function(f"{layer}.length > 0", timeout=5000)
    hover = page.evaluate(layer)
    assert any(ch.isdigit() for ch in hover), hover  # exact values on hover
    assert "min-ACC" in page.inner_text("#tables") or "min_acc" in page.inner_text("#tables")
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert len(set(page.screenshot()[::97])) > 50  # not a blank page
    assert page.errors == [] and page.dialogs == []
    assert HOSTILE in page.evaluate("document.getElementById('tables').textContent")  # as text
    page.close()


def test_sweep_report_has_one_colour_per_configuration(tmp_path, browser):
    for seed in (0, 1):
        for strategy in ("naive", "replay"):
            cl.run(
                [
                    f"run.dir={tmp_path}/runs",
                    f"run.name={strategy}-{seed}",
                    f"strategy={strategy}",
                    f"seed={seed}",
                    "run.progress=false",
                    "run.report=false",
                    "wandb.mode=disabled",
                    "benchmark.source=digits",
                    "benchmark.n_tasks=3",
                    "model.hidden=[32]",
                    "train.epochs=1",
                ],
                quiet=True,
            )
    folders = sorted(str(p) for p in (tmp_path / "runs").iterdir())
    assert main(["report", *folders, "-o", str(tmp_path / "r.html")]) == 0
    page = open_page(browser, (tmp_path / "r.html").as_uri())
    names = {n for n in traces(page, "average") if n}  # bands have no name
    assert names == {"strategy=naive", "strategy=replay"}
    rows = page.locator("table.sortable").first.locator("tbody tr")
    assert rows.count() == 2 and "2" in rows.first.inner_text()  # n = 2 seeds each
    page.locator("table.sortable th", has_text="acc").first.click()  # sortable
    assert page.errors == []
    page.close()


def partial_copy(run: Path, dest: Path, rows: int) -> Path:
    """A copy of `run` as it was after `rows` rows (no summary yet: still running)."""
    dest.mkdir()
    shutil.copy(run / "config.yaml", dest / "config.yaml")
    shutil.copy(run / "environment.json", dest / "environment.json")
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (dest / "metrics.jsonl").write_text("".join(lines[:rows]))
    return dest


def test_dashboard_follows_a_running_run(small_run, browser, tmp_path):
    name = "<img src=x onerror=alert(1)>"  # a hostile run name (no / in a folder name)
    live = partial_copy(small_run, tmp_path / name, 100)
    server = serve([str(live)], "127.0.0.1", 0)
    host, port = server.server_address[:2]
    try:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        for path in ("/../config.yaml", "/config.yaml", "/%2e%2e/etc/passwd", "/etc/passwd"):
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            assert response.status == 404, path
        page = open_page(browser, f"http://{host}:{port}/")
        assert page.inner_text("#title") == name  # the name shows as text
        last = "Math.max(...document.getElementById('chart-average')._fullData[0].x)"
        assert page.evaluate(last) == 99
        lines = (small_run / "metrics.jsonl").read_text().splitlines(keepends=True)
        began = time.perf_counter()
        with open(live / "metrics.jsonl", "a") as f:
            f.write("".join(lines[100:150]))
        page.wait_for_function(f"{last} >= 149", polling=100, timeout=10_000)
        latency = time.perf_counter() - began
        shutil.copy(small_run / "summary.json", live / "summary.json")
        page.wait_for_function(
            "document.querySelector('#tables .status').textContent === 'finished'",
            polling=100,
            timeout=10_000,
        )
        assert page.errors == [] and page.dialogs == []
        page.close()
        print(f"dashboard update latency: {latency:.2f} s")
    finally:
        server.shutdown()
    assert not (live / "report.html").exists()  # the dashboard never writes


def synthetic_run(folder: Path, iterations: int = 100_000, tasks: int = 20) -> Path:
    """A run folder in cl's format with `iterations` rows over `tasks` tasks (no training)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    per = iterations // tasks
    with open(folder / "metrics.jsonl", "w") as f:
        for it in range(iterations + 1):
            k = min(it // per, tasks - 1)
            row = {"iteration": it, "experience": k, "epoch": 0}
            row["train/loss"], row["train/online_acc"] = rng.random(2).tolist()
            accs = rng.random(k + 1).tolist()
            row |= {f"eval/acc/task_{i}": a for i, a in enumerate(accs)}
            row["eval/acc/avg_seen"] = sum(accs) / len(accs)
            f.write(json.dumps(row) + "\n")
    (folder / "summary.json").write_text(json.dumps({"status": "finished", "acc": 0.5}))
    (folder / "config.yaml").write_text("seed: 0\n")
    return folder


def test_a_100k_iteration_run_gives_a_light_report(tmp_path):
    folder = synthetic_run(tmp_path / "long")
    began = time.perf_counter()
    report = build([folder])
    took = time.perf_counter() - began
    size = report.stat().st_size
    print(f"100,000 iterations x 20 tasks: report {size / 1e6:.1f} MB in {took:.1f} s")
    assert size < 10e6
    assert took < 60  # a few seconds on 2 cores; the bound only catches a pathology


def test_runs_of_different_lengths_share_one_gap_view(tmp_path):
    """A reproduction's sweep mixes benchmarks and strategies (joint trains longer per task):
    each run is aligned on its own switches; a switch only some runs have still gets a panel."""
    from cl.report.collect import collect
    from cl.report.figures import gap

    short = synthetic_run(tmp_path / "short", iterations=200, tasks=2)
    long = synthetic_run(tmp_path / "long", iterations=600, tasks=4)
    (long / "config.yaml").write_text("seed: 0\nstrategy: joint\n")
    figure, stats = gap(collect([short, long]))
    assert [(s["group"], s["switch"]) for s in stats] == [  # each run's own switches
        ("strategy=none", 1),
        ("strategy=joint", 1),
        ("strategy=joint", 2),
        ("strategy=joint", 3),
    ]
    panels = {t.get("xaxis") for t in figure["data"]}
    assert len(panels) == 3
    assert build([short, long], tmp_path / "both.html").stat().st_size > 0


def test_report_output_creates_folders_and_replaces_only_its_own_pages(tmp_path, capsys):
    """`-o` in a missing folder creates it; a page cl wrote (also one written before the
    generator mark) is replaced; anything else is refused (tests/test_bad_inputs.py)."""
    from cl.report.page import GENERATOR, LEGACY

    run = synthetic_run(tmp_path / "run", iterations=200, tasks=2)
    out = tmp_path / "new" / "folder" / "r.html"
    assert main(["report", str(run), "-o", str(out)]) == 0
    assert GENERATOR in out.read_text()[:2000]
    assert main(["report", str(run), "-o", str(out)]) == 0  # its own page: replaced
    out.write_text(f"{LEGACY}<title>old</title></head><body></body></html>\n")
    assert main(["report", str(run), "-o", str(out)]) == 0  # a page from before the mark
    assert GENERATOR in out.read_text()[:2000]
    assert sorted(p.name for p in out.parent.iterdir()) == ["r.html"]  # no temp file left
    capsys.readouterr()


def get(port: int, path: str, host: str | None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest("GET", path, skip_host=True)
    if host is not None:
        conn.putheader("Host", host)
    conn.endheaders()
    response = conn.getresponse()
    status, body = response.status, response.read()
    conn.close()
    return status, body


def test_dashboard_answers_only_its_own_host_names(tmp_path):
    """DNS rebinding: a page on evil.example that resolves to 127.0.0.1 sends its own name."""
    from cl.report.server import host_allowed

    run = synthetic_run(tmp_path / "run", iterations=200, tasks=2)
    server = serve([str(run)], "127.0.0.1", 0)
    port = server.server_address[1]
    try:
        for host in ("evil.example", f"evil.example:{port}", f"localhost:{port + 1}", "", None):
            assert get(port, "/data", host) == (403, b""), host
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
            status, body = get(port, "/data", host)
            assert status == 200 and b'"figures"' in body, host
    finally:
        server.shutdown()
        server.server_close()
    assert host_allowed("10.1.2.3:8000", "0.0.0.0", 8000)  # all interfaces: any address
    assert not host_allowed("evil.example:8000", "0.0.0.0", 8000)
    assert host_allowed("myhost:80", "myhost", 80) and host_allowed("myhost", "myhost", 80)
    assert not host_allowed("127.0.0.1:8000:1", "127.0.0.1", 8000)


def test_dashboard_closes_an_idle_connection(tmp_path, monkeypatch):
    from cl.report import server as dashboard

    monkeypatch.setattr(dashboard, "IDLE_TIMEOUT", 0.5)
    run = synthetic_run(tmp_path / "run", iterations=200, tasks=2)
    server = serve([str(run)], "127.0.0.1", 0)
    try:
        with socket.create_connection(server.server_address[:2], timeout=60) as s:
            s.sendall(b"GET / HTTP/1.1\r\n")  # half a request, then nothing
            assert s.recv(1024) == b""  # the server closed it (no answer)
    finally:
        server.shutdown()
        server.server_close()


def test_dashboard_caps_its_connections(tmp_path, monkeypatch):
    """MAX_CONNECTIONS + 5 idle connections: the server runs at most MAX_CONNECTIONS handler
    threads and accepts the rest as the first ones end."""
    from cl.report import server as dashboard

    cap = 4
    monkeypatch.setattr(dashboard, "MAX_CONNECTIONS", cap)
    run = synthetic_run(tmp_path / "run", iterations=200, tasks=2)
    server = serve([str(run)], "127.0.0.1", 0)
    address = server.server_address[:2]
    base = threading.active_count()
    idle = [socket.create_connection(address, timeout=60) for _ in range(cap + 5)]
    try:
        peak = base
        for _ in range(1200):  # until the cap's handlers run (bounded: at most about 60 s)
            peak = max(peak, threading.active_count())
            if peak >= base + cap:
                break
            time.sleep(0.05)
        for _ in range(10):  # a few more looks: no handler beyond the cap
            peak = max(peak, threading.active_count())
            time.sleep(0.05)
        request = f"GET /data HTTP/1.0\r\nHost: 127.0.0.1:{address[1]}\r\n\r\n".encode()
        for s in idle:  # each one answered in turn, as handlers end and free their slots
            s.sendall(request)
            answer = b""
            while chunk := s.recv(1 << 16):
                answer += chunk
            peak = max(peak, threading.active_count())
            assert answer.startswith(b"HTTP/1.0 200"), answer[:100]
        assert peak == base + cap
    finally:
        for s in idle:
            s.close()
        server.shutdown()
        server.server_close()


TINY = [
    "benchmark.source=digits",
    "benchmark.n_tasks=3",
    "model.hidden=[32]",
    "eval.subset=100",
    "train.epochs=1",
    "wandb.mode=disabled",
]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A 2 x 2 sweep (strategy=naive,replay x seed=0,1) and two standalone runs beside it."""
    root = tmp_path_factory.mktemp("mixed")
    sweep = ["sweep", "strategy=naive,replay", "seed=0,1", *TINY]
    sweep += ["sweep.name=mini2", f"sweep.dir={root}/sweeps", "sweep.workers=1"]
    assert main(sweep) == 0
    common = [f"run.dir={root}/runs", "run.progress=false", "run.report=false", *TINY]
    cl.run(["strategy=gem", "run.name=gem-run", *common], quiet=True)
    reservoir = ["strategy=replay", "strategy.replay.buffer=reservoir", "seed=3"]
    cl.run([*reservoir, "run.name=replay-res", *common], quiet=True)
    runs = sorted((root / "sweeps" / "mini2" / "runs").iterdir())
    configs = {  # each configuration's run folders, as the page should name them
        "strategy=naive": [r for r in runs if "naive" in r.name],
        "strategy=replay buffer=class_balanced": [r for r in runs if "replay" in r.name],
        "strategy=gem": [root / "runs" / "gem-run"],
        "strategy=replay buffer=reservoir": [root / "runs" / "replay-res"],
    }
    assert all(len(v) == 2 for v in list(configs.values())[:2])
    paths = [root / "runs" / "gem-run", root / "runs" / "replay-res", root / "sweeps" / "mini2"]
    return [str(p) for p in paths], configs


def own_gap(folders: list[Path], switch: int) -> tuple[str, str]:
    """From the run folders alone (cl.load_run): the minimum of the old tasks' mean accuracy
    during experience `switch` and the gap depth (mean over old tasks of the accuracy just
    before the switch minus the lowest during it), as mean ± std over the runs."""
    mins, depths = [], []
    for folder in folders:
        m = cl.load_run(folder).metrics
        during, before = m[m["experience"] == switch], m[m["experience"] == switch - 1]
        old = [f"eval/acc/task_{i}" for i in range(switch)]
        mins.append(during[old].mean(1).min())
        depths.append(np.mean([before[c].iloc[-1] - during[c].min() for c in old]))

    def text(v: list[float]) -> str:
        return f"{np.mean(v):.4f}" + (f" ± {np.std(v, ddof=1):.4f}" if len(v) > 1 else "")

    return text(mins), text(depths)


def gap_rows(page) -> list[list[str]]:
    cells = "[...document.querySelectorAll('table.gap tbody tr')]"
    return page.evaluate(f"{cells}.map(r => [...r.cells].map(c => c.textContent))")


def test_a_mixed_page_shows_each_configuration_its_own_numbers(mixed, browser, tmp_path):
    """A sweep and two runs beside it: the per-switch table has one row set per configuration
    holding that configuration's own values (never a mean over configurations), each chart
    one colour per configuration, one accuracy matrix each; `?per_run=1` one row set a run."""
    paths, configs = mixed
    out = tmp_path / "compare.html"
    assert main(["report", *paths, "-o", str(out)]) == 0
    page = open_page(browser, out.as_uri())
    assert page.inner_text("#title") == "gem-run + replay-res + mini2 (6 runs, 4 configurations)"
    rows = gap_rows(page)
    assert [r[:3] for r in rows] == [
        [name, str(k), str(len(configs[name]))]
        for name in ("strategy=gem", "strategy=replay buffer=reservoir", "strategy=naive",
                     "strategy=replay buffer=class_balanced")
        for k in (1, 2)
    ]  # fmt: skip
    for name, switch, _, low, _, depth, _ in rows:
        assert (low, depth) == own_gap(configs[name], int(switch)), (name, switch)
    assert len({r[3] for r in rows if r[1] == "1"}) > 1  # configurations differ
    names = set(configs)
    for chart in ("accuracy", "gap", "average", "training"):
        assert {n for n in traces(page, chart) if n} - {"minimum"} == names, chart
    titles = "document.getElementById('chart-matrix').layout.annotations.map(a => a.text)"
    assert set(page.evaluate(titles)) == names  # one accuracy matrix per configuration
    panels = "document.getElementById('chart-accuracy').layout.annotations.map(a => a.text)"
    assert page.evaluate(panels) == ["task 0", "task 1", "task 2"]  # tasks: one panel each
    charts = page.locator("#charts").bounding_box()
    assert charts["y"] < page.locator("#tables").bounding_box()["y"]  # plots first
    assert page.locator("table.differ tbody tr").count() == 4
    page.screenshot(path=str(tmp_path / "mixed.png"), full_page=True)
    assert page.errors == []
    page.close()

    server = serve(paths, "127.0.0.1", 0)
    host, port = server.server_address[:2]
    try:
        page = open_page(browser, f"http://{host}:{port}/?per_run=1")
        rows = gap_rows(page)
        assert len(rows) == 6 * 2 and all(r[2] == "1" for r in rows)
        assert {r[0].rsplit("seed=", 1)[1] for r in rows} == {"0", "1", "3"}
        naive0 = next(r for r in rows if r[0] == "strategy=naive · seed=0" and r[1] == "1")
        run = [f for f in configs["strategy=naive"] if cl.load_run(f).config["seed"] == 0]
        assert naive0[3] == own_gap(run, 1)[0]
        page.wait_for_timeout(1500)  # a refresh keeps the per-run view
        assert len(gap_rows(page)) == 12 and page.errors == []
        page.close()
    finally:
        server.shutdown()
        server.server_close()


def test_configurations_are_named_shortly_by_what_differs_or_their_label(tmp_path):
    """Unrelated runs: short names (sections dropped, abbreviated past MAX_LABEL with the
    full text kept); a `run.label` names its configuration; seeds of one config group."""
    from cl.report.collect import MAX_LABEL, collect
    from cl.report.page import payload

    configs = {
        "a": "seed: 0\nstrategy: {naive: {}}\nbenchmark: {n_tasks: 2, angles: null}\n",
        "b": "seed: 0\nstrategy: {replay: {mem_size: 200}}\n"
        "benchmark: {n_tasks: 2, angles: [0, 90], name: rotated_mnist_with_a_long_name}\n",
        "c": "seed: 1\nstrategy: {naive: {}}\nbenchmark: {n_tasks: 2, angles: null}\n",
        "d": "seed: 0\nstrategy: {naive: {}}\nbenchmark: {n_tasks: 2, angles: null}\n"
        "run: {label: baseline <b>}\n",
    }
    for name, text in configs.items():
        (synthetic_run(tmp_path / name, iterations=200, tasks=2) / "config.yaml").write_text(text)
    report = collect([tmp_path / n for n in configs])
    a, b, c, d = (r.group for r in report.runs)
    assert a == c and len({a, b, d}) == 3  # seeds 0 and 1 of one configuration
    assert report.groups[0] == "strategy=naive angles=None"  # name: only b sets it
    assert len(report.groups[1]) == MAX_LABEL and report.groups[1].endswith("…")
    assert report.full[report.groups[1]].startswith("strategy=replay angles=[0, 90] name=rot")
    assert report.groups[2] == "baseline <b>"
    tables = payload(report)["tables"]
    assert f'title="{report.full[report.groups[1]]}"' in tables  # the full name on hover
    assert "baseline &lt;b&gt;" in tables and "baseline <b>" not in tables
