"""Bad input: one `error:` line naming the key, exit code 2, before any work, nothing left.

The table holds every case of issue #9 (crashes, silent acceptances, unclear messages) and
more; each is run through the CLI's `main` in-process (it is the same code path as `cl run`).
"""

import json
import os
import subprocess
import sys
import warnings

import pytest

from cl import config
from cl.cli import main
from cl.store import read_rows
from cl.sweep.folder import write_spec

LONG = "a" * 300
HUGE = "9" * 5000

CASES = [
    # crashed with a traceback (issue #9)
    (["strategy=weight_aligning", "benchmark.incremental=task"], "strategy=weight_aligning"),
    (["strategy=cbp", "model=resnet18"], "strategy=cbp: needs a model with an nn.Sequential"),
    ([f"run.name={LONG}"], "run.name="),
    (["run.device=cpux"], "run.device='cpux'"),
    # an Avalanche benchmark's stream is its own: cl's stream keys are refused, not ignored
    (["benchmark=avalanche", "benchmark.tasks=[2]"], "benchmark.tasks=[2] is not supported by"),
    (["benchmark=avalanche", "benchmark.class_order=[1,0]"], "benchmark.class_order=[1, 0] is"),
    (["benchmark=avalanche", "benchmark.incremental=task"], "return_task_id=true"),
    (["run.device=cuda:abc"], "run.device='cuda:abc'"),
    (["seed=-1"], "seed=-1 must be an integer in 0 .. 4294967295"),
    (["seed=4294967296"], "seed=4294967296 must be"),
    ([f"seed={HUGE}"], "seed"),
    (["benchmark.split_seed=-1"], "benchmark.split_seed=-1 must be"),
    (["optim.momentum=-1"], "optim.momentum=-1.0 must be in [0, 1)"),
    (["optim.weight_decay=-1"], "optim.weight_decay=-1.0 must be >= 0"),
    (["model=resnet18", "model.width=0"], "model.width=0 must be a positive integer"),
    (["train.batch_size=100000000000000000000"], "train.batch_size=100000000000000000000"),
    (
        ["strategy=weight_aligning", "strategy.weight_aligning.mem_batch_size=-1"],
        "strategy.weight_aligning.mem_batch_size must be a positive integer or null, got -1",
    ),
    # accepted silently (issue #9)
    (["run.name=../escape"], "run.name='../escape' must be a single folder name"),
    (["run.name=/abs/path"], "run.name='/abs/path' must be a single folder name"),
    (["benchmark=rotated_mnist", "benchmark.max_angle=nan"], "benchmark.max_angle=nan must be"),
    (["optim.lr=nan"], "optim.lr=nan must be a finite number"),
    (["optim.lr=inf"], "optim.lr=inf must be a finite number"),
    (["strategy.replay.mem_batch_size=0"], "strategy.replay.mem_batch_size must be a positive"),
    (["strategy=l2", "strategy.l2.lam=-1"], "strategy.l2.lam must be >= 0"),
    (
        ["strategy=shrink_perturb", "strategy.shrink_perturb.noise_std=-1"],
        "strategy.shrink_perturb.noise_std must be >= 0",
    ),
    (
        ["strategy=cbp", "strategy.cbp.maturity_threshold=-1"],
        "strategy.cbp.maturity_threshold must be >= 0",
    ),
    (["wandb.init_timeout=-1"], "wandb.init_timeout=-1.0 must be > 0"),
    # unclear messages (issue #9)
    (["strategy.replay.mem_size=null"], "strategy.replay.mem_size=null has type null"),
    (["wandb.project=a/b"], "wandb.project='a/b' is not a valid W&B name"),
    # more of the same kind
    (["optim.lr=0"], "optim.lr=0.0 must be > 0"),
    (["train.epochs=-1"], "train.epochs=-1 must be a positive integer"),
    (["eval.subset=0"], "eval.subset=0 must be a positive integer"),
    (["plasticity.every=-1"], "plasticity.every=-1 must be an integer >= 0"),
    (["model.hidden=[64,0]"], "model.hidden=0 must be a list of positive widths"),
    (["benchmark.n_tasks=11"], "benchmark.n_tasks=11: a split stream of mnist5k's 10 classes"),
    (["benchmark.class_order=[0,1]"], "benchmark.class_order=[0, 1] must be a permutation"),
    (["benchmark.test_fraction=1"], "benchmark.test_fraction=1.0 must be in (0, 1)"),
    (
        ["benchmark=rotated_mnist", "benchmark.n_tasks=3", "benchmark.angles=[0,.nan,90]"],
        "benchmark.angles=nan must be a finite number",
    ),
    (["metrics.speed_target=0"], "metrics.speed_target=0.0 must be in (0, 1]"),
    (["run.name=.hidden"], "run.name='.hidden' must be"),
    (["run.name="], "run.name='' must be"),
    (["wandb.entity=a:b"], "wandb.entity='a:b' is not a valid W&B name"),
    (["strategy.replay.buffer=fifo"], "strategy.replay.buffer must be one of class_balanced"),
    (
        ["strategy.replay.new_weight=2"],
        "strategy.replay.new_weight must be in (0, 1], '1/k' or null",
    ),
    (
        ["strategy.replay.new_weight=1/2"],
        "strategy.replay.new_weight must be a number, '1/k' or null",
    ),
    (["strategy=gem", "strategy.gem.sample_size=0"], "strategy.gem.sample_size must be"),
    (
        ["strategy=gem", "strategy.gem.memory_strength=true"],
        "strategy.gem.memory_strength=True has type bool; expected float",
    ),
    (["strategy=cbp", "strategy.cbp.init=xavier"], "strategy.cbp.init must be 'default'"),
    (["strategy=spectral", "strategy.spectral.k=0"], "strategy.spectral.k must be a positive"),
    (["strategy=agem", "strategy.agem.sample_size=0"], "strategy.agem.sample_size must be"),
    # issue 23: kept the last silently; took an unclosed quote literally
    (["seed=1", "seed=2"], "key 'seed' is given twice (seed=1, seed=2)"),
    (["strategy=naive", "+strategy=replay"], "key 'strategy' is given twice"),
    (["wandb.project='abc"], "wandb.project='abc has an unclosed quote"),
    (["model.hidden=[64,32"], "model.hidden=[64,32 has an unclosed bracket"),
]


