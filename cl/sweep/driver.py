"""`cl sweep`: validate every trial, run them on an executor, keep the sweep folder, resume.

Failures never stop a sweep: a trial that diverges, raises or whose process dies is marked
`failed` (and retried `sweep.retries` times); Ctrl-C or SIGTERM stops the running trials at
their next safe point (`interrupted`, with a checkpoint). `cl sweep --resume DIR` skips
finished trials, resumes interrupted ones, re-runs failed ones.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cl import config, metric_registry
from cl.errors import UserError
from cl.interrupt import Interrupted, catch_stops
from cl.sweep import folder as sweep_folder
from cl.sweep.spec import MAX_TRIALS, SWEEP_KEYS, Spec, from_overrides, from_wandb_file

OWNED = ("run.dir", "run.name", "run.progress", "wandb.group", "wandb.job_type")
RESUME_OPTIONS = ("workers", "threads", "executor", "address", "retries", "slurm")


@dataclass
class Options:
    """`sweep.*` options."""

    name: str | None = None
    dir: str = "sweeps"
    workers: int | None = None  # parallel trials; default: cores // threads
    threads: int | None = None  # torch threads per trial; default 1 (cores // workers)
    executor: str = "local"  # local | ray | slurm | vectorized
    address: str | None = None  # Ray cluster address or auto; none: a local Ray
    retries: int = 0
    metric: str = "acc"
    slurm: dict[str, Any] = field(default_factory=dict)  # sweep.slurm.* (cl/sweep/slurm.py)
    max_trials: int = MAX_TRIALS  # more trials are refused before any work
    devices_per_trial: int = 1  # Ray: each trial one run over this many ranks (run.nproc)


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def parse_options(items: list[str], allowed=(*SWEEP_KEYS, "slurm")) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, _, text = item.partition("=")
        name = key.removeprefix("sweep.")
        if name.startswith("slurm.") and "slurm" in allowed:  # checked in cl/sweep/slurm.py
            out.setdefault("slurm", {})[name[6:]] = yaml.safe_load(text) if text else None
            continue
        if name not in allowed:
            valid = ", ".join(f"sweep.{k}" for k in allowed)
            raise UserError(f"unknown key '{key}'; valid: {valid}")
        try:
            out[name] = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            raise UserError(f"{key}={text}: not a valid value (an unclosed quote?)") from None
    return out


def check_options(o: Options) -> None:
    if o.executor not in ("local", "ray", "slurm", "vectorized"):
        raise UserError(
            f"sweep.executor={o.executor!r}; valid choices: local, ray, slurm, vectorized"
        )
    if not isinstance(o.slurm, dict):
        raise UserError("sweep.slurm takes sub-keys, e.g. sweep.slurm.partition=gpu")
    if o.executor == "slurm":
        from cl.sweep.slurm import check_options as check_slurm

        check_slurm(o.slurm)
    for key in ("workers", "threads"):
        v = getattr(o, key)
        if v is not None and not positive_int(v):
            raise UserError(f"sweep.{key}={v!r} must be a positive integer")
    if not positive_int(o.devices_per_trial):
        raise UserError(f"sweep.devices_per_trial={o.devices_per_trial!r} must be >= 1")
    if o.devices_per_trial > 1 and o.executor != "ray":
        raise UserError(
            f"sweep.devices_per_trial={o.devices_per_trial} needs sweep.executor=ray (each "
            "trial one run over that many ranks); other executors run a trial in one process"
        )
    if not positive_int(o.max_trials):
        raise UserError(f"sweep.max_trials={o.max_trials!r} must be a positive integer")
    if not isinstance(o.retries, int) or o.retries < 0:
        raise UserError(f"sweep.retries={o.retries!r} must be an integer >= 0")
    metric = metric_registry.find(o.metric)
    if metric is None or "objective" not in metric.shown_in:
        objectives = metric_registry.shown("objective")
        valid = ", ".join(sorted(m.key for m in objectives if not m.is_pattern))
        raise UserError(f"sweep.metric={o.metric!r}; valid: {valid}, wf_W, wp_W (W a window)")
    if o.name is not None and not config_name_ok(o.name):
        raise UserError(f"sweep.name={o.name!r} must be a folder name (letters, digits, _ . - +)")


def positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def config_name_ok(name: str) -> bool:
    from cl.validation import RUN_NAME

    return bool(RUN_NAME.fullmatch(str(name)))


def job_type(label: str) -> str:
    """W&B job types hold at most 64 characters."""
    if len(label) <= 64:
        return label
    return f"{label[:55]}-{hashlib.sha1(label.encode()).hexdigest()[:8]}"


def quoted(text: str) -> str:
    """`text` as an override value that reads back as that string (`000` would be 0)."""
    return text if isinstance(config.parse_overrides([f"x={text}"])[1][0][1], str) else f"'{text}'"


def owned_values(spec: dict, trial: dict) -> dict[str, str]:
    """The keys the sweep sets for each trial (OWNED), with this trial's values."""
    return {
        "run.dir": f"{spec['path']}/runs",
        "run.name": quoted(trial["name"]),
        "run.progress": "false",
        "wandb.group": spec["name"],
        "wandb.job_type": job_type(sweep_folder.config_label(trial["values"])),
    }


