"""The progress bar: frequent refreshes on a terminal, rare ones in a log file."""

import sys

from cl.console import Progress


def test_progress_refreshes_rarely_when_stderr_is_not_a_terminal(monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    bar = Progress(enabled=True)
    assert bar.bar.mininterval == 10.0
    bar.close()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    bar = Progress(enabled=True)
    assert bar.bar.mininterval == 0.25
    bar.close()
