"""Trials as Slurm jobs, through submitit: one job per trial, or job arrays with a cap.

The sweep folder stays the source of truth: submitit's files (batch scripts, pickles, logs)
go to `<sweep>/slurm/`, and `<sweep>/slurm/jobs.jsonl` names each trial's latest job, so a
driver started again (`cl sweep --resume`) waits for a job that is still queued or running
instead of submitting the trial twice. A trial whose job is preempted or reaches its time
limit stops at its next safe point with a checkpoint (SIGTERM, or submitit's USR2 shortly
before the limit) and comes back `interrupted`; the driver then submits it again as a resume.
Jobs are submitted `--no-requeue`: the driver, not Slurm, decides what runs again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cl.errors import UserError

# sweep.slurm.* -> (type, what it means); checked before any submission
OPTIONS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "partition": (str, "the partition (default: the cluster's)"),
    "time_min": (int, "time limit per job, in minutes (default 60)"),
    "cpus_per_trial": (int, "CPUs per trial (default: sweep.threads, else 1)"),
    "mem_gb": ((int, float), "memory per trial in GB (default: the cluster's)"),
    "gpus_per_trial": (int, "0 or 1 GPU per trial (1 also sets run.device=cuda)"),
    "account": (str, "the account to charge"),
    "qos": (str, "the quality of service"),
    "array_parallelism": (int, "submit trials as job arrays, at most this many running"),
    "additional_parameters": (dict, "more #SBATCH options, e.g. {constraint: a100}"),
    "setup": (list, "shell lines run before the trial, e.g. ['module load cuda']"),
}
TYPE_NAMES = {
    "time_min": "an integer", "cpus_per_trial": "an integer", "mem_gb": "a number",
    "gpus_per_trial": "an integer", "array_parallelism": "an integer",
    "additional_parameters": "a mapping ({key: value})", "setup": "a list of strings",
}  # fmt: skip
TYPE_NAMES |= {k: "a string" for k in OPTIONS if k not in TYPE_NAMES}
POSITIVE = ("time_min", "cpus_per_trial", "mem_gb", "array_parallelism")
STOPPED = ("TIMEOUT", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL", "DEADLINE")  # resume these
LIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED")
SQUEUE_EVERY_S = 5.0  # how often the pool asks Slurm about jobs that have no result yet
JOBS_FILE = "jobs.jsonl"


def check_options(options: dict[str, Any]) -> None:
    """UserError for an unknown `sweep.slurm.*` key, a wrong type, more than one GPU per
    trial, or no `sbatch` on PATH."""
    for key, value in options.items():
        if key not in OPTIONS:
            valid = ", ".join(f"sweep.slurm.{k}" for k in OPTIONS)
            raise UserError(f"unknown key 'sweep.slurm.{key}'; valid: {valid}")
        kind, what = OPTIONS[key]
        if value is None:
            continue
        if not isinstance(value, kind) or isinstance(value, bool):
            raise UserError(f"sweep.slurm.{key}={value!r} must be {TYPE_NAMES[key]}: {what}")
        if key in POSITIVE and value <= 0:
            raise UserError(f"sweep.slurm.{key}={value!r} must be positive: {what}")
    gpus = options.get("gpus_per_trial") or 0
    if gpus < 0:
        raise UserError(f"sweep.slurm.gpus_per_trial={gpus} must be 0 or 1")
    if gpus > 1:
        raise UserError(
            f"sweep.slurm.gpus_per_trial={gpus}: a trial uses one device for now (several GPUs "
            "per run are not supported yet); use 1, and run more trials in parallel instead"
        )
    if not all(isinstance(line, str) for line in options.get("setup") or []):
        raise UserError("sweep.slurm.setup must be a list of shell lines (strings)")
    if shutil.which("sbatch") is None:
        raise UserError(
            "sweep.executor=slurm needs Slurm's sbatch on PATH (run the sweep on a login node "
            "of the cluster, or choose sweep.executor=local or ray)"
        )


def threads_for(options: dict[str, Any], threads: int | None) -> int:
    """Torch threads per trial: sweep.threads, else the trial's CPUs, else 1."""
    return threads or options.get("cpus_per_trial") or 1


def _stop_soon(signum: int, frame) -> None:
    """submitit's USR2 shortly before the time limit: stop at the next safe point, as on
    SIGTERM (once; a second SIGTERM from Slurm then still stops at once)."""
    from cl.interrupt import note_pending

    handler = signal.getsignal(signal.SIGTERM)
    owner = getattr(handler, "__self__", None)
    if owner is None:
        note_pending(signal.SIGTERM, frame)
    elif getattr(owner, "signum", None) is None:
        handler(signal.SIGTERM, frame)


