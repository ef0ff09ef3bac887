"""One run over 1 vs N ranks (`run.nproc`, torch.distributed): wall time, iterations per
second and scaling efficiency.

CPU arm (default): the default experiment (configs/config.yaml: Split-MNIST mnist5k, MLP
400-400, replay, evaluation after every iteration; `--quick`: 2 tasks, 1 epoch), gloo on
127.0.0.1. Arms: 1 rank x 1 thread, 1 rank x 2 threads (the same cores as 2 ranks), 2 ranks x
1 thread. Scaling efficiency = (iterations/s of N ranks) / (N x iterations/s of 1 rank x 1
thread): 1.0 is perfect; on 2 cores the run is small, so the per-iteration all-reduces
(DDP's gradients, the row's fused evaluation sums, the safe point's flags) weigh a lot.

GPU arm (`--gpu N`, a machine with N GPUs): model=resnet18 on Split CIFAR-100 (10 tasks),
`eval.every=10`, NCCL, 1 vs N ranks, one GPU each; `train.batch_size` (global) stays the
same, so N ranks do 1/N of each batch's forward/backward and of each evaluation.

Timing: `wall_time_s` (rank 0's loop, from summary.json) and the command's wall time (imports,
torchrun's start included). Arms interleaved per repeat; medians reported. Noisy on a shared
machine: read the ratios, not the seconds.

Run: ``PYTHONPATH=. .venv/bin/python bench/distributed.py --quick [--repeats N] [--gpu N]``.
Results also go to ``bench/out/distributed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["run.progress=false", "wandb.mode=disabled", "run.report=false", "run.checkpoint=false"]
QUICK = ["benchmark.n_tasks=2", "train.epochs=1"]
GPU = [
    "benchmark=split_cifar100", "model=resnet18", "eval.every=10", "run.device=cuda",
    "train.epochs=1", "strategy=replay",
]  # fmt: skip


def arm(args: list[str], nproc: int, threads: int, folder: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "cl", "run", *COMMON, *args, f"run.nproc={nproc}"]
    cmd += [f"run.dir={folder}", f"run.name=n{nproc}-t{threads}-{time.monotonic_ns()}"]
    began = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    command = time.perf_counter() - began
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    run = max(folder.glob(f"n{nproc}-t{threads}-*"), key=lambda p: p.stat().st_mtime)
    s = json.loads((run / "summary.json").read_text())
    return {
        "loop_s": s["wall_time_s"],
        "command_s": command,
        "iterations": s["n_iterations"],
        "acc": s.get("acc"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--gpu", type=int, default=0, help="GPUs: the GPU arm, 1 vs N ranks")
    a = p.parse_args()
    if a.gpu:
        args, arms = GPU, [(1, 1), (a.gpu, 1)]
    else:
        args, arms = (QUICK if a.quick else []), [(1, 1), (1, 2), (2, 1)]
    results: dict[str, list[dict]] = {f"{n}x{t}": [] for n, t in arms}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(a.repeats):
            for n, t in arms if rep % 2 == 0 else arms[::-1]:
                results[f"{n}x{t}"].append(arm(args, n, t, Path(tmp)))
    out = {"args": args, "repeats": a.repeats, "arms": {}}
    base = None
    for (n, t), key in zip(arms, results, strict=True):
        loop = statistics.median(r["loop_s"] for r in results[key])
        its = results[key][0]["iterations"] / loop
        base = base or its
        out["arms"][key] = {
            "ranks": n,
            "threads_per_rank": t,
            "loop_s": round(loop, 2),
            "command_s": round(statistics.median(r["command_s"] for r in results[key]), 2),
            "iterations_per_s": round(its, 1),
            "speedup_vs_1x1": round(its / base, 3),
            "scaling_efficiency": round(its / (n * base), 3),
            "acc": results[key][0]["acc"],
        }
        print(
            f"{n} rank(s) x {t} thread(s): loop {loop:.2f} s, {its:.1f} it/s, "
            f"speedup {its / base:.2f}, efficiency {its / (n * base):.2f}, "
            f"acc {results[key][0]['acc']:.4f}"
        )
    (ROOT / "bench" / "out").mkdir(exist_ok=True)
    (ROOT / "bench" / "out" / "distributed.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
