"""The exception family for bad input: what a user can fix (config, trace, parameters, usage).

The CLI turns an `InputError` into one line on stderr and exit code 2; anything else is a bug
and keeps its traceback. Every error class of this package that reports bad input derives
from `InputError` (and from `ValueError`, so existing `except ValueError` code still works).
"""

from __future__ import annotations

__all__ = ["InputError", "ParameterError", "UsageError"]


class InputError(ValueError):
    """Bad input a user can fix: the message is one line that says what and where."""


class ParameterError(InputError):
    """A bad hyperparameter or `--param` value; the message repeats the bad value."""


class UsageError(InputError):
    """A bad combination of options or arguments."""
