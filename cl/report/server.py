"""`cl dashboard`: the report page served live from run and sweep folders.

Serves exactly two things: the page (`/`) and its data (`/data`, rebuilt from the folders
when a metrics or summary file changed); `?per_run=1` on either shows every run as its own
configuration instead of the mean over its seeds. Every other path, `../` included, is a
404. Reads the folders only; binds to 127.0.0.1 unless told otherwise.

Hardening: a request whose Host header names neither the served address nor localhost
(with the served port) gets 403 (DNS rebinding); an idle connection is closed after
IDLE_TIMEOUT seconds; at most MAX_CONNECTIONS are handled at once (the server stops accepting
until one ends).
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cl.errors import UserError
from cl.report.collect import collect, run_folders
from cl.report.page import _json, html_page, payload

IDLE_TIMEOUT = 10.0  # seconds a connection may wait for its request (or to take the answer)
MAX_CONNECTIONS = 32  # connections handled at once
LOCAL_NAMES = ("localhost", "127.0.0.1", "[::1]")
WILDCARDS = ("", "0.0.0.0", "::")


class Live:
    """The data of `paths`, rebuilt when any run's files changed (checked per request)."""

    def __init__(self, paths: list[str], per_run: bool = False):
        self.paths = paths
        self.per_run = per_run
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
                    self.data = payload(collect(self.paths, self.per_run))
                except Exception as e:  # noqa: BLE001 - e.g. no rows yet: show a note
                    self.data = {"title": "cl dashboard", "figures": [], "tables": _note(e)}
                self.stamp = stamp
            return self.data


def _note(e: Exception) -> str:
    import html

    return f"<p>waiting for data ({html.escape(str(e).splitlines()[0] if str(e) else '')})</p>"


def split_host(header: str) -> tuple[str, str] | None:
    """A Host header's (name, port): `name`, `name:port`, `[v6]` or `[v6]:port`; port ''
    when absent; None when malformed."""
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        name, rest = header[: end + 1], header[end + 1 :]
        if end < 0 or (rest and not rest.startswith(":")):
            return None
        return name, rest[1:]
    name, _, port = header.partition(":")
    return (name, port) if ":" not in port else None


@functools.cache
def machine_names() -> tuple[str, str]:
    return socket.gethostname().lower(), socket.getfqdn().lower()


def host_allowed(header: str | None, host: str, port: int) -> bool:
    """Whether a request's Host header names this server: the served host or a localhost
    name, with the served port (none: 80). Served on all interfaces (0.0.0.0, ::), an IP
    address or this machine's name is accepted too; any other name is refused (a DNS
    rebinding page sends its own domain)."""
    parts = split_host(header or "")
    if parts is None or not parts[0] or (parts[1] or "80") != str(port):
        return False
    name = parts[0]
    served = f"[{host}]" if ":" in host else host
    if name in (*LOCAL_NAMES, served.lower()):
        return True
    if host not in WILDCARDS:
        return False
    if name in machine_names():
        return True
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def wants_per_run(query: str) -> bool:
    """Whether a request's query string asks for one configuration per run (`per_run=1`)."""
    from urllib.parse import parse_qs

    return parse_qs(query).get("per_run", ["0"])[-1].lower() in ("1", "true", "yes", "on")


def make_handler(live: Live, host: str = "127.0.0.1"):
    views = {False: live, True: Live(live.paths, per_run=True)}

    class Handler(BaseHTTPRequestHandler):
        timeout = IDLE_TIMEOUT  # applied to the connection's socket (StreamRequestHandler)

        def do_GET(self):  # noqa: N802 - http.server's name
            if not host_allowed(self.headers.get("Host"), host, self.server.server_port):
                self.send_response(403)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            route, _, query = self.path.partition("?")
            view = views[wants_per_run(query)]
            if route == "/":
                body, kind = html_page(view.current(), live=True).encode(), "text/html"
            elif route == "/data":
                body, kind = _json(view.current()).encode(), "application/json"
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


class Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with at most `limit` handler threads: while all are busy it
    accepts no connection (the kernel queues them)."""

    daemon_threads = True

    def __init__(self, address, handler, limit: int):
        self.slots = threading.BoundedSemaphore(limit)
        self.closing = False
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        while not self.slots.acquire(timeout=0.2):
            if self.closing:
                self.shutdown_request(request)
                return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def shutdown(self):
        self.closing = True
        super().shutdown()


def serve(paths: list[str], host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A started server (in a thread); `server.server_address` gives the port. UserError if a
    path is neither a run nor a sweep folder, or the address cannot be served."""
    for p in paths:
        if not Path(p).exists():
            raise UserError(f"{p} does not exist")
    run_folders(paths)  # a folder that holds no run (and is no sweep) is refused
    if not 0 <= port <= 65535:
        raise UserError(f"--port {port} must be in 0 .. 65535 (0: a free port)")
    live = Live(list(paths))
    try:
        server = Server((host, port), make_handler(live, host), MAX_CONNECTIONS)
    except OSError as e:  # in use, not an address of this machine, a name that does not resolve
        why = e.strerror or str(e)
        raise UserError(f"cannot serve on {host}:{port}: {why}") from None
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
