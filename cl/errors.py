"""Exceptions that the CLI turns into one clear message instead of a traceback."""

import difflib


class UserError(Exception):
    """A user mistake (bad config, missing data, unreachable W&B): exit code 2."""

    exit_code = 2


class RunFailed(Exception):
    """A run that started but could not finish (e.g. a non-finite loss): exit code 1."""

    exit_code = 1


def did_you_mean(word: object, choices) -> str:
    """` (did you mean 'x'?)` for the choices closest to `word` (empty if none is close)."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def comma_hint(group: str, value: object) -> str:
    """For `group=a,b`: how to compose (strategies) or sweep several options."""
    if not isinstance(value, str) or "," not in value:
        return ""
    items = ",".join(v.strip() for v in value.split(","))
    sweep = f"to compare them, sweep: cl sweep {group}={items}"
    if group == "strategy":
        return f"; to compose strategies write {group}=[{items}], {sweep}"
    return f"; a run takes one {group}, {sweep}"
