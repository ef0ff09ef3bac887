"""The loss-of-plasticity reproduction (experiments/loss_of_plasticity): slow, ~5 min on 2 cores."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.outcome
def test_naive_loses_plasticity_and_cbp_keeps_more_of_it(tmp_path, seed_offset, outcome):
    if seed_offset:
        pytest.skip("experiments/loss_of_plasticity/run.py runs seed 0 only")
    script = ROOT / "experiments" / "loss_of_plasticity" / "run.py"
    subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path), "--only", "naive", "cbp"],
        check=True,
        cwd=ROOT,
    )
    r = pd.read_csv(tmp_path / "results.csv")
    acc = {
        s: g.sort_values("experience")["online_acc"].to_numpy() for s, g in r.groupby("strategy")
    }
    dead = {
        s: g.sort_values("experience")["dead_units"].dropna().iloc[-1]
        for s, g in r.groupby("strategy")
    }
    k = len(acc["naive"]) // 10
    naive_first, naive_last = acc["naive"][1 : k + 1].mean(), acc["naive"][-k:].mean()
    outcome.above("naive online acc decline", naive_first - naive_last, 0.05, null=0)
    cbp_last = acc["cbp"][-k:].mean()  # CBP keeps more plasticity
    outcome.above("cbp - naive online acc, last tasks", cbp_last - naive_last, 0.05, null=0)
    outcome.above("naive dead units", dead["naive"], 0.3, null=0)
    outcome.below("cbp / naive dead units", dead["cbp"] / dead["naive"], 0.5, null=1)