def check_rejected(capsys, args, message, run_dir):
    code = main(["run", *args])
    out, err = capsys.readouterr()
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert "Traceback" not in err and out == ""
    assert len(err) < 1000  # a huge value is shortened, not echoed
    assert not run_dir.exists() or not any(run_dir.iterdir())


@pytest.mark.parametrize("args, message", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_input_is_one_error_line_and_exit_2(args, message, tmp_path, capsys):
    runs = tmp_path / "runs"
    base = [f"run.dir={runs}", "wandb.mode=disabled", "run.progress=false"]
    check_rejected(capsys, [*base, *args], message, runs)


def test_unusable_run_dirs_are_refused_before_any_work(tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    if os.geteuid() == 0:  # root writes through permission bits; sysfs refuses even root
        read_only = "/sys/cl-test-runs"
    else:
        (tmp_path / "ro").mkdir(mode=0o555)
        read_only = tmp_path / "ro"
    for run_dir, why in (
        (a_file, "is a file, not a folder"),
        (a_file / "sub", "Not a directory"),
        (read_only, "run.dir="),
    ):
        check_rejected(capsys, [f"run.dir={run_dir}", "wandb.mode=disabled"], why, tmp_path / "x")
    assert a_file.read_text() == "not a folder"


def test_a_taken_run_name_is_refused(tmp_path, capsys):
    (tmp_path / "runs" / "mine").mkdir(parents=True)
    (tmp_path / "runs" / "mine" / "notes.txt").write_text("keep me")
    args = [f"run.dir={tmp_path / 'runs'}", "run.name=mine", "wandb.mode=disabled"]
    assert main(["run", *args]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "runs" / "mine" / "notes.txt").read_text() == "keep me"


def test_int_for_a_float_option_is_converted_and_runs(tmp_path):
    """`strategy.gem.memory_strength=0` crashed quadprog with a dtype mismatch (issue #9)."""
    cfg, tree = config.load(["strategy=gem", "strategy.gem.memory_strength=0"])
    assert cfg.strategy["gem"]["memory_strength"] == 0.0
    assert isinstance(cfg.strategy["gem"]["memory_strength"], float)
    assert "memory_strength: 0.0" in config.to_yaml(tree)
    args = [
        f"run.dir={tmp_path}",
        "run.name=gem",
        "wandb.mode=disabled",
        "run.progress=false",
        "benchmark.source=digits",
        "benchmark.n_tasks=3",
        "model.hidden=[32]",
        "train.epochs=1",
        "strategy=gem",
        "strategy.gem.memory_strength=0",
        "strategy.gem.patterns_per_exp=32",
    ]
    assert main(["run", "-q", *args]) == 0
    assert json.loads((tmp_path / "gem" / "summary.json").read_text())["status"] == "finished"


def test_overrides_may_follow_options():
    r = subprocess.run(
        [sys.executable, "-m", "cl", "run", "seed=4", "-q", "train.epochs=3", "--print-config"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert "seed: 4" in r.stdout and "epochs: 3" in r.stdout


@pytest.mark.parametrize("download", ["false", "true"])
def test_failed_torchvision_load_leaves_the_disk_as_it_was(tmp_path, capsys, download):
    root = tmp_path / "missing" / "data"
    args = [
        f"run.dir={tmp_path / 'runs'}",
        "wandb.mode=disabled",
        "benchmark.source=mnist",
        f"data.root={root}",
        f"data.download={download}",
    ]
    assert main(["run", *args]) == 2
    assert "MNIST/raw/: train-images-idx3-ubyte" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no data root, no run folder


def test_load_run_reports_a_bad_middle_line_and_reads_on(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"iteration": 0}\n{"iteration": 1\n{"iteration": 2}\n{"iterat')
    with pytest.warns(UserWarning, match=r"metrics.jsonl:2: unreadable row skipped"):
        rows = read_rows(path)
    assert rows == [{"iteration": 0}, {"iteration": 2}]  # the torn last line: silently
    path.write_text('{"iteration": 0}\n{"iterat')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_rows(path) == [{"iteration": 0}]


# Other commands on bad folders and arguments (issue 23): {tmp} is the test's folder, with
# the folders `bad_folders` makes. Each crashed with a traceback, served forever or wrote over
# a run's data before.
ROW = '{"iteration": 0, "experience": 0, "eval/acc/task_0": 0.5}\n'
SPEC = {
    "name": "s",
    "path": "",
    "options": {"name": "s", "workers": 1},
    "metric": "acc",
    "goal": "maximize",
    "common": [],
    "swept": ["seed"],
    "trials": [{"name": "000-seed=0", "values": {"seed": "0"}}],
}
COMMAND_CASES = [
    (["report", "{tmp}/no_rows"], "no_rows/metrics.jsonl holds no rows"),
    (["report", "{tmp}/bad_summary"], "bad_summary/summary.json is not valid JSON"),
    (["report", "{tmp}/run", "-o", "{tmp}/run/metrics.jsonl"], "is not a report cl wrote"),
    (["report", "{tmp}/run", "-o", "{tmp}/notes.html"], "is not a report cl wrote"),
    (["report", "{tmp}/run", "-o", "{tmp}/run"], "run is a folder; give a file name"),
    (["report", "{tmp}/run", "-o", "{tmp}/notes.html/report.html"], "cannot write the report"),
    (["dashboard", "{tmp}/run", "--port", "70000"], "--port 70000 must be in 0 .. 65535"),
    (["dashboard", "{tmp}/run", "--port", "-1"], "--port -1 must be in 0 .. 65535"),
    (["dashboard", "{tmp}/run", "--host", "no-such-host.invalid"], "cannot serve on no-such"),
    (["dashboard", "{tmp}/empty"], "empty is neither a run folder"),
    (["sweep", "--resume", "{tmp}/sweep_empty"], "sweep.yaml is not a sweep.yaml cl wrote"),
    (["sweep", "--resume", "{tmp}/sweep_malformed"], "sweep_malformed/sweep.yaml: while"),
    (["sweep", "--resume", "{tmp}/sweep_shape"], "'trials' must be a list"),
    (["sweep", "--resume", "{tmp}/journal_list"], "trials.jsonl:2 is not a trial record"),
    (["sweep", "--resume", "{tmp}/journal_dict"], "trials.jsonl:1 is not a trial record"),
    (
        ["reproduce", "stability_gap", "--seeds", "0", "--out", "{tmp}/repro"],
        "--seeds 0: the number of seeds must be",
    ),
    (
        ["reproduce", "all", "--seeds", "-2", "--out", "{tmp}/repro"],
        "--seeds -2: the number of seeds must be",
    ),
]


@pytest.fixture
def bad_folders(tmp_path):
    for name in ("no_rows", "bad_summary", "run", "empty"):
        (tmp_path / name).mkdir()
    (tmp_path / "no_rows" / "metrics.jsonl").write_text("")
    (tmp_path / "bad_summary" / "metrics.jsonl").write_text(ROW)
    (tmp_path / "bad_summary" / "summary.json").write_text("{not json")
    (tmp_path / "run" / "metrics.jsonl").write_text(ROW)
    (tmp_path / "notes.html").write_text("<html>my notes</html>")
    for name, text in (("sweep_empty", ""), ("sweep_malformed", "a: [")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "sweep.yaml").write_text(text)
    for name, journal in (
        ("sweep_shape", None),
        ("journal_list", '{"trial": "000-seed=0", "state": "queued"}\n[1, 2]\n'),
        ("journal_dict", '{"x": 1}\n'),
    ):
        (tmp_path / name).mkdir()
        write_spec(tmp_path / name, SPEC | ({"trials": "000"} if journal is None else {}))
        if journal:
            (tmp_path / name / "trials.jsonl").write_text(journal)
    return tmp_path


def dashboard(args):
    """`cl dashboard` in a subprocess: where it serves instead of refusing, the timeout ends
    it (a failure) instead of hanging the tests."""
    try:
        r = subprocess.run(
            [sys.executable, "-m", "cl", *args], capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"cl {' '.join(args)} served instead of refusing")
    return r.returncode, r.stdout, r.stderr


def check_command_rejected(capsys, args, message):
    if args[0] == "dashboard":
        code, out, err = dashboard(args)
    else:
        code = main(args)
        out, err = capsys.readouterr()
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err, err
    assert "Traceback" not in err and out == ""


@pytest.mark.parametrize(
    "args, message", COMMAND_CASES, ids=[" ".join(c[0])[:60] for c in COMMAND_CASES]
)
def test_bad_command_input_is_one_error_line_and_exit_2(args, message, bad_folders, capsys):
    before = {p: p.read_bytes() for p in bad_folders.rglob("*") if p.is_file()}
    check_command_rejected(capsys, [a.format(tmp=bad_folders) for a in args], message)
    after = {p: p.read_bytes() for p in bad_folders.rglob("*") if p.is_file()}
    assert after == before  # nothing written, nothing replaced


def test_dashboard_on_a_port_in_use_is_refused(bad_folders, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["dashboard", str(bad_folders / "run"), "--port", str(port)]
        check_command_rejected(capsys, args, f"cannot serve on 127.0.0.1:{port}")


def test_report_into_an_unwritable_place_is_refused(bad_folders, capsys):
    if os.geteuid() == 0:  # root writes through permission bits; sysfs refuses even root
        out = "/sys/cl-test-report/report.html"
    else:
        (bad_folders / "ro").mkdir(mode=0o555)
        out = bad_folders / "ro" / "report.html"
    check_command_rejected(
        capsys, ["report", str(bad_folders / "run"), "-o", str(out)], "cannot write the report"
    )
