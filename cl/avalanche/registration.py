"""Registers Avalanche with the core (entry point `cl.plugins: avalanche`): the scenario
`benchmark.scenario=avalanche` and the strategy family `strategy=avalanche.<Name>`.
Importing this module imports neither torch nor avalanche."""

from __future__ import annotations

from cl import plugins
from cl.avalanche import strategies


def _check_benchmark(b) -> None:
    from cl.avalanche.benchmarks import check_config

    check_config(b)


def _build_stream(cfg, data, seed: int, eval_subset: int, root: str):  # data: None, unused
    from cl.avalanche.benchmarks import build_stream

    return build_stream(cfg, root, seed, eval_subset)


def _check_strategies(spec: dict) -> dict:
    return {strategies.KEY: strategies.check(spec[strategies.KEY])}


def _driver():
    from cl.avalanche.bridge import run_stream

    return run_stream


def register() -> None:
    plugins.SCENARIOS["avalanche"] = plugins.Scenario(
        "avalanche", check=_check_benchmark, build=_build_stream
    )
    plugins.FAMILIES[strategies.KEY] = plugins.Family(
        strategies.KEY,
        title="Avalanche",
        members="one Avalanche strategy and any Avalanche plugins",
        defaults=strategies.defaults,
        check=_check_strategies,
        driver=_driver,
        owned=strategies.OWNED,
        no_checkpoints="Avalanche strategies keep state cl's checkpoints cannot hold",
    )
