"""Every `cl ...` command of the README's "A short tour" runs (exit 0), with tiny settings
appended where the command does not set the key itself and the key exists in its config."""

import re
import shlex
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from cl import config
from cl.cli import main

README = Path(__file__).parents[1] / "README.md"
TINY = {
    "benchmark.source": "digits",
    "benchmark.n_tasks": "3",
    "train.epochs": "1",
    "eval.subset": "50",
    "model.hidden": "[16]",
    "plasticity.every": "0",
    "wandb.mode": "disabled",
    "run.report": "false",
    "run.progress": "false",
}


def tour_commands() -> list[list[str]]:
    """The `cl` commands of the tour's bash block, as argument lists (`a | b` lists expanded)."""
    text = README.read_text().split("## A short tour", 1)[1]
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    out = []
    for line in block.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line.startswith(".venv/bin/cl "):
            continue
        args = shlex.split(line)[1:]
        if args[0] == "list":
            out += [["list", what] for what in args[1:] if what != "|"]
        else:
            out.append(args)
    return out


def tiny(args: list[str], run_dir: Path) -> list[str]:
    given = {a.split("=", 1)[0] for a in args if "=" in a}
    tree = config.compose([a for a in args if "=" in a])
    extra = [
        f"{k}={v}"
        for k, v in TINY.items()
        if k not in given
        and OmegaConf.select(tree, k, default="absent") != "absent"
        and not (k == "benchmark.n_tasks" and "benchmark.angles" in given)
    ]
    return [*args, *extra, f"run.dir={run_dir}"]


def test_the_tour_has_the_commands_this_test_expects():
    cmds = tour_commands()
    assert len(cmds) >= 10 and any("--resume" in c for c in cmds)
    assert any(c[:2] == ["list", "sources"] for c in cmds)


@pytest.mark.parametrize("args", tour_commands(), ids=" ".join)
def test_tour_command_runs(args, tmp_path, capsys):
    if args[0] == "list" or "--print-config" in args:
        assert main(args) == 0
        return
    if "--resume" in args:  # a run folder stopped half-way to resume
        import os
        import signal

        import cl.runner

        step, calls = cl.runner.train_step, 0

        def step_then_stop(*a, **k):
            nonlocal calls
            out = step(*a, **k)
            calls += 1
            if calls == 5:
                os.kill(os.getpid(), signal.SIGTERM)
            return out

        cl.runner.train_step = step_then_stop
        try:
            first = tiny(["run", "strategy=naive", "run.name=stopped"], tmp_path)
            assert main(first) == 128 + signal.SIGTERM
        finally:
            cl.runner.train_step = step
        assert main(["run", "--resume", str(tmp_path / "stopped")]) == 0
        assert "complete" in (tmp_path / "stopped" / "summary.json").read_text()
        return
    assert main(tiny(args, tmp_path)) == 0, capsys.readouterr().err
