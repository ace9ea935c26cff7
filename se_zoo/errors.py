"""The errors se_zoo raises for problems a user can fix, under one base class.

Every layer raises these for bad input, missing files, unreachable services and refused weights; the command
line prints their message and exits with status 2, while any other exception (a bug) keeps its traceback.
Each class also derives from the built-in exception a caller would catch without knowing se_zoo
(``ValueError``, ``FileNotFoundError``, ``RuntimeError``, ``ImportError``). The two helpers at the end give every
layer the same wording for the commonest messages: a "did you mean" hint and a positive-integer check.
"""
import difflib
from typing import Any, Iterable

__all__ = [
    'SEZooError', 'InvalidArgumentError', 'MissingFileError', 'MissingDependencyError', 'check_positive_int',
    'did_you_mean',
]


class SEZooError(Exception):
    """Base class of every error se_zoo raises for a problem the user can fix; its message says how."""


class InvalidArgumentError(SEZooError, ValueError):
    """An argument, option or input value that se_zoo cannot accept; the message names it and what would do."""


class MissingFileError(SEZooError, FileNotFoundError):
    """A file or folder that se_zoo was asked to read does not exist."""


class MissingDependencyError(SEZooError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""


def did_you_mean(name: str, choices: Iterable[str], otherwise: str = '') -> str:
    """The end of an error message for an unknown ``name``: ``'; did you mean a, b?'`` with up to three of
    ``choices`` close to it (``difflib``'s similarity of at least 0.6), else ``otherwise``."""
    matches = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.6)
    return f'; did you mean {", ".join(matches)}?' if matches else otherwise


def check_positive_int(name: str, value: Any, *, zero: bool = False) -> int:
    """``value`` if it is an integer >= 1 (>= 0 with ``zero=True``; a bool is not one), else an
    ``InvalidArgumentError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero else 1):
        kind = 'a non-negative integer' if zero else 'a positive integer'
        raise InvalidArgumentError(f'{name}={value!r} must be {kind}')
    return value
