"""The run folder on disk: claim it, lock it, append metrics rows crash-safely, read it back.

Rows are JSON lines in `metrics.jsonl`, written and flushed one at a time, so a run killed
with SIGKILL keeps every row written before the kill (a torn last line is ignored on read).
One process writes a run folder at a time: it holds an OS lock (`flock`) on `<run>/.lock`,
which names its pid; the kernel drops the lock when the process dies, however it dies.
Readers never take it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import shutil
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

from cl.errors import UserError

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
LOCK_FILE = ".lock"


def os_error(e: OSError, what: str = "writing") -> str:
    """`No space left on device (writing runs/x/checkpoint.pt.tmp)`: an OSError in one line."""
    where = f" ({what} {e.filename})" if e.filename else ""
    return f"{e.strerror or e}{where}"


class FolderLock:
    """The run folder's writer lock, held until `release()` (or the process's death).

    `FolderLock(folder)` takes it without waiting; UserError `<folder> is in use by pid N`
    when another process holds it, or when the folder cannot be written (read-only ...).
    """

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / LOCK_FILE
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise UserError(
                f"cannot write to the run folder {folder}: {e.strerror or e}; a run folder "
                "must be writable to run or resume in it"
            ) from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(self.fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                raise UserError(f"cannot lock the run folder {folder}: {os_error(e)}") from None
            raise UserError(
                f"{folder} is in use by pid {holder} (another `cl run` writes it); wait for it "
                "to end or stop it first"
            ) from None
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:  # a full disk: the lock holds anyway, only the pid note is missing
            pass

    def release(self) -> None:
        """Drop the lock (the file stays: unlinking a lock file races with its next taker)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def create_run_folder(
    parent: str | Path, name: str | None, default_name: str
) -> tuple[Path, Path | None]:
    """Create and claim the run folder `parent/name` (or `parent/default_name-<time>[-n]`).

    Returns (folder, made): `made` is the top-most directory this call created (the folder
    or a missing ancestor; None when `name` was an existing empty folder), which
    `remove_run_folder` deletes if the run fails before its first row. UserError if the
    folder cannot be created and written, or `name` is taken.
    """
    parent = Path(parent).expanduser()
    missing = [p for p in (parent, *parent.parents) if not p.exists()]
    if parent.exists() and not parent.is_dir():
        raise UserError(f"run.dir={parent} is a file, not a folder; choose a folder for runs")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        if name:
            folder = parent / name
            if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
                hint = f", or continue it with: cl run --resume {folder}"
                raise UserError(
                    f"run folder {folder} already exists and is not empty; choose another "
                    f"run.name or run.dir{hint if (folder / METRICS_FILE).exists() else ''}"
                )
            existed = folder.exists()
            folder.mkdir(exist_ok=True)
        else:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            folder, n, existed = parent / f"{default_name}-{stamp}", 1, False
            while True:  # mkdir claims the name even against a concurrent run
                try:
                    folder.mkdir()
                    break
                except FileExistsError:
                    folder, n = parent / f"{default_name}-{stamp}-{n}", n + 1
        probe = folder / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise UserError(
            f"cannot create the run folder under run.dir={parent}: {e.strerror or e} "
            f"({e.filename or parent}); choose a writable run.dir"
        ) from None
    made = missing[-1] if missing else (None if existed else folder)
    return folder, made


def remove_run_folder(folder: Path, made: Path | None) -> None:
    """Undo `create_run_folder` for a run that failed before its first row."""
    if made is not None:
        shutil.rmtree(made, ignore_errors=True)
        return
    for child in folder.iterdir():  # an existing empty folder: remove only what we wrote
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class LocalStore:
    """Appends one JSON line per logged row to `<run folder>/metrics.jsonl`; `rows` counts
    the rows the file holds (`rows` already there when a resumed run reopens it)."""

    def __init__(self, folder: str | Path, rows: int = 0):
        self.path = Path(folder) / METRICS_FILE
        self.rows = rows
        self._file = open(self.path, "a", buffering=1 << 16)  # noqa: SIM115 - closed in close()

    def log(self, row: dict[str, Any]) -> None:
        try:
            line = json.dumps(row, allow_nan=False)
        except ValueError:  # NaN or inf: stored as null
            line = json.dumps({k: _clean(v) for k, v in row.items()})
        try:
            self._file.write(line + "\n")
            self._file.flush()
        except OSError as e:  # a full disk: the caller stops the run, naming the file
            e.filename = e.filename or str(self.path)
            raise
        self.rows += 1

    def close(self, ok: bool = True) -> None:
        if not self._file.closed:
            try:
                self._file.close()
            except OSError:  # a full disk: the rows that made it stay, a torn tail is cut later
                pass


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a metrics file. A torn last line (a run killed mid-write) is skipped
    silently; an unreadable line elsewhere is skipped with a warning naming it."""
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
            if not isinstance(row, dict):
                raise ValueError("not a JSON object")
            rows.append(row)
        except ValueError:  # JSONDecodeError and bad UTF-8 are ValueErrors
            if number < len(lines):
                warnings.warn(f"{path}:{number}: unreadable row skipped", stacklevel=2)
    return rows


def truncate_rows(path: str | Path, n: int) -> None:
    """Cut a metrics file back to its first `n` lines; UserError (and the file left alone)
    if it holds fewer or one of them is not a JSON row."""
    with open(path, "rb") as f:
        data = f.read()
    end = 0
    for number in range(1, n + 1):
        nl = data.find(b"\n", end)
        if nl < 0:
            raise UserError(f"{path} holds fewer than the {n} rows its checkpoint expects")
        try:
            if not isinstance(json.loads(data[end:nl]), dict):
                raise ValueError("not a JSON object")
        except ValueError:
            raise UserError(
                f"{path} line {number} is unreadable (not a JSON row): the run folder is "
                "damaged and cannot be resumed exactly; restore that line or start the run again"
            ) from None
        end = nl + 1
    if end < len(data):
        os.truncate(path, end)


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class Run:
    """A run folder read back: `.summary` (summary.json), `.metrics` (one row per
    evaluation, a pandas DataFrame read on first use) and `.example_forgetting`."""

    def __init__(self, path: Path, summary: dict[str, Any]):
        self.path, self.summary = path, summary
        self._metrics = None

    @property
    def metrics(self):
        if self._metrics is None:
            import pandas as pd

            self._metrics = pd.DataFrame(read_rows(self.path / METRICS_FILE))
        return self._metrics

    @property
    def config(self) -> dict[str, Any]:
        import yaml

        return yaml.safe_load((self.path / "config.yaml").read_text())

    @property
    def example_forgetting(self):
        """The per-sample example-forgetting table (example_forgetting.csv) as a DataFrame,
        or None when the run did not write one."""
        import pandas as pd

        path = self.path / "example_forgetting.csv"
        return pd.read_csv(path) if path.is_file() else None

    def task_columns(self) -> list[str]:
        cols = [c for c in self.metrics.columns if c.startswith("eval/acc/task_")]
        return sorted(cols, key=lambda c: int(c.rsplit("_", 1)[1]))


def load_run(path: str | Path) -> Run:
    """Read a run folder written by `cl run` (also one whose run was killed)."""
    path = Path(path)
    if not (path / METRICS_FILE).is_file():
        raise UserError(f"{path} is not a cl run folder (no {METRICS_FILE})")
    summary_path = path / SUMMARY_FILE
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return Run(path, summary)
