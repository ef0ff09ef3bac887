"""One run, started or resumed: build its state, wire the sinks, drive the runner, write the
outputs. `start` and `resume` differ only in where the state comes from (a fresh build or the
run folder's checkpoint); both hand it to `cl.drive.drive`, the only place that wires sinks.
"""

from __future__ import annotations

import json
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path

from cl import checkpoint, config, plugins
from cl.drive import drive
from cl.errors import UserError
from cl.naming import default_name
from cl.schema import RunConfig
from cl.store import (
    METRICS_FILE,
    SUMMARY_FILE,
    FolderLock,
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
        return drive(cfg, plain_config, folder, state, new_run_id(), 0, quiet)
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
    return drive(cfg, plain_config, folder, state, ckpt["wandb_id"], rows, quiet, True)


def _restart(folder: Path, cfg: RunConfig, plain_config: dict, quiet: bool) -> Run:
    """A run stopped before its first checkpoint: run it again from the beginning in its
    folder, under its W&B run id (W&B skips the rows it already holds)."""
    from cl.wandb_sink import new_run_id

    state = build_state(cfg)
    metrics = folder / METRICS_FILE
    dropped = len(read_rows(metrics)) if metrics.is_file() else 0
    if not state.ctx.collective.main:
        return drive(cfg, plain_config, folder, state, "", 0, quiet, True)
    metrics.write_bytes(b"")
    (folder / SUMMARY_FILE).unlink(missing_ok=True)
    _note_resume(folder, 0, str(state.ctx.device))
    print(
        f"{folder} stopped before its first checkpoint: running it again from the beginning "
        f"({dropped} rows dropped)",
        file=sys.stderr,
    )
    run_id = _wandb_run_id(folder) or new_run_id()
    return drive(cfg, plain_config, folder, state, run_id, 0, quiet, True)


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
