"""Exact resume: a run killed at a seeded random iteration (a real signal to a child process)
and resumed ends with the same rows, bit for bit, and the same summary as an uninterrupted run.

Children run `tests/helpers/kill_at.py`, which signals itself in the middle of a training
iteration. Everything here runs on one torch thread (children and this process), so the
uninterrupted reference in this process and the killed child compute identically.
"""

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import TINY

import cl
from cl import api
from cl.catalog import STRATEGIES
from cl.cli import main
from cl.errors import UserError
from cl.store import read_rows

HELPER = Path(__file__).parent / "helpers" / "kill_at.py"
BASE = [
    *TINY,
    "train.epochs=2",  # kills land mid-epoch of a multi-epoch experience too
    "eval.subset=100",
    "plasticity.every=5",
    "run.checkpoint_every=7",
]
SMALL = {  # memories that fit the tiny stream
    "gem": ["strategy.gem.patterns_per_exp=32"],
    "agem": ["strategy.agem.patterns_per_exp=32", "strategy.agem.sample_size=16"],
    "weight_aligning": ["strategy.weight_aligning.mem_size=60"],
    "replay": ["strategy.replay.mem_size=60"],
    "rer": ["strategy.rer.mem_size=60"],
}
# (label, strategy, extra overrides, signal): every strategy, compositions, every signal
CASES = [(name, name, SMALL.get(name, []), "KILL") for name in STRATEGIES]
CASES += [
    ("replay+center_loss", "[replay,center_loss]", SMALL["replay"], "KILL"),
    # projections on replay's memory; their statistics mid-row at the stop (eval.every=3)
    ("replay+agem", "[replay,agem]", [*SMALL["replay"], "strategy.replay.new_weight=1/k"], "KILL"),
    (
        "replay+gem-sigterm",
        "[replay,gem]",
        [*SMALL["replay"], "strategy.gem.sample_size=8", "eval.every=3"],
        "TERM",
    ),
    ("l2_init+cbp", "[l2_init,cbp]", [], "KILL"),
    # the old model, projector and its momentum; the meta-net, its Adam state, the warm start
    ("replay+bfp", "[replay,bfp]", SMALL["replay"], "KILL"),
    (
        "rer-warm",
        "rer",
        [*SMALL["rer"], "strategy.rer.warm_start=0", "strategy.rer.meta_every=2"],
        "KILL",
    ),
    ("reservoir", "replay", ["strategy.replay.buffer=reservoir"], "KILL"),
    # the NCM classifier's class means, recomputed from the memory after the resume
    ("replay-ncm", "[replay,agem]", [*SMALL["replay"], "strategy.replay.classifier=ncm"], "KILL"),
    ("wa-sigterm", "weight_aligning", SMALL["weight_aligning"], "TERM"),
    ("gem-ctrl-c", "gem", SMALL["gem"], "INT"),
    ("center-double-ctrl-c", "center_loss", ["eval.every=3"], "INT2"),
    ("wandb", "replay", ["wandb.mode=offline"], "KILL"),
]
EXIT = {"KILL": -9, "TERM": 143, "INT": 130, "INT2": 130}
NO_CHECKPOINTS = ("no-checkpoints", "naive", ["run.checkpoint=false"], "TERM")


def overrides(case, run_dir, name):
    label, strategy, extra, _ = case
    keys = {e.split("=", 1)[0] for e in extra}  # the CLI refuses a key given twice
    base = [b for b in BASE if b.split("=", 1)[0] not in keys]
    return [*base, f"strategy={strategy}", *extra, f"run.dir={run_dir}", f"run.name={name}"]


