"""Faults from outside the run (issue 23): a second writer, a full disk, a read-only file
system, an overflowing step, W&B online without a network. Each ends in one line on stderr,
no traceback, and a run folder that `cl run --resume` continues once the fault is gone.
"""

import builtins
import errno
import json
import math
import os
import signal
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from tiny import TINY

import cl.checkpoint
import cl.store
from cl import config
from cl.cli import main
from cl.store import load_run, read_rows

PAUSE = Path(__file__).parent / "helpers" / "pause_at.py"
BASE = [
    *TINY,
    "train.epochs=2",
    "eval.subset=100",
    "run.checkpoint_every=7",
    "run.report=false",
]


def args(run_dir: Path, name: str, *extra: str) -> list[str]:
    """BASE with `extra` in place of the BASE keys it sets again (a key given twice is refused)."""
    again = {e.split("=", 1)[0] for e in extra}
    base = [b for b in BASE if b.split("=", 1)[0] not in again]
    return ["-q", *base, f"run.dir={run_dir}", f"run.name={name}", *extra]


def one_error_line(err: str, prefix: str = "error: ") -> None:
    assert err.startswith(prefix) and err.count("\n") == 1 and "Traceback" not in err, err


def iterations_once(folder: Path) -> list[int]:
    """The rows' iterations, checked to be readable and each logged once."""
    its = [r["iteration"] for r in read_rows(folder / "metrics.jsonl")]
    assert len(its) == len(set(its)) and its == sorted(its)
    return its


class Disk:
    """`open` for cl.store and cl.checkpoint with `free` bytes left on the disk: a write
    past them writes what fits and raises ENOSPC. `fill_at`: the disk fills (`left` bytes
    free) when the `fill_at`-th file is opened for writing."""

    def __init__(self, free: float = math.inf, fill_at: int | None = None, left: int = 1000):
        self.free, self.fill_at, self.left, self.opened = free, fill_at, left, 0

    def open(self, path, mode="r", *a, **kw):
        f = builtins.open(path, mode, *a, **kw)
        if mode.startswith("r"):
            return f
        self.opened += 1
        if self.opened == self.fill_at:
            self.free = self.left
        return LimitedFile(f, self)


class LimitedFile:
    def __init__(self, f, disk: Disk):
        self._f, self._disk = f, disk

    def write(self, data):
        if len(data) > self._disk.free:
            self._f.write(data[: int(self._disk.free)])
            self._f.flush()
            self._disk.free = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._disk.free -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- one writer per run folder ------------------------------------------------------------


