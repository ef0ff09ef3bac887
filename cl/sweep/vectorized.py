"""`sweep.executor=vectorized`: the trials that differ only in `seed` train as one group, one
stacked model in one process (cl/members/); each member writes an ordinary run folder.

A group checkpoints as its members (cl/members/checkpoint.py): at the single run's safe
points every member's folder gets an ordinary checkpoint, so `cl sweep --resume` continues a
killed or stopped group from them (`resume_members`: members whose checkpoints stand at the
same iteration train on as one group) and `cl run --resume <member folder>` continues one
member alone. A group whose config cannot be stacked (`cl.members.unsupported`) runs member
by member in the same process, through the single run's code (start and resume). Groups run
one after another in one warm worker process (`cl.sweep.executors.VectorizedPool`, which
forms the groups).
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

from cl.errors import RunFailed, UserError


def group_key(job: dict) -> tuple:
    """Trials with the same key differ only in their seed (and the sweep-owned run.name)."""
    keep = [o for o in job["overrides"] if not o.startswith(("seed=", "run.name="))]
    return tuple(sorted(keep))


def run_members(cfgs: list, plains: list[dict]) -> list[str]:
    """Train `cfgs` (one config, several seeds) as one group, each member in a new run
    folder; returns each member's status."""
    from cl import api, config, members
    from cl.environment import determinism, environment
    from cl.store import FolderLock, create_run_folder
    from cl.wandb_sink import new_run_id

    why = members.unsupported(cfgs[0])
    if why is not None:  # member by member, the single run's code
        pairs = zip(cfgs, plains, strict=True)
        return _one_by_one([lambda c=c, p=p: api.start(c, p, quiet=True) for c, p in pairs])
    with determinism(cfgs[0].run.deterministic):
        states, folders, locks = [], [], []
        try:
            for cfg, plain in zip(cfgs, plains, strict=True):
                default = f"{cfg.benchmark.name}-s{cfg.seed}"
                folder, _ = create_run_folder(cfg.run.dir, cfg.run.name, default)
                locks.append(FolderLock(folder))
                states.append(api.build_state(cfg))
                (folder / "plots").mkdir(exist_ok=True)
                tree = config.OmegaConf.create(plain)
                (folder / "config.yaml").write_text(config.to_yaml(tree))
                env = environment(cfg.seed, states[-1].ctx.device, cfg.run.deterministic)
                env["vectorized_group"] = len(cfgs)
                api.write_json(folder / "environment.json", env)
                folders.append(folder)
            run_ids = [new_run_id() for _ in cfgs]
            return _drive(cfgs, plains, folders, states, run_ids, [0] * len(cfgs), None)
        finally:
            for lock in locks:
                lock.release()


def resume_members(run_dirs: list[str | Path]) -> list[str]:
    """Continue the members in `run_dirs` (one config, several seeds) from their checkpoints:
    those whose checkpoints stand at the same iteration as one group (all of them, unless a
    kill fell between two members' checkpoint writes). Returns each member's status."""
    from cl import api, checkpoint, config, members
    from cl.environment import determinism, resolve_device

    folders = [Path(d) for d in run_dirs]
    loaded = [config.load_saved(f / "config.yaml") for f in folders]
    cfgs, plains = [c for c, _ in loaded], [config.as_plain(t) for _, t in loaded]
    if members.unsupported(cfgs[0]) is not None:  # they ran as single runs
        return _one_by_one([lambda f=f: api.resume(f, quiet=True) for f in folders])
    device = resolve_device(cfgs[0].run.device)
    ckpts = [checkpoint.to_device(checkpoint.load(f), device) for f in folders]
    for f, ckpt in zip(folders, ckpts, strict=True):
        if ckpt.get("config_sha256") != checkpoint.config_digest(f):
            raise UserError(f"{f}/config.yaml changed after the checkpoint was written")
    statuses: dict[int, str] = {}
    at: dict[int, list[int]] = {}
    for m, ckpt in enumerate(ckpts):
        at.setdefault(ckpt["context"]["iteration"], []).append(m)
    for ms in at.values():
        parts = [[xs[m] for m in ms] for xs in (cfgs, plains, folders, ckpts)]
        with determinism(cfgs[0].run.deterministic):
            done = _resume(*parts)
        statuses.update(zip(ms, done, strict=True))
    return [statuses[m] for m in range(len(folders))]


