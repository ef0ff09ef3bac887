"""Drive one built run state to its end: open the sinks, run the stream with checkpoints at
its safe points and stops on signals, write the outputs (over several ranks: rank 0 writes,
the others follow). `cl.api` builds the state (fresh or from a checkpoint) and hands it here.
"""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path

from cl import checkpoint, outputs, plugins
from cl.errors import RunFailed, UserError
from cl.interrupt import Interrupted, catch_stops
from cl.naming import title
from cl.schema import RunSection, WandbConfig
from cl.store import SUMMARY_FILE, LocalStore, Run, load_run, os_error, read_rows, write_json


def open_sinks(
    options: WandbConfig,
    plain_config: dict,
    folder: Path,
    run_id: str,
    rows: int = 0,
    resumed: bool = False,
):
    """(local store, W&B sink or None, log) for the run folder; `log(row)` feeds both.
    `options`: the config's `wandb` section; `plain_config`: the config W&B records. `rows`:
    rows the folder already holds; `resumed`: an earlier process of the run may have sent
    rows to W&B (also when it is run again from the beginning, with `rows` 0)."""
    store = LocalStore(folder, rows)
    sinks: list = [store]
    wandb = None
    if options.mode != "disabled":
        from cl.wandb_sink import WandbSink, rows_held

        held = rows_held(folder / "wandb", run_id) if resumed else 0  # before this process's W&B
        try:
            wandb = WandbSink(options, folder, folder.name, plain_config, run_id)
        except Exception as e:  # noqa: BLE001
            store.close()
            raise UserError(
                f"W&B could not start ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                "; check the wandb.* settings, or set wandb.mode=disabled"
            ) from None
        if resumed:
            wandb.resume_at(rows, held, lambda: read_rows(store.path))
        sinks.append(wandb)

    def log(row: dict) -> None:
        for s in sinks:
            s.log(row)

    return store, wandb, log


def drive(
    cfg,
    plain_config,
    folder: Path,
    state,
    run_id: str,
    rows: int,
    quiet: bool,
    resumed: bool = False,
) -> Run:
    """Open the sinks, run the stream from the state's cursor, write the outputs; the run
    folder read back. Raises Interrupted, RunFailed or UserError (a full disk) as the run ends."""
    from cl.console import Progress, summary_table

    run_stream = plugins.family_of(cfg.strategy).driver()  # cl.runner's, or an add-on's loop
    if not state.ctx.collective.main:
        return _follow(run_stream, state, folder, cfg.run)

    began = time.perf_counter()
    store, wandb, log = open_sinks(cfg.wandb, plain_config, folder, run_id, rows, resumed)
    sinks = [store] if wandb is None else [store, wandb]
    digest = checkpoint.config_digest(folder)

    def snapshot() -> dict:  # at a chunk boundary: the queued rows go out first
        state.monitor.flush(log)
        return checkpoint.state_dict(state, store.rows, run_id, digest)

    saver = checkpoint.Checkpointer(state, folder, snapshot, cfg.run)
    if rows:  # resumed: the folder's checkpoint is where this state came from
        saver.saved_at = state.ctx.iteration
    progress = Progress(cfg.run.progress and not quiet)
    status, error, signum = "failed", None, None
    fault: OSError | None = None  # the full disk or I/O error that stopped the run
    with catch_stops() as stop:
        safe_point = _safe_point(state, saver, stop, log)

        try:
            run_stream(state, log, progress, safe_point)
            status = "finished"
        except RunFailed as e:
            error = str(e)
        except OSError as e:  # the disk filled up, the file system went read-only ...
            fault, error = e, f"stopped by the environment: {os_error(e)}"
        except (Interrupted, KeyboardInterrupt) as e:
            status, signum = "interrupted", getattr(e, "signum", signal.SIGINT)
        except BaseException as e:
            error = f"{type(e).__name__}: {e}"
            raise
        finally:
            stop.finishing = True
            if fault is None:  # rows queued before a stop, Ctrl-C or error (best effort)
                with contextlib.suppress(Exception):
                    state.monitor.flush(log)
            progress.close()
            wall = time.perf_counter() - began
            summary = outputs.summary(state, status, error, wall, cfg.run.deterministic)
            if status == "interrupted":
                summary["checkpoint_iteration"] = saver.saved_at
                if saver.saved_at is not None:  # no checkpoint (an Avalanche strategy): no resume
                    summary["resume"] = f"cl run --resume {folder}"
            try:
                outputs.write_tables(folder, state)
                outputs.write(folder, summary, wandb, title(cfg), cfg.run, status == "finished")
            except OSError as e:  # the outputs cannot be written: the run failed after all
                e.filename = e.filename or str(folder)
                fault, status = fault or e, "failed"
                summary.update(
                    status=status,
                    complete=False,
                    error=f"stopped by the environment: {os_error(fault)}",
                )
                _try_write_summary(folder, summary)
            code = {"finished": 0, "failed": 1}.get(status, 128 + int(signum or 0))
            for s in sinks:
                s.close(code) if s is wandb else s.close()
    state.ctx.collective.broadcast(code)  # the other ranks end when rank 0 has written
    if fault is not None:
        raise UserError(_fault_message(fault, folder, state.ctx.iteration, saver.saved_at))
    if not quiet:
        print(summary_table(summary, f"run {folder}"))
        if (folder / "report.html").is_file():
            print(f"report {folder / 'report.html'}")
    if status == "interrupted":
        raise Interrupted(signum, folder, saver.saved_at)
    if error:
        raise RunFailed(error)
    return load_run(folder)


