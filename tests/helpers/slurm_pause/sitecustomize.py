"""Pause a trial inside a Slurm job, so a test can preempt it mid-run with no timing races.

On PYTHONPATH with CL_TEST_PAUSE_DIR set, a Python started by a Slurm job (SLURM_JOB_ID set)
pauses one run (the first to get there), after training iteration CL_TEST_PAUSE_AT: it writes
`<dir>/paused` (the job id) and waits (at most 300 s) for `<dir>/go`. Other jobs (the
other trials, the resume) find `paused` and do not pause.
"""

import os

if os.environ.get("CL_TEST_PAUSE_DIR") and os.environ.get("SLURM_JOB_ID"):
    import time
    from pathlib import Path

    import cl.runner

    folder, at = Path(os.environ["CL_TEST_PAUSE_DIR"]), int(os.environ["CL_TEST_PAUSE_AT"])
    step, calls = cl.runner.train_step, [0]

    def train_step_then_pause(*a, **kw):
        out = step(*a, **kw)
        calls[0] += 1
        if calls[0] == at and claim(folder / "paused"):
            deadline = time.monotonic() + 300
            while not (folder / "go").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return out

    def claim(path: Path) -> bool:
        """The first job to get here pauses (writes its id); the others go on."""
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.write(fd, os.environ["SLURM_JOB_ID"].encode())
        os.close(fd)
        return True

    cl.runner.train_step = train_step_then_pause
