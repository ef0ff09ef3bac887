"""cl.avalanche: the ContinualEvaluation plugin in an Avalanche script (the README's example)
and Avalanche classic benchmarks as cl streams (`benchmark=avalanche`), offline on the
embedded digits written as torchvision's raw MNIST files."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import cl
from cl import config
from cl.data import mnist5k_arrays, stratified_split, write_mnist_idx
from cl.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@pytest.fixture(scope="module")
def digits():
    x, y = mnist5k_arrays()
    tr, te = stratified_split(y, 0.2, 0)
    return x[tr], y[tr], x[te], y[te]


@pytest.fixture(scope="module")
def mnist_root(tmp_path_factory, digits):
    """The 5,000 embedded digits as <root>/MNIST/raw/*-ubyte (4,000 train, 1,000 test)."""
    root = tmp_path_factory.mktemp("data")
    write_mnist_idx(root, *digits)
    return root


def readme_block(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"### {heading}\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_importing_cl_avalanche_imports_neither_avalanche_nor_torch():
    code = "import sys, cl, cl.avalanche; print('avalanche' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_readme_example_writes_a_full_run_folder(tmp_path, monkeypatch, digits):
    import torch

    write_mnist_idx(tmp_path / "data", *digits)
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(readme_block("Avalanche"), "README.md", "exec"), scope)  # noqa: S102
    folder = Path(scope["cl_eval"].folder)
    run = cl.load_run(folder)
    for name in ("config.yaml", "environment.json", "accuracy_matrix.csv", "report.html"):
        assert (folder / name).is_file(), name
    assert sorted(p.name for p in (folder / "plots").iterdir()) == [
        "accuracy_curves.png",
        "accuracy_matrix.png",
    ]
    assert list((folder / "wandb").glob("offline-run-*"))
    assert run.config["strategy"] == {"avalanche.Naive": {}}
    assert run.config["train"]["batch_size"] == 32

    m, s = run.metrics, run.summary
    n_iter = sum((len(e.dataset) + 31) // 32 for e in scope["benchmark"].train_stream)
    assert s["status"] == "finished" and s["n_iterations"] == n_iter
    assert m["iteration"].tolist() == list(range(n_iter + 1))  # one row per iteration + initial
    for key in ("acc", "bwt", "min_acc", "wc_acc", "online_acc", "nfr", "effective_rank"):
        assert s[key] is not None, key
    assert len(s["accuracy_matrix"]) == 5 and m["train/online_acc"].notna().sum() == n_iter
    boundaries = m[m["experience"].diff().fillna(1) != 0].index  # each experience's first row
    assert m.loc[boundaries[1:] - 1, "eval/acc/task_4"].notna().all()  # ends score all tasks

    # the last row is the final model on every test experience, scored independently here
    model = scope["model"].eval()
    with torch.inference_mode():
        for i, exp in enumerate(scope["benchmark"].test_stream):
            pairs = [exp.dataset[j][:2] for j in range(len(exp.dataset))]
            xs, ys = torch.stack([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs])
            acc = (model(xs).argmax(1) == ys).float().mean()
            assert m[f"eval/acc/task_{i}"].iloc[-1] == pytest.approx(float(acc), abs=1e-6)


def test_plugin_every_k_on_a_replay_strategy(tmp_path, digits):
    import torch
    from avalanche.benchmarks import nc_benchmark
    from avalanche.training import Replay
    from torch.utils.data import TensorDataset

    from cl.avalanche import ContinualEvaluation

    x, y, xt, yt = (torch.as_tensor(a) for a in digits)
    keep, keep_t = y < 4, yt < 4
    train = TensorDataset(x[keep][:, None].float() / 255, y[keep])
    test = TensorDataset(xt[keep_t][:, None].float() / 255, yt[keep_t])
    bench = nc_benchmark(train, test, 2, task_labels=False, fixed_class_order=[0, 1, 2, 3])
    plugin = ContinualEvaluation(
        bench, every=5, subset=50, run_dir=tmp_path, name="r", wandb="disabled", report=False
    )
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 64), torch.nn.ReLU())
    model.append(torch.nn.Linear(64, 4))
    strategy = Replay(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.05),
        criterion=torch.nn.CrossEntropyLoss(),
        mem_size=40,
        train_mb_size=64,
        evaluator=None,
        plugins=[plugin],
    )
    for exp in bench.train_stream:
        strategy.train(exp)
    run = cl.load_run(tmp_path / "r")
    sizes = [len(e.dataset) for e in bench.train_stream]
    ends = np.cumsum([(n + 63) // 64 for n in sizes]).tolist()
    due = sorted({i for i in range(1, ends[-1] + 1) if i % 5 == 0} | set(ends) | {0})
    assert run.metrics["iteration"].tolist() == due
    assert len(plugin.stream.experiences[0].eval_y) == 50  # the seeded subset
    assert run.summary["status"] == "finished" and run.summary["bwt"] is not None


def test_avalanche_benchmark_builds_the_benchmarks_own_stream(mnist_root, digits):
    from avalanche.benchmarks.classic import SplitMNIST

    from cl.streams import build_stream

    over = ["benchmark=avalanche", f"data.root={mnist_root}", "eval.subset=50", "seed=3"]
    cfg, _ = config.load(over)
    stream = build_stream(cfg.benchmark, None, cfg.seed, cfg.eval.subset, cfg.data.root)
    ref = SplitMNIST(n_experiences=5, seed=3, dataset_root=mnist_root)
    order = [sorted(e.classes_in_this_experience) for e in ref.train_stream]
    assert (
        [e.classes for e in stream.experiences] == order != [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    )
    y_train = digits[1]
    for e in stream.experiences:  # every embedded training digit of the task's classes
        assert len(e.y) == np.isin(y_train, e.classes).sum()
        assert set(e.y.tolist()) == set(e.classes) and len(e.eval_y) == 50
        assert e.x.shape[1:] == (1, 28, 28)
    assert stream.n_classes == 10 and not stream.task_incremental


def test_cl_run_on_an_avalanche_permuted_benchmark(mnist_root, fast):
    over = [
        *fast,
        "benchmark=avalanche",
        "benchmark.name=PermutedMNIST",
        "benchmark.args.n_experiences=2",
        "benchmark.samples_per_task=96",
        "eval.subset=64",
        f"data.root={mnist_root}",
        "strategy=naive",
    ]
    run = cl.run(over, quiet=True)
    assert run.path.name.startswith("PermutedMNIST-mlp-naive-s0-")
    assert run.summary["status"] == "finished" and run.summary["n_iterations"] == 6
    assert len(run.summary["accuracy_matrix"]) == 2


@pytest.mark.parametrize(
    "override, message",
    [
        ("benchmark.name=SplitMINST", "valid choices: SplitMNIST, PermutedMNIST"),
        ("benchmark.args.n_experiencez=3", "valid: n_experiences, return_task_id"),
        ("benchmark.args.seed=3", "set by cl"),
        ("benchmark.args.dataset_root=/x", "data.root"),
        ("benchmark.args.n_experiences=five", "does not fit"),
        ("benchmark.args.fixed_class_order=3", "does not fit"),
    ],
)
def test_bad_avalanche_benchmark_arguments_are_refused(override, message):
    with pytest.raises(UserError, match=re.escape(message)):
        config.load(["benchmark=avalanche", override])


def test_return_task_id_makes_the_stream_task_aware():
    cfg, _ = config.load(["benchmark=avalanche", "benchmark.args.return_task_id=true"])
    assert cfg.benchmark.incremental == "task"
    cfg, _ = config.load(["benchmark=avalanche"])
    assert cfg.benchmark.incremental == "class" and cfg.benchmark.args == {"n_experiences": 5}


def test_benchmark_args_need_the_avalanche_scenario():
    with pytest.raises(UserError, match="only for benchmark.scenario=avalanche"):
        config.load(["benchmark.args.n_experiences=3"])


def test_cli_exits_2_before_any_work(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}  # Avalanche writes ~
    args = ["benchmark=avalanche", "benchmark.name=SplitMINST", f"run.dir={tmp_path / 'runs'}"]
    out = subprocess.run(
        [PYTHON, "-m", "cl", "run", *args], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert out.returncode == 2
    assert out.stderr.startswith("error: benchmark.name='SplitMINST' is not a supported")
    assert "Traceback" not in out.stderr and not (tmp_path / "runs").exists()
    assert not (tmp_path / ".avalanche").exists()  # a wrong name is refused without Avalanche
