"""Reports: run and sweep folders -> one self-contained HTML page (`cl report`); the live
dashboard (`cl dashboard`) serves the same page and keeps it current."""

from __future__ import annotations

from pathlib import Path


def build(paths: list[str | Path], out: str | Path | None = None, per_run: bool = False) -> Path:
    """Write the report of `paths` (run or sweep folders) to `out` (default: `report.html`
    in the single folder given, else `./report.html`; missing folders are created); returns
    its path. UserError if `out` is a folder, unwritable, or an existing file that is not a
    report cl wrote. `per_run`: every run its own configuration (no mean over seeds)."""
    from cl.report.collect import collect
    from cl.report.page import check_output, write_report

    if out is None:
        out = Path(paths[0]) / "report.html" if len(paths) == 1 else Path("report.html")
    out = Path(out).expanduser()
    check_output(out)  # before the work: never replaces a file cl did not write
    return write_report(collect(paths, per_run), out)
