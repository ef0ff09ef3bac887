"""One run, started or resumed: build its state, wire the sinks, drive the runner, write the
outputs. `start` and `resume` differ only in where the state comes from (a fresh build or the
run folder's checkpoint); both hand it to `_drive`, the only place that wires sinks.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from cl import checkpoint, config, outputs, plugins
from cl.errors import RunFailed, UserError
from cl.interrupt import Interrupted, catch_stops
from cl.naming import default_name, title
from cl.schema import RunConfig, RunSection, WandbConfig
from cl.store import (
    METRICS_FILE,
    SUMMARY_FILE,
    FolderLock,
    LocalStore,
    Run,
    create_run_folder,
    load_run,
    os_error,
    read_rows,
    remove_run_folder,
    truncate_rows,
    write_json,
)


def run(overrides=(), quiet: bool = False) -> Run:
    """Compose and validate a config from `key=value` overrides and start the run."""
    cfg, tree = config.load(list(overrides))
    return start(cfg, config.as_plain(tree), quiet=quiet)


def build_state(cfg: RunConfig, ckpt: dict | None = None):
    """The run state of `cfg`: fresh, or as `ckpt` (a loaded checkpoint) left it."""
    import torch

    from cl import distributed
    from cl.data import load_source
    from cl.environment import resolve_device, seed_everything
    from cl.models import build_model
    from cl.monitor import Monitor
    from cl.runner import RunState, make_context
    from cl.streams import build_stream

    device = distributed.rank_device(resolve_device(cfg.run.device))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"run.device={cfg.run.device} but no CUDA device is available; "
            "use run.device=cpu or auto"
        )
    b = cfg.benchmark
    data = None  # an add-on's scenario (e.g. scenario=avalanche) reads its own data
    if plugins.scenario(b.scenario).source:
        d = cfg.data
        data = load_source(b.source, d.root, d.download, b.test_fraction, b.split_seed)
    generator = seed_everything(cfg.seed)
    stream = build_stream(b, data, cfg.seed, cfg.eval.subset, cfg.data.root).to(device)
    model = build_model(cfg.model, stream.input_shape, stream.n_classes).to(device)
    if cfg.run.compile:  # in place, block by block: `forward` calls them (features, head)
        for block in model.children():
            block.compile()
    ctx = make_context(cfg.optim, cfg.train, stream, model, device, generator)
    distributed.attach(ctx, cfg.run.sync_bn)  # over several ranks: the collective, the DDP module
    hooks = plugins.family_of(cfg.strategy).build(cfg.strategy)  # []: the family's own loop
    monitor = Monitor(ctx, cfg.eval, cfg.metrics, cfg.plasticity, cfg.seed, cfg.run.row_chunk)
    state = RunState(cfg.train, ctx, hooks, monitor, spec=cfg.strategy)
    try:
        if ckpt is not None:
            checkpoint.load_strategies(state, ckpt)
        for s in state.strategies:
            s.setup(ctx)
        if ckpt is not None:
            checkpoint.restore(state, ckpt)
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        if ckpt is None:
            raise
        raise UserError(f"the checkpoint does not fit this run's config ({e})") from None
    return state


def start(cfg: RunConfig, plain_config: dict, quiet: bool = False) -> Run:
    """Start `cfg` in a new run folder; returns the folder read back. torch's determinism
    flags are set for the run (`run.deterministic`) and restored when it ends."""
    from cl import distributed
    from cl.environment import determinism, threads

    if distributed.join(cfg).world == 1 and cfg.run.nproc > 1:
        raise UserError(
            f"run.nproc={cfg.run.nproc} starts its ranks through `cl run` (torchrun); from "
            "Python, start the script with torchrun instead"
        )
    adapt = not cfg.run.deterministic  # a deterministic run's numbers must not follow the load
    with determinism(cfg.run.deterministic), threads(cfg.run.threads, adapt) as chosen:
        return _start(cfg, plain_config, quiet, chosen)


def _start(cfg: RunConfig, plain_config: dict, quiet: bool, chosen: dict) -> Run:
    from cl.environment import environment
    from cl.wandb_sink import new_run_id

    folder, made, lock = _claim(cfg, plain_config)
    main = lock is not None  # over several ranks: rank 0 writes the folder, the others nothing
    try:
        state = build_state(cfg)
        if main:
            (folder / "plots").mkdir(exist_ok=True)
            tree = config.OmegaConf.create(plain_config)
            (folder / "config.yaml").write_text(config.to_yaml(tree))
            env = environment(cfg.seed, state.ctx.device, cfg.run.deterministic)
            env |= {"threads": chosen}
            if state.ctx.collective.world > 1:  # threads and device are rank 0's
                env["ranks"] = state.ctx.collective.world
            write_json(folder / "environment.json", env)
        return _drive(cfg, plain_config, folder, state, new_run_id(), 0, quiet)
    except BaseException as e:
        metrics = folder / METRICS_FILE
        if not main:
            raise
        if not metrics.is_file() or metrics.stat().st_size == 0:  # failed before its first row
            remove_run_folder(folder, made)
        if isinstance(e, OSError):  # a full disk or an I/O error while setting up the folder
            raise UserError(f"cannot write the run folder {folder}: {os_error(e)}") from None
        raise
    finally:
        if lock is not None:
            lock.release()


def _claim(cfg: RunConfig, plain_config: dict):
    """(folder, made, lock) of a new run: rank 0 creates and locks the folder and the other
    ranks get its path (lock None); UserError on every rank if it cannot."""
    from cl import distributed

    c = distributed.current()
    folder = made = lock = error = None
    if c.main:
        try:
            name = default_name(cfg, plain_config)
            folder, made = create_run_folder(cfg.run.dir, cfg.run.name, name)
            lock = FolderLock(folder)  # before any cleanup: a loser must not remove the folder
        except UserError as e:
            if c.world == 1:
                raise
            error = str(e)
    if c.world > 1:
        folder, error = c.broadcast((folder, error))
        if error is not None:
            raise UserError(error)
    return folder, made, lock


def resume(folder: str | Path, overrides=(), quiet: bool = False) -> Run:
    """Continue the run in `folder` from its last checkpoint, in the same folder; a run
    stopped before its first checkpoint starts again from the beginning (same W&B run)."""
    folder = Path(folder).expanduser()
    if not (folder / "config.yaml").is_file():
        raise UserError(f"{folder} is not a cl run folder (no config.yaml)")
    family = plugins.family_of(config._read_yaml(folder / "config.yaml").get("strategy") or {})
    if family.no_checkpoints:
        raise UserError(
            f"{folder} ran {family.title} strategies: such runs cannot be resumed exactly "
            f"({family.no_checkpoints}); start it again"
        )
    cfg, tree = config.load_saved(folder / "config.yaml", list(overrides))
    from cl import distributed
    from cl.environment import determinism, threads

    c = distributed.join(cfg)  # over several ranks: rank 0 writes, the others read
    if c.world == 1 and cfg.run.nproc > 1:
        raise UserError(
            f"{folder} runs over run.nproc={cfg.run.nproc} ranks: resume it with `cl run "
            "--resume` (torchrun), or in this process with the override run.nproc=1"
        )
    main = c.main
    lock = FolderLock(folder) if main else None
    try:
        count = cfg.run.threads or _started_with_threads(folder)  # same count: same numbers
        with determinism(cfg.run.deterministic), threads(count):  # before any GPU work
            return _resume(folder, cfg, config.as_plain(tree), quiet)
    except OSError as e:  # a full disk or an I/O error before the run went on
        raise UserError(f"cannot resume {folder}: {os_error(e)}") from None
    finally:
        if lock is not None:
            lock.release()


def _started_with_threads(folder: Path) -> int:
    """The torch thread count the run started with (environment.json), or 0 (auto) if unknown:
    an automatic choice is not made again on resume, whose numbers must equal the first ones."""
    try:
        chosen = json.loads((folder / "environment.json").read_text())["threads"]["chosen"]
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    return chosen if isinstance(chosen, int) and chosen > 0 else 0


def _resume(folder: Path, cfg: RunConfig, plain_config: dict, quiet: bool) -> Run:
    summary_path = folder / SUMMARY_FILE
    if summary_path.is_file() and _status(summary_path) == "finished":
        print(f"run {folder} already finished; nothing to resume")
        return load_run(folder)
    if not (folder / checkpoint.FILE).is_file():
        if not cfg.run.checkpoint:
            raise UserError(
                f"{folder} has no {checkpoint.FILE}: it ran with run.checkpoint=false, so it "
                "cannot be resumed; start it again"
            )
        return _restart(folder, cfg, plain_config, quiet)
    from cl.environment import resolve_device

    ckpt = checkpoint.to_device(checkpoint.load(folder), resolve_device(cfg.run.device))
    if ckpt.get("config_sha256") != checkpoint.config_digest(folder):
        raise UserError(
            f"{folder}/config.yaml changed after the checkpoint was written; restore it to "
            "resume (the checkpoint belongs to the config the run started with)"
        )
    rows = ckpt["rows"]
    summary_path = folder / SUMMARY_FILE
    if not (folder / METRICS_FILE).is_file():
        raise UserError(f"{folder} has no {METRICS_FILE}; it cannot be resumed")
    state = build_state(cfg, ckpt)
    if state.ctx.collective.main:
        truncate_rows(folder / METRICS_FILE, rows)  # rows after the checkpoint come again
        summary_path.unlink(missing_ok=True)
        _note_resume(folder, state.ctx.iteration, str(state.ctx.device))
    if not quiet and state.ctx.collective.main:
        print(f"resuming {folder} at iteration {state.ctx.iteration} ({rows} rows kept)")
    return _drive(cfg, plain_config, folder, state, ckpt["wandb_id"], rows, quiet, True)


def _restart(folder: Path, cfg: RunConfig, plain_config: dict, quiet: bool) -> Run:
    """A run stopped before its first checkpoint: run it again from the beginning in its
    folder, under its W&B run id (W&B skips the rows it already holds)."""
    from cl.wandb_sink import new_run_id

    state = build_state(cfg)
    metrics = folder / METRICS_FILE
    dropped = len(read_rows(metrics)) if metrics.is_file() else 0
    if not state.ctx.collective.main:
        return _drive(cfg, plain_config, folder, state, "", 0, quiet, True)
    metrics.write_bytes(b"")
    (folder / SUMMARY_FILE).unlink(missing_ok=True)
    _note_resume(folder, 0, str(state.ctx.device))
    print(
        f"{folder} stopped before its first checkpoint: running it again from the beginning "
        f"({dropped} rows dropped)",
        file=sys.stderr,
    )
    run_id = _wandb_run_id(folder) or new_run_id()
    return _drive(cfg, plain_config, folder, state, run_id, 0, quiet, True)


def _wandb_run_id(folder: Path) -> str | None:
    """The W&B run id of the folder's latest W&B run folder (`*run-<time>-<id>`), if any."""
    runs = sorted((folder / "wandb").glob("*run-*-*"), key=lambda p: p.name.split("-")[-2])
    return runs[-1].name.rsplit("-", 1)[1] if runs else None


def _status(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def _note_resume(folder: Path, iteration: int, device: str) -> None:
    """environment.json lists every resume (when, where, on which device, from which
    iteration, with which determinism flags)."""
    from cl.environment import determinism_flags

    path = folder / "environment.json"
    try:
        env = json.loads(path.read_text())
    except (OSError, ValueError):
        env = {}
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    note = {"time": stamp, "host": socket.gethostname(), "device": device}
    note |= {"iteration": iteration, "determinism": determinism_flags()}
    env.setdefault("resumes", []).append(note)
    write_json(path, env)


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


def _drive(
    cfg,
    plain_config,
    folder: Path,
    state,
    run_id: str,
    rows: int,
    quiet: bool,
    resumed: bool = False,
) -> Run:
    """Open the sinks, run the stream from the state's cursor, write the outputs."""
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
