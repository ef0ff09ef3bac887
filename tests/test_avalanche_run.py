"""Avalanche strategies and plugins as cl strategies (`strategy=avalanche.<Name>`): the
grammar and its errors, the run through Avalanche's loop under cl's monitor, the run folder,
and a smoke run of each of the issue's strategies."""

import json

import pytest
import torch
from torch.nn import functional as F

import cl
from cl import api, config
from cl.cli import main
from cl.errors import UserError

pytestmark = pytest.mark.usefixtures("avalanche_home")  # tests/conftest.py

TINY = [
    "model.hidden=[32]",
    "train.epochs=1",
    "benchmark.samples_per_task=64",
    "eval.subset=100",
    "plasticity.every=0",
]


def test_grammar_puts_arguments_under_strategy_avalanche():
    cfg, tree = config.load(
        [
            "strategy=[avalanche.Replay,avalanche.EWCPlugin]",
            "strategy.avalanche.EWCPlugin.ewc_lambda=2",
        ]
    )
    assert list(cfg.strategy) == ["avalanche"]
    assert list(cfg.strategy["avalanche"]) == ["Replay", "EWCPlugin"]
    assert cfg.strategy["avalanche"]["EWCPlugin"]["ewc_lambda"] == 2.0  # int -> float
    assert cfg.strategy["avalanche"]["Replay"]["mem_size"] == 200  # Avalanche's default
    assert cfg.run.checkpoint is False  # no checkpoints: such runs cannot be resumed
    assert "ewc_lambda: 2" in config.to_yaml(tree)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["strategy=avalanche.EWC"], r"needs strategy.avalanche.EWC.ewc_lambda=<float>"),
        (
            ["strategy=avalanche.EWC", "strategy.avalanche.EWC.lam=1"],
            r"unknown key 'strategy.avalanche.EWC.lam'; valid keys in strategy.avalanche.EWC: "
            r"ewc_lambda, mode",
        ),
        (
            ["strategy=avalanche.EWC", "strategy.avalanche.EWC.ewc_lambda=big"],
            r"ewc_lambda='big' has the wrong type; expected float \(valid keys: ewc_lambda",
        ),
        (
            ["strategy=avalanche.Replay", "strategy.avalanche.Replay.mem_size=1.5"],
            r"mem_size=1.5 has the wrong type; expected int",
        ),
        (
            ["strategy=avalanche.EWC", "strategy.avalanche.EWC.train_mb_size=8"],
            r"train_mb_size is set by cl from train.batch_size",
        ),
        (["strategy=avalanche.Foo"], r"unknown strategy 'avalanche.Foo'; .*avalanche.EWC"),
        (["strategy=[replay,avalanche.EWC]"], r"mixes cl and Avalanche strategies"),
        (
            ["strategy=[avalanche.Naive,avalanche.GDumb]"],
            r"2 Avalanche strategies \(Naive, GDumb\); one strategy at most",
        ),
        (["strategy=avalanche.ICaRL"], r"cannot run under cl: it needs feature_extractor"),
        (["strategy=avalanche.EvaluationPlugin"], r"cl does the evaluation"),
        (
            ["strategy=avalanche.Naive", "run.checkpoint_every=10"],
            r"'run.checkpoint_every' does not apply .* cannot be resumed",
        ),
        (  # the constructor's own check: EWC's decay_factor needs mode=online
            [
                "strategy=avalanche.EWC",
                "strategy.avalanche.EWC.ewc_lambda=1",
                "strategy.avalanche.EWC.decay_factor=0.5",
            ],
            r"strategy.avalanche.EWC: ",
        ),
    ],
)
def test_bad_avalanche_options_stop_before_any_work(overrides, message, tmp_path):
    with pytest.raises(UserError, match=message):
        config.load([f"run.dir={tmp_path}", *overrides])
    assert main(["run", f"run.dir={tmp_path}", *overrides]) == 2
    assert not any(tmp_path.iterdir())  # no run folder


def test_list_strategies_lists_avalanche_from_the_installed_package(capsys):
    assert main(["list", "strategies"]) == 0
    out = capsys.readouterr().out
    assert "replay" in out and "avalanche (avalanche-lib 0.6" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  avalanche.")}
    assert "needs ewc_lambda" in lines["avalanche.EWC"]
    assert "plugin" in lines["avalanche.LwFPlugin"] and "alpha" in lines["avalanche.LwFPlugin"]
    assert "not available: needs feature_extractor" in lines["avalanche.ICaRL"]
    assert "avalanche.EvaluationPlugin" not in lines


