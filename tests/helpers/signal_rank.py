"""torchrun's entry point for tests: `cl ARGS` whose rank RANK signals itself with SIG in the
middle of training iteration AT (after its optimizer step, before its row is logged).

    python -m torch.distributed.run ... tests/helpers/signal_rank.py RANK SIG AT run ARGS...

SIG is TERM (the run stops at its next safe point: every rank agrees there) or KILL (the
rank dies: torchrun ends the job). The other ranks run `cl ARGS` unchanged.
"""

import os
import signal
import sys
import time

import cl.runner
from cl.cli import main

rank, sig, at = int(sys.argv[1]), getattr(signal, f"SIG{sys.argv[2]}"), int(sys.argv[3])
if int(os.environ["RANK"]) == rank:
    step, calls = cl.runner.train_step, 0

    def train_step_then_signal(*args, **kwargs):
        global calls
        out = step(*args, **kwargs)
        calls += 1
        if calls == at:  # the time, for measuring how long the job takes to end
            print(f"signal_rank: {sig.name} at {time.time():.3f}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), sig)
        return out

    cl.runner.train_step = train_step_then_signal
sys.exit(main(sys.argv[4:]))
