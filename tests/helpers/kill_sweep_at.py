"""Run `cl sweep ARGS` and stop it in the middle of training iteration AT of a worker's
first group (after its optimizer step, before its row):

    CL_TEST_KILL_AT=AT [CL_TEST_SIGNAL=KILL|INT] python tests/helpers/kill_sweep_at.py ARGS...

KILL (default): SIGKILL to the sweep's driver and to the worker. INT: a Ctrl-C to the driver,
which forwards it to the worker; the worker waits in iteration AT until it arrives, so the
group stops at the safe point right after iteration AT.

The patch below runs at import: in this process (the driver, which never trains) and in
every spawned worker, which imports this script as `__mp_main__` (multiprocessing's spawn
start method), so the stop lands at the same iteration on every run, without any timing.
"""

import os
import signal
import sys
import time

import cl.runner

AT = int(os.environ.get("CL_TEST_KILL_AT", "0"))
SIGNAL = os.environ.get("CL_TEST_SIGNAL", "KILL")
_step, _calls = cl.runner.train_step, [0]


def _train_step_then_stop(*args, **kwargs):
    out = _step(*args, **kwargs)
    _calls[0] += 1
    if _calls[0] == AT and SIGNAL == "KILL":
        os.kill(os.getppid(), signal.SIGKILL)  # the sweep's driver
        os.kill(os.getpid(), signal.SIGKILL)
    elif _calls[0] == AT:
        stop = signal.getsignal(signal.SIGINT).__self__  # the group's StopRequest
        os.kill(os.getppid(), signal.SIGINT)  # Ctrl-C: the driver forwards it here
        while stop.signum is None:
            time.sleep(0.01)
    return out


cl.runner.train_step = _train_step_then_stop

if __name__ == "__main__":
    from cl.cli import main

    sys.exit(main(["sweep", *sys.argv[1:]]))