def _state(overrides):
    cfg, _ = config.load(["wandb.mode=disabled", *TINY, *overrides])
    return api.build_state(cfg)


@pytest.mark.parametrize("name", ["Naive", "DER"])
def test_online_accuracy_and_loss_come_from_the_forward_before_the_update(name):
    """One batch per experience (the whole experience): the online accuracy of experience k's
    iteration is that of the weights at the end of experience k-1 (the initial ones for k=0)
    on experience k's samples, whatever the shuffle, and only on those samples: DER puts its
    replayed samples before them. A large learning rate makes the weights after each step
    score differently."""
    from cl.avalanche import bridge

    state = _state([f"strategy=avalanche.{name}", "train.batch_size=64", "optim.lr=5"])
    model = state.ctx.model
    weights = [[p.detach().clone() for p in model.parameters()]]
    rows = []

    def log(row):
        rows.append(row)
        if len(rows) > 1:  # experience ends: the weights the next experience starts from
            weights.append([p.detach().clone() for p in model.parameters()])

    bridge.run_stream(state, log)
    assert len(rows) == 1 + 5  # before training + one boundary row per experience
    assert [r["iteration"] for r in rows] == list(range(6))
    for k in range(3):
        exp = state.ctx.stream.experiences[k]
        with torch.no_grad():
            for p, p0 in zip(model.parameters(), weights[k], strict=True):
                p.copy_(p0)
            out = model(exp.x)
        want = (out.argmax(1) == exp.y).float().mean().item()
        assert rows[k + 1]["train/online_acc"] == pytest.approx(want), k
        if name == "Naive":
            ce = F.cross_entropy(out, exp.y).item()
            assert rows[k + 1]["train/loss"] == pytest.approx(ce, rel=1e-5)


def test_task_incremental_streams_give_task_labels_and_masked_logits():
    from cl.avalanche import bridge

    lwf = ["strategy.avalanche.LwF.alpha=1", "strategy.avalanche.LwF.temperature=2"]
    state = _state(["strategy=avalanche.LwF", *lwf, "benchmark.incremental=task"])
    bench = bridge.benchmark(state.ctx.stream)
    assert [e.task_label for e in bench.train_stream] == [0, 1, 2, 3, 4]
    mask = state.ctx.stream.class_mask()
    masked = bridge.task_masked(state.ctx.model, mask)
    out = masked(state.ctx.stream.experiences[2].x[:4], torch.full((4,), 2))
    assert (out[:, [4, 5]] > -1e8).all() and (out[:, [0, 1, 2, 3, 6, 7, 8, 9]] == -1e9).all()
    rows = []
    bridge.run_stream(state, rows.append)  # LwF's distillation stays finite under the mask
    assert all(r.get("train/loss", 0.0) < 1e3 for r in rows)


def test_an_avalanche_run_leaves_the_run_folder_of_a_native_one(tmp_path):
    """Same files, same summary keys, same series; W&B offline; the report; no resume."""
    common = [f"run.dir={tmp_path}", "run.progress=false", "wandb.mode=offline", *TINY]
    common += ["eval.every=2", "plasticity.every=4"]
    native = cl.run([*common, "strategy=naive", "run.name=native"], quiet=True)
    bridged = cl.run([*common, "strategy=avalanche.Naive", "run.name=bridged"], quiet=True)
    assert set(bridged.summary) == set(native.summary)
    assert bridged.summary["status"] == "finished"
    assert list(bridged.metrics.columns) == list(native.metrics.columns)
    assert list(bridged.metrics["iteration"]) == list(native.metrics["iteration"])
    for name in ("config.yaml", "environment.json", "summary.json", "accuracy_matrix.csv"):
        assert (bridged.path / name).is_file()
    assert (bridged.path / "plots" / "accuracy_curves.png").is_file()
    assert (bridged.path / "report.html").is_file()
    assert list((bridged.path / "wandb").glob("offline-run-*"))
    assert not (bridged.path / "checkpoint.pt").exists()
    assert json.loads((bridged.path / "summary.json").read_text())["dead_units"] is not None
    assert main(["run", "--resume", str(bridged.path)]) == 2