def kill_iteration(label: str) -> int:
    """A seeded random iteration after the first checkpoint (7) and before the end (90)."""
    return random.Random(label).randint(9, 85)


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def killed(tmp_path_factory, one_thread):
    """Every case's run, signalled at its iteration, in children of two helper processes
    (one per core): {label: (folder, exit code, stderr)}."""
    root = tmp_path_factory.mktemp("killed")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    jobs = [
        {
            "signal": case[3],
            "at": kill_iteration(case[0]),
            "args": ["-q", *overrides(case, root, case[0])],
            "stderr": str(root / f"{case[0]}.err"),
        }
        for case in [*CASES, NO_CHECKPOINTS]
    ]
    halves = [([*CASES, NO_CHECKPOINTS][i::2], jobs[i::2]) for i in (0, 1)]
    procs = []
    for i, (_, half) in enumerate(halves):
        (root / f"jobs-{i}.json").write_text(json.dumps(half))
        cmd = [sys.executable, str(HELPER), str(root / f"jobs-{i}.json")]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True))
    out = {}
    for (cases, _), proc in zip(halves, procs, strict=True):
        codes = json.loads(proc.communicate(timeout=900)[0])
        for (label, *_), code in zip(cases, codes, strict=True):
            out[label] = (root / label, code, (root / f"{label}.err").read_text())
            shutil.copytree(root / label, root / f"pristine-{label}")  # tests resume originals
    return out


def uninterrupted(case, tmp_path):
    return cl.run(overrides(case, tmp_path, "reference"), quiet=True)


def strip_time(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "wall_time_s"}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_killed_and_resumed_run_equals_the_uninterrupted_one(case, killed, tmp_path):
    label, _, _, signal_name = case
    folder, code, err = killed[label]
    at = kill_iteration(label)
    assert code == EXIT[signal_name], err
    rows_before = read_rows(folder / "metrics.jsonl")
    ckpt = torch.load(folder / "checkpoint.pt", weights_only=True)["context"]["iteration"]
    if signal_name == "KILL":  # inside iteration `at`: rows of iterations 0 .. at - 1
        assert not (folder / "summary.json").exists()
        assert len(rows_before) == at and ckpt < at
    else:  # a signal the run handles: interrupted, every row kept, resumable
        s = json.loads((folder / "summary.json").read_text())
        assert s["status"] == "interrupted" and s["resume"] == f"cl run --resume {folder}"
        assert "resume with: cl run --resume" in err and "Traceback" not in err
        assert len(rows_before) == s["n_eval_rows"]
        if signal_name in ("TERM", "INT"):  # it stops after the iteration, with a checkpoint
            assert s["checkpoint_iteration"] == s["n_iterations"] == ckpt == at
        else:  # a second signal stops at once, inside iteration `at`
            assert s["n_iterations"] == at - 1 and s["checkpoint_iteration"] == ckpt < at

    resumed = api.resume(folder, quiet=True)
    reference = uninterrupted(case, tmp_path)
    rows = (folder / "metrics.jsonl").read_bytes()
    assert rows == (reference.path / "metrics.jsonl").read_bytes()  # every value, bit for bit
    assert strip_time(resumed.summary) == strip_time(reference.summary)
    assert resumed.summary["status"] == "finished"
    env = json.loads((folder / "environment.json").read_text())
    assert [r["iteration"] for r in env["resumes"]] == [ckpt]
    if label == "wandb":
        check_wandb_holds_each_row_once(folder)


