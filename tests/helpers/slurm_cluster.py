"""A real single-node Slurm cluster on 127.0.0.1 for the tests: munged, slurmctld and slurmd
(Debian's `slurm-wlm` and `munge`), with every config, key, state and log file in one folder.

`start(folder)` returns a `Cluster` (its `env` points the Slurm commands at it: SLURM_CONF)
or raises `Unavailable` with the reason (no binaries, not root, a daemon that does not come up);
`Cluster.stop()` ends the daemons it started, by pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol", "srun")


class Unavailable(Exception):
    """Slurm cannot start here; the message says why."""


@dataclass
class Cluster:
    folder: Path
    env: dict[str, str]
    procs: list[subprocess.Popen] = field(default_factory=list)
    start_s: float = 0.0

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """A Slurm command against this cluster."""
        return subprocess.run(
            args, env=os.environ | self.env, capture_output=True, text=True, check=check, timeout=60
        )

    def log(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.is_file() else ""

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_conf(folder: Path, cpus: int, memory_mb: int) -> str:
    ctld, d = free_port(), free_port()
    return f"""\
ClusterName=cltest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld}
SlurmdPort={d}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder}/munge.socket
StateSaveLocation={folder}/ctld
SlurmdSpoolDir={folder}/d
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
KillWait=30
MinJobAge=600
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def start(folder: Path, timeout: float = 60.0) -> Cluster:
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        raise Unavailable(f"no {', '.join(missing)} (apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        raise Unavailable("the test cluster runs its daemons as root (SlurmUser=root)")
    began = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("ctld", "d"):
        (folder / sub).mkdir(exist_ok=True)
    cpus = len(os.sched_getaffinity(0))
    conf = folder / "slurm.conf"
    conf.write_text(slurm_conf(folder, cpus, 1024))
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    env = {"SLURM_CONF": str(conf)}
    cluster = Cluster(folder, env)

    def daemon(*args: str) -> None:
        out = open(folder / f"{Path(args[0]).name}.out", "w")  # noqa: SIM115 - the daemon's
        cluster.procs.append(
            subprocess.Popen(args, env=os.environ | env, stdout=out, stderr=subprocess.STDOUT)
        )

    try:
        daemon(
            "munged", "--foreground", "--force", f"--socket={folder}/munge.socket",
            f"--key-file={key}", f"--pid-file={folder}/munged.pid",
            f"--log-file={folder}/munged.log", f"--seed-file={folder}/munge.seed",
        )  # fmt: skip
        wait_for(lambda: (folder / "munge.socket").exists(), timeout, cluster, "munged")
        daemon("slurmctld", "-D", "-i", "-f", str(conf))
        wait_for(lambda: cluster.run("scontrol", "ping", check=False).returncode == 0,
                 timeout, cluster, "slurmctld")  # fmt: skip
        daemon("slurmd", "-D", "-N", "localhost", "-f", str(conf))

        def idle() -> bool:
            out = cluster.run("sinfo", "-h", "-o", "%T", check=False).stdout.strip()
            return out.startswith("idle")

        wait_for(idle, timeout, cluster, "slurmd")
    except Unavailable:
        cluster.stop()
        raise
    cluster.start_s = time.perf_counter() - began
    return cluster


def wait_for(ready, timeout: float, cluster: Cluster, name: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in cluster.procs):
            break
        if ready():
            return
        time.sleep(0.1)
    tail = cluster.log(name) or (cluster.folder / f"{name}.out").read_text(errors="replace")
    raise Unavailable(f"{name} did not come up within {timeout:.0f} s:\n{tail[-1500:]}")
