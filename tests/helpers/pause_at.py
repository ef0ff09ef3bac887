"""Run `cl run ARGS...` and pause it in training iteration AT until told to go on.

    python tests/helpers/pause_at.py AT [cl run arguments]

At iteration AT (after its optimizer step) it prints `paused <pid>` on stdout and waits for a
line on stdin, so a test can act while the run holds its folder, with no sleeps. Exits with
`cl run`'s exit code.
"""

import os
import sys

import cl.runner
from cl.cli import main

at, args = int(sys.argv[1]), sys.argv[2:]
step, calls = cl.runner.train_step, 0


def train_step_then_pause(*a, **kw):
    global calls
    out = step(*a, **kw)
    calls += 1
    if calls == at:
        print(f"paused {os.getpid()}", flush=True)
        sys.stdin.readline()
    return out


cl.runner.train_step = train_step_then_pause
sys.exit(main(["run", *args]))
