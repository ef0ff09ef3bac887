"""`cl dashboard`: the report page served live from run and sweep folders.

Serves exactly two things: the page (`/`) and its data (`/data`, rebuilt from the folders
when a metrics or summary file changed). Every other path, `../` included, is a 404. Reads the
folders only; binds to 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cl.report.collect import collect, run_folders
from cl.report.page import _json, html_page, payload


class Live:
    """The data of `paths`, rebuilt when any run's files changed (checked per request)."""

    def __init__(self, paths: list[str]):
        self.paths = paths
        self.lock = threading.Lock()
        self.stamp: tuple | None = None
        self.data: dict | None = None

    def _stamp(self) -> tuple:
        try:
            folders, _ = run_folders(self.paths)
        except Exception:  # noqa: BLE001 - a sweep with no trial yet
            return ()
        out = []
        for f in folders:
            for name in ("metrics.jsonl", "summary.json"):
                p = f / name
                st = p.stat() if p.exists() else None
                out.append((str(p), st.st_size if st else -1, st.st_mtime_ns if st else -1))
        return tuple(out)

    def current(self) -> dict:
        with self.lock:
            stamp = self._stamp()
            if stamp != self.stamp or self.data is None:
                try:
                    self.data = payload(collect(self.paths))
                except Exception as e:  # noqa: BLE001 - e.g. no rows yet: show a note
                    self.data = {"title": "cl dashboard", "figures": [], "tables": _note(e)}
                self.stamp = stamp
            return self.data


def _note(e: Exception) -> str:
    import html

    return f"<p>waiting for data ({html.escape(str(e).splitlines()[0] if str(e) else '')})</p>"


def make_handler(live: Live):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            route = self.path.split("?", 1)[0]
            if route == "/":
                body, kind = html_page(live.current(), live=True).encode(), "text/html"
            elif route == "/data":
                body, kind = _json(live.current()).encode(), "application/json"
            else:
                self.send_error(404, "not found")
                return
            self.send_response(200)
            self.send_header("Content-Type", f"{kind}; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # quiet
            pass

    return Handler


def serve(paths: list[str], host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A started server (in a thread); `server.server_address` gives the port."""
    for p in paths:
        if not Path(p).exists():
            from cl.errors import UserError

            raise UserError(f"{p} does not exist")
    live = Live(list(paths))
    server = ThreadingHTTPServer((host, port), make_handler(live))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(paths: list[str], host: str, port: int) -> int:
    server = serve(paths, host, port)
    h, p = server.server_address[:2]
    print(f"dashboard of {', '.join(paths)} at http://{h}:{p}/  (Ctrl-C to stop)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0
