"""`sweep.executor=vectorized`: the trials that differ only in `seed` train as one group, one
stacked model in one process (cl/members.py); each member writes an ordinary run folder.

A group whose config cannot be stacked (`cl.members.unsupported`) runs member by member in
the same process, through the single run's code. Groups run one after another in one warm
worker process (`LocalPool`); `wait` returns every member's result when its group ends.
"""

from __future__ import annotations

import time
import traceback
from typing import Any

from cl.errors import RunFailed
from cl.sweep.executors import LocalPool


def group_key(job: dict) -> tuple:
    """Trials with the same key differ only in their seed (and the sweep-owned run.name)."""
    keep = [o for o in job["overrides"] if not o.startswith(("seed=", "run.name="))]
    return tuple(sorted(keep))


def run_members(cfgs: list, plains: list[dict]) -> list[str]:
    """Train `cfgs` (one config, several seeds) as one group; every member's run folder.
    Returns each member's status."""
    from cl import api, config, members, outputs
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
            group = members.stack(states)
            for cfg, plain, folder in zip(cfgs, plains, folders, strict=True):
                sinks.append(api.open_sinks(cfg, plain, folder, new_run_id()))

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
                outputs.write(folder, summary, wandb, cfg, finished=status == "finished")
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
        by_key: dict[tuple, list[dict]] = {}
        for job in self.pending:
            if job["mode"] == "resume":  # no group checkpoints yet: a stopped member restarts
                job = {**job, "mode": "start"}
            by_key.setdefault(group_key(job), []).append(job)
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