def slurm_trial(job: dict[str, Any]) -> dict[str, Any]:
    """The job's function: start or resume the trial like a local worker. A job that Slurm
    itself started again (a requeue) resumes from the run's checkpoint."""
    from cl.interrupt import note_pending
    from cl.sweep.executors import run_trial
    from cl.sweep.folder import run_status

    signal.signal(signal.SIGTERM, note_pending)  # a stop before the run's own handlers
    signal.signal(signal.SIGUSR2, _stop_soon)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(job["threads"])
    run_dir = Path(job["run_dir"])
    if run_status(run_dir) == "finished":
        return {"status": "finished", "error": None, "overhead_s": 0.0}
    if job["mode"] == "start" and (run_dir / "checkpoint.pt").is_file():
        job = job | {"mode": "resume"}
    result = run_trial(job)
    result["job_id"] = os.environ.get("SLURM_JOB_ID")
    return result


class SlurmPool:
    """Trials as Slurm jobs; the executor interface of `LocalPool` and `RayPool`."""

    requeue = True  # the driver submits an `interrupted` trial again, as a resume

    def __init__(self, sweep: Path, options: dict[str, Any], threads: int, capacity: int):
        import submitit

        self.folder = sweep / "slurm"
        self.folder.mkdir(exist_ok=True)
        self.options, self.threads, self.capacity = options, threads, capacity
        self.executor = submitit.SlurmExecutor(folder=self.folder)
        self.executor.update_parameters(**self.parameters(sweep.name))
        self.buffer: list[dict] = []
        self.running: dict[str, tuple[dict, Any]] = {}  # job id -> (job, submitit job)
        self.states: dict[str, str] = {}
        self.asked = 0.0
        self.stopping = False
        self.stopped: list[tuple[dict, dict]] = []
        self.earlier = self.live_jobs()  # trial -> a job a previous driver left running

    def parameters(self, name: str) -> dict[str, Any]:
        o = self.options
        time_min = o.get("time_min") or 60
        params: dict[str, Any] = {
            "job_name": f"cl-{name}"[:100],
            "time": time_min,
            "cpus_per_task": o.get("cpus_per_trial") or self.threads,
            "signal_delay_s": min(90, 15 * time_min),  # USR2: stop before the limit
            "additional_parameters": {"no_requeue": True, **(o.get("additional_parameters") or {})},
        }
        for key, param in (("partition", "partition"), ("account", "account"), ("qos", "qos")):
            if o.get(key):
                params[param] = o[key]
        if o.get("mem_gb"):
            params["mem"] = f"{int(o['mem_gb'] * 1024)}M"
        if o.get("gpus_per_trial"):
            params["gpus_per_task"] = 1
        if o.get("array_parallelism"):
            params["array_parallelism"] = o["array_parallelism"]
        setup = list(o.get("setup") or [])
        if os.environ.get("PYTHONPATH"):  # the job runs the same code as the driver
            setup.insert(0, f"export PYTHONPATH={shell_quote(os.environ['PYTHONPATH'])}")
        if setup:
            params["setup"] = setup
        return params

    # --- the jobs file: which job runs which trial ---------------------------------------

    def note(self, job: dict, job_id: str) -> None:
        with open(self.folder / JOBS_FILE, "a") as f:
            f.write(json.dumps({"trial": job["trial"], "job_id": job_id, "job": job}) + "\n")

    def live_jobs(self) -> dict[str, str]:
        path = self.folder / JOBS_FILE
        if not path.is_file():
            return {}
        latest = {}
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            latest[record["trial"]] = record["job_id"]
        states = squeue(list(latest.values()))
        return {t: j for t, j in latest.items() if states.get(j, "GONE") in LIVE}

    # --- the executor interface ----------------------------------------------------------

    def submit(self, job: dict[str, Any]) -> None:
        if job["trial"] in self.earlier:  # still queued or running from a previous driver
            from submitit import SlurmJob

            job_id = self.earlier.pop(job["trial"])
            self.running[job_id] = (job, SlurmJob(folder=self.folder, job_id=job_id))
            print(f"{job['trial']}: waiting for its Slurm job {job_id}", file=sys.stderr)
            return
        if self.options.get("gpus_per_trial") and job["mode"] == "start":
            if not any(o.startswith("run.device=") for o in job["overrides"]):
                job = job | {"overrides": [*job["overrides"], "run.device=cuda"]}
        self.buffer.append(job)

    def flush(self) -> None:
        """Submit the buffered trials: one job each, or one array when arrays are on."""
        jobs, self.buffer = self.buffer, []
        if not jobs:
            return
        if self.stopping:
            self.stopped += [(job, interrupted()) for job in jobs]
            return
        if self.options.get("array_parallelism") and len(jobs) > 1:
            with self.executor.batch():
                handles = [self.executor.submit(slurm_trial, job) for job in jobs]
        else:
            handles = [self.executor.submit(slurm_trial, job) for job in jobs]
        for job, handle in zip(jobs, handles, strict=True):
            self.running[handle.job_id] = (job, handle)
            self.note(job, handle.job_id)

    def wait(self, timeout: float) -> list[tuple[dict, dict]]:
        self.flush()
        deadline = time.monotonic() + timeout
        while True:
            done, self.stopped = self.stopped, []
            ready = [j for j, (_, h) in self.running.items() if h.paths.result_pickle.exists()]
            for job_id in ready:
                job, handle = self.running.pop(job_id)
                done.append((job, outcome(handle)))
            if time.monotonic() - self.asked >= SQUEUE_EVERY_S and self.running:
                done += self.ended()
            if done or time.monotonic() >= deadline:
                return done
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def ended(self) -> list[tuple[dict, dict]]:
        """Jobs Slurm has ended without a result (killed, timed out, cancelled)."""
        self.asked = time.monotonic()
        self.states = squeue(list(self.running))
        done = []
        for job_id in list(self.running):
            state = self.states.get(job_id, "GONE")
            if state in LIVE or state == "UNKNOWN":
                continue
            job, handle = self.running.pop(job_id)
            if handle.paths.result_pickle.exists():  # it wrote its result after all
                done.append((job, outcome(handle)))
            elif state in STOPPED or (self.stopping and state == "CANCELLED"):
                done.append((job, interrupted()))
            else:
                log = handle.paths.stderr
                why = f"Slurm job {job_id} ended {state} without a result; see {log}"
                done.append((job, {"status": "failed", "error": why}))
        return done

    def interrupt(self, signum: int) -> None:
        """Stop every trial at its next safe point: SIGTERM to running jobs (a second call
        sends it again: stop at once), cancel the queued ones."""
        self.stopping = True
        states = squeue(list(self.running))
        for job_id in self.running:
            if states.get(job_id) == "PENDING":
                scancel(job_id)
            elif states.get(job_id) in LIVE:
                scancel(job_id, "--signal=TERM")

    def close(self) -> None:
        """Jobs still running when the driver stops on an error are stopped with a checkpoint."""
        if self.running:
            self.interrupt(signal.SIGTERM)


