"""Lifelong-learning metrics of one run folder through l2metrics, the reference implementation
of the L2M metrics specification (New et al., "Lifelong Learning Metrics", arXiv 2201.08278;
Baker, New et al., "A Domain-Agnostic Approach for Characterization of Lifelong Learning
Systems", Neural Networks 2023): export the run in L2Logger's format, optionally train the
single-task experts, run l2metrics and add its lifetime values to summary.json as `l2m/*`.

Needs the optional extra: pip install 'cl[l2m]' (l2metrics, l2logger).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from cl import metric_registry
from cl.errors import UserError
from cl.store import SUMMARY_FILE, load_run, write_json

FOLDER = "l2logger"  # inside the run folder
# l2metrics' lifetime metrics -> summary keys (l2m/<name>), in print order
METRICS = (
    ("perf_maintenance_mrlep", "performance maintenance (MRLEP, x100 acc)"),
    ("forward_transfer_ratio", "forward transfer (ratio)"),
    ("forward_transfer_contrast", "forward transfer (contrast)"),
    ("backward_transfer_ratio", "backward transfer (ratio)"),
    ("backward_transfer_contrast", "backward transfer (contrast)"),
    ("perf_recovery", "performance recovery"),
    ("ste_rel_perf", "relative performance (vs STE)"),
    ("sample_efficiency", "sample efficiency (vs STE)"),
    ("avg_train_perf", "mean training performance"),
    ("avg_eval_perf", "mean evaluation performance"),
)
metric_registry.register(
    *(
        metric_registry.Metric(
            f"l2m/{key}",
            label,
            f"L2M lifelong-learning metric (l2metrics): {label}",
            paper="New et al., Lifelong Learning Metrics, arXiv 2201.08278",
        )
        for key, label in METRICS
    )
)
SETTINGS = dict(  # MetricsReport options; the rest are l2metrics' defaults
    perf_measure="accuracy",
    variant_mode="aware",
    ste_averaging_method="metrics",
    aggregation_method="mean",
    maintenance_method="mrlep",
    transfer_method="both",
    normalization_method="task",  # with the fixed range [0, 1]: 1 + 100 * accuracy
    smoothing_method="flat",
    clamp_outliers=False,
)


def _require_package() -> None:
    try:
        import l2logger  # noqa: F401
        import l2metrics  # noqa: F401
    except ImportError as e:
        raise UserError(
            f"cl l2metrics needs the optional extra l2m ({e.name} is not installed): "
            "pip install -e '.[l2m]' -c constraints.txt"
        ) from None


def _numpy2_alias() -> None:
    """l2metrics 3.1.0 writes `np.NaN`, removed in NumPy 2.0; restore that alias."""
    import numpy as np

    if "NaN" not in np.__dict__:
        np.NaN = np.nan


def run_l2metrics(log_dir: Path, base: Path, names: list[str]) -> tuple[dict, list[str]]:
    """l2metrics' MetricsReport on `log_dir` (STE data from base/taskinfo/); returns its
    metrics dict (lifetime values and `task_metrics`) and the warnings it logged."""
    from cl.l2m.ste import l2data

    _numpy2_alias()
    from l2metrics.report import MetricsReport

    notes: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            notes.append(record.getMessage())

    handler = Collect(logging.WARNING)
    loggers = [logging.getLogger(name) for name in ("l2metrics", "l2logger")]
    saved = [(lg.propagate, lg.level) for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.propagate, lg.level = False, logging.WARNING
    try:
        with l2data(base):
            report = MetricsReport(
                log_dir=str(log_dir),
                data_range={n: {"min": 0.0, "max": 1.0} for n in names},
                **SETTINGS,
            )
            report.calculate()
            report.save_metrics(output_dir=str(base), filename="l2metrics")
    finally:
        for lg, (propagate, level) in zip(loggers, saved, strict=True):
            lg.removeHandler(handler)
            lg.propagate, lg.level = propagate, level
    return report.ll_metrics_dict, notes


def _number(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def compute(run_dir: str | Path, ste: bool = False, quiet: bool = False) -> dict[str, float | None]:
    """Export `run_dir`, (with `ste`) train its single-task experts, run l2metrics and write
    its lifetime values into the run's summary.json as `l2m/<metric>` (null: not computable
    for this lifetime, e.g. Relative Performance without experts); returns them."""
    _require_package()
    from cl.l2m import export

    run_dir = Path(run_dir).expanduser()
    run = load_run(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir} is not a cl run folder (no config.yaml)")
    status = run.summary.get("status")
    if status != "finished":
        raise UserError(
            f"the run in {run_dir} is not finished (status: {status or 'none'}); "
            f"finish it first: cl run --resume {run_dir}"
        )
    benchmark = run.config.get("benchmark", {}).get("name", "stream")
    names = export.task_names(benchmark, len(run.task_columns()))
    base = run_dir / FOLDER
    log_dir = export.write(run, base / "lifetime", names)
    if ste:
        from cl.l2m.ste import train_experts

        train_experts(run_dir, base, names, quiet)
    metrics, notes = run_l2metrics(log_dir, base, names)
    values = {f"l2m/{key}": _number(metrics.get(key)) for key, _ in METRICS}
    summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    summary = {k: v for k, v in summary.items() if not k.startswith("l2m/")}
    write_json(run_dir / SUMMARY_FILE, {**summary, **values})
    if not quiet:
        print(table(values, f"l2metrics {run_dir} (export: {log_dir})"))
        for note in dict.fromkeys(n for n in notes if n.startswith("Cannot compute")):
            print(f"  note: {note}")
    return values


def table(values: dict, title: str) -> str:
    width = max(len(label) for _, label in METRICS)
    lines = [title]
    for key, label in METRICS:
        v = values.get(f"l2m/{key}")
        lines.append(f"  {label:<{width}}  {'n/a' if v is None else f'{v:.4f}'}")
    return "\n".join(lines)
