"""16 seeds of one configuration: `sweep.executor=vectorized` (one stacked model, one
process) vs the warm local pool (`sweep.workers` = cores) vs sequential `cl run`s.

Workloads: `default` (configs/config.yaml: Split-MNIST mnist5k, MLP 400-400, replay, eval
after every iteration) and `lop` (experiments/loss_of_plasticity/reproduction.yaml's common
settings, naive arm: permuted MNIST, MLP 256-256, SGD lr 0.05 momentum 0.9, batch 16,
evaluation at task ends, plasticity probe every 250 iterations, trainability probe).
`--quick` cuts both (see QUICK) so the whole script runs in minutes on 2 cores.

Wall time: the command's, from a fresh process (imports included). Peak memory: the largest
resident set of any one process of the arm (ru_maxrss of the waited children), and how many
such processes ran at once (the pool holds `workers` of them). Arms are interleaved per
repeat, order reversed every other repeat; medians are reported. Noisy on a shared machine.

Run: ``PYTHONPATH=. .venv/bin/python bench/vectorized_seeds.py --quick [--repeats N]``.
Results also go to ``bench/out/vectorized_seeds.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = {
    "default": [],
    "lop": [
        "benchmark=permuted_mnist", "benchmark.n_tasks=40", "model=mlp", "model.hidden=[256,256]",
        "optim=sgd", "optim.lr=0.05", "optim.momentum=0.9", "train.batch_size=16",
        "train.epochs=1", "eval.every=1000000000", "eval.subset=200", "plasticity.every=250",
        "plasticity.probe_size=500", "plasticity.trainability_probe=true", "strategy=naive",
    ],
}  # fmt: skip
QUICK = {
    "default": ["train.epochs=1", "benchmark.n_tasks=2", "eval.subset=200"],
    "lop": ["benchmark.n_tasks=2", "plasticity.probe_steps=25"],
}
COMMON = ["wandb.mode=disabled", "run.progress=false", "run.checkpoint=false"]


def cores() -> int:
    return len(os.sched_getaffinity(0))


def arms(work: list[str], seeds: int, tmp: Path, n: int) -> dict[str, list[list[str]]]:
    py = [sys.executable, "-m", "cl"]
    sweep = [*py, "sweep", f"seed=range(0,{seeds})", f"sweep.dir={tmp}", *work, *COMMON]
    return {
        "vectorized": [[*sweep, f"sweep.name=v{n}", "sweep.executor=vectorized"]],
        "pool": [[*sweep, f"sweep.name=p{n}", f"sweep.workers={cores()}", "sweep.threads=1"]],
        "sequential": [
            [*py, "run", *work, *COMMON, f"seed={s}", f"run.dir={tmp}/seq{n}", f"run.name=s{s}"]
            for s in range(seeds)
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=16)
    ap.add_argument("--workloads", default="lop,default")
    ap.add_argument("--arms", default="vectorized,pool,sequential")
    a = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out: dict = {"cores": cores(), "seeds": a.seeds, "quick": a.quick, "results": {}}
    for name in a.workloads.split(","):
        merged = {o.split("=")[0]: o for o in WORKLOADS[name] + (QUICK[name] if a.quick else [])}
        work = list(merged.values())
        times: dict[str, list[float]] = {k: [] for k in a.arms.split(",")}
        peaks: dict[str, float] = {}
        for r in range(a.repeats):
            tmp = Path(tempfile.mkdtemp(prefix="vseeds-"))
            order = list(times) if r % 2 == 0 else list(times)[::-1]
            for arm in order:
                total, peak = 0.0, 0.0
                for cmd in arms(work, a.seeds, tmp, r)[arm]:
                    # a fresh measuring process per arm: ru_maxrss is per-process-tree
                    probe = [sys.executable, "-c", _MEASURE, json.dumps(cmd)]
                    done = subprocess.run(
                        probe, cwd=ROOT, env=env, check=True, capture_output=True, text=True
                    )
                    res = json.loads(done.stdout)
                    total += res["wall"]
                    peak = max(peak, res["peak_mib"])
                times[arm].append(total)
                peaks[arm] = max(peaks.get(arm, 0.0), peak)
                print(f"{name} {arm} repeat {r}: {total:.1f} s, peak {peak:.0f} MiB", flush=True)
            shutil.rmtree(tmp, ignore_errors=True)
        med = {k: statistics.median(v) for k, v in times.items()}
        out["results"][name] = {"median_s": med, "peak_mib": peaks, "all_s": times}
    print("\nworkload  arm         median s  peak MiB/proc  procs  x vs pool")
    for name, res in out["results"].items():
        pool = res["median_s"].get("pool")
        for arm, s in res["median_s"].items():
            procs = cores() if arm == "pool" else 1
            ratio = f"{pool / s:.2f}" if pool else "-"
            print(f"{name:9} {arm:11} {s:8.1f}  {res['peak_mib'][arm]:13.0f}  {procs:5}  {ratio}")
    (ROOT / "bench" / "out").mkdir(exist_ok=True)
    (ROOT / "bench" / "out" / "vectorized_seeds.json").write_text(json.dumps(out, indent=1))


_MEASURE = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
subprocess.run(json.loads(sys.argv[1]), check=True, stdout=subprocess.DEVNULL)
wall = time.perf_counter() - t
print(json.dumps({"wall": wall,
                  "peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""

if __name__ == "__main__":
    main()
