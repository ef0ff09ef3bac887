"""Terminal output: a progress bar with live accuracy and the end-of-run summary table."""

from __future__ import annotations

import sys

from cl import metric_registry


class Progress:
    """tqdm bar over training iterations showing the task and the seen-task accuracy."""

    def __init__(self, enabled: bool):
        self.bar = None
        self.total = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=0,
                unit="it",
                file=sys.stderr,
                dynamic_ncols=True,
                mininterval=0.25 if sys.stderr.isatty() else 10.0,  # logs: a line per 10 s
                leave=True,
            )

    def __call__(self, iteration: int, record) -> None:
        if self.bar is None:
            return
        if self.total is not None and self.bar.total != self.total:
            self.bar.total = self.total
        self.bar.update(iteration - self.bar.n)
        if self.bar.n % 25 == 0 and record.accs:
            k = record.experience[-1]
            seen = record.accs[-1][: k + 1]
            self.bar.set_postfix_str(
                f"task {k} acc(seen) {sum(seen) / len(seen):.3f}", refresh=False
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def summary_keys(summary: dict) -> list[tuple[str, str]]:
    """(key, label) of the registry's console metrics present in `summary` (a pattern: its
    first instance, e.g. wf_10 of wf_{w})."""
    out = []
    for m in metric_registry.shown("console"):
        key = next((k for k in summary if m.match(k) is not None), None)
        if key is not None:
            out.append((key, metric_registry.label(key)))
    return out


def summary_table(summary: dict, title: str = "") -> str:
    """The end-of-run table; a partial run (`complete` false) says so in its title, and the
    metrics defined only at the end of the stream (ACC, BWT ...) are left out."""
    partial = summary.get("complete") is False
    c = summary.get("covers") or {}
    if partial:
        title = (
            f"{title} (partial: {summary.get('status', 'stopped')} at iteration "
            f"{c.get('iterations', '?')}, {c.get('tasks_seen', '?')} of "
            f"{c.get('of_tasks', '?')} tasks seen)"
        ).strip()
    lines = [title] if title else []
    width = max(len(m.label) for m in metric_registry.shown("console"))
    left_out = []
    for key, label in summary_keys(summary):
        if partial and metric_registry.final_only(key):
            left_out.append(label.split(" (")[0])
            continue
        value = summary[key]
        text = (
            "n/a" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))
        )
        lines.append(f"  {label:<{width}}  {text}")
    if left_out:
        lines.append(
            f"  left out: {', '.join(left_out)} (defined at the end of the stream; "
            "summary.json has them over the tasks seen, with complete: false)"
        )
    if summary.get("deterministic") is False:
        lines.append("  note: run.deterministic=false, so results may not be bit-reproducible")
    return "\n".join(lines)
