"""Where trials run: a pool of warm local worker processes, tasks on a Ray cluster, or
groups of seeds as one stacked model in warm workers (`VectorizedPool`).

All run each trial through `run_trial`, the same code as `cl run` (or `cl run --resume`),
and share one interface: `capacity`, `submit(job)`, `wait(timeout) -> [(job, result)]`,
`interrupt(signum)` (stop the running trials at their next safe point), `close()`.
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from multiprocessing import connection, get_context
from typing import Any


def run_trial(job: dict[str, Any]) -> dict[str, Any]:
    """Start or resume one trial in this process; never raises. `overhead_s` is the time
    spent here outside the run itself (config, bookkeeping)."""
    began = time.perf_counter()
    from cl import api, config
    from cl.errors import RunFailed, UserError
    from cl.interrupt import Interrupted

    if "group" in job:  # sweep.executor=vectorized: one group of seeds (cl/sweep/vectorized.py)
        from cl.sweep.vectorized import run_group

        return {"status": "group", "results": run_group(job["group"])}
    result: dict[str, Any] = {"status": "failed", "error": None}
    if job.get("ranks", 1) > 1:  # sweep.devices_per_trial: `cl run run.nproc=N` (torchrun)
        return run_ranks(job, began)
    run_s = 0.0
    try:
        import torch

        torch.set_num_threads(job["threads"])
        if job["mode"] == "resume":
            t = time.perf_counter()
            api.resume(job["run_dir"], quiet=True)
        else:
            cfg, tree = config.load(job["overrides"])
            t = time.perf_counter()
            api.start(cfg, config.as_plain(tree), quiet=True)
        run_s = time.perf_counter() - t
        result["status"] = "finished"
    except (Interrupted, KeyboardInterrupt):
        result["status"] = "interrupted"
    except (RunFailed, UserError) as e:
        result["error"] = str(e)
    except Exception as e:  # noqa: BLE001 - a trial's bug must not stop the sweep
        result["error"] = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=8)}"
    if run_s == 0.0 and result["status"] != "finished":
        run_s = time.perf_counter() - began
    result["overhead_s"] = round(time.perf_counter() - began - run_s, 4)
    return result


def run_ranks(job: dict[str, Any], began: float) -> dict[str, Any]:
    """One trial as a run over `job["ranks"]` ranks on this node (cl/distributed.py)."""
    from cl import launch

    n = job["ranks"]
    if job["mode"] == "resume":
        argv = ["run", "--resume", job["run_dir"], "-q"]
    else:
        last = {o.split("=", 1)[0]: o for o in job["overrides"]}  # the CLI takes a key once
        argv = ["run", *last.values(), f"run.nproc={n}", "-q"]
    code = launch.launch(n, argv, job["threads"])  # a cancel: they stop at a safe point
    status = {0: "finished", 130: "interrupted", 143: "interrupted"}.get(code, "failed")
    error = None if status != "failed" else f"the {n}-rank run exited with code {code}"
    return {"status": status, "error": error, "overhead_s": round(time.perf_counter() - began, 4)}


# --- local: warm worker processes -----------------------------------------------------------


def _worker(conn, threads: int) -> None:
    """A worker: `threads` BLAS/OpenMP threads, dies with the driver, runs jobs until told
    to stop. A signal outside a run (the trial not started yet) stops the trial's run at its
    first safe point; during the run, the run handles it."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(threads)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError):
        pass
    os.setpgrp()  # the terminal's Ctrl-C goes to the driver, which forwards it once
    from cl.interrupt import note_pending

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, note_pending)  # a stop sent before the trial's run began
    import torch

    torch.set_num_threads(threads)
    import cl.api  # noqa: F401 - warm: torch, cl and the optimizer machinery, once

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        if job is None:
            return
        conn.send(run_trial(job))


class LocalPool:
    """`workers` warm processes (spawned, so no thread pool is inherited)."""

    def __init__(self, workers: int, threads: int):
        self.ctx = get_context("spawn")
        self.threads, self.capacity = threads, workers
        self.procs: list = []
        self.busy: dict[int, dict] = {}  # worker index -> job
        for _ in range(workers):
            self.procs.append(self._spawn())

    def _spawn(self):
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=_worker, args=(child, self.threads), daemon=True)
        proc.start()
        child.close()
        return proc, parent

    def submit(self, job: dict[str, Any]) -> None:
        i = next(i for i in range(len(self.procs)) if i not in self.busy)
        if not self.procs[i][0].is_alive():  # died while idle
            self.procs[i] = self._spawn()
        self.busy[i] = job
        self.procs[i][1].send(job)

    def wait(self, timeout: float) -> list[tuple[dict, dict]]:
        waits = {}
        for i in self.busy:
            proc, conn = self.procs[i]
            waits[conn], waits[proc.sentinel] = i, i
        done = []
        for i in dict.fromkeys(waits[r] for r in connection.wait(list(waits), timeout)):
            proc, conn = self.procs[i]
            try:
                result = conn.recv() if conn.poll() else None
            except (EOFError, OSError):
                result = None
            if result is None:  # the worker died with its trial
                proc.join(1)
                result = {"status": "failed", "error": f"worker died (exit {proc.exitcode})"}
                self.procs[i] = self._spawn()
            done.append((self.busy.pop(i), result))
        return done

    def interrupt(self, signum: int) -> None:
        for i in self.busy:
            try:
                os.kill(self.procs[i][0].pid, signum)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        for _, conn in self.procs:
            try:
                conn.send(None)
            except (OSError, ValueError):
                pass
        for proc, _ in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()


