"""Config composition, validation errors and the CLI's exit codes and messages."""

import subprocess
import sys

import pytest

from cl import config
from cl.cli import main
from cl.errors import UserError


def cl(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "cl", *args], capture_output=True, text=True, timeout=120, **kw
    )


def test_defaults_are_the_documented_experiment():
    cfg, _ = config.load([])
    assert cfg.benchmark.name == "split_mnist" and cfg.benchmark.source == "mnist5k"
    assert cfg.benchmark.n_tasks == 5 and cfg.benchmark.incremental == "class"
    assert cfg.model.name == "mlp" and list(cfg.strategy) == ["replay"]
    assert cfg.eval.every == 1 and cfg.wandb.mode == "offline"


def test_run_dir_and_data_root_default_to_the_image_variables(monkeypatch):
    """The Docker image sets CL_RUN_DIR=/runs and CL_DATA_ROOT=/data; overrides still win."""
    monkeypatch.delenv("CL_RUN_DIR", raising=False)
    monkeypatch.delenv("CL_DATA_ROOT", raising=False)
    cfg, _ = config.load([])
    assert (cfg.run.dir, cfg.data.root) == ("runs", "data")
    monkeypatch.setenv("CL_RUN_DIR", "/runs")
    monkeypatch.setenv("CL_DATA_ROOT", "/data")
    cfg, tree = config.load([])
    assert (cfg.run.dir, cfg.data.root) == ("/runs", "/data")
    assert config.as_plain(tree)["run"]["dir"] == "/runs"  # the run's config.yaml
    cfg, _ = config.load(["run.dir=elsewhere", "data.root=~/d"])
    assert (cfg.run.dir, cfg.data.root) == ("elsewhere", "~/d")


def test_group_and_key_overrides():
    cfg, _ = config.load(
        [
            "strategy=[replay,naive]",
            "benchmark=permuted_mnist",
            "benchmark.n_tasks=10",
            "seed=3",
            "strategy.replay.mem_size=64",
            "model.hidden=[100,100]",
            "optim.lr=0.1",
            "run.dir=/tmp/x",
        ]
    )
    assert list(cfg.strategy) == ["replay", "naive"]
    assert cfg.strategy["replay"]["mem_size"] == 64
    assert cfg.benchmark.scenario == "permuted" and cfg.benchmark.n_tasks == 10
    assert cfg.seed == 3 and cfg.model.hidden == [100, 100] and cfg.optim.lr == 0.1


def test_every_strategy_yaml_matches_its_constructor():
    import inspect

    from cl import strategy
    from cl.catalog import STRATEGIES

    for name in STRATEGIES:
        (s,) = strategy.build({name: {}})
        params = {
            k: p.default
            for k, p in inspect.signature(type(s).__init__).parameters.items()
            if k != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }
        assert config._group_file("strategy", name) == params, name


@pytest.mark.parametrize(
    "override, message",
    [
        (["strategy=nope"], "unknown strategy 'nope'; valid choices: naive, joint, replay"),
        (["benchmark=nope"], "unknown benchmark 'nope'; valid choices:"),
        (["train.epoch=3"], "unknown key 'train.epoch'"),
        (["strategy.replay.memsize=3"], "unknown key 'strategy.replay.memsize'"),
        (["train.epochs=three"], "train.epochs"),
        (["strategy.replay.mem_size=big"], "strategy.replay.mem_size='big' has type str"),
        (["model.name=transformer"], "model.name='transformer' is not valid"),
        (
            ["benchmark=permuted_mnist", "benchmark.incremental=task"],
            "needs benchmark.scenario=split",
        ),
        (["benchmark.source=mnist1d", "model=cnn"], "needs image inputs"),
        (["eval.every=0"], "eval.every=0 must be a positive integer"),
        (["seed"], "not of the form key=value"),
        (["trian.epochs=1"], "unknown key 'trian.epochs' (did you mean 'train.epochs'?)"),
        (["train.epoch=1"], "(did you mean 'train.epochs'?); valid keys in train: epochs"),
        (["strategy=replai"], "unknown strategy 'replai' (did you mean 'replay'?)"),
        (["benchmark=rotated_mnsit"], "(did you mean 'rotated_mnist'"),
        (["model=mpl"], "unknown model 'mpl' (did you mean 'mlp'?)"),
        (["optim=sdg"], "unknown optim 'sdg' (did you mean 'sgd'?)"),
        (["optim.name=adm"], "optim.name='adm' is not valid (did you mean 'adam'?)"),
        (["benchmark.source=digit"], "(did you mean 'digits'?)"),
        (
            ["strategy=replay,gem"],
            "to compose strategies write strategy=[replay,gem], to compare them, sweep: "
            "cl sweep strategy=replay,gem",
        ),
    ],
)
def test_validation_errors_name_the_key(override, message):
    with pytest.raises(UserError, match=None) as err:
        config.load(override)
    assert message in str(err.value)


