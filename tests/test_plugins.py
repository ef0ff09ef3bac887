"""cl's own scenarios and strategy family are registry entries like an add-on's: one lookup."""

from __future__ import annotations

import subprocess
import sys

from cl import catalog, plugins


def test_native_scenarios_and_family_are_registered_by_the_core():
    for name in catalog.SCENARIOS:
        assert plugins.scenario(name).source
    assert not plugins.scenario("avalanche").source  # an add-on's: reads its own data
    assert list(plugins.scenarios())[: len(catalog.SCENARIOS)] == list(catalog.SCENARIOS)
    native = plugins.family_of({"replay": {}, "center_loss": {}})
    assert native is plugins.FAMILIES[plugins.NATIVE] and not native.nested
    assert plugins.family_of({"replay": {}}) is native
    assert plugins.family_of({"avalanche": {"EWC": {}}}).name == "avalanche"
    assert plugins.family(plugins.NATIVE) is None  # `strategy=cl.replay` is no family's member
    assert plugins.label({"replay": {}, "center_loss": {}}) == "replay+center_loss"
    assert plugins.label({"avalanche": {"EWC": {}, "LwFPlugin": {}}}) == (
        "avalanche.EWC+avalanche.LwFPlugin"
    )


def test_the_native_entries_import_nothing_heavy():
    code = (
        "import sys, cl.plugins as p; p.scenario('split'); p.family_of({}); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_native_family_builds_and_drives_cl_strategies():
    from cl import runner, strategy

    native = plugins.FAMILIES[plugins.NATIVE]
    assert native.driver() is runner.run_stream
    built = native.build({"naive": {}})
    assert [type(s) for s in built] == [strategy.strategy_class("naive")]
