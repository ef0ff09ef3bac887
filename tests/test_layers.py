"""The layers hold: a core that imports nothing above it, no import cycles, strategies that see
only the strategy API. Read from the source with `ast`: every import, at module level or inside
a function, relative imports resolved, `from pkg import submodule` counted as the submodule."""

from __future__ import annotations

import ast
import tomllib
from importlib import import_module
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ADDONS = (
    "cl.avalanche",
    "cl.l2m",
    "cl.report",
    "cl.sweep",
    "cl.reproduce",
    "cl.cli",
    "cl.__main__",
)
FACADE = "cl"  # the package: may import anything lazily; core modules never import it
# What strategies/ may import of cl (besides other strategies/ modules): the strategy API.
STRATEGY_API = {"cl.context", "cl.strategy", "cl.evaluation"}


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(p): p for d in ("cl", "strategies") for p in sorted((ROOT / d).rglob("*.py"))}


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> set[str]:
    """The cl/strategies modules `module` imports."""
    path, out = MODULES[module], set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(_resolve(a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module if path.name == "__init__.py" else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            for a in node.names:
                full = f"{base}.{a.name}"
                out.add(full if full in MODULES else _resolve(base))
    return out - {None, module}


GRAPH = {m: _imports(m) for m in MODULES}


def _is_addon(module: str) -> bool:
    return any(module == a or module.startswith(f"{a}.") for a in ADDONS)


def _is_core(module: str) -> bool:
    return module.startswith("cl.") and not _is_addon(module)


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
                on.discard(comp[-1])
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def test_the_scan_sees_the_known_edges():
    assert "cl.validation" in GRAPH["cl.config"]
    assert "cl.streams" in GRAPH["cl.avalanche.benchmarks"]  # inside a function
    assert "cl.plugins" in GRAPH["cl.avalanche.registration"]  # `from cl import plugins`
    assert "cl.avalanche.strategies" in GRAPH["cl.avalanche.bridge"]  # `from pkg import mod`


def test_no_import_cycles():
    assert _cycles() == []


def test_the_core_imports_no_add_on_and_not_the_package():
    up = sorted((m, t) for m in GRAPH if _is_core(m) for t in GRAPH[m] if _is_addon(t))
    assert up == []
    assert sorted(m for m in GRAPH if _is_core(m) and FACADE in GRAPH[m]) == []


def test_strategies_import_only_the_strategy_api():
    for m in (m for m in GRAPH if m.startswith("strategies")):
        assert GRAPH[m] - STRATEGY_API <= {s for s in GRAPH if s.startswith("strategies")}, m


def test_every_declared_plugin_is_an_add_on_and_registers():
    """pyproject's `cl.plugins` entry points name add-on functions that fill the registries."""
    from cl import plugins

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    targets = declared["cl.plugins"].values()
    assert targets and all(_is_addon(t.partition(":")[0]) for t in targets)
    for target in targets:
        module, _, func = target.partition(":")
        getattr(import_module(module), func)()
    assert {"avalanche"} <= set(plugins.SCENARIOS)
    assert {"avalanche"} <= set(plugins.FAMILIES)
    assert {"report"} <= set(plugins.FINISHERS)
