"""Run `cl run` jobs in forked children that signal themselves in the middle of training
iteration AT (after its optimizer step, before its row is logged).

    python tests/helpers/kill_at.py JOBS.json

JOBS.json is a list of {"signal": "KILL" | "TERM" | "INT" | "INT2", "at": AT,
"args": [cl run arguments], "stderr": path}; INT2 is a double Ctrl-C. For TERM and INT the
run goes on to its next safe point, as after a real signal. Prints the children's exit codes
(-9 for SIGKILL) as a JSON list. Torch and cl are imported once, before the forks, on one
torch thread (no thread pool exists yet, so forking is safe), which saves each job seconds.
"""

import json
import os
import signal
import sys

import torch

torch.set_num_threads(1)
os.environ.pop("WANDB_SERVICE", None)  # runs start their own W&B service, not the caller's

import cl.api  # noqa: E402,F401 - everything a run needs, imported before forking
import cl.checkpoint  # noqa: E402,F401
import cl.runner  # noqa: E402
from cl.cli import main  # noqa: E402

torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # imports torch._dynamo (2 s)


def run_job(job: dict) -> int:
    err = os.open(job["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(err, 2)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    step, calls = cl.runner.train_step, 0
    sig = signal.SIGINT if job["signal"] == "INT2" else getattr(signal, f"SIG{job['signal']}")

    def train_step_then_signal(*args, **kwargs):
        nonlocal calls
        out = step(*args, **kwargs)
        calls += 1
        if calls == job["at"]:
            os.kill(os.getpid(), sig)
            if job["signal"] == "INT2":
                os.kill(os.getpid(), sig)
        return out

    cl.runner.train_step = train_step_then_signal
    return main(["run", *job["args"]])


codes = []
for job in json.loads(open(sys.argv[1]).read()):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = run_job(job)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    codes.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
print(json.dumps(codes))