def check_wandb_holds_each_row_once(folder: Path):
    """Offline W&B writes one folder per process (same run id); together they hold each
    row exactly once, equal to the local store (`wandb leet inspect --json`)."""
    segments = sorted((folder / "wandb").glob("offline-run-*"))
    assert len(segments) == 2 and len({s.name.rsplit("-", 1)[1] for s in segments}) == 1
    wandb_bin = Path(sys.executable).parent / "wandb"
    history = []
    for seg in segments:
        r = subprocess.run(
            [str(wandb_bin), "leet", "inspect", "--json", str(seg)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr
        records = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
        history += [r["history"] for r in records if r.get("type") == "history"]
    rows = [h["item"] for h in history if "experience" in h["item"]]
    local = read_rows(folder / "metrics.jsonl")
    assert [h["iteration"] for h in rows] == [row["iteration"] for row in local]
    for h, row in zip(rows, local, strict=True):
        for key, value in row.items():
            if value is None:
                assert key not in h
            else:
                assert h[key] == pytest.approx(value, rel=1e-12, abs=1e-12), key


def test_a_run_without_checkpoints_stops_cleanly_but_cannot_resume(killed, capsys):
    folder, code, err = killed[NO_CHECKPOINTS[0]]
    assert code == 143 and f"interrupted: {folder} has no checkpoint to resume from" in err
    s = json.loads((folder / "summary.json").read_text())
    assert s["status"] == "interrupted" and s["checkpoint_iteration"] is None
    assert len(read_rows(folder / "metrics.jsonl")) == s["n_eval_rows"] > 0
    assert main(["run", "--resume", str(folder)]) == 2
    assert "has no checkpoint.pt" in capsys.readouterr().err


def test_checkpointer_saves_at_boundaries_every_n_iterations_minutes_and_on_stop(monkeypatch):
    from types import SimpleNamespace

    from cl import checkpoint

    done = []
    monkeypatch.setattr(checkpoint, "save", lambda folder, data: done.append(data["at"]))

    def saves(every=5, minutes=0.0, on=True):
        run = SimpleNamespace(checkpoint=on, checkpoint_every=every, checkpoint_minutes=minutes)
        state = SimpleNamespace(ctx=SimpleNamespace(iteration=0))
        saver = checkpoint.Checkpointer(state, Path("."), lambda: {"at": state.ctx.iteration}, run)
        done.clear()
        for iteration, boundary, stop in ((1, False, 0), (5, False, 0), (6, True, 0), (7, 0, 1)):
            state.ctx.iteration = iteration
            saver(boundary, stop=stop)
        return list(done)

    assert saves() == [5, 6, 7]  # every 5 iterations, the experience end, the stop
    assert saves(every=1000) == [6, 7]
    assert saves(every=1000, minutes=1e-9) == [1, 5, 6, 7]  # overdue at every safe point
    assert saves(on=False) == []


def test_checkpoints_hold_only_safe_types(killed):
    """Every strategy's state is tensors, numbers, strings, lists and dicts (weights_only)."""
    safe = (torch.Tensor, int, float, str, bool, type(None))

    def walk(value, where):
        if isinstance(value, dict):
            for k, v in value.items():
                assert isinstance(k, int | str | tuple), where
                walk(v, f"{where}.{k}")
        elif isinstance(value, list | tuple):
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]")
        else:
            assert isinstance(value, safe), (where, type(value))

    seen = set()
    for label, (folder, _, _) in killed.items():
        if label == NO_CHECKPOINTS[0]:
            continue
        ckpt = torch.load(folder / "checkpoint.pt", weights_only=True)
        walk(ckpt, label)
        seen |= set(ckpt["strategies"])
    assert seen == set(STRATEGIES)


def test_resume_of_a_finished_run_says_so(tmp_path, one_thread, capsys):
    run = cl.run([*BASE, "strategy=naive", f"run.dir={tmp_path}", "run.name=done"], quiet=True)
    before = (run.path / "metrics.jsonl").read_bytes()
    assert main(["run", "--resume", str(run.path)]) == 0
    assert "already finished; nothing to resume" in capsys.readouterr().out
    assert (run.path / "metrics.jsonl").read_bytes() == before


def interrupted_copy(killed, tmp_path) -> Path:
    """A copy of the SIGTERM'd child's folder (interrupted, resumable)."""
    folder = tmp_path / "copy"
    original = killed["wa-sigterm"][0]
    shutil.copytree(original.with_name(f"pristine-{original.name}"), folder)
    return folder


def snapshot(folder: Path) -> dict:
    """Every file's bytes but the writer lock's (which names the last process that held it)."""
    files = (p for p in folder.rglob("*") if p.is_file() and p.name != ".lock")
    return {p.relative_to(folder): p.read_bytes() for p in files}


@pytest.mark.parametrize(
    "damage, args, message",
    [
        ("none", ["seed=2"], "'seed' cannot change on resume"),
        ("none", ["strategy=naive"], "'strategy' cannot change on resume"),
        ("none", ["optim.lr=0.5"], "'optim.lr' cannot change on resume"),
        ("garbage-row", [], "metrics.jsonl line 5 is unreadable (not a JSON row)"),
        ("truncate", [], "is corrupt or truncated"),
        ("garbage", [], "is corrupt or truncated"),
        ("old-format", [], "has checkpoint format 0"),
        ("pickle", [], "is corrupt or truncated"),  # a pickled object is refused, not run
        ("config", [], "config.yaml changed after the checkpoint"),
        ("not-a-run", [], "is not a cl run folder"),
    ],
)
def test_bad_resumes_exit_2_and_leave_the_folder_alone(
    killed, tmp_path, capsys, damage, args, message
):
    folder = interrupted_copy(killed, tmp_path)
    ckpt = folder / "checkpoint.pt"
    if damage == "garbage-row":  # a damaged row among those the checkpoint keeps
        lines = (folder / "metrics.jsonl").read_bytes().split(b"\n")
        lines[4] = b'{"iteration": 4, "eval/acc'
        (folder / "metrics.jsonl").write_bytes(b"\n".join(lines))
    elif damage == "truncate":
        ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    elif damage == "garbage":
        ckpt.write_bytes(b"not a checkpoint")
    elif damage == "old-format":
        data = torch.load(ckpt, weights_only=True)
        torch.save({**data, "format": 0}, ckpt)
    elif damage == "pickle":
        torch.save({"format": 1, "payload": UserError("x")}, ckpt)
    elif damage == "config":
        with open(folder / "config.yaml", "a") as f:
            f.write("# edited\n")
    elif damage == "not-a-run":
        (folder / "config.yaml").unlink()
    before = snapshot(folder)
    assert main(["run", "--resume", str(folder), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err
    assert snapshot(folder) == before


def test_a_run_killed_before_its_first_checkpoint_runs_again_from_the_start(tmp_path, one_thread):
    """No checkpoint yet: `--resume` truncates the rows and runs the stream again in the same
    folder, under the same W&B run id; W&B still holds each row once."""
    case = ("early", "replay", [*SMALL["replay"], "wandb.mode=offline"], "KILL")
    job = {
        "signal": "KILL",
        "at": 4,  # before the first checkpoint (iteration 7)
        "args": ["-q", *overrides(case, tmp_path, "early")],
        "stderr": str(tmp_path / "early.err"),
    }
    (tmp_path / "job.json").write_text(json.dumps([job]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, str(HELPER), str(tmp_path / "job.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert json.loads(r.stdout) == [-9], r.stderr
    folder = tmp_path / "early"
    assert not (folder / "checkpoint.pt").exists() and len(read_rows(folder / "metrics.jsonl")) == 4
    resumed = api.resume(folder, quiet=True)
    reference = uninterrupted(case, tmp_path)
    assert (folder / "metrics.jsonl").read_bytes() == (
        reference.path / "metrics.jsonl"
    ).read_bytes()
    assert strip_time(resumed.summary) == strip_time(reference.summary)
    env = json.loads((folder / "environment.json").read_text())
    assert [r["iteration"] for r in env["resumes"]] == [0]
    check_wandb_holds_each_row_once(folder)


def test_harmless_overrides_are_allowed_on_resume(killed, tmp_path, one_thread):
    folder = interrupted_copy(killed, tmp_path)
    run = api.resume(folder, ["run.progress=true", "run.checkpoint_every=3"], quiet=True)
    assert run.summary["status"] == "finished"


def test_cl_does_not_import_strategies():
    """The platform owns the hook contract and loads strategies by name (catalog)."""
    root = Path(cl.__file__).parent
    for path in root.glob("*.py"):
        text = path.read_text()
        assert "import strategies" not in text and "from strategies" not in text, path
