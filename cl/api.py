"""One run, started or resumed: build its state, wire the sinks, drive the runner, write the
outputs. `start` and `resume` differ only in where the state comes from (a fresh build or the
run folder's checkpoint); both hand it to `_drive`, the only place that wires sinks.
"""

from __future__ import annotations

import json
import signal
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

from cl import checkpoint, config, outputs, plugins
from cl.catalog import SCENARIOS
from cl.errors import RunFailed, UserError
from cl.interrupt import Interrupted, catch_stops
from cl.schema import RunConfig
from cl.store import (
    METRICS_FILE,
    SUMMARY_FILE,
    LocalStore,
    Run,
    create_run_folder,
    load_run,
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

    from cl import strategy
    from cl.data import load_source
    from cl.environment import resolve_device, seed_everything
    from cl.models import build_model
    from cl.monitor import Monitor
    from cl.runner import RunState, make_context
    from cl.streams import build_stream

    device = resolve_device(cfg.run.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"run.device={cfg.run.device} but no CUDA device is available; "
            "use run.device=cpu or auto"
        )
    b = cfg.benchmark
    data = None  # an add-on's scenario (e.g. scenario=avalanche) reads its own data
    if b.scenario in SCENARIOS:
        d = cfg.data
        data = load_source(b.source, d.root, d.download, b.test_fraction, b.split_seed)
    generator = seed_everything(cfg.seed)
    stream = build_stream(b, data, cfg.seed, cfg.eval.subset, cfg.data.root).to(device)
    model = build_model(cfg.model, stream.input_shape, stream.n_classes).to(device)
    ctx = make_context(cfg, stream, model, device, generator)
    native = [] if plugins.family_of(cfg.strategy) else strategy.build(cfg.strategy)
    state = RunState(cfg, ctx, native, Monitor(cfg, ctx))
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
    """Start `cfg` in a new run folder; returns the folder read back."""
    from cl.environment import environment
    from cl.wandb_sink import new_run_id

    default = f"{cfg.benchmark.name}-{plugins.label(cfg.strategy)}-s{cfg.seed}"
    folder, made = create_run_folder(cfg.run.dir, cfg.run.name, default)
    try:
        state = build_state(cfg)
        (folder / "plots").mkdir(exist_ok=True)
        (folder / "config.yaml").write_text(config.to_yaml(config.OmegaConf.create(plain_config)))
        write_json(folder / "environment.json", environment(cfg.seed, state.ctx.device))
        return _drive(cfg, plain_config, folder, state, new_run_id(), 0, quiet)
    except BaseException:
        metrics = folder / METRICS_FILE
        if not metrics.is_file() or metrics.stat().st_size == 0:  # failed before its first row
            remove_run_folder(folder, made)
        raise


def resume(folder: str | Path, overrides=(), quiet: bool = False) -> Run:
    """Continue the run in `folder` from its last checkpoint, in the same folder."""
    folder = Path(folder).expanduser()
    if not (folder / "config.yaml").is_file():
        raise UserError(f"{folder} is not a cl run folder (no config.yaml)")
    family = plugins.family_of(config._read_yaml(folder / "config.yaml").get("strategy") or {})
    if family is not None and family.no_checkpoints:
        raise UserError(
            f"{folder} ran {family.title} strategies: such runs cannot be resumed exactly "
            f"({family.no_checkpoints}); start it again"
        )
    cfg, tree = config.load_saved(folder / "config.yaml", list(overrides))
    summary_path = folder / SUMMARY_FILE
    if summary_path.is_file() and _status(summary_path) == "finished":
        print(f"run {folder} already finished; nothing to resume")
        return load_run(folder)
    from cl.environment import resolve_device

    ckpt = checkpoint.load(folder, resolve_device(cfg.run.device))
    if ckpt.get("config_sha256") != checkpoint.config_digest(folder):
        raise UserError(
            f"{folder}/config.yaml changed after the checkpoint was written; restore it to "
            "resume (the checkpoint belongs to the config the run started with)"
        )
    rows = ckpt["rows"]
    if not (folder / METRICS_FILE).is_file():
        raise UserError(f"{folder} has no {METRICS_FILE}; it cannot be resumed")
    state = build_state(cfg, ckpt)
    truncate_rows(folder / METRICS_FILE, rows)  # rows after the checkpoint come again
    summary_path.unlink(missing_ok=True)
    _note_resume(folder, state.ctx.iteration)
    if not quiet:
        print(f"resuming {folder} at iteration {state.ctx.iteration} ({rows} rows kept)")
    return _drive(cfg, config.as_plain(tree), folder, state, ckpt["wandb_id"], rows, quiet)


def _status(path: Path) -> str | None:
    try:
        return json.loads(path.read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def _note_resume(folder: Path, iteration: int) -> None:
    """environment.json lists every resume (when, where, from which iteration)."""
    path = folder / "environment.json"
    try:
        env = json.loads(path.read_text())
    except (OSError, ValueError):
        env = {}
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    note = {"time": stamp, "host": socket.gethostname(), "iteration": iteration}
    env.setdefault("resumes", []).append(note)
    write_json(path, env)


def open_sinks(cfg: RunConfig, plain_config: dict, folder: Path, run_id: str, rows: int = 0):
    """(local store, W&B sink or None, log) for the run folder; `log(row)` feeds both.
    `rows`: rows the folder already holds (a resumed run)."""
    store = LocalStore(folder, rows)
    sinks: list = [store]
    wandb = None
    if cfg.wandb.mode != "disabled":
        from cl.wandb_sink import WandbSink, rows_held

        held = rows_held(folder / "wandb", run_id) if rows else 0  # before this process's W&B
        try:
            wandb = WandbSink(cfg.wandb, folder, folder.name, plain_config, run_id)
        except Exception as e:  # noqa: BLE001
            store.close()
            raise UserError(
                f"W&B could not start ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                "; check the wandb.* settings, or set wandb.mode=disabled"
            ) from None
        if rows:
            wandb.resume_at(rows, held, lambda: read_rows(store.path))
        sinks.append(wandb)

    def log(row: dict) -> None:
        for s in sinks:
            s.log(row)

    return store, wandb, log


def _drive(cfg, plain_config, folder: Path, state, run_id: str, rows: int, quiet: bool) -> Run:
    """Open the sinks, run the stream from the state's cursor, write the outputs."""
    from cl.console import Progress, summary_table
    from cl.runner import run_stream

    family = plugins.family_of(cfg.strategy)
    if family is not None:  # an add-on's strategies train through its own loop
        run_stream = family.driver()

    began = time.perf_counter()
    store, wandb, log = open_sinks(cfg, plain_config, folder, run_id, rows)
    sinks = [store] if wandb is None else [store, wandb]
    digest = checkpoint.config_digest(folder)
    saver = checkpoint.Checkpointer(
        state, folder, lambda: checkpoint.state_dict(state, store.rows, run_id, digest)
    )
    if rows:  # resumed: the folder's checkpoint is where this state came from
        saver.saved_at = state.ctx.iteration
    progress = Progress(cfg.run.progress and not quiet)
    status, error, signum = "failed", None, None
    with catch_stops() as stop:

        def safe_point(boundary: bool) -> None:
            saver(boundary, stop=stop.signum is not None)
            if stop.signum is not None:
                raise Interrupted(stop.signum)

        try:
            run_stream(state, log, progress, safe_point)
            status = "finished"
        except RunFailed as e:
            error = str(e)
        except (Interrupted, KeyboardInterrupt) as e:
            status, signum = "interrupted", getattr(e, "signum", signal.SIGINT)
        except BaseException as e:
            error = f"{type(e).__name__}: {e}"
            raise
        finally:
            stop.finishing = True
            progress.close()
            summary = outputs.summary(state, status, error, time.perf_counter() - began)
            outputs.write_tables(folder, state)
            if status == "interrupted":
                summary["checkpoint_iteration"] = saver.saved_at
                if saver.saved_at is not None:  # no checkpoint (an Avalanche strategy): no resume
                    summary["resume"] = f"cl run --resume {folder}"
            outputs.write(folder, summary, wandb, cfg, finished=status == "finished")
            code = {"finished": 0, "failed": 1}.get(status, 128 + int(signum or 0))
            for s in sinks:
                s.close(code) if s is wandb else s.close()
    if not quiet:
        print(summary_table(summary, f"run {folder}"))
        if (folder / "report.html").is_file():
            print(f"report {folder / 'report.html'}")
    if status == "interrupted":
        raise Interrupted(signum, folder, saver.saved_at)
    if error:
        raise RunFailed(error)
    return load_run(folder)
