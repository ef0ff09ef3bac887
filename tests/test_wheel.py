"""cl installs as users install it: a wheel (not editable) that carries its configs,
experiments and strategies, and runs from any directory."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JUNK = shutil.ignore_patterns("__pycache__", "*.png")
TINY = ["benchmark.source=digits", "benchmark.n_tasks=2", "model.hidden=[16]", "eval.subset=50"]


def shipped(wheel: Path) -> set[str]:
    return {n for n in zipfile.ZipFile(wheel).namelist() if not n.startswith("cl-")}


def source_files() -> set[str]:
    """What the wheel must hold: every module, config and reproduction file of the checkout."""
    files = {
        f"{p.relative_to(ROOT)}" for d in ("cl", "strategies") for p in (ROOT / d).rglob("*.py")
    }
    for pattern in ("*.yaml", "*/*.yaml"):
        files |= {f"cl/{p.relative_to(ROOT)}" for p in (ROOT / "configs").glob(pattern)}
    for pattern in ("*.csv", "*/reproduction.yaml", "*/measure.py"):
        files |= {f"cl/{p.relative_to(ROOT)}" for p in (ROOT / "experiments").glob(pattern)}
    return files


def test_the_wheel_installs_and_runs_from_another_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CL_CONFIG_DIR")}
    source = tmp_path / "source"  # a copy: building writes build/ and cl.egg-info beside it
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source)
    for name in ("cl", "strategies", "configs", "experiments"):
        shutil.copytree(ROOT / name, source / name, ignore=JUNK)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*build, "-w", str(tmp_path / "dist"), str(source)], check=True, env=env)
    (wheel,) = (tmp_path / "dist").glob("cl-*.whl")
    missing = source_files() - shipped(wheel)
    assert not missing, f"not in the wheel: {sorted(missing)}"

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q"]
    subprocess.run([*pip, str(wheel)], check=True, env=env)
    # the dependencies come from this environment's site-packages, as a plain path: its .pth
    # files (the editable install of the checkout) are not read
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def cl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(venv / "bin" / "cl"), *args],
            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

    where = subprocess.run(
        [str(python), "-c", "import cl, strategies; print(cl.__file__, strategies.__file__)"],
        cwd=elsewhere, env=env, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert all(Path(p).is_relative_to(venv) for p in where), where

    listed = cl("reproduce", "--list")
    assert listed.returncode == 0, listed.stderr
    assert "stability_gap" in listed.stdout and "loss_of_plasticity" in listed.stdout
    run = cl("run", "-q", *TINY, "run.dir=runs", "run.name=r", "wandb.mode=disabled")
    assert run.returncode == 0, run.stderr
    assert (elsewhere / "runs" / "r" / "summary.json").is_file()
    assert cl("list", "strategies").stdout.count("\n") > 10
