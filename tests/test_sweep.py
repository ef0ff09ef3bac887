"""`cl sweep`: the grammar and W&B spec files, a local sweep end to end, failures, resume
after SIGKILL, the same sweep on a real local Ray head, and bad input."""

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

import cl
from cl.cli import main
from cl.errors import UserError
from cl.sweep.folder import last_states
from cl.sweep.spec import from_overrides, from_wandb_file, split_top

BIN = Path(sys.executable).parent
TINY = [
    "benchmark.source=digits",
    "benchmark.n_tasks=3",
    "model.hidden=[32]",
    "train.epochs=2",
    "eval.subset=100",
]
# tables compared between sweeps: everything but times
TIMING = ("wall_time_s", "attempts")


def test_multirun_grammar():
    assert split_top("[replay,center_loss],naive") == ["[replay,center_loss]", "naive"]
    spec = from_overrides(["strategy=[replay,center_loss],naive", "seed=range(0,3)", "x=1"])
    assert len(spec.trials) == 6 and spec.common == ["x=1"]
    assert spec.trials[0].values == {"strategy": "[replay,center_loss]", "seed": "0"}
    assert spec.trials[-1].values == {"strategy": "naive", "seed": "2"}
    assert spec.trials[0].name == "000-strategy=replay+center_loss-seed=0"
    assert (
        len(from_overrides(["strategy=naive,replay,gem", "optim.lr=0.01,0.1", "seed=0,1,2"]).trials)
        == 18
    )
    assert [t.values["k"] for t in from_overrides(["k='a,b',c"]).trials] == ["a,b", "c"]
    with pytest.raises(UserError, match="empty range"):
        from_overrides(["seed=range(3,3)"])
    with pytest.raises(UserError, match="11 trials, more than sweep.max_trials=10"):
        from_overrides(["seed=range(0,11)"], max_trials=10)
    assert len(from_overrides(["seed=range(0,11)"], max_trials=11).trials) == 11


def test_a_large_seed_sweep_is_checked_quickly(capsys):
    """20,000 trials of two configurations: each configuration is composed once, the other
    trials only differ in a plain seed (issue 23: 90 s of silence for a large sweep)."""
    from cl import config
    from cl.sweep.driver import plan, validate_trials

    spec, _ = plan(["seed=range(0,10000)", "strategy=naive,replay", "sweep.max_trials=20000"], None)
    trials = [{"name": t.name, "values": t.values} for t in spec.trials]
    data = {"path": "/x", "name": "x", "common": [], "swept": ["seed", "strategy"]}
    calls = []
    load = config.load
    config.load = lambda overrides: calls.append(overrides) or load(overrides)
    try:
        validate_trials(data | {"trials": trials})
        assert len(calls) == 2
        trials[-1]["values"]["seed"] = "-1"  # a bad seed is still composed, and refused
        with pytest.raises(UserError, match="seed=-1 must be an integer"):
            validate_trials(data | {"trials": trials})
    finally:
        config.load = load


def test_wandb_spec_files(tmp_path, capsys):
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "program: train.py\nmethod: grid\nname: mine\nmetric: {name: min_acc, goal: maximize}\n"
        "parameters:\n  strategy: {values: [naive, replay]}\n  seed: {values: [0, 1]}\n"
        "  optim: {parameters: {lr: {value: 0.05}}}\n  train.epochs: {min: 1, max: 2}\n"
    )
    s = from_wandb_file(spec)
    assert len(s.trials) == 8 and "optim.lr=0.05" in s.common and s.metric == "min_acc"
    assert s.options == {"name": "mine"} and "program" in s.notes[0]
    spec.write_text(
        "method: random\nrun_cap: 5\nparameters:\n"
        "  optim.lr: {distribution: log_uniform_values, min: 0.001, max: 0.1}\n"
        "  strategy: {values: [naive, replay]}\n  seed: {value: 0}\n"
    )
    a, b = from_wandb_file(spec), from_wandb_file(spec)
    assert [t.values for t in a.trials] == [t.values for t in b.trials] and len(a.trials) == 5
    lrs = [float(t.values["optim.lr"]) for t in a.trials]
    assert all(0.001 <= v <= 0.1 for v in lrs) and len(set(lrs)) == 5
    for text, message in [
        ("method: bayes\nparameters: {a: {values: [1]}}\n", "bayes needs the W&B server"),
        ("method: random\nparameters: {a: {values: [1]}}\n", "needs run_cap"),
        ("method: grid\nparameters: {a: {min: 0.1, max: 1.0}}\n", "needs method: random"),
        ("method: grid\nfoo: 1\nparameters: {a: {values: [1]}}\n", "unknown sweep keys ['foo']"),
        (
            "method: random\nrun_cap: 1\nparameters: {a: {distribution: zipf}}\n",
            "unknown distribution 'zipf'",
        ),
    ]:
        spec.write_text(text)
        with pytest.raises(UserError) as err:
            from_wandb_file(spec)
        assert message in str(err.value)