def paused_run(folder: Path, at: int, *extra: str) -> subprocess.Popen:
    """`cl run` in a child, paused in iteration `at` (it holds the folder's lock)."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, str(PAUSE), str(at), *args(folder.parent, folder.name, *extra)]
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line == f"paused {proc.pid}\n", line
    return proc


def test_a_second_writer_is_refused_while_readers_read_on(tmp_path):
    folder = tmp_path / "runs" / "busy"
    first = paused_run(folder, 9)  # after its first checkpoint (7): resumable
    try:
        assert (folder / ".lock").read_text() == f"{first.pid}\n"
        assert len(load_run(folder).metrics) == 9  # readers take no lock
        second = subprocess.run(
            [sys.executable, "-m", "cl", "run", "--resume", str(folder)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 2
        one_error_line(second.stderr)
        assert f"error: {folder} is in use by pid {first.pid}" in second.stderr
        assert main(["run", *args(folder.parent, folder.name)]) == 2  # a new run: refused too
        first.stdin.write("go\n")
        first.stdin.flush()
        assert first.wait(timeout=120) == 0
    finally:
        first.kill()
        first.wait()
    assert load_run(folder).summary["status"] == "finished"
    its = iterations_once(folder)
    assert its[-1] == load_run(folder).summary["n_iterations"]


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path, one_thread):
    folder = tmp_path / "runs" / "killed"
    run = paused_run(folder, 10)
    run.kill()  # SIGKILL: the kernel drops its lock
    assert run.wait() == -signal.SIGKILL
    assert (folder / ".lock").read_text() == f"{run.pid}\n"  # a stale note, no lock
    assert main(["run", "--resume", str(folder), "-q"]) == 0
    assert load_run(folder).summary["status"] == "finished"
    assert (folder / ".lock").read_text() == f"{os.getpid()}\n"
    iterations_once(folder)


# --- a full disk --------------------------------------------------------------------------


def test_a_full_disk_at_a_checkpoint_keeps_the_last_one_and_resumes(
    tmp_path, monkeypatch, capsys, one_thread
):
    runs = tmp_path / "runs"
    disk = Disk(fill_at=2)  # the second checkpoint finds the disk full
    monkeypatch.setattr(cl.checkpoint, "open", disk.open, raising=False)
    assert main(["run", *args(runs, "full")]) == 2
    err = capsys.readouterr().err
    one_error_line(err)
    folder = runs / "full"
    assert f"error: No space left on device (writing {folder}/checkpoint.pt.tmp)" in err
    assert not (folder / "checkpoint.pt.tmp").exists()
    saved = torch.load(folder / "checkpoint.pt", weights_only=True)["context"]["iteration"]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "failed" and "No space left on device" in summary["error"]
    assert f"its rows and the checkpoint of iteration {saved} are kept" in err
    assert f"cl run --resume {folder}" in err
    assert iterations_once(folder)[-1] == summary["n_iterations"] > saved

    disk.free = math.inf  # space is back
    assert main(["run", "--resume", str(folder), "-q"]) == 0
    assert main(["run", *args(runs, "reference")]) == 0
    assert (folder / "metrics.jsonl").read_bytes() == (
        runs / "reference/metrics.jsonl"
    ).read_bytes()


def test_a_full_disk_before_the_first_checkpoint_restarts_on_resume(
    tmp_path, monkeypatch, capsys, one_thread
):
    runs = tmp_path / "runs"
    disk = Disk(free=1500)  # metrics.jsonl fills up in its third row
    monkeypatch.setattr(cl.store, "open", disk.open, raising=False)
    assert main(["run", *args(runs, "full")]) == 2
    err = capsys.readouterr().err
    one_error_line(err)
    folder = runs / "full"
    assert f"No space left on device (writing {folder}/metrics.jsonl)" in err
    assert "no checkpoint yet, so it will start again from the beginning" in err, err
    assert json.loads((folder / "summary.json").read_text())["status"] == "failed"
    assert (folder / "metrics.jsonl").read_bytes()[-1:] != b"\n"  # a torn row
    kept = iterations_once(folder)
    assert kept == list(range(len(kept))) and kept

    disk.free = math.inf
    assert main(["run", "--resume", str(folder), "-q"]) == 0
    dropped = f"running it again from the beginning ({len(kept)} rows dropped)"
    assert dropped in capsys.readouterr().err
    assert main(["run", *args(runs, "reference")]) == 0
    assert (folder / "metrics.jsonl").read_bytes() == (
        runs / "reference/metrics.jsonl"
    ).read_bytes()


@contextmanager
def tmpfs(path: Path, size: str):
    """A small tmpfs at `path` (root only); skips the test where mounting fails."""
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True)  # fmt: skip
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.decode().strip()[:100]})")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_real_full_disk(tmp_path, capsys, one_thread):
    """A 300 KiB tmpfs holds the first checkpoint (about 190 KB) but not a second beside it."""
    with tmpfs(tmp_path / "disk", "300k") as disk:
        folder = disk / "run"
        assert main(["run", *args(disk, "run")]) == 2
        err = capsys.readouterr().err
        one_error_line(err)
        assert "No space left on device" in err and "are kept" in err, err
        assert not (folder / "checkpoint.pt.tmp").exists()
        if (folder / "summary.json").exists():
            assert json.loads((folder / "summary.json").read_text())["status"] == "failed"
        iterations_once(folder)
        subprocess.run(["mount", "-o", "remount,size=8m", str(disk)], check=True)
        assert main(["run", "--resume", str(folder), "-q"]) == 0
        assert load_run(folder).summary["status"] == "finished"
        iterations_once(folder)


# --- a read-only file system --------------------------------------------------------------


def a_run_folder(folder: Path) -> Path:
    """A folder holding only a valid config.yaml: enough for `--resume` to reach the lock."""
    folder.mkdir()
    _, tree = config.load(list(BASE))
    (folder / "config.yaml").write_text(config.to_yaml(tree))
    return folder


def test_resume_on_a_read_only_file_system_is_one_error_line(tmp_path, capsys):
    with tmpfs(tmp_path / "disk", "1m") as disk:
        folder = a_run_folder(disk / "run")
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        assert main(["run", "--resume", str(folder)]) == 2
        err = capsys.readouterr().err
        one_error_line(err)
        assert f"cannot write to the run folder {folder}: Read-only file system" in err


def test_resume_where_the_lock_cannot_be_written_is_one_error_line(tmp_path, monkeypatch, capsys):
    folder = a_run_folder(tmp_path / "run")
    real_open = os.open

    def read_only(path, flags, *a, **kw):
        if str(path).endswith(".lock"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *a, **kw)

    monkeypatch.setattr(os, "open", read_only)
    assert main(["run", "--resume", str(folder)]) == 2
    err = capsys.readouterr().err
    one_error_line(err)
    assert "Read-only file system" in err
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml"]


# --- a step that overflows ----------------------------------------------------------------


def test_a_learning_rate_that_overflows_fails_the_run_in_one_line(tmp_path, capsys):
    assert main(["run", *args(tmp_path, "lr", "optim.lr=1e308")]) == 1
    err = capsys.readouterr().err
    one_error_line(err, "run failed: ")
    assert "the optimizer step overflowed in iteration 1" in err and "lower optim.lr" in err
    summary = json.loads((tmp_path / "lr" / "summary.json").read_text())
    assert summary["status"] == "failed" and "overflowed" in summary["error"]


# --- W&B online without a network ---------------------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def without_network() -> list[str]:
    """A command prefix that runs in a network namespace with only loopback (root), else []."""
    prefix = ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$0" "$@"']
    try:
        ok = subprocess.run([*prefix, "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return prefix if ok else []


def test_wandb_online_without_a_network_falls_back_to_offline(tmp_path):
    """A key, no network: the server address is a closed loopback port, and where possible
    the run sees no network at all, so nothing outside this machine is contacted."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(
        WANDB_API_KEY="a" * 40,
        WANDB_BASE_URL=f"http://127.0.0.1:{closed_port()}",
        WANDB_ERROR_REPORTING="false",
        OMP_NUM_THREADS="1",
    )
    online = ["benchmark.n_tasks=2", "train.epochs=1", "wandb.mode=online", "wandb.init_timeout=5"]
    cmd = [
        *without_network(),
        sys.executable,
        "-m",
        "cl",
        "run",
        *args(tmp_path, "online", *online),
    ]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "warning: W&B online mode failed" in r.stderr and "logging offline" in r.stderr
    assert "Traceback" not in r.stderr and "error:" not in r.stderr
    folder = tmp_path / "online"
    assert load_run(folder).summary["status"] == "finished"
    assert len(list((folder / "wandb").glob("offline-run-*"))) == 1
