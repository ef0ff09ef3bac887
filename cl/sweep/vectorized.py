"""`sweep.executor=vectorized`: the trials that differ only in `seed` train as one group, one
stacked model in one process (cl/members.py); each member writes an ordinary run folder.

A group whose config cannot be stacked (`cl.members.unsupported`) runs member by member in
the same process, through the single run's code. Groups run one after another in one warm
worker process (`cl.sweep.executors.VectorizedPool`, which forms the groups).
"""

from __future__ import annotations

import time
import traceback
from typing import Any

from cl.errors import RunFailed


def group_key(job: dict) -> tuple:
    """Trials with the same key differ only in their seed (and the sweep-owned run.name)."""
    keep = [o for o in job["overrides"] if not o.startswith(("seed=", "run.name="))]
    return tuple(sorted(keep))


def run_members(cfgs: list, plains: list[dict]) -> list[str]:
    """Train `cfgs` (one config, several seeds) as one group; every member's run folder.
    Returns each member's status."""
    from cl import api, config, members, naming, outputs
    from cl.environment import determinism, environment
    from cl.runner import run_stream
    from cl.store import FolderLock, create_run_folder
    from cl.wandb_sink import new_run_id

    why = members.unsupported(cfgs[0])
    if why is not None:  # member by member, the single run's code
        statuses = []
        for cfg, plain in zip(cfgs, plains, strict=True):
            api.start(cfg, plain, quiet=True)
            statuses.append("finished")
        return statuses
    with determinism(cfgs[0].run.deterministic):
        states, folders, locks, sinks = [], [], [], []
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
            group = members.stack(states, cfgs[0].optim)
            for cfg, plain, folder in zip(cfgs, plains, folders, strict=True):
                sinks.append(api.open_sinks(cfg.wandb, plain, folder, new_run_id()))

            def log(rows) -> None:
                for (_, _, member_log), row in zip(sinks, rows, strict=True):
                    member_log(row)

            began = time.perf_counter()
            status, error = "failed", None
            try:
                run_stream(group, log)
                status = "finished"
            except RunFailed as e:
                error = str(e)
            wall = time.perf_counter() - began
            members.unstack(group, states)
            for state, cfg, folder, (_, wandb, _) in zip(states, cfgs, folders, sinks, strict=True):
                summary = outputs.summary(state, status, error, wall, cfg.run.deterministic)
                outputs.write_tables(folder, state)
                title = naming.title(cfg)
                outputs.write(folder, summary, wandb, title, cfg.run, finished=status == "finished")
            return [status] * len(cfgs)
        finally:
            for store, wandb, _ in sinks:
                store.close()
                if wandb is not None:
                    wandb.close(0)
            for lock in locks:
                lock.release()


def run_group(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run one group of trial jobs in this process; one result per job; never raises."""
    try:
        import torch

        from cl import config

        torch.set_num_threads(jobs[0]["threads"])
        loaded = [config.load(job["overrides"]) for job in jobs]
        statuses = run_members([c for c, _ in loaded], [config.as_plain(t) for _, t in loaded])
        return [{"status": s, "error": None} for s in statuses]
    except Exception as e:  # noqa: BLE001 - a group's bug must not stop the sweep
        error = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=8)}"
        return [{"status": "failed", "error": error} for _ in jobs]