def test_resume_of_an_avalanche_run_is_refused_with_a_reason(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    tree = config.as_plain(config.compose(["strategy=avalanche.Naive"]))
    (folder / "config.yaml").write_text(config.to_yaml(config.OmegaConf.create(tree)))
    assert main(["run", "--resume", str(folder)]) == 2
    assert "cannot be resumed exactly" in capsys.readouterr().err


SMOKE = {
    "EWC": ["strategy.avalanche.EWC.ewc_lambda=0.4"],
    "LwF": ["strategy.avalanche.LwF.alpha=1", "strategy.avalanche.LwF.temperature=2"],
    "SynapticIntelligence": ["strategy.avalanche.SynapticIntelligence.si_lambda=0.1"],
    "BiC": ["strategy.avalanche.BiC.stage_2_epochs=2", "strategy.avalanche.BiC.mem_size=100"],
    "GDumb": ["strategy.avalanche.GDumb.mem_size=100"],
    "ER_ACE": ["strategy.avalanche.ER_ACE.mem_size=100"],
    "DER": ["strategy.avalanche.DER.mem_size=100"],
    "EWCPlugin": [
        "strategy=[avalanche.EWCPlugin,avalanche.LwFPlugin]",
        "strategy.avalanche.EWCPlugin.ewc_lambda=1",
    ],
}


@pytest.mark.parametrize("name", list(SMOKE))
def test_each_strategy_runs_on_split_mnist(name, tmp_path):
    pick = (
        []
        if SMOKE[name] and SMOKE[name][0].startswith("strategy=")
        else [f"strategy=avalanche.{name}"]
    )
    overrides = [f"run.dir={tmp_path}", "run.progress=false", "run.report=false"]
    run = cl.run([*overrides, "wandb.mode=disabled", *TINY, *pick, *SMOKE[name]], quiet=True)
    s = run.summary
    assert s["status"] == "finished" and 0.0 <= s["acc"] <= 1.0
    assert s["n_iterations"] >= 5 and len(s["accuracy_matrix"]) == 5
    assert run.metrics["train/loss"].dropna().map(lambda v: v == v and v < 1e3).all()


def test_an_interrupted_avalanche_run_stops_cleanly_without_a_resume_hint(tmp_path, monkeypatch):
    """SIGINT during Avalanche's loop: the bridge's safe point stops the run after the
    iteration, the rows are kept, status `interrupted`, and no checkpoint or resume hint."""
    import os
    import signal

    from cl.interrupt import Interrupted
    from cl.store import LocalStore

    original = LocalStore.log

    def log(self, row):
        original(self, row)
        if row["iteration"] == 3:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(LocalStore, "log", log)
    overrides = [f"run.dir={tmp_path}", "run.progress=false", "run.report=false", *TINY]
    with pytest.raises(Interrupted) as stop:
        cl.run([*overrides, "wandb.mode=disabled", "strategy=avalanche.Naive"], quiet=True)
    assert stop.value.checkpoint is None
    folder = stop.value.folder
    s = json.loads((folder / "summary.json").read_text())
    assert s["status"] == "interrupted" and "resume" not in s
    assert s["n_iterations"] == 3 and s["n_eval_rows"] == 4
    assert not (folder / "checkpoint.pt").exists()


def test_evaluation_applies_bics_bias_correction_and_follows_gdumbs_new_model():
    """cl's evaluator scores what Avalanche's evaluation would: BiC's `after_eval_forward`
    correction is applied; GDumb's fresh model (it replaces the strategy's) is scored."""
    from cl.avalanche import bridge

    bic = ["strategy.avalanche.BiC.stage_2_epochs=5", "strategy.avalanche.BiC.lr=0.5"]
    state = _state(["strategy=avalanche.BiC", *bic])
    bridge.run_stream(state, lambda row: None)
    hook = state.monitor.evaluator.hook  # the evaluator's inference hook: the plugins' hooks
    assert [type(p).__name__ for p in hook.plugins] == ["BiCPlugin"]
    x = state.ctx.stream.experiences[0].eval_x[:50]
    with torch.no_grad():
        logits = state.ctx.model(x)
        assert not torch.allclose(hook(x, logits, None), logits)
        assert torch.equal(hook(x, logits, None), hook.plugins[0].bias_forward(logits))

    state = _state(["strategy=avalanche.GDumb", "strategy.avalanche.GDumb.mem_size=50"])
    first = state.ctx.model
    bridge.run_stream(state, lambda row: None)
    assert state.ctx.model is not first  # GDumb trains a fresh copy at every experience
    assert state.monitor.evaluator.hook is None  # no `after_eval_forward`: plain model(x)