def trial_overrides(spec: dict, trial: dict) -> list[str]:
    values = [f"{k}={v}" for k, v in trial["values"].items()]
    quiet = ["run.report=false"]  # one report for the sweep, not one per trial (5 MB each)
    owned = [f"{k}={v}" for k, v in owned_values(spec, trial).items()]
    return [*quiet, *spec["common"], *values, *owned]


def check_owned(spec: dict) -> None:
    """A key the sweep sets may be given only with the value the sweep gives it anyway (e.g.
    `run.progress=false`); any other value, or sweeping such a key, is a UserError."""
    for key in spec["swept"]:
        if key in OWNED:
            raise UserError(f"{key} is set by the sweep for each trial; it cannot be swept")
    for item in spec["common"]:
        key, text = (part.strip() for part in item.split("=", 1))
        if key not in OWNED:
            continue
        given = config.parse_overrides([f"{key}={text}"])[1][0][1]
        for trial in spec["trials"]:
            ours = owned_values(spec, trial)[key]
            if given != config.parse_overrides([f"{key}={ours}"])[1][0][1]:
                raise UserError(
                    f"{key} is set by the sweep for each trial ({key}={ours} for trial "
                    f"{trial['name']}); leave it out"
                )


def validate_trials(spec: dict) -> None:
    """Compose and validate every trial's config; UserError names the offending trial.
    Trials that differ from an already valid one only in a plain seed (an integer in range)
    are not composed again: the seed is checked on its own, which keeps large seed sweeps
    fast."""
    check_owned(spec)
    valid: set[tuple] = set()
    for trial in spec["trials"]:
        rest = tuple((k, v) for k, v in trial["values"].items() if k != "seed")
        if rest in valid and plain_seed(trial["values"].get("seed")):
            continue
        try:
            cfg, _ = config.load(trial_overrides(spec, trial))
            if cfg.run.nproc > 1:
                raise UserError(_ranks_refused(spec, cfg.run.nproc))
        except UserError as e:
            shown = " ".join(f"{k}={v}" for k, v in trial["values"].items())
            raise UserError(f"trial {trial['name']} ({shown}): {e}") from None
        valid.add(rest)


def _ranks_refused(spec: dict, nproc: int) -> str:
    """Why a sweep's trial cannot run over `nproc` ranks."""
    if spec.get("options", {}).get("executor") == "vectorized":
        return (
            f"run.nproc={nproc} and sweep.executor=vectorized: a run uses either the member "
            "axis (seeds as one stacked model) or ranks, not both"
        )
    return (
        f"run.nproc={nproc}: a sweep sets the trials' ranks itself; use sweep.executor=ray "
        f"sweep.devices_per_trial={nproc}, or run it alone with `cl run run.nproc={nproc}`"
    )


def plain_seed(text: str | None) -> bool:
    """Whether `text` is absent or a seed that validation accepts (0 .. MAX_SEED)."""
    from cl.validation import MAX_SEED

    if text is None:
        return True
    value = config.parse_value(text)
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SEED


def plan(overrides: list[str], spec_file: str | None) -> tuple[Spec, Options]:
    config.reject_repeats(overrides)
    sweep_items = [o for o in overrides if o.startswith("sweep.")]
    rest = [o for o in overrides if not o.startswith("sweep.")]
    opts = parse_options(sweep_items)
    cap = opts.get("max_trials", MAX_TRIALS)
    if not positive_int(cap):
        raise UserError(f"sweep.max_trials={cap!r} must be a positive integer")
    if spec_file:
        spec = from_wandb_file(spec_file, max_trials=cap)
        grid = from_overrides(rest, max_trials=cap)
        if any(t.values for t in grid.trials):
            raise UserError("with --spec, sweep the keys in the spec file; overrides apply to all")
        spec.common += grid.common
        opts = spec.options | opts
        if spec.metric and "metric" not in opts:
            opts["metric"] = spec.metric
    else:
        spec = from_overrides(rest, max_trials=cap)
    options = Options(**opts)
    check_options(options)
    return spec, options


