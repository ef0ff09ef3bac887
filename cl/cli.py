"""The `cl` command: `cl run [key=value ...]`, `cl list benchmarks|strategies|models`.

User mistakes print one `error:` line and exit with code 2; a run that fails exits with 1.
`cl --help` and `cl list` do not import torch.
"""

from __future__ import annotations

import argparse
import sys

from cl import __version__
from cl.errors import RunFailed, UserError

EPILOG = """examples:
  cl run                                   default: Split-MNIST (mnist5k), MLP, replay
  cl run strategy=naive seed=3
  cl run strategy=[replay,naive] strategy.replay.mem_size=1000
  cl run benchmark=permuted_mnist benchmark.n_tasks=10 train.epochs=1
  cl run benchmark.source=mnist data.root=~/data      full torchvision MNIST
  cl run --print-config optim.lr=0.1                  show the resolved config only
  cl list strategies
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
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar or table")
    r.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="config overrides, e.g. strategy=replay benchmark.n_tasks=10 seed=3",
    )
    ls = sub.add_parser("list", help="list benchmarks, strategies, models or data sources")
    ls.add_argument("what", choices=["benchmarks", "strategies", "models", "sources"])
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
        "models": catalog.MODELS,
    }[what]
    for name, entry in table.items():
        paper = f"  [{entry.paper}]" if entry.paper else ""
        print(f"{name:<16} {entry.description}{paper}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            _list(args.what)
        elif args.command == "run":
            from cl import config

            cfg, tree = config.load(args.overrides)
            if args.print_config:
                print(config.to_yaml(tree), end="")
                return 0
            from cl.api import execute

            execute(cfg, config.as_plain(tree), quiet=args.quiet)
        else:
            _parser().print_help()
        return 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except RunFailed as e:
        print(f"run failed: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
