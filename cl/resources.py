"""Where cl's own folders are: `configs/` and `experiments/`, shipped inside the installed
package (`cl/configs`, `cl/experiments` in the wheel) and top-level folders of a checkout."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def shipped_folder(name: str) -> Path:
    """The installed `cl/<name>` folder, else the checkout's `<name>/` (an editable install or
    the source tree on PYTHONPATH, where the folders sit beside the `cl` package)."""
    packaged = resources.files("cl") / name
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / name
