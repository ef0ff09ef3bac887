"""Vectorized seeds (cl/members.py, sweep.executor=vectorized): a member's rows equal the
single run's with its seed."""

import json

import pytest
import torch

from cl import api, config
from cl.sweep.vectorized import run_members

TINY = [
    "benchmark.source=digits",
    "benchmark.n_tasks=3",
    "model.hidden=[32]",
    "eval.subset=100",
    "train.epochs=1",
    "wandb.mode=disabled",
    "run.progress=false",
]


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("strategy", ["naive", "replay", "l2_init", "shrink_perturb"])
def test_member_rows_equal_single_runs(tmp_path, strategy):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        seeds = [0, 3]
        loaded = [
            config.load(
                [
                    *TINY,
                    f"strategy={strategy}",
                    f"seed={s}",
                    f"run.dir={tmp_path}/g",
                    f"run.name=s{s}",
                ]
            )  # fmt: skip
            for s in seeds
        ]
        statuses = run_members([c for c, _ in loaded], [config.as_plain(t) for _, t in loaded])
        assert statuses == ["finished"] * len(seeds)
        for s in seeds:
            api.run([*TINY, f"strategy={strategy}", f"seed={s}", f"run.dir={tmp_path}/one",
                     f"run.name=s{s}"], quiet=True)  # fmt: skip
            single = rows(tmp_path / "one" / f"s{s}" / "metrics.jsonl")
            member = rows(tmp_path / "g" / f"s{s}" / "metrics.jsonl")
            assert len(single) == len(member)
            for a, b in zip(single[:20], member[:20], strict=True):
                assert a.keys() == b.keys()
                for k, v in a.items():
                    if isinstance(v, int | float):
                        assert b[k] == pytest.approx(v, abs=1e-5), (s, k)
            one = json.loads((tmp_path / "one" / f"s{s}" / "summary.json").read_text())
            two = json.loads((tmp_path / "g" / f"s{s}" / "summary.json").read_text())
            assert two["acc"] == pytest.approx(one["acc"], abs=1e-4)
            assert (tmp_path / "g" / f"s{s}" / "config.yaml").read_text().count(f"seed: {s}")
    finally:
        torch.set_num_threads(threads)


def test_unsupported_strategy_runs_member_by_member(tmp_path):
    from cl import members

    cfg, _ = config.load([*TINY, "strategy=gem"])
    assert "member_wise" in members.unsupported(cfg)


def test_sweep_vectorized_end_to_end(tmp_path):
    from cl.sweep.driver import new_sweep

    code = new_sweep(
        ["seed=range(0,2)", "sweep.executor=vectorized", f"sweep.dir={tmp_path}",
         "sweep.name=v", *TINY],
        None,
        quiet=True,
    )  # fmt: skip
    assert code == 0
    import cl

    sweep = cl.load_sweep(tmp_path / "v")
    assert sweep is not None
    runs = sorted((tmp_path / "v" / "runs").iterdir())
    assert len(runs) == 2
    assert all(cl.load_run(r).summary["status"] == "finished" for r in runs)
