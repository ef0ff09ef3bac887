"""Exceptions that the CLI turns into one clear message instead of a traceback."""


class UserError(Exception):
    """A user mistake (bad config, missing data, unreachable W&B): exit code 2."""

    exit_code = 2


class RunFailed(Exception):
    """A run that started but could not finish (e.g. a non-finite loss): exit code 1."""

    exit_code = 1
