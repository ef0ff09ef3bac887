import json
import os

import pytest


def pytest_addoption(parser):
    group = parser.getgroup("outcome", "outcome tests (make test-portable)")
    group.addoption(
        "--seed-offset",
        type=int,
        default=0,
        help="added to every seed of the outcome tests (default 0: the seeds in the code)",
    )
    group.addoption(
        "--record-outcomes",
        metavar="PATH",
        default=None,
        help="append each outcome check (value, bound, margin) to PATH as a JSON line; a failed "
        "check then fails its test at teardown, after the test's other checks are recorded",
    )


def pytest_collection_modifyitems(config, items):
    """An outcome test is marked `outcome` and takes its seeds and checks from the fixtures.
    A `gpu` test is skipped where torch sees no CUDA device."""
    gpu = [item for item in items if item.get_closest_marker("gpu") is not None]
    if gpu:
        import torch

        if not torch.cuda.is_available():
            for item in gpu:
                item.add_marker(pytest.mark.skip(reason="needs CUDA"))
    for item in items:
        marked = item.get_closest_marker("outcome") is not None
        names = set(getattr(item, "fixturenames", ()))
        if marked != ("seed_offset" in names) or ("outcome" in names and not marked):
            raise pytest.UsageError(
                f"{item.nodeid}: a test marked `outcome` adds the seed_offset fixture to its "
                "seeds, and only such tests take seed_offset or outcome"
            )


@pytest.fixture
def fast(tmp_path):
    """Overrides for a small, quiet run in a temporary run.dir."""
    return [
        f"run.dir={tmp_path / 'runs'}",
        "run.progress=false",
        "run.report=false",
        "wandb.mode=disabled",
        "model.hidden=[64]",
        "train.epochs=1",
    ]


@pytest.fixture
def seed_offset(request):
    """Added to every seed an outcome test uses (`--seed-offset N`; 0 = the seeds in the code)."""
    return request.config.getoption("seed_offset")


def kernels():
    import torch

    env = {k: os.environ[k] for k in KERNEL_ENV if k in os.environ}
    cap = torch.backends.cpu.get_cpu_capability()
    return {"capability": cap, "env": env, "threads": torch.get_num_threads()}


KERNEL_ENV = (
    "ATEN_CPU_CAPABILITY",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_CBWR",
    "ONEDNN_MAX_CPU_ISA",
    "OMP_NUM_THREADS",
)


class Outcome:
    """Checks of a trained (or randomly drawn) outcome against a bound.

    above / below: `null` is the value the quantity takes when the mechanism under test does
    nothing (chance accuracy, no difference, ...); the bound lies between it and the measured
    values, so the check fails if the mechanism breaks. within: an error against an exact
    target must stay under a tolerance. With --record-outcomes every check is written out
    (tests/outcome_report.py tabulates them)."""

    def __init__(self, request):
        self.test = request.node.nodeid
        self.offset = request.config.getoption("seed_offset")
        self.path = request.config.getoption("record_outcomes")
        self.failed = []

    def above(self, name, value, bound, null):
        self._check(name, float(value), ">", bound, float(null))

    def below(self, name, value, bound, null):
        self._check(name, float(value), "<", bound, float(null))

    def within(self, name, error, tolerance):
        self._check(name, float(error), "<", tolerance, None)

    def _check(self, name, value, op, bound, null):
        ok = value > bound if op == ">" else value < bound
        k = kernels()
        if self.path:
            row = {
                "test": self.test,
                "check": name,
                "value": value,
                "op": op,
                "bound": bound,
                "null": null,
                "seed_offset": self.offset,
                **k,
            }
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")
        if not ok:
            msg = (
                f"{name} = {value:.4g}, expected {op} {bound}"
                + ("" if null is None else f" (no effect: {null:.4g})")
                + f"; seed offset {self.offset}, {k['capability']} {k['env'] or ''}"
            )
            if not self.path:
                raise AssertionError(msg)
            self.failed.append(msg)


@pytest.fixture
def outcome(request):
    checks = Outcome(request)
    yield checks
    if checks.failed:
        pytest.fail("\n".join(checks.failed), pytrace=False)


@pytest.fixture(scope="module")
def avalanche_home(tmp_path_factory):
    """`import avalanche` writes ~/.avalanche/config.json: import it once with a writable HOME."""
    import sys
    import warnings

    if "avalanche" in sys.modules:
        yield
        return
    old = os.environ.get("HOME")
    os.environ["HOME"] = str(tmp_path_factory.mktemp("home"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import avalanche.training  # noqa: F401
    yield
    if old is not None:
        os.environ["HOME"] = old


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real single-node Slurm (munged, slurmctld, slurmd on 127.0.0.1) for the tests marked
    `slurm`; SLURM_CONF points the Slurm commands at it. Skipped where it cannot start, unless
    CL_REQUIRE_SLURM=1 (CI), where that fails."""
    from helpers.slurm_cluster import Unavailable, start

    try:
        cluster = start(tmp_path_factory.mktemp("slurm"))
    except Unavailable as e:
        if os.environ.get("CL_REQUIRE_SLURM") == "1":
            pytest.fail(f"CL_REQUIRE_SLURM=1 but Slurm cannot start: {e}")
        pytest.skip(f"no Slurm cluster here: {e}")
    before = os.environ.get("SLURM_CONF")
    os.environ.update(cluster.env)
    print(f"\nSlurm cluster up in {cluster.start_s:.2f} s ({cluster.folder})")
    yield cluster
    cluster.stop()
    if before is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = before
