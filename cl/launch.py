"""Starts a run's ranks on this machine: `cl run run.nproc=N` (and a sweep trial over
several devices) re-executes `cl run` through `torch.distributed.run` (cl/distributed.py is
what each rank then does)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from cl.distributed import under_torchrun

STATUS_ENV = "CL_DIST_STATUS"  # where rank 0 leaves the run's exit code for the launcher


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(nproc: int, argv: list[str], threads: int | None = None) -> int:
    """`cl <argv>` as `nproc` ranks on this machine through torch.distributed.run (gloo/NCCL
    on 127.0.0.1, a free port); what rank 0 prints is shown, the others stay quiet. Returns
    rank 0's exit code (torchrun's when rank 0 left none, e.g. a rank was killed)."""
    env = dict(os.environ)
    if threads:  # each rank's
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    elif "OMP_NUM_THREADS" not in env:  # the machine's cores shared by the ranks
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        env["OMP_NUM_THREADS"] = str(max(1, cores // nproc))
    with tempfile.TemporaryDirectory(prefix="cl-dist-") as tmp:
        status = Path(tmp) / "status"
        env[STATUS_ENV] = str(status)
        cmd = [
            sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
            "--nnodes=1", "--master_addr=127.0.0.1", f"--master_port={free_port()}",
            "--monitor_interval=0.5", "-m", "cl", *argv,
        ]  # fmt: skip
        # its own session: the terminal's Ctrl-C reaches only this process, which passes it
        # on to torchrun, which passes it on to each rank once
        proc = subprocess.Popen(cmd, env=env, start_new_session=True)
        forward = lambda signum, frame: proc.send_signal(signum)  # noqa: E731
        previous = {}
        if threading.current_thread() is threading.main_thread():
            previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:  # torchrun passes a stop on to the ranks, which checkpoint and end
            code = proc.wait()
        except KeyboardInterrupt:  # outside the main thread (a Ray task's cancel)
            proc.send_signal(signal.SIGINT)
            code = proc.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        if status.is_file() and status.read_text().strip():
            return int(status.read_text())
        return code


def leave_status(code: int) -> bool:
    """A rank started by `launch`: rank 0 leaves its exit code for the launcher; returns
    True (the rank then exits 0 to torchrun). False in any other process."""
    path = os.environ.get(STATUS_ENV)
    if not path or not under_torchrun():
        return False
    if os.environ.get("RANK", "0") == "0":
        Path(path).write_text(str(code))
    return True