def new_sweep(overrides: list[str], spec_file: str | None, quiet: bool) -> int:
    spec, options = plan(overrides, spec_file)
    return start_sweep(spec, options, quiet)


def start_sweep(spec: Spec, options: Options, quiet: bool, reuse: bool = False) -> int:
    """Validate every trial, create the sweep folder and run the trials. With `reuse`, an
    existing folder of the same trials and common overrides is continued instead."""
    name = options.name or f"sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    path = Path(options.dir).expanduser().resolve() / name
    objective = metric_registry.find(options.metric)
    lower = objective is not None and objective.lower_is_better
    swept = list(dict.fromkeys(k for t in spec.trials for k in t.values))
    data = {
        "name": name,
        "path": str(path),
        "options": asdict(options) | {"name": name},
        "metric": options.metric,
        "goal": spec.goal or ("minimize" if lower else "maximize"),
        "common": spec.common,
        "swept": swept,
        "trials": [{"name": t.name, "values": t.values} for t in spec.trials],
    }
    if not quiet:
        print(f"sweep {path}: {len(spec.trials)} trials; checking their configs", flush=True)
    validate_trials(data)
    if reuse and (path / sweep_folder.SPEC_FILE).is_file():
        old = sweep_folder.read_spec(path)
        if (old["trials"], old["common"]) == (data["trials"], data["common"]):
            return execute(old | {"path": str(path)}, options, quiet)
        raise UserError(f"{path} holds a different sweep; choose another folder")
    if path.exists():
        raise UserError(
            f"{path} already exists; choose another sweep.name, or: cl sweep --resume {path}"
        )
    try:
        (path / "runs").mkdir(parents=True)
    except OSError as e:
        raise UserError(f"cannot create the sweep folder {path}: {e.strerror or e}") from None
    sweep_folder.write_spec(path, data)
    for note in spec.notes:
        print(note, file=sys.stderr)
    return execute(data, options, quiet)


def resume_sweep(path: str, overrides: list[str], quiet: bool) -> int:
    path_ = Path(path).expanduser().resolve()
    data = sweep_folder.read_spec(path_)
    config.reject_repeats(overrides)
    if [o for o in overrides if not o.startswith("sweep.")]:
        keys = ", ".join(f"sweep.{k}" for k in RESUME_OPTIONS)
        raise UserError(f"a resumed sweep keeps its trials and config; only {keys} may change")
    unknown = set(data["options"]) - set(Options.__dataclass_fields__)
    if unknown:
        raise UserError(f"{path_ / sweep_folder.SPEC_FILE}: unknown options {sorted(unknown)}")
    new = parse_options(overrides, RESUME_OPTIONS)
    if "slurm" in new:  # sweep.slurm.* given again change only those keys
        new["slurm"] = (data["options"].get("slurm") or {}) | new["slurm"]
    opts = data["options"] | new
    options = Options(**opts)
    check_options(options)
    data["path"] = str(path_)
    return execute(data, options, quiet)


