"""Weights & Biases sink: one `wandb.log` per logged row, every series against `iteration`.

Offline by default. Online mode that cannot reach the server (no key, no network) falls back
to offline with a warning instead of hanging. Row n of the run is logged at W&B step n, so a
resumed run (same run id, one `offline-run-*-<id>` folder per process, which `wandb sync`
uploads into one run) holds each row exactly once. W&B never takes a run down: after any W&B
failure the sink warns once and drops W&B; the local run folder stays the source of truth.
"""

from __future__ import annotations

import math
import os
import struct
import sys
import time
import zlib
from pathlib import Path
from typing import Any

from cl.schema import WandbConfig


def _settings(wandb, timeout: float):
    return wandb.Settings(
        console="off",
        x_disable_stats=True,  # no system monitor (it probes a cloud metadata address)
        x_disable_machine_info=True,
        disable_git=True,
        save_code=False,
        silent=True,
        init_timeout=timeout,
    )


def new_run_id() -> str:
    """A W&B-style run id (8 characters, lower-case letters and digits)."""
    import secrets
    import string

    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


class WandbSink:
    """Owns one W&B run; `log(row)` sends the row with `iteration` as its x axis."""

    def __init__(
        self, cfg: WandbConfig, folder: Path, name: str, config: dict[str, Any], run_id: str
    ):
        import wandb

        self.wandb = wandb
        self.mode = cfg.mode
        self.step = 0  # the W&B step of the next row: its index in the run
        self.held = 0  # rows [0, held) are already in W&B (from earlier processes)
        kwargs = dict(
            project=cfg.project,
            entity=cfg.entity,
            group=cfg.group,
            job_type=cfg.job_type,
            tags=list(cfg.tags),
            name=name,
            dir=str(folder),
            config=config,
            id=run_id,
            resume="allow",
            reinit="create_new",
        )
        os.environ.setdefault("WANDB_SILENT", "true")
        try:
            self.run = wandb.init(
                mode=cfg.mode, settings=_settings(wandb, cfg.init_timeout), **kwargs
            )
        except Exception as e:  # noqa: BLE001 - any online failure means: go offline
            if cfg.mode != "online":
                raise
            print(
                f"warning: W&B online mode failed ({str(e).splitlines()[0]}); logging "
                "offline instead (sync later with `wandb sync`)",
                file=sys.stderr,
            )
            self.mode = "offline"
            try:
                wandb.teardown()
            except Exception:  # noqa: BLE001, S110
                pass
            self.run = wandb.init(mode="offline", settings=_settings(wandb, 10), **kwargs)
        self.run.define_metric("iteration")
        self.run.define_metric("*", step_metric="iteration")

    @property
    def dir(self) -> Path | None:
        """The offline run folder (`.../wandb/offline-run-*`), if any."""
        d = getattr(self.run.settings, "sync_dir", None) if self.run else None
        return Path(d) if d else None

    def _guard(self, action) -> None:
        """`action(run)`, unless W&B is gone; any W&B failure drops W&B with one warning."""
        if self.run is None:
            return
        try:
            action(self.run)
        except Exception as e:  # noqa: BLE001 - whatever W&B raises, the run goes on
            self.run = None
            print(
                f"warning: W&B failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                "continuing without W&B (the run folder keeps every row)",
                file=sys.stderr,
            )
            try:
                self.wandb.teardown()  # also unregisters W&B's exit hook, which would fail
            except Exception:  # noqa: BLE001, S110
                pass

    def _send(self, row: dict[str, Any], step: int) -> None:
        clean = {
            k: v
            for k, v in row.items()
            if v is not None and not (isinstance(v, float) and not math.isfinite(v))
        }
        self._guard(lambda run: run.log(clean, step=step))

    def log(self, row: dict[str, Any]) -> None:
        if self.step >= self.held:
            self._send(row, self.step)
        self.step += 1

    def resume_at(self, rows: int, held: int, read_rows) -> None:
        """Continue a run whose local store holds `rows` rows of which W&B holds the first
        `held`: send the missing ones now (`read_rows()` gives them all) and skip the rows W&B
        already holds when the run logs them again."""
        if held < rows:
            for i, row in enumerate(read_rows()[held:rows], held):
                self._send(row, i)
        self.step, self.held = rows, held

    def summary(self, values: dict[str, Any]) -> None:
        for k, v in values.items():
            if isinstance(v, int | float | str | bool):
                self._guard(lambda run, k=k, v=v: run.summary.__setitem__(k, v))

    def images(self, paths: dict[str, Path], report: Path | None = None) -> None:
        """Log a finished run's plots and its HTML report, one step after the last row."""

        def media() -> dict[str, Any]:
            out: dict[str, Any] = {k: self.wandb.Image(str(p)) for k, p in paths.items()}
            if report is not None:
                out["report"] = self.wandb.Html(report.read_text(), inject=False)
            return out

        self._guard(lambda run: run.log(media(), step=self.step))

    def close(self, exit_code: int = 0) -> None:
        """Finish the W&B run and wait (bounded) until W&B's service has written its file, so
        the run folder is whole when the process ends."""
        folder = self.dir
        self._guard(lambda run: run.finish(exit_code=exit_code))
        self.run = None
        for f in folder.glob("*.wandb") if folder else ():
            if not wait_written(f):
                print(f"warning: W&B's service still writes {f}", file=sys.stderr)


