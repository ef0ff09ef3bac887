"""Weights & Biases sink: one `wandb.log` per logged row, every series against `iteration`.

Offline by default. Online mode that cannot reach the server (no key, no network) falls back
to offline with a warning instead of hanging; the offline run can be synced later.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from cl.config import WandbConfig


def _settings(wandb, timeout: float):
    return wandb.Settings(
        console="off",
        x_disable_stats=True,  # no system monitor (it probes a cloud metadata address)
        x_disable_machine_info=True,
        disable_git=True,
        save_code=False,
        silent=True,
        init_timeout=timeout,
    )


class WandbSink:
    """Owns one W&B run; `log(row)` sends the row with `iteration` as its x axis."""

    def __init__(self, cfg: WandbConfig, folder: Path, name: str, config: dict[str, Any]):
        import wandb

        self.wandb = wandb
        self.mode = cfg.mode
        kwargs = dict(
            project=cfg.project,
            entity=cfg.entity,
            group=cfg.group,
            tags=list(cfg.tags),
            name=name,
            dir=str(folder),
            config=config,
            reinit="create_new",
        )
        os.environ.setdefault("WANDB_SILENT", "true")
        try:
            self.run = wandb.init(
                mode=cfg.mode, settings=_settings(wandb, cfg.init_timeout), **kwargs
            )
        except Exception as e:  # noqa: BLE001 - any online failure means: go offline
            if cfg.mode != "online":
                raise
            print(
                f"warning: W&B online mode failed ({str(e).splitlines()[0]}); logging "
                "offline instead (sync later with `wandb sync`)",
                file=sys.stderr,
            )
            self.mode = "offline"
            self.run = wandb.init(mode="offline", settings=_settings(wandb, 10), **kwargs)
        self.run.define_metric("iteration")
        self.run.define_metric("*", step_metric="iteration")

    @property
    def dir(self) -> Path | None:
        """The offline run folder (`.../wandb/offline-run-*`), if any."""
        d = getattr(self.run.settings, "sync_dir", None)
        return Path(d) if d else None

    def log(self, row: dict[str, Any]) -> None:
        self.run.log({k: v for k, v in row.items() if v is not None})

    def summary(self, values: dict[str, Any]) -> None:
        for k, v in values.items():
            if isinstance(v, int | float | str | bool):
                self.run.summary[k] = v

    def image(self, key: str, path: Path) -> None:
        self.run.log({key: self.wandb.Image(str(path))})

    def close(self, ok: bool = True) -> None:
        self.run.finish(exit_code=0 if ok else 1)
