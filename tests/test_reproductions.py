"""`cl reproduce`: every reproduction's --quick version runs end to end (claims table, figure);
the full versions (slow, `make reproduce`) must keep every claim targets.csv marks reproduced."""

import csv

import pytest

from cl import reproduce
from cl.cli import main

NAMES = list(reproduce.available())


def test_every_reproduction_has_claims_and_a_readme():
    assert {"stability_gap", "loss_of_plasticity"} <= set(NAMES)
    for name in NAMES:
        assert reproduce.claims(name), name
        assert (reproduce.EXPERIMENTS / name / "README.md").is_file(), name


def test_list(capsys):
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in NAMES)


def test_unknown_reproduction_is_an_error(capsys):
    assert main(["reproduce", "nope", "--quick"]) == 2
    assert capsys.readouterr().err.startswith("error: no reproduction 'nope'")


def test_a_claim_is_checked_on_the_mean_of_per_seed_differences():
    claim = reproduce.Claim("x", "a beats b", "a.acc", ">", 0.1, "b.acc", 3, "", "")
    values = {"a.acc": [0.9, 0.85, 0.5], "b.acc": [0.7, 0.7, 0.6]}  # differences .2 .15 -.1
    row = reproduce.check(claim, values)
    assert row["holds"] == "NO" and row["seeds_holding"] == "2/3"
    values["a.acc"][2] = 0.8  # differences .2 .15 .2
    assert reproduce.check(claim, values)["holds"] == "yes"
    values["a.acc"][0] = float("nan")  # a failed run never makes a claim hold
    assert reproduce.check(claim, values)["holds"] == "NO"


def read_claims(folder):
    with open(folder / "claims.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("name", NAMES)
def test_quick_version_runs(name, tmp_path):
    assert main(["reproduce", name, "--quick", "--out", str(tmp_path), "-q"]) == 0
    folder = tmp_path / f"{name}-quick"
    rows = read_claims(folder)
    assert len(rows) == len(reproduce.claims(name))
    assert all(r["measured"] != "n/a" for r in rows)
    assert all(r["holds"] in ("yes", "NO (quick scale)") for r in rows)  # a miss says why
    assert "quick runs may miss claims" in (folder / "claims.md").read_text()
    assert (folder / "figure.png").stat().st_size > 10_000
    # a second call reuses the finished sweep: nothing reruns, same table
    before = (folder / "claims.md").read_text()
    assert main(["reproduce", name, "--quick", "--out", str(tmp_path), "-q"]) == 0
    assert (folder / "claims.md").read_text() == before


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_full_reproduction_keeps_its_reproduced_claims(name, tmp_path):
    assert main(["reproduce", name, "--out", str(tmp_path), "-q"]) == 0
    expected = {c.claim for c in reproduce.claims(name) if c.reproduced == "yes"}
    holds = {r["claim"]: r["holds"] for r in read_claims(tmp_path / name)}
    assert {c: holds[c] for c in expected} == dict.fromkeys(expected, "yes")