def execute(data: dict, options: Options, quiet: bool) -> int:
    """Run every trial not finished yet; write the tables; the exit code (0, 1, 128+sig)."""
    path = Path(data["path"])
    threads = options.threads or max(1, cores() // (options.workers or cores()))
    if options.executor == "slurm":  # a trial's threads: its CPUs on the cluster
        from cl.sweep.slurm import threads_for

        threads = threads_for(options.slurm, options.threads)
    states = sweep_folder.last_states(path)
    journal = sweep_folder.Journal(path)
    queue: deque = deque()
    for trial in data["trials"]:
        last = states.get(trial["name"], {})
        job = next_job(path, data, trial, last, threads)
        if job is not None and options.devices_per_trial > 1:
            job["ranks"] = options.devices_per_trial  # run over that many ranks (torchrun)
        if job is not None:
            queue.append(job)
            journal(trial["name"], "queued", attempt=job["attempt"], mode=job["mode"])
        elif last.get("state") != "finished":  # finished, but the driver died before noting it
            journal(trial["name"], "finished", attempt=last.get("attempt", 1))
            states[trial["name"]] = {"state": "finished"}
    if options.executor == "ray":
        from cl.sweep.executors import RayPool

        cfg, _ = config.load(trial_overrides(data, data["trials"][0]))
        gpus = 1.0 if cfg.run.device.startswith("cuda") else 0.0  # auto: CPU on Ray
        pool = RayPool(options.address, options.workers, threads, gpus, options.devices_per_trial)
    elif options.executor == "slurm":
        from cl.sweep.slurm import SlurmPool

        pool = SlurmPool(path, options.slurm, threads, options.workers or max(1, len(queue)))
    elif options.executor == "vectorized":  # seeds of one config as one stacked model
        from cl.sweep.executors import VectorizedPool

        pool = VectorizedPool(options.workers or cores(), threads)
    else:
        from cl.sweep.executors import LocalPool

        workers = min(options.workers or max(1, cores() // threads), max(1, len(queue)))
        pool = LocalPool(workers, threads)
    total, done, signum = len(data["trials"]), total_done(states), None
    if not quiet:
        print(f"sweep {path}: {len(queue)} of {total} trials to run, {pool.capacity} at a time")
    try:
        with catch_stops("stopping the running trials at their next safe point") as stop:
            running = 0
            while queue or running:
                while queue and running < pool.capacity and stop.signum is None:
                    job = queue.popleft()
                    journal(job["trial"], "running", attempt=job["attempt"], mode=job["mode"])
                    pool.submit(job)
                    running += 1
                try:
                    finished = pool.wait(0.2)
                except Interrupted as e:  # a second signal: forward it, stop at once
                    pool.interrupt(e.signum)
                    continue
                if stop.signum is not None and signum is None:
                    signum = stop.signum
                    pool.interrupt(signum)
                    queue.clear()
                for job, result in finished:
                    running -= 1
                    state, error = result["status"], result.get("error")
                    journal(
                        job["trial"],
                        state,
                        attempt=job["attempt"],
                        error=error,
                        overhead_s=result.get("overhead_s"),
                    )
                    done += state == "finished"
                    if not quiet:
                        why = f" ({first_line(error)})" if error else ""
                        print(f"[{done}/{total}] {job['trial']}: {state}{why}", flush=True)
                    if state == "interrupted" and signum is None and getattr(pool, "requeue", 0):
                        # preempted or timed out on the cluster: go on from its checkpoint
                        trial = next(t for t in data["trials"] if t["name"] == job["trial"])
                        last = {"state": "interrupted", "attempt": job["attempt"]}
                        again = next_job(path, data, trial, last, threads)
                        if again is not None:
                            journal(trial["name"], "queued", attempt=again["attempt"],
                                    mode=again["mode"])  # fmt: skip
                            queue.append(again)
                    if state == "failed" and job["attempt"] <= options.retries and signum is None:
                        trial = next(t for t in data["trials"] if t["name"] == job["trial"])
                        last = {"state": "failed", "attempt": job["attempt"]}
                        retry = next_job(path, data, trial, last, threads)
                        journal(trial["name"], "queued", attempt=retry["attempt"], mode="start")
                        queue.append(retry)
    finally:
        pool.close()
        journal.close()
    trials, aggregate = sweep_folder.tables(path, data)
    report = _report(path)
    if not quiet:
        print(sweep_folder.table_text(aggregate, data["metric"]))
        print(f"sweep folder: {path}" + (f"\nreport {report}" if report else ""))
    failed = trials[trials["status"] == "failed"]["trial"].tolist()
    if signum is not None:
        print(f"interrupted; continue with: cl sweep --resume {path}", file=sys.stderr)
        return 128 + signum
    if failed:
        print(f"{len(failed)} trial(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _report(path: Path) -> Path | None:
    """The sweep's report.html (all trials, grouped by configuration), if it can be built."""
    from cl.report import build

    try:
        return build([path])
    except Exception as e:  # noqa: BLE001 - the tables are written; a report is a bonus
        print(f"warning: no sweep report ({type(e).__name__}: {e})", file=sys.stderr)
        return None


def first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0][:200] if text else ""


def total_done(states: dict) -> int:
    return sum(1 for s in states.values() if s.get("state") == "finished")


def next_job(path: Path, data: dict, trial: dict, last: dict, threads: int) -> dict | None:
    """How to go on with `trial` given its last journal record: None when finished; resume
    a stopped run from its checkpoint; else start afresh (a failed or partial run folder is
    kept under failed/)."""
    name, state = trial["name"], last.get("state")
    attempt = last.get("attempt", 0) + (state == "failed")
    run_dir = path / "runs" / name
    job = {"trial": name, "threads": threads, "attempt": max(attempt, 1), "run_dir": str(run_dir)}
    if state == "finished" or sweep_folder.run_status(run_dir) == "finished":
        return None
    if state != "failed" and (run_dir / "checkpoint.pt").is_file():  # overrides: for grouping
        return job | {"mode": "resume", "overrides": trial_overrides(data, trial)}
    if run_dir.exists():
        keep = path / "failed" / f"{name}-attempt{last.get('attempt', 0)}-{int(time.time())}"
        keep.parent.mkdir(exist_ok=True)
        shutil.move(str(run_dir), keep)
    return job | {"mode": "start", "overrides": trial_overrides(data, trial)}
