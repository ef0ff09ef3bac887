"""Are two cl runs' results identical? Prints their key summary metrics and the environment
that decides them side by side; exits 0 when every summary metric and every per-iteration row
are equal, 1 when any differs, 2 on a usage error.

    python docker/compare_runs.py RUN_A RUN_B      # e.g. a host run and a container run
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SHOWN = (
    "acc", "aaa", "bwt", "fwt", "forgetting", "min_acc", "wc_acc", "gap_depth", "online_acc",
    "dead_units", "effective_rank", "weight_mag", "n_iterations",
)  # fmt: skip
ENVIRONMENT = (
    "python", "versions.torch", "versions.numpy", "torch_threads", "cpu_capability", "device",
    "container.image", "git",
)  # fmt: skip
TIMING = {"wall_time_s"}  # how long a run took is not a result


def environment(path: Path) -> dict:
    try:
        env = json.loads((path / "environment.json").read_text())
    except (OSError, ValueError):
        return {}
    out = {}
    for key in ENVIRONMENT:
        value = env
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        out[key] = value
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("error: usage: compare_runs.py RUN_A RUN_B (two cl run folders)", file=sys.stderr)
        return 2
    import cl
    from cl.errors import UserError

    try:
        a, b = (cl.load_run(p) for p in argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = [("", str(a.path), str(b.path))]
    envs = environment(a.path), environment(b.path)
    rows += [(k, str(envs[0].get(k)), str(envs[1].get(k))) for k in ENVIRONMENT]
    rows += [(k, repr(a.summary.get(k)), repr(b.summary.get(k))) for k in SHOWN]
    differ = sorted(
        k
        for k in (a.summary.keys() | b.summary.keys()) - TIMING
        if a.summary.get(k) != b.summary.get(k)
    )
    ma, mb = a.metrics, b.metrics
    same_rows = ma.shape == mb.shape and ma.equals(mb)
    rows.append(("metric rows", f"{len(ma)} rows", f"{len(mb)} rows"))
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        mark = " " if r[1] == r[2] or r[0] in ("", "container.image", "git") else "*"
        print(f"{mark} {r[0]:<{width[0]}}  {r[1]:<{width[1]}}  {r[2]}")
    if differ or not same_rows:
        print(
            f"DIFFERENT: summary {', '.join(differ) or 'identical'}; per-iteration rows "
            f"{'identical' if same_rows else 'differ'}"
        )
        return 1
    n = len(a.summary.keys() - TIMING)
    print(f"IDENTICAL: all {n} summary entries and all {len(ma)} per-iteration rows")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
