"""The `cl` command: `cl run [key=value ...]`, `cl list benchmarks|strategies|models`, ...

User mistakes print one `error:` line and exit with code 2; a run that fails exits with 1.
`cl --help` and `cl list` do not import torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cl import __version__
from cl.errors import RunFailed, UserError
from cl.interrupt import Interrupted

EPILOG = """examples:
  cl run                                   default: Split-MNIST (mnist5k), MLP, replay
  cl run strategy=naive seed=3
  cl run strategy=[replay,naive] strategy.replay.mem_size=1000
  cl run benchmark=permuted_mnist benchmark.n_tasks=10 train.epochs=1
  cl run benchmark.source=mnist data.root=~/data      full torchvision MNIST
  cl run --print-config optim.lr=0.1                  show the resolved config only
  cl run --resume runs/split_mnist-replay-s0-...      continue a stopped run
  cl run strategy=avalanche.EWC strategy.avalanche.EWC.ewc_lambda=0.4   an Avalanche strategy
  cl list strategies
"""


SWEEP_EPILOG = """examples:
  cl sweep strategy=naive,replay seed=range(0,3)            6 trials, 2 configurations
  cl sweep strategy=[replay,center_loss],naive optim.lr=0.01,0.1 sweep.workers=2
  cl sweep --spec sweep.yaml train.epochs=1                 a W&B sweep file, offline
  cl sweep strategy=naive,gem seed=0,1 sweep.executor=ray sweep.address=auto
  cl sweep --resume sweeps/sweep-20261201-120000           finish an interrupted sweep
