"""Single-task experts (STE) for l2metrics' Relative Performance and Sample Efficiency.

One ordinary cl run per task, from scratch: the lifelong run's config with `strategy=naive`
and `benchmark.tasks=[i]` (the same task data, evaluation subset and training budget), in
`<run>/l2logger/ste_runs/<task>/`. Each is exported in L2Logger's format
(`ste_logs/<task>/`) and stored with l2metrics' own `store_ste_data` under
`$L2DATA/taskinfo/`, with L2DATA pointing into the run folder (never the user's home).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from cl.l2m import export
from cl.store import SUMMARY_FILE, load_run


@contextmanager
def l2data(base: Path) -> Iterator[None]:
    """Point l2metrics' $L2DATA at `base` for the duration (STE store: base/taskinfo/)."""
    old = os.environ.get("L2DATA")
    os.environ["L2DATA"] = str(base)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("L2DATA", None)
        else:
            os.environ["L2DATA"] = old


def expert_config(tree: dict, task: int, parent: Path, name: str) -> dict:
    """The lifelong run's resolved config `tree`, changed into task `task`'s expert."""
    t = copy.deepcopy(tree)
    t["strategy"] = {"naive": {}}
    t["benchmark"]["tasks"] = [task]
    t["run"].update(dir=str(parent), name=name, report=False, progress=False, checkpoint=False)
    t["wandb"]["mode"] = "disabled"
    return t


def _finished_with(folder: Path, tree: dict) -> bool:
    try:
        status = json.loads((folder / SUMMARY_FILE).read_text()).get("status")
        saved = yaml.safe_load((folder / "config.yaml").read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return False
    return status == "finished" and saved == tree


def train_experts(run_dir: Path, base: Path, names: list[str], quiet: bool = False) -> None:
    """Train (or reuse, when finished with the same config) one expert per task and store
    its L2Logger export in `base/taskinfo/` for l2metrics."""
    from l2metrics import util as l2m_util
    from omegaconf import OmegaConf

    from cl import api, config
    from cl.schema import RunConfig
    from cl.validation import validate

    tree = yaml.safe_load((run_dir / "config.yaml").read_text())
    parent = base / "ste_runs"
    for i, name in enumerate(names):
        folder = parent / name
        t = expert_config(tree, i, parent, name)
        cfg_tree = OmegaConf.merge(OmegaConf.structured(RunConfig), t)
        plain = config.as_plain(cfg_tree)
        if _finished_with(folder, plain):
            how = "reused"
        else:
            shutil.rmtree(folder, ignore_errors=True)
            api.start(validate(cfg_tree), plain, quiet=True)
            how = "trained"
        log_dir = export.write(load_run(folder), base / "ste_logs" / name, [name])
        with l2data(base):
            l2m_util.store_ste_data(log_dir, mode="w")
        if not quiet:
            print(f"single-task expert {name}: {how} ({folder})")
