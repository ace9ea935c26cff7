"""The errors se_zoo raises for problems a user can fix, under one base class.

Every layer raises these for bad input, missing files, unreachable services and refused weights; the command
line prints their message and exits with status 2, while any other exception (a bug) keeps its traceback.
Each class also derives from the built-in exception a caller would catch without knowing se_zoo
(``ValueError``, ``FileNotFoundError``, ``RuntimeError``, ``ImportError``).
"""
__all__ = ['SEZooError', 'InvalidArgumentError', 'MissingFileError', 'MissingDependencyError']


class SEZooError(Exception):
    """Base class of every error se_zoo raises for a problem the user can fix; its message says how."""


class InvalidArgumentError(SEZooError, ValueError):
    """An argument, option or input value that se_zoo cannot accept; the message names it and what would do."""


class MissingFileError(SEZooError, FileNotFoundError):
    """A file or folder that se_zoo was asked to read does not exist."""


class MissingDependencyError(SEZooError, ImportError):
    """An optional dependency is not installed; the message names the extra that brings it."""