def interrupted() -> dict[str, Any]:
    return {"status": "interrupted", "error": None}


def outcome(handle) -> dict[str, Any]:
    try:
        return handle.result()
    except Exception as e:  # noqa: BLE001 - submitit's own failure (unpickling, import)
        text = str(e).strip().splitlines()
        why = text[-1] if text else repr(e)
        return {"status": "failed", "error": f"Slurm job {handle.job_id}: {why}"}


def squeue(job_ids: list[str]) -> dict[str, str]:
    """Slurm's state of each job it still knows (finished ones for MinJobAge); others absent."""
    if not job_ids:
        return {}
    from submitit.slurm.slurm import read_job_id

    base = sorted({j.split("_")[0] for j in job_ids})  # array elements: ask for the array
    cmd = ["squeue", "-h", "-t", "all", "-o", "%i|%T", "-j", ",".join(base)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        proc = None
    if proc is None or (proc.returncode and "Invalid job id" not in proc.stderr):
        return {j: "UNKNOWN" for j in job_ids}  # cannot tell: treat as live, ask again later
    states = {}
    for line in proc.stdout.splitlines():
        job_id, _, state = line.strip().partition("|")
        for main, *rest in read_job_id(job_id):  # "7", "7_1", or pending "7_[2-5%2]"
            first, last = (int(rest[0]), int(rest[-1])) if rest else (None, None)
            ids = [main] if first is None else [f"{main}_{i}" for i in range(first, last + 1)]
            for one in ids:
                states[one] = state.split()[0] if state else "UNKNOWN"
    return {j: states[j] for j in job_ids if j in states}


def scancel(job_id: str, *flags: str) -> None:
    subprocess.run(["scancel", *flags, job_id], capture_output=True, timeout=60)


def shell_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)
