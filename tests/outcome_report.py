"""Table of the outcome checks recorded by `pytest --record-outcomes PATH` (make test-portable).

    python tests/outcome_report.py PATH [PATH ...] [--by-setting]

One row per check over every recorded run (seed offsets x kernel settings): n, min, max, the
bound, the no-effect value, the worst margin (distance of the worst value from the bound) and
the relative margin: for a check against a no-effect value, worst margin / |mean - no-effect|
(how far the worst run stays from the bound, in units of the effect); for a tolerance on an
error, worst margin / tolerance. A check that failed anywhere is flagged FAIL, one whose
relative margin is under 1/3 is flagged tight.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from statistics import mean


def setting(row: dict) -> str:
    env = " ".join(f"{k}={v}" for k, v in sorted(row["env"].items()))
    return f"{row['capability']}" + (f" [{env}]" if env else "")


def load(paths: list[str]) -> list[dict]:
    rows = []
    for path in paths:
        with open(path) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


def summarise(rows: list[dict]) -> dict:
    values = [r["value"] for r in rows]
    op, bound = rows[0]["op"], rows[0]["bound"]
    worst = min(values) if op == ">" else max(values)
    margin = worst - bound if op == ">" else bound - worst
    nulls = [r["null"] for r in rows if r["null"] is not None]
    if nulls:
        effect = abs(mean(values) - mean(nulls))
        rel = margin / effect if effect > 0 else float("-inf")
        lo, hi = min(nulls), max(nulls)
        null = f"{lo:.3g}" if hi - lo < 1e-9 else f"{lo:.3g}..{hi:.3g}"
    else:
        rel, null = margin / bound, "(tolerance)"
    return {
        "n": len(rows),
        "min": min(values),
        "max": max(values),
        "op": op,
        "bound": bound,
        "null": null,
        "margin": margin,
        "rel": rel,
        "fails": sum(not (v > bound if op == ">" else v < bound) for v in values),
    }


def table(rows: list[dict], by_setting: bool = False) -> str:
    groups = defaultdict(list)
    for r in rows:
        key = (r["test"], r["check"]) + ((setting(r),) if by_setting else ())
        groups[key].append(r)
    lines = [
        "| test | check | n | min | max | bound | no effect | worst margin | rel. | |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, g in groups.items():
        s = summarise(g)
        name = key[0].split("::", 1)[-1] + (f" ({key[2]})" if by_setting else "")
        check = key[1].replace("|", "\\|")  # a Markdown table cell
        flag = "FAIL" if s["fails"] else ("tight" if s["rel"] < 1 / 3 else "")
        lines.append(
            f"| {name} | {check} | {s['n']} | {s['min']:.4g} | {s['max']:.4g} | "
            f"{s['op']} {s['bound']:.4g} | {s['null']} | {s['margin']:.4g} | {s['rel']:.2f} | "
            f"{flag} |"
        )
    settings = sorted({setting(r) for r in rows})
    offsets = sorted({r["seed_offset"] for r in rows})
    lines.append(f"\nsettings: {'; '.join(settings)}\nseed offsets: {offsets}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+")
    ap.add_argument("--by-setting", action="store_true", help="one row per kernel setting too")
    args = ap.parse_args()
    print(table(load(args.paths), args.by_setting))


if __name__ == "__main__":
    main()