def test_print_config_resolves_without_running(tmp_path):
    r = cl("run", "--print-config", "benchmark.n_tasks=2", f"run.dir={tmp_path}")
    assert r.returncode == 0, r.stderr
    assert "n_tasks: 2" in r.stdout and "strategy:\n  replay:" in r.stdout
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "args",
    [
        ["run", "strategy=nope"],
        ["run", "train.nope=1"],
        ["run", "train.batch_size=abc"],
        ["run", "benchmark=split_cifar10", "data.download=false", "wandb.mode=disabled"],
    ],
)
def test_cli_user_errors_exit_2_with_one_line(args, tmp_path):
    r = cl(*args, f"run.dir={tmp_path}", cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert not (tmp_path / "runs").exists() and not any(tmp_path.glob("*/metrics.jsonl"))


def test_absent_dataset_offline_message_says_where_to_put_files(tmp_path):
    r = cl(
        "run",
        "benchmark=split_mnist",
        "benchmark.source=mnist",
        f"data.root={tmp_path}",
        "data.download=false",
        "wandb.mode=disabled",
        f"run.dir={tmp_path}",
    )
    assert r.returncode == 2
    assert f"{tmp_path}/MNIST/raw/: train-images-idx3-ubyte" in r.stderr


def test_list_and_version_do_not_import_torch():
    code = (
        "import sys; from cl.cli import main; main(['list', 'sources']); "
        "main(['list', 'benchmarks']); main(['list', 'models']); "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert 'avalanche' not in sys.modules, 'avalanche imported'"
    )  # `cl list strategies` imports avalanche for its avalanche section (test_avalanche_run)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "mnist5k" in r.stdout and "split_mnist" in r.stdout and "resnet18" in r.stdout
    r = cl("--version")
    assert r.returncode == 0 and r.stdout.startswith("cl ")


def test_help_lists_examples(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "cl run strategy=[replay,naive]" in capsys.readouterr().out


def test_strategy_option_errors_explain_the_grammar():
    with pytest.raises(UserError, match=r"e.g. strategy.replay.mem_size=value"):
        config.load(["strategy.mem_size=10"])
    with pytest.raises(UserError, match="not selected; selected: naive"):
        config.load(["strategy=naive", "strategy.replay.mem_size=10"])


def test_default_run_names_say_what_ran():
    from cl import api

    def name(*overrides):
        cfg, tree = config.load(list(overrides))
        return api.default_name(cfg, config.as_plain(tree))

    assert name().startswith("split_mnist-mlp-replay-s0-")
    assert name("benchmark.source=digits").startswith("split_digits-mlp-replay-s0-")
    assert "-replay_reservoir-" in name("strategy.replay.buffer=reservoir")
    assert name("strategy=[replay,naive]", "seed=2").startswith("split_mnist-mlp-replay+naive-s2-")
    assert name("optim.lr=0.5") != name("optim.lr=0.1") != name()
    assert name("run.progress=false", "wandb.mode=disabled") == name()


def test_print_config_shows_required_strategy_options(capsys):
    from cl.cli import main

    assert main(["run", "--print-config", "strategy=avalanche.LwF"]) == 0
    out, err = capsys.readouterr()
    assert "alpha: ???" in out and "strategy.avalanche.LwF.alpha" in err


def test_quiet_run_prints_its_folder(tmp_path, capsys):
    from cl.cli import main

    args = ["run", "-q", "benchmark.source=digits", "benchmark.n_tasks=2", "train.epochs=1",
            "model.hidden=[16]", "eval.subset=20", "wandb.mode=disabled", "run.report=false",
            f"run.dir={tmp_path}", "run.name=q"]  # fmt: skip
    assert main(args) == 0
    assert capsys.readouterr().out.splitlines() == [f"run {tmp_path / 'q'}"]
