"""Stop requests: SIGINT (Ctrl-C) and SIGTERM (preemption) end a run at the next safe point.

The first signal asks the run to checkpoint after the current iteration and stop with status
`interrupted`; a second SIGINT or SIGTERM stops at once (the last checkpoint stays valid).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)
PENDING: list[int] = []  # signals that came before a run installed its handlers (sweep workers)


def note_pending(signum: int, frame) -> None:
    """A handler for processes that start runs later: the next run stops at once."""
    PENDING.append(signum)


class Interrupted(Exception):
    """The run stopped on a signal; `signum` says which (exit code 128 + signum).

    Raised again by the api once the run folder is written, with the `folder` to resume and
    the iteration of its last `checkpoint` (None if there is none).
    """

    def __init__(self, signum: int, folder=None, checkpoint: int | None = None):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.folder, self.checkpoint = signum, folder, checkpoint


class StopRequest:
    """Set by the signal handler; read by the runner's safe point."""

    def __init__(self, what: str = "stopping after this iteration (checkpoint)") -> None:
        self.signum: int | None = None
        self.finishing = False  # writing the run's outputs: signals only print a note
        self.what = what
        # a rank of a run over several (cl/distributed.py): a rank may get a stop twice (the
        # terminal's and torchrun's); all stop together at the next safe point, and torchrun
        # kills ranks that have not ended 30 s after it passed the stop on
        self.ranks = False

    def handle(self, signum: int, frame) -> None:
        if self.finishing:
            print("finishing the run folder; please wait", file=sys.stderr, flush=True)
            return
        if self.signum is not None:
            if self.ranks:
                return
            raise Interrupted(signum)
        self.signum = signum
        if self.ranks and os.environ.get("RANK", "0") != "0":
            return  # rank 0 says it
        again = "send it again to stop at once"
        if self.ranks:
            again = "torchrun kills ranks still running 30 s after passing it on"
        print(
            f"\n{signal.Signals(signum).name}: {self.what}; {again}",
            file=sys.stderr,
            flush=True,
        )


@contextmanager
def catch_stops(what: str | None = None) -> Iterator[StopRequest]:
    """Route SIGINT/SIGTERM to a StopRequest while the block runs (main thread only);
    `what` says what the first signal does."""
    stop = StopRequest(what) if what else StopRequest()
    if PENDING:
        stop.signum = PENDING[-1]
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.signal(s, stop.handle) for s in SIGNALS}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