def _resume(cfgs, plains, folders, ckpts) -> list[str]:
    from cl import api
    from cl.store import METRICS_FILE, SUMMARY_FILE, FolderLock, truncate_rows

    locks = [FolderLock(f) for f in folders]
    try:
        states = [api.build_state(cfg, ckpt) for cfg, ckpt in zip(cfgs, ckpts, strict=True)]
        for folder, state, ckpt in zip(folders, states, ckpts, strict=True):
            truncate_rows(folder / METRICS_FILE, ckpt["rows"])  # rows after it come again
            (folder / SUMMARY_FILE).unlink(missing_ok=True)
            api._note_resume(folder, state.ctx.iteration, str(state.ctx.device))
        run_ids = [c["wandb_id"] for c in ckpts]
        return _drive(cfgs, plains, folders, states, run_ids, [c["rows"] for c in ckpts], ckpts)
    finally:
        for lock in locks:
            lock.release()


def _drive(cfgs, plains, folders, states, run_ids, rows, ckpts) -> list[str]:
    """Stack the members' states (as `ckpts` left them, if given), open each member's sinks,
    run the group with checkpoints at the single run's safe points, write every member's
    outputs. SIGINT/SIGTERM stop the group at its next safe point (a checkpoint first)."""
    from cl import checkpoint, drive, members, naming, outputs
    from cl.interrupt import Interrupted, catch_stops
    from cl.members.checkpoint import GroupCheckpointer, member_state_dicts
    from cl.runner import run_stream

    sinks = []
    try:
        group = members.stack(states, cfgs[0].optim, ckpts)
        for cfg, plain, folder, run_id, n in zip(cfgs, plains, folders, run_ids, rows, strict=True):
            sinks.append(drive.open_sinks(cfg.wandb, plain, folder, run_id, n, ckpts is not None))
        digests = [checkpoint.config_digest(f) for f in folders]

        def log(rows) -> None:
            for (_, _, member_log), row in zip(sinks, rows, strict=True):
                member_log(row)

        def snapshot() -> list[dict]:
            group.monitor.flush(log)
            stored = [store.rows for store, _, _ in sinks]
            return member_state_dicts(group, states, stored, run_ids, digests)

        saver = GroupCheckpointer(group, folders, snapshot, cfgs[0].run)
        if ckpts is not None:
            saver.saved_at = group.ctx.iteration
        began = time.perf_counter()
        status, error = "failed", None
        with catch_stops() as stop:

            def safe_point(boundary: bool) -> None:
                saver(boundary, stop=stop.signum is not None)
                if stop.signum is not None:
                    raise Interrupted(stop.signum)

            try:
                run_stream(group, log, None, safe_point)
                status = "finished"
            except RunFailed as e:
                error = str(e)
            except (Interrupted, KeyboardInterrupt):
                status = "interrupted"
            except BaseException as e:
                error = f"{type(e).__name__}: {e}"
                raise
            finally:
                stop.finishing = True
                wall = time.perf_counter() - began
                members.unstack(group, states)
                for state, cfg, folder, (_, wandb, _) in zip(
                    states, cfgs, folders, sinks, strict=True
                ):
                    det = cfg.run.deterministic
                    summary = outputs.summary(state, status, error, wall, det)
                    if status == "interrupted":
                        summary["checkpoint_iteration"] = saver.saved_at
                        if saver.saved_at is not None:
                            summary["resume"] = f"cl run --resume {folder}"
                    outputs.write_tables(folder, state)
                    finished = status == "finished"
                    outputs.write(folder, summary, wandb, naming.title(cfg), cfg.run, finished)
        return [status] * len(cfgs)
    finally:
        for store, wandb, _ in sinks:
            store.close()
            if wandb is not None:
                wandb.close(0)


def _one_by_one(runs: list) -> list[str]:
    """Members through the single run's code (start or resume), one after another: their
    statuses; after a stop (Ctrl-C, SIGTERM) the members not begun yet are `interrupted`
    too, and the next `cl sweep --resume` starts them."""
    from cl.interrupt import Interrupted

    statuses: list[str] = []
    for go in runs:
        if statuses and statuses[-1] == "interrupted":
            statuses.append("interrupted")
            continue
        try:
            go()
            statuses.append("finished")
        except (Interrupted, KeyboardInterrupt):
            statuses.append("interrupted")
    return statuses


def run_group(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run one group of trial jobs (all starts, or all resumes) in this process; one result
    per job; never raises."""
    try:
        import torch

        from cl import config

        torch.set_num_threads(jobs[0]["threads"])
        if jobs[0]["mode"] == "resume":
            statuses = resume_members([job["run_dir"] for job in jobs])
        else:
            loaded = [config.load(job["overrides"]) for job in jobs]
            cfgs, plains = [c for c, _ in loaded], [config.as_plain(t) for _, t in loaded]
            statuses = run_members(cfgs, plains)
        return [{"status": s, "error": None} for s in statuses]
    except Exception as e:  # noqa: BLE001 - a group's bug must not stop the sweep
        error = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=8)}"
        return [{"status": "failed", "error": error} for _ in jobs]