# --- Ray: one task per trial ------------------------------------------------------------------


class RayPool:
    """Each trial is a Ray task (`num_cpus` = threads, `num_gpus` = 1 for a GPU device) on the
    cluster at `address` ("auto", "host:port"), or on a local Ray started here when None.
    Tasks (not Tune trials): cl already owns retries, resume and the results table, and a task
    runs the same `run_trial` as a local worker; Ray reuses its worker processes, so they stay
    warm between trials."""

    def __init__(
        self, address: str | None, workers: int | None, threads: int, gpus: float, ranks: int = 1
    ):
        import ray

        self.ray = ray
        kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        if address:
            ray.init(address=address, **kwargs)
        else:
            ray.init(num_cpus=os.cpu_count(), **kwargs)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.capacity = workers or max(1, cpus // (threads * ranks))
        # sweep.devices_per_trial: the task holds every rank's CPUs and GPUs (one node)
        task = ray.remote(num_cpus=threads * ranks, num_gpus=gpus * ranks, max_retries=0)
        self.task = task(run_trial)
        self.running: dict[Any, dict] = {}

    def submit(self, job: dict[str, Any]) -> None:
        self.running[self.task.remote(job)] = job

    def wait(self, timeout: float) -> list[tuple[dict, dict]]:
        if not self.running:
            time.sleep(timeout)
            return []
        ready, _ = self.ray.wait(list(self.running), num_returns=len(self.running), timeout=timeout)
        done = []
        for ref in ready:
            job = self.running.pop(ref)
            try:
                result = self.ray.get(ref)
            except self.ray.exceptions.TaskCancelledError:
                result = {"status": "interrupted", "error": None}
            except self.ray.exceptions.RayError as e:
                result = {"status": "failed", "error": f"Ray: {str(e).splitlines()[0][:300]}"}
            done.append((job, result))
        return done

    def interrupt(self, signum: int) -> None:
        for ref in self.running:
            self.ray.cancel(ref)  # KeyboardInterrupt in the task: the run stops, interrupted

    def close(self) -> None:
        self.ray.shutdown()


class VectorizedPool:
    """Takes every queued trial, groups those that differ only in their seed, and runs each
    group in a warm worker (`workers` groups at a time, `threads` torch threads each; with
    fewer groups than workers the largest groups are halved, so every worker has one)."""

    def __init__(self, workers: int, threads: int):
        self.pool = LocalPool(workers, threads)
        self.capacity = 10**9  # the driver hands over every trial; groups are formed here
        self.pending: list[dict] = []
        self.groups: list[list[dict]] = []
        self.running: dict[int, list[dict]] = {}

    def submit(self, job: dict[str, Any]) -> None:
        self.pending.append(job)

    def _form(self) -> None:
        from cl.sweep.vectorized import group_key

        by_key: dict[tuple, list[dict]] = {}
        for job in self.pending:  # resumes (from the members' checkpoints) group apart
            by_key.setdefault((job["mode"], *group_key(job)), []).append(job)
        groups = list(by_key.values())
        while groups and len(groups) < self.pool.capacity:  # fewer groups than workers: split
            big = max(groups, key=len)
            if len(big) < 2:
                break
            groups.remove(big)
            groups += [big[: len(big) // 2], big[len(big) // 2 :]]
        self.groups.extend(groups)
        self.pending = []

    def wait(self, timeout: float) -> list[tuple[dict, dict]]:
        self._form()
        while self.groups and len(self.pool.busy) < self.pool.capacity:
            group = self.groups.pop(0)
            self.pool.submit({"group": group, "threads": group[0]["threads"]})
        out = []
        for gjob, result in self.pool.wait(timeout):
            results = result.get("results") or [result] * len(gjob["group"])
            out += list(zip(gjob["group"], results, strict=True))
        return out

    def interrupt(self, signum: int) -> None:
        self.pool.interrupt(signum)

    def close(self) -> None:
        self.pool.close()