def _safe_point(state, saver, stop, log):
    """The runner's safe point: checkpoint when due, stop when asked. Over several ranks they
    agree first (one small all-reduce: a stop or a checkpoint wanted on any rank), sum the
    steps' parts since the last row, and rank 0 alone writes the checkpoint."""
    from cl import distributed

    c = state.ctx.collective
    stop.ranks = c.world > 1  # a second stop does not stop one rank at once

    def safe_point(boundary: bool) -> None:
        if c.world == 1:
            saver(boundary, stop=stop.signum is not None)
            if stop.signum is not None:
                raise Interrupted(stop.signum)
            return
        if boundary:
            distributed.verify(state)  # every rank holds the same state
        halt, want = c.any(stop.signum is not None, saver.due(boundary))
        if want or (halt and saver.due(boundary, stop=True)):
            state.monitor.sync()
            if not c.main:
                state.monitor.flush(log)  # as rank 0's checkpoint does: same state after
            saver.save(write=c.main)
        if halt:
            raise Interrupted(stop.signum or signal.SIGTERM)

    return safe_point


def _follow(run_stream, state, folder: Path, run: RunSection) -> None:
    """A rank other than 0: the same run, writing nothing; ends when rank 0 has written
    (`run`: the config's `run` section, whose checkpoint schedule every rank keeps)."""
    log = lambda row: None  # noqa: E731 - rank 0's rows are the run's
    saver = checkpoint.Checkpointer(state, folder, dict, run)
    with catch_stops() as stop:
        try:
            run_stream(state, log, None, _safe_point(state, saver, stop, log))
        except (RunFailed, Interrupted, KeyboardInterrupt):
            pass  # rank 0 says why
        finally:
            stop.finishing = True
    state.ctx.collective.broadcast(0)


def _try_write_summary(folder: Path, summary: dict) -> None:
    try:
        write_json(folder / SUMMARY_FILE, summary)
    except OSError:  # still no space: summary.json keeps what it held (or is absent)
        pass


def _fault_message(e: OSError, folder: Path, iteration: int, saved_at: int | None) -> str:
    kept = (
        f"its rows and the checkpoint of iteration {saved_at} are kept"
        if saved_at is not None
        else "its rows are kept; it has no checkpoint yet, so it will start again from the "
        "beginning"
    )
    return (
        f"{os_error(e)}: the run stopped at iteration {iteration} (status failed); {kept}. "
        f"Free space or fix the disk, then: cl run --resume {folder}"
    )