# --- what earlier processes of a run sent to W&B ------------------------------------------
#
# W&B's service process writes a run's `.wandb` file on its own schedule: `run.finish()` (or the
# death of the process that logged) can return while the service still holds the file open with
# its last blocks unwritten. A file is read only once no process has it open; until then its
# tail is not the truth.

BLOCK = 32768  # the .wandb file is a LevelDB-style log of 32 KiB blocks of framed records
HEADER = struct.Struct("<IHB")  # crc32, length, type (1 full, 2 first, 3 middle, 4 last)
WRITER_WAIT = 120.0  # seconds to wait for W&B's service to close a run's file


def _records(data: bytes, pos: int):
    """Record payloads from block boundary `pos` on; stops at a torn or empty tail."""
    parts: list[bytes] | None = None
    while pos + HEADER.size <= len(data):
        if BLOCK - pos % BLOCK < HEADER.size:
            pos += BLOCK - pos % BLOCK
            continue
        crc, length, kind = HEADER.unpack_from(data, pos)
        payload = data[pos + HEADER.size : pos + HEADER.size + length]
        torn = len(payload) < length or zlib.crc32(payload, zlib.crc32(bytes([kind]))) != crc
        if kind == 0 or torn:
            return
        pos += HEADER.size + length
        if kind == 1:
            yield payload
        elif kind == 2:
            parts = [payload]
        elif kind in (3, 4) and parts is not None:  # a fragment before any start is skipped
            parts.append(payload)
            if kind == 4:
                yield b"".join(parts)
                parts = None


def _last_row_step(path: Path) -> int:
    """W&B step of the last row (a history record with `experience`) in a .wandb file, or -1.
    Reads from the end, one more block at a time, so long runs cost no more than short ones:
    the last row found from block k on is the file's last row, since any later row starts at or
    after it; a row whose first fragment lies before block k is found from block k-1."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    start = (len(data) - 1) // BLOCK * BLOCK if data else 0
    while start >= 0:
        last = -1
        for payload in _records(data, max(start, 7)):
            record = pb.Record()
            record.ParseFromString(payload)
            if record.WhichOneof("record_type") == "history":
                keys = {i.key or "/".join(i.nested_key) for i in record.history.item}
                if "experience" in keys:  # a row (W&B adds `iteration` to its other rows)
                    last = record.history.step.num
        if last >= 0:
            return last
        start -= BLOCK
    return -1


def _holders(path: Path) -> list[int]:
    """Pids of the processes that have `path` open (Linux's /proc; elsewhere psutil's view)."""
    target = os.path.realpath(path)
    proc = Path("/proc")
    if (proc / "self" / "fd").is_dir():
        pids = []
        for fd_dir in proc.glob("[0-9]*/fd"):
            try:
                if any(os.readlink(fd) == target for fd in fd_dir.iterdir()):
                    pids.append(int(fd_dir.parent.name))
            except OSError:  # gone, or not ours to read
                continue
        return pids
    try:
        import psutil
    except ImportError:
        return []
    pids = []
    for p in psutil.process_iter():
        try:
            if any(f.path == target for f in p.open_files()):
                pids.append(p.pid)
        except psutil.Error:
            continue
    return pids


def wait_written(path: Path) -> bool:
    """Wait until no process has W&B's file `path` open; False if one still has it after
    WRITER_WAIT seconds (its tail may then still grow)."""
    deadline = time.monotonic() + WRITER_WAIT
    while _holders(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def rows_held(wandb_dir: Path, run_id: str) -> int:
    """How many rows of the run W&B already holds, over every process's run folder; each file
    is read once its writer has closed it."""
    held = 0
    for f in wandb_dir.glob(f"*run-*-{run_id}/run-{run_id}.wandb"):
        if not wait_written(f):
            print(
                f"warning: a W&B process still writes {f} after {WRITER_WAIT:.0f} s; counting "
                "the rows it holds now (W&B may get its last rows twice)",
                file=sys.stderr,
            )
        held = max(held, _last_row_step(f) + 1)
    return held
