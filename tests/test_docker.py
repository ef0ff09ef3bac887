"""The Docker image gives the host's numbers (`make docker-test`; marked `docker`, so outside
`make test`): the default experiment, run in the container and on the host (this Python: the
.venv of `make setup`), has identical summaries and per-iteration rows. Skipped where no
container engine works (`make docker-test` sets up podman there first)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import KERNEL_ENV

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["run.name=default", "run.progress=false"]

pytestmark = pytest.mark.docker


def engine() -> str | None:
    """docker when its daemon answers, else podman (as `make docker` chooses)."""
    for name in ("docker", "podman"):
        if (
            shutil.which(name)
            and subprocess.run([name, "info"], capture_output=True).returncode == 0
        ):
            return name
    return None


@pytest.fixture(scope="module")
def image():
    """(engine, image): CL_DOCKER_IMAGE as built by `make docker-test`, else built here."""
    name = engine()
    if name is None:
        pytest.skip("no container engine works here (make docker-test sets up podman)")
    if os.environ.get("CL_DOCKER_IMAGE"):
        return name, os.environ["CL_DOCKER_IMAGE"]
    build = subprocess.run(
        ["make", "docker", f"ENGINE={name}"], cwd=ROOT, capture_output=True, text=True
    )
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    return name, "cl:latest"


def test_container_run_equals_host_run(image, tmp_path):
    name, tag = image
    host, box = tmp_path / "host", tmp_path / "container"
    subprocess.run([sys.executable, "-m", "cl", "run", *ARGS, f"run.dir={host}"], check=True)
    box.mkdir()
    if os.getuid() == 0:  # the image's own user (uid 1000) then writes the results
        box.chmod(0o777)
        user = []
    else:  # as in `make docker-run`: as you
        keep = ["--userns=keep-id"] if name == "podman" else []
        user = ["--user", f"{os.getuid()}:{os.getgid()}", *keep]
    kernels = [f"--env={k}" for k in KERNEL_ENV if k in os.environ]  # the host run's settings
    subprocess.run(
        [name, "run", "--rm", *user, *kernels, "-v", f"{box}:/runs", tag, "run", *ARGS],
        check=True,
    )
    compare = [sys.executable, str(ROOT / "docker" / "compare_runs.py")]
    r = subprocess.run(
        [*compare, host / "default", box / "default"], capture_output=True, text=True
    )
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr

    env = json.loads((box / "default" / "environment.json").read_text())
    host_env = json.loads((host / "default" / "environment.json").read_text())
    assert env["container"]["image"]  # the tag `make docker` gave it: cl:<revision>
    assert env["container"]["git"] == env["git"] == host_env["git"]  # built from this tree
    assert (box / "default").stat().st_uid != 0  # not root in the container
