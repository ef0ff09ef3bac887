"""cl: a continual-learning experiment platform.

Importing `cl` is cheap (no torch); heavy modules load on first use.
"""

from cl.version import __version__

__all__ = ["__version__", "load_run", "load_sweep", "run"]


def load_run(path):
    """Load a run folder: returns a `Run` with `.metrics` (DataFrame) and `.summary` (dict)."""
    from cl.store import load_run as _load_run

    return _load_run(path)


def load_sweep(path):
    """Load a sweep folder: `.trials` (one row per trial) and `.aggregate` (DataFrames)."""
    from cl.sweep.folder import load_sweep as _load_sweep

    return _load_sweep(path)


def run(overrides=(), **kwargs):
    """Compose a config from `key=value` overrides and run it; returns the loaded `Run`."""
    from cl.api import run as _run

    return _run(overrides, **kwargs)
