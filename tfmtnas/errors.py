"""The errors tfmtnas reports to a user in one line, as opposed to internal bugs.

A :class:`UserError` means the input was wrong (a flag value, a data file, a model dir) and
its message says what, where and what to do. The binaries print it as one line and exit 2;
any other exception is a bug in tfmtnas and keeps its traceback (exit 1). Each class is also
a ``ValueError`` (and :class:`MissingFileError` a ``FileNotFoundError``), so library callers
that catch those keep working.

Example:
    >>> try:
    ...     raise DataError("clicks.csv:3: expected 5 fields, got 6")
    ... except UserError as err:
    ...     print(err)
    clicks.csv:3: expected 5 fields, got 6
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input from the user: one line saying what was wrong, where, and what to do.

    Args:
        message: the line to show, e.g. ``"--csv_hash wants name:bins, got 'user'."``.

    Example:
        >>> raise UserError("--model_dir is required.")  # doctest: +SKIP
    """


class DataError(UserError):
    """Bad input data: the message names the file, line or column at fault.

    Args:
        message: e.g. ``"clicks.csv:7: field 2 (column 'price'): non-finite number 'inf'"``.

    Example:
        >>> str(DataError("clicks.csv: empty file, expected a header row."))
        'clicks.csv: empty file, expected a header row.'
    """


class MissingFileError(DataError, FileNotFoundError):
    """A file or folder the user named (or that should be in a folder they named) is absent.

    Args:
        message: the path and what was expected there.

    Example:
        >>> isinstance(MissingFileError("runs/x: no model.json"), FileNotFoundError)
        True
    """


class ResumeMismatchError(UserError):
    """A model dir holds a run of other flags or data: resuming it would mix the two.

    Args:
        message: what differs and how to start fresh.

    Example:
        >>> issubclass(ResumeMismatchError, UserError)
        True
    """


class DivergedError(UserError):
    """Training produced a NaN or infinite loss: the run stopped instead of saving it.

    Args:
        message: where it happened (epoch, step) and what to try.

    Example:
        >>> issubclass(DivergedError, UserError)
        True
    """


__all__ = ["DataError", "DivergedError", "MissingFileError", "ResumeMismatchError",
           "UserError"]
