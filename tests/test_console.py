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


def test_an_interrupted_run_says_it_is_partial(tmp_path, monkeypatch, capsys):
    """Ctrl-C during task 1 of 3: the table is titled partial and leaves out ACC, BWT ...;
    summary.json has complete false and what the numbers cover."""
    import json
    import os
    import signal

    import cl.runner
    from cl.cli import main

    step, calls = cl.runner.train_step, 0

    def step_then_ctrl_c(*args, **kwargs):
        nonlocal calls
        out = step(*args, **kwargs)
        calls += 1
        if calls == 20:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(cl.runner, "train_step", step_then_ctrl_c)
    args = [
        "run", "benchmark.source=digits", "benchmark.n_tasks=3", "model.hidden=[16]",
        "train.epochs=1", "eval.subset=50", "train.batch_size=32", "strategy=naive",
        "run.progress=false", "run.report=false", "wandb.mode=disabled",
        f"run.dir={tmp_path}", "run.name=cut",
    ]  # fmt: skip
    assert main(args) == 128 + signal.SIGINT
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert summary["complete"] is False and summary["status"] == "interrupted"
    assert summary["covers"] == {"iterations": 20, "tasks_seen": 2, "of_tasks": 3}
    assert "partial: interrupted at iteration 20, 2 of 3 tasks seen" in out
    assert "ACC (final average accuracy)" not in out and "left out: ACC, BWT" in out

    monkeypatch.setattr(cl.runner, "train_step", step)
    assert main([*args[:-1], "run.name=whole"]) == 0  # a finished run is complete
    summary = json.loads((tmp_path / "whole" / "summary.json").read_text())
    assert summary["complete"] is True and summary["covers"]["tasks_seen"] == 3