options: sweep.name, sweep.dir (sweeps), sweep.workers, sweep.threads, sweep.executor
(local | ray), sweep.address, sweep.retries (0), sweep.metric (acc), sweep.max_trials
(10000: a larger sweep is refused before any work)
A trial runs with sweep.threads torch threads (default 1), so its numbers may differ slightly
from `cl run` with the same seed (which uses torch's default thread count).
"""


L2M_HELP = """\
Lifelong-learning metrics (New et al., arXiv 2201.08278) of a finished run, computed by the
reference implementation l2metrics (pip install -e '.[l2m]'). The run is exported in
L2Logger's format to RUN_DIR/l2logger/lifetime/ as an L2M "condensed" lifetime: an
evaluation block of every task before training (iteration 0) and after each experience (its
last row), between them one learning block per experience whose learning experiences are
the logged rows' online (prequential) training accuracy. Accuracy is normalised to
1 + 100 * acc (l2metrics' task normalisation on the range [0, 1]). The lifetime values go
into RUN_DIR/summary.json as l2m/<metric> (null when not computable: performance recovery
needs a task trained in 3 or more blocks; relative performance and sample efficiency need
--ste); l2metrics' full output is RUN_DIR/l2logger/l2metrics_metrics.json.
See docs/metrics.md, "Lifelong-learning metrics (l2metrics)".
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cl",
        description="Continual-learning experiments with per-iteration evaluation.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"cl {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    r = sub.add_parser(
        "run",
        help="run an experiment",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config and exit without running",
    )
    r.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar or table: only the run folder"
    )
    r.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last checkpoint (same folder, same W&B "
        "run); only run.progress, run.checkpoint*, wandb.mode and wandb.init_timeout may be "
        "overridden",
    )
    r.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, e.g. strategy=replay benchmark.n_tasks=10 seed=3",
    )
    sw = sub.add_parser(
        "sweep",
        help="run a grid or a W&B sweep file of runs in parallel, aggregated over seeds",
        epilog=SWEEP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sw.add_argument("--spec", metavar="FILE", help="a W&B sweep configuration (grid or random)")
    sw.add_argument("--resume", metavar="SWEEP_DIR", help="finish the sweep in SWEEP_DIR")
    sw.add_argument("-q", "--quiet", action="store_true", help="only the final table")
    sw.add_argument(
        "overrides",
        nargs="*",
        metavar="key=a,b",
        help="a comma list or range(a,b) sweeps a key; sweep.* set the sweep's options",
    )
    rp = sub.add_parser("report", help="one self-contained HTML report of run or sweep folders")
    rp.add_argument("paths", nargs="+", metavar="PATH", help="run folders or sweep folders")
    rp.add_argument("-o", "--output", metavar="FILE.html", help="default: PATH/report.html")
    rp.add_argument(
        "--per-run", action="store_true", help="each run its own configuration (no mean over seeds)"
    )
    db = sub.add_parser("dashboard", help="serve the report live while runs or a sweep go on")
    db.add_argument("paths", nargs="+", metavar="PATH", help="run folders or sweep folders")
    db.add_argument("--port", type=int, default=0, help="default: a free port")
    db.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
    rx = sub.add_parser("reproduce", help="run a paper reproduction over seeds, check its claims")
    rx.add_argument("name", nargs="?", help="a reproduction (see --list), or all")
    rx.add_argument("--list", action="store_true", help="list the reproductions")
    rx.add_argument("--quick", action="store_true", help="the reduced version (about a minute)")
    rx.add_argument(
        "--seeds",
        type=int,
        metavar="N",
        help="how many seeds: runs seeds 0..N-1, N >= 1 (default: the reproduction's; 1 with "
        "--quick)",
    )
    rx.add_argument("--out", metavar="DIR", help="default: $CL_RUN_DIR/reproduce or runs/reproduce")
    rx.add_argument("-q", "--quiet", action="store_true", help="only the claims table")
    lm = sub.add_parser(
        "l2metrics",
        help="lifelong-learning metrics of a run through l2metrics (extra: l2m)",
        description=L2M_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lm.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder")
    lm.add_argument(
        "--ste",
        action="store_true",
        help="first train one single-task expert per task (naive, from scratch, same config "
        "and budget) in RUN_DIR/l2logger/ste_runs/ (reused when done): gives Relative "
        "Performance and Sample Efficiency",
    )
    lm.add_argument("-q", "--quiet", action="store_true", help="print nothing")
    ls = sub.add_parser(
        "list", help="list benchmarks, strategies, models, optimizers or data sources"
    )
    ls.add_argument("what", choices=["benchmarks", "strategies", "models", "optimizers", "sources"])
    return p


def _list(what: str) -> None:
    from cl import catalog

    if what == "sources":
        for name, text in catalog.SOURCES.items():
            print(f"{name:<16} {text}")
        return
    table = {
        "benchmarks": catalog.BENCHMARKS,
        "strategies": catalog.STRATEGIES,
        "models": {**catalog.MODELS, **catalog.ACTIVATIONS},
        "optimizers": catalog.OPTIMIZERS,
    }[what]
    width = max(16, *map(len, table))
    for name, entry in table.items():
        paper = f"  [{entry.paper}]" if entry.paper else ""
        print(f"{name:<{width}} {entry.description}{paper}")
    if what == "strategies":  # generated from the installed Avalanche (imports it: ~3 s)
        from cl.avalanche.strategies import listing

        print(f"\n{listing()}")


def _run(args, argv: list[str]) -> int:
    from cl import config, distributed, launch

    config.reject_repeats(args.overrides)
    quiet = args.quiet or os.environ.get("RANK", "0") != "0"  # ranks but 0 print nothing
    if args.resume:
        from cl.api import resume

        if args.print_config:
            raise UserError("--print-config and --resume do not go together")
        if not distributed.under_torchrun():  # run.nproc=N: N ranks through torchrun
            saved = Path(args.resume).expanduser() / "config.yaml"
            if saved.is_file():
                saved_cfg = config.load_saved(saved, args.overrides)[0]
                if saved_cfg.run.nproc > 1:
                    distributed.check(saved_cfg, saved_cfg.run.nproc)
                    return launch.launch(saved_cfg.run.nproc, argv)
        run = resume(args.resume, args.overrides, quiet=quiet)
        if args.quiet and run is not None:
            print(f"run {run.path}")  # -q: the folder, one line
        return 0
    if args.print_config:
        tree = config.compose(args.overrides)
        missing = sorted(config.OmegaConf.missing_keys(tree))
        if not missing:  # complete: validated like a run
            tree = config.load(args.overrides)[1]
        print(config.to_yaml(tree), end="")
        if missing:
            print(f"note: ??? marks required options; set {', '.join(missing)}", file=sys.stderr)
        return 0
    cfg, tree = config.load(args.overrides)
    if cfg.run.nproc > 1 and not distributed.under_torchrun():
        distributed.check(cfg, cfg.run.nproc)
        return launch.launch(cfg.run.nproc, argv)
    from cl.api import start

    run = start(cfg, config.as_plain(tree), quiet=quiet)
    if args.quiet and run is not None:
        print(f"run {run.path}")  # -q: the folder, one line
    return 0


def main(argv: list[str] | None = None) -> int:
    from cl import distributed, launch

    argv = sys.argv[1:] if argv is None else list(argv)
    code = _main(argv)
    distributed.shutdown()
    if launch.leave_status(code):  # a rank of `cl run run.nproc=N`, which says its code
        return 0  # torchrun's failure report stays for ranks that die
    return code


def _main(argv: list[str]) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command in ("run", "sweep") and not any(a.startswith("-") for a in extra):
        args.overrides += extra  # overrides after an option: `cl run a=1 -q b=2`
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "list":
            _list(args.what)
        elif args.command == "run":
            return _run(args, argv)
        elif args.command == "report":
            from cl.report import build

            try:
                print(f"report {build(args.paths, args.output, per_run=args.per_run)}")
            except OSError as e:
                where = e.filename or args.output or "report.html"
                raise UserError(f"cannot write the report to {where}: {e.strerror or e}") from None
        elif args.command == "l2metrics":
            from cl import l2m

            l2m.compute(args.run_dir, ste=args.ste, quiet=args.quiet)
        elif args.command == "dashboard":
            from cl.report import server

            return server.main(args.paths, args.host, args.port)
        elif args.command == "reproduce":
            from cl import reproduce

            if args.list or not args.name:
                print(reproduce.listing())
                return 0
            return reproduce.reproduce(args.name, args.quick, args.seeds, args.out, args.quiet)
        elif args.command == "sweep":
            from cl.sweep import driver

            if args.resume:
                return driver.resume_sweep(args.resume, args.overrides, args.quiet)
            return driver.new_sweep(args.overrides, args.spec, args.quiet)
        else:
            parser.print_help()
        return 0
    except UserError as e:
        if os.environ.get("RANK", "0") == "0":  # one line, not one per rank
            print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except RunFailed as e:
        print(f"run failed: {e}", file=sys.stderr)
        return e.exit_code
    except Interrupted as e:
        if e.folder is None:
            print("interrupted", file=sys.stderr)
        elif e.checkpoint is None:
            print(f"interrupted: {e.folder} has no checkpoint to resume from", file=sys.stderr)
        else:
            print(
                f"interrupted after iteration {e.checkpoint} (checkpoint saved); "
                f"resume with: cl run --resume {e.folder}",
                file=sys.stderr,
            )
        return 128 + e.signum
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
