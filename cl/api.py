"""One run end to end: config -> data -> stream -> model -> strategies -> runner -> outputs."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import numpy as np

from cl import config as config_mod
from cl.config import RunConfig
from cl.errors import RunFailed, UserError
from cl.store import LocalStore, Run, load_run, write_json


def run_folder(cfg: RunConfig) -> Path:
    parent = Path(cfg.run.dir).expanduser()
    if cfg.run.name:
        folder = parent / cfg.run.name
        if (folder / "metrics.jsonl").exists():
            raise UserError(
                f"run folder {folder} already holds a run; choose another run.name or run.dir"
            )
        return folder
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = f"{cfg.benchmark.name}-{'+'.join(cfg.strategy)}-s{cfg.seed}-{stamp}"
    folder, n = parent / base, 1
    while folder.exists():
        folder, n = parent / f"{base}-{n}", n + 1
    return folder


def run(overrides=(), quiet: bool = False) -> Run:
    cfg, tree = config_mod.load(list(overrides))
    return execute(cfg, config_mod.as_plain(tree), quiet=quiet)


def execute(cfg: RunConfig, plain_config: dict, quiet: bool = False) -> Run:
    """Run `cfg`; returns the run folder read back. Raises UserError / RunFailed."""
    import torch

    import strategies as strategy_mod
    from cl import plots
    from cl.console import Progress, summary_table
    from cl.context import Context
    from cl.data import load_source
    from cl.environment import environment, resolve_device, seed_everything
    from cl.models import build_model
    from cl.monitor import Monitor
    from cl.runner import make_context, run_stream
    from cl.streams import build_stream

    start = time.perf_counter()
    device = resolve_device(cfg.run.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"run.device={cfg.run.device} but no CUDA device is available; "
            "use run.device=cpu or auto"
        )
    b = cfg.benchmark
    data = load_source(b.source, cfg.data.root, cfg.data.download, b.test_fraction, b.split_seed)
    generator = seed_everything(cfg.seed)
    stream = build_stream(b, data, cfg.seed, cfg.eval.subset).to(device)
    model = build_model(cfg.model, stream.input_shape, stream.n_classes).to(device)
    try:
        strategies = strategy_mod.build(cfg.strategy)
    except (TypeError, ValueError) as e:
        raise UserError(f"strategy options: {e}") from None
    ctx = make_context(cfg, stream, model, device, generator)

    folder = run_folder(cfg)
    (folder / "plots").mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(
        config_mod.to_yaml(config_mod.OmegaConf.create(plain_config))
    )
    write_json(folder / "environment.json", environment(cfg.seed, device))
    sinks: list = [LocalStore(folder)]
    if cfg.wandb.mode != "disabled":
        from cl.wandb_sink import WandbSink

        try:
            sinks.append(WandbSink(cfg.wandb, folder, folder.name, plain_config))
        except Exception as e:  # noqa: BLE001
            sinks[0].close()
            raise UserError(
                f"W&B could not start ({str(e).splitlines()[0]}); set "
                "wandb.mode=offline or wandb.mode=disabled"
            ) from None

    def log(row: dict) -> None:
        for s in sinks:
            s.log(row)

    def checkpoint(ctx: Context, strats) -> None:
        if cfg.run.checkpoint:
            torch.save(
                {
                    "model": ctx.model.state_dict(),
                    "optimizer": ctx.optimizer.state_dict(),
                    "strategies": [s.state_dict() for s in strats],
                    "experience": ctx.experience,
                    "iteration": ctx.iteration,
                },
                folder / "checkpoint.pt",
            )

    progress = Progress(cfg.run.progress and not quiet)
    monitor = Monitor(cfg, ctx)
    ok, failure = False, None
    try:
        run_stream(cfg, ctx, strategies, monitor, log, progress, checkpoint)
        ok = True
    except RunFailed as e:
        failure = str(e)
    finally:
        progress.close()
        summary = {"status": "finished" if ok else "failed"}
        if failure:
            summary["error"] = failure
        summary.update(monitor.summary())
        summary["n_iterations"] = ctx.iteration
        summary["n_eval_rows"] = len(monitor.record.accs)
        summary["wall_time_s"] = round(time.perf_counter() - start, 3)
        if summary.get("accuracy_matrix"):
            R = np.array(summary["accuracy_matrix"], dtype=float)
            np.savetxt(folder / "accuracy_matrix.csv", R, delimiter=",", fmt="%.6f")
        write_json(folder / "summary.json", summary)
        for s in sinks:
            if hasattr(s, "summary"):
                s.summary(summary)
        loaded = load_run(folder)
        if len(loaded.metrics):
            _plots(plots, loaded, folder, sinks, f"{cfg.benchmark.name} / {'+'.join(cfg.strategy)}")
        for s in sinks:
            s.close(ok)
    if not quiet:
        print(summary_table(summary, f"run {folder}"))
    if failure:
        raise RunFailed(failure)
    return loaded


def _plots(plots, loaded: Run, folder: Path, sinks: list, title: str) -> None:
    curves = plots.accuracy_curves(loaded.metrics, folder / "plots" / "accuracy_curves.png", title)
    paths = [curves]
    if loaded.summary.get("accuracy_matrix"):
        R = np.array(loaded.summary["accuracy_matrix"], dtype=float)
        paths.append(plots.accuracy_matrix(R, folder / "plots" / "accuracy_matrix.png"))
    for s in sinks:
        if hasattr(s, "image"):
            for p in paths:
                s.image(f"plots/{p.stem}", p)