def sweep(args, tmp_path, name, quiet=True):
    code = main(
        ["sweep", *(["-q"] if quiet else []), *args, f"sweep.dir={tmp_path}", f"sweep.name={name}"]
    )
    return code, tmp_path / name


def comparable(table):
    return table.drop(columns=[c for c in table.columns if c.startswith(TIMING)])


def test_local_sweep_end_to_end(tmp_path, capsys):
    args = ["strategy=naive,replay", "seed=0,1", *TINY, "wandb.mode=offline", "sweep.workers=2"]
    code, folder = sweep(args, tmp_path, "e2e", quiet=False)
    out = capsys.readouterr().out
    assert code == 0
    s = cl.load_sweep(folder)
    assert len(s.trials) == 4 and set(s.trials["status"]) == {"finished"}
    assert s.trials["acc"].notna().all() and set(s.trials["strategy"]) == {"naive", "replay"}
    agg = s.aggregate.set_index("config")
    assert list(agg["n"]) == [2, 2]
    replay = s.trials[s.trials["strategy"] == "replay"]["acc"]
    assert agg.loc["strategy=replay", "acc_mean"] == pytest.approx(replay.mean())
    assert agg.loc["strategy=replay", "acc_std"] == pytest.approx(replay.std(ddof=1))
    assert list(agg["acc_mean"]) == sorted(agg["acc_mean"], reverse=True)  # sorted by acc
    assert "strategy=replay" in out and " ± " in out and "min_acc" in out
    for trial in s.trials["trial"]:
        run = cl.load_run(folder / "runs" / trial)
        assert run.summary["status"] == "finished"
        (seg,) = (run.path / "wandb").glob("offline-run-*")
        r = subprocess.run(
            [str(BIN / "wandb"), "leet", "inspect", "--json", str(seg)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        record = next(
            json.loads(line)["run"] for line in r.stdout.splitlines() if '"type":"run"' in line
        )
        assert (
            record["run_group"] == "e2e"
            and record["job_type"] == f"strategy={next(iter(run.config['strategy']))}"
            and "seed" not in record["job_type"]
        )
    states = [
        json.loads(line)["state"] for line in (folder / "trials.jsonl").read_text().splitlines()
    ]
    assert states.count("finished") == 4 and states.count("running") == 4


def test_a_diverging_trial_fails_alone_and_is_retried(tmp_path, capsys):
    args = ["strategy=naive", "optim.lr=0.05,1e12", *TINY, "wandb.mode=disabled", "sweep.retries=1"]
    code, folder = sweep(args, tmp_path, "nan")
    assert code == 1
    assert "1 trial(s) failed: 001-optim.lr=1e12" in capsys.readouterr().err
    s = cl.load_sweep(folder)
    assert dict(zip(s.trials["trial"], s.trials["status"], strict=True)) == {
        "000-optim.lr=0.05": "finished",
        "001-optim.lr=1e12": "failed",
    }
    records = [json.loads(x) for x in (folder / "trials.jsonl").read_text().splitlines()]
    failed = [r for r in records if r["state"] == "failed"]
    assert [r["attempt"] for r in failed] == [1, 2] and "training loss became" in failed[0]["error"]
    assert len(list((folder / "failed").iterdir())) == 1  # the first attempt's folder is kept
    assert list(s.aggregate["n"]) == [1]


def wait_for(predicate, timeout=300):
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, "timed out"
        time.sleep(0.1)


def test_sweep_killed_with_sigkill_resumes_to_the_same_tables(tmp_path):
    args = [
        "strategy=naive,replay",
        "seed=0,1",
        *(a for a in TINY if not a.startswith("train.epochs=")),  # a key given twice: error
        "train.epochs=6",
        "run.checkpoint_every=10",
        "wandb.mode=disabled",
        "sweep.workers=2",
        "sweep.threads=1",
    ]
    cmd = [
        sys.executable,
        "-m",
        "cl",
        "sweep",
        "-q",
        *args,
        f"sweep.dir={tmp_path}",
        "sweep.name=killed",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    folder = tmp_path / "killed"

    def mid_way():  # a trial finished; another one checkpointed, early in its run
        states = last_states(folder) if (folder / "trials.jsonl").exists() else {}
        done = [s for s in states.values() if s["state"] == "finished"]
        early = [
            c
            for c in folder.glob("runs/*/checkpoint.pt")
            if not (c.parent / "summary.json").exists()
            and (c.parent / "metrics.jsonl").read_bytes().count(b"\n") < 120  # of 271
        ]
        return len(done) >= 1 and early

    try:
        wait_for(mid_way)
        workers = psutil.Process(proc.pid).children()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    psutil.wait_procs(workers, timeout=30)  # they die with the driver
    assert not [w for w in workers if w.is_running()]
    before = last_states(folder)
    assert 1 <= sum(s["state"] == "finished" for s in before.values()) < 4
    assert main(["sweep", "-q", "--resume", str(folder)]) == 0
    records = [json.loads(x) for x in (folder / "trials.jsonl").read_text().splitlines()]
    finished = [r["trial"] for r in records if r["state"] == "finished"]
    assert sorted(finished) == sorted(set(finished)) and len(finished) == 4  # exactly once each
    assert any(r.get("mode") == "resume" for r in records)  # a stopped trial went on
    code, reference = sweep(args, tmp_path, "reference")
    assert code == 0
    a, b = cl.load_sweep(folder), cl.load_sweep(reference)
    assert comparable(a.trials).equals(comparable(b.trials))
    assert comparable(a.aggregate).equals(comparable(b.aggregate))


@pytest.fixture
def ray_head():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = [
        str(BIN / "ray"),
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        "--num-cpus=2",
        "--include-dashboard=false",
        "--disable-usage-stats",
    ]
    try:
        subprocess.run(start, check=True, capture_output=True, timeout=180)
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(BIN / "ray"), "stop", "--force"], capture_output=True, timeout=180)


def test_the_same_sweep_on_a_local_ray_head(tmp_path, ray_head):
    args = ["strategy=naive,replay", "seed=0,1", *TINY, "wandb.mode=disabled", "sweep.threads=1"]
    code, on_ray = sweep(
        [*args, "sweep.executor=ray", f"sweep.address={ray_head}"], tmp_path, "ray"
    )
    assert code == 0
    code, local = sweep([*args, "sweep.workers=2"], tmp_path, "local")
    assert code == 0
    a, b = cl.load_sweep(on_ray), cl.load_sweep(local)
    assert set(a.trials["status"]) == {"finished"} and len(a.trials) == 4
    assert comparable(a.trials).equals(comparable(b.trials))  # one thread each: same numbers


@pytest.mark.parametrize(
    "args, message",
    [
        (["sweep.nope=1"], "unknown key 'sweep.nope'"),
        (
            ["strategy=naive,nope"],
            "trial 001-strategy=nope (strategy=nope): unknown strategy 'nope'",
        ),
        (["seed=0,1", "optim.lr=-1"], "trial 000-seed=0 (seed=0): optim.lr=-1.0 must be > 0"),
        (["seed=0,1", "run.dir=/tmp"], "run.dir is set by the sweep"),
        (["seed=0,1", "run.progress=true"], "run.progress is set by the sweep"),
        (["seed=0,1", "wandb.group=other"], "wandb.group is set by the sweep"),
        (["seed=0,1", "run.name=x"], "run.name is set by the sweep"),
        (["run.progress=true,false"], "run.progress is set by the sweep for each trial; it"),
        (["seed=0,1", "sweep.workers=0"], "sweep.workers=0 must be a positive integer"),
        (["seed=0,1", "sweep.metric=loss"], "sweep.metric='loss'"),
        (["seed=0,1", "sweep.executor=dask"], "sweep.executor='dask'"),
        # issue 23: the last one kept silently; 90 s of silence before the first trial
        (["seed=0,1", "seed=2"], "key 'seed' is given twice (seed=0,1, seed=2)"),
        (["seed=0,1", "sweep.workers=1", "sweep.workers=2"], "key 'sweep.workers' is given twice"),
        (["sweep.metric='abc"], "sweep.metric='abc: not a valid value"),
        (["seed=0,1", "wandb.project='abc"], "wandb.project='abc has an unclosed quote"),
        (["seed=range(0,1000000)"], "1,000,000 trials, more than sweep.max_trials=10,000"),
        (["seed=range(0,1000000000)"], "trials, more than sweep.max_trials"),
        (["seed=range(0,9999999999999999999999)"], "trials, more than sweep.max_trials"),
        (["seed=range(0,3)", "optim.lr=1,2", "sweep.max_trials=5"], "6 trials, more than"),
        (["seed=0", "sweep.max_trials=0"], "sweep.max_trials=0 must be a positive integer"),
    ],
)
def test_bad_sweep_input_exits_2_before_any_trial(args, message, tmp_path, capsys):
    code, folder = sweep(args, tmp_path, "bad")
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert not folder.exists()


def test_owned_keys_given_as_the_sweep_sets_them_are_accepted(tmp_path, capsys):
    """`run.progress=false` and `wandb.group=<the sweep's name>` agree with what the sweep
    does for every trial anyway: the sweep runs."""
    args = ["seed=0", *TINY, "wandb.mode=disabled", "run.progress=false", "wandb.group=agree"]
    code, folder = sweep(args, tmp_path, "agree")
    assert code == 0, capsys.readouterr().err
    assert set(cl.load_sweep(folder).trials["status"]) == {"finished"}


def test_resume_needs_a_sweep_folder(tmp_path, capsys):
    assert main(["sweep", "--resume", str(tmp_path)]) == 2
    assert "is not a cl sweep folder" in capsys.readouterr().err
