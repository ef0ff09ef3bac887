"""Run `cl sweep ARGS` and SIGKILL the whole sweep (driver and worker) in the middle of
training iteration AT of a worker's first group (after its optimizer step, before its row).

    CL_TEST_KILL_AT=AT python tests/helpers/kill_sweep_at.py ARGS...

The patch below runs at import: in this process (the driver, which never trains) and in
every spawned worker, which imports this script as `__mp_main__` (multiprocessing's spawn
start method), so the kill lands at the same iteration on every run, without any timing.
"""

import os
import signal
import sys

import cl.runner

AT = int(os.environ.get("CL_TEST_KILL_AT", "0"))
_step, _calls = cl.runner.train_step, [0]


def _train_step_then_kill(*args, **kwargs):
    out = _step(*args, **kwargs)
    _calls[0] += 1
    if _calls[0] == AT:
        os.kill(os.getppid(), signal.SIGKILL)  # the sweep's driver
        os.kill(os.getpid(), signal.SIGKILL)
    return out


cl.runner.train_step = _train_step_then_kill

if __name__ == "__main__":
    from cl.cli import main

    sys.exit(main(["sweep", *sys.argv[1:]]))
