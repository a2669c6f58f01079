"""Delimited text files -> columns of NumPy arrays, and a multi-task dataset from your own CSV.

:func:`read_csv` reads a plain or gzipped delimited file into one array per column: float64
for the columns you call numeric, and ``object`` arrays of Python ``str`` for the rest. Equal
strings within a column share one object, so a 200k-row file of repeated category names costs
a few bytes per cell rather than the width of its longest value (as a fixed-width ``"<U"``
array would). Errors name the file and line, and the column where one is at fault.

:func:`load_csv_dataset` turns one or two such files into a :class:`MultiTaskData`.

Example:
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "clicks.csv"
    >>> _ = path.write_text("user,price,click,buy\\nu1,3.5,1,0\\nu2,1.0,0,\\n")
    >>> cols = read_csv(path, numeric=["price"])
    >>> cols["price"].tolist(), cols["user"].tolist()
    ([3.5, 1.0], ['u1', 'u2'])
"""

from __future__ import annotations

import csv as _csv
import gzip
import io
import itertools
import os
from collections.abc import Collection, Iterator, Mapping, Sequence

import numpy as np

from tfmtnas.data.base import FLOAT32_MAX, DataError, MultiTaskData, Split
from tfmtnas.errors import UserError
from tfmtnas.features import FeatureSpec, TaskSpec

_CHUNK_ROWS = 20_000


class _Strip(dict):
    """Memo of raw cell -> stored cell: strips once per distinct value and shares the result."""

    def __init__(self, strip: bool):
        super().__init__()
        self._strip = strip
        self._canonical: dict[str, str] = {}

    def __missing__(self, raw: str) -> str:
        value = raw.strip() if self._strip else raw
        value = self[raw] = self._canonical.setdefault(value, value)
        return value


def _open_text(path: str | os.PathLike) -> io.TextIOBase:
    path = os.fspath(path)
    if not os.path.isfile(path):
        what = "is a directory, not a file" if os.path.isdir(path) else "does not exist"
        raise DataError(f"{path}: {what}.")
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _decode_error(path) -> DataError:
    """The first line of ``path`` that is not UTF-8, as a :class:`DataError`."""
    path = os.fspath(path)
    with (gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")) as f:
        for lineno, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                bad = raw[err.start:err.start + 1].hex()
                return DataError(f"{path}:{lineno}: byte 0x{bad} at column {err.start + 1} is "
                                 f"not UTF-8 text ({err.reason}); save the file as UTF-8.")
    return DataError(f"{path}: not UTF-8 text; save the file as UTF-8.")  # pragma: no cover


def _rows(f: io.TextIOBase, sep: str, path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) per non-blank line; quoted fields when ``sep`` is one character.

    Bytes that are not UTF-8 and malformed quoting raise a :class:`DataError` naming the line.
    """
    try:
        if len(sep) == 1:
            reader = _csv.reader(f, delimiter=sep, strict=True)
            start = 1
            try:
                for row in reader:
                    if row and row != [""]:
                        yield reader.line_num, row
                    start = reader.line_num + 1
            except _csv.Error as err:
                raise DataError(f"{path}:{start}: malformed quoting or field ({err}); close "
                                f"every quoted field and put the separator right after its "
                                f"closing quote.") from None
        else:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if line:
                    yield lineno, line.split(sep)
    except UnicodeDecodeError:
        raise _decode_error(path) from None


def _to_float(path, values: Sequence[str], lines: Sequence[int], name: str, field: int,
              allow_missing: bool, as_missing: bool, hint: str) -> np.ndarray:
    """One column of numbers; a bad cell raises a :class:`DataError` with file, line, field.

    ``allow_missing``: an empty cell reads as NaN. ``as_missing``: an empty or non-finite cell
    reads as NaN (the caller imputes it). Otherwise a non-finite number is an error. The
    first bad cell in file order is reported.
    """

    def fail(i: int, number: float | None):
        where = f"{path}:{lines[i]}: field {field} (column {name!r})"
        text = values[i].strip()
        if number is None:
            tail = f"; {hint}" if not text else ""
            return DataError(f"{where} expects a number, got {text!r}{tail}")
        what = "is not a finite number" if not np.isfinite(number) else "is too large for float32"
        return DataError(f"{where}: {text!r} {what}; {hint}")

    blank = np.zeros(len(values), bool)
    if allow_missing or as_missing:
        blank = np.fromiter((not v.strip() for v in values), bool, len(values))
        if blank.any():
            values = [v if v.strip() else "nan" for v in values]
    try:
        x = np.array(values, dtype=np.float64)
    except ValueError:  # Slow path: find the first cell that is not a (finite) number.
        for i, value in enumerate(values):
            try:
                number = float(value)
            except ValueError:
                raise fail(i, None) from None
            if not (abs(number) <= FLOAT32_MAX or blank[i] or as_missing):
                raise fail(i, number) from None
        raise AssertionError("unreachable: some value failed to parse") from None
    bad = ~(np.abs(x) <= FLOAT32_MAX) & ~blank  # NaN, +-inf, numbers float32 cannot hold
    if bad.any():
        if as_missing:
            x[bad] = np.nan
            return x
        i = int(np.argmax(bad))
        raise fail(i, float(x[i]))
    return x


def read_csv_with_lines(
    path: str | os.PathLike,
    names: Sequence[str] | None = None,
    numeric: Collection[str] = (),
    sep: str = ",",
    header: bool = True,
    strip: bool = True,
    allow_missing: Collection[str] = (),
    missing_numeric: Collection[str] = (),
    nonfinite_hint: str = "replace it with a finite number.",
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Like :func:`read_csv`, also returning the 1-based file line of every row (int64)."""
    if not sep:
        raise UserError("sep must be a non-empty string.")
    if names is None and not header:
        raise UserError("Give names when the file has no header row.")
    with _open_text(path) as f:
        rows = _rows(f, sep, path)
        if header:
            first = next(rows, None)
            if first is None:
                raise DataError(f"{path}: empty file, expected a header row.")
            if names is None:
                names = [n.strip() if strip else n for n in first[1]]
        names = [str(n) for n in names]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DataError(f"{path}: repeated column names {dupes}.")
        unknown = [n for n in [*numeric, *allow_missing, *missing_numeric] if n not in names]
        if unknown:
            raise DataError(f"{path}: no column(s) {unknown}; columns are {names}.")
        numeric_idx = {names.index(n) for n in numeric}
        missing_ok, as_missing = set(allow_missing), set(missing_numeric)
        ncols = len(names)
        memos = [_Strip(strip) for _ in names]
        parts: list[list] = [[] for _ in names]
        line_parts = []
        while True:
            chunk = list(itertools.islice(rows, _CHUNK_ROWS))
            if not chunk:
                break
            lines = [ln for ln, _ in chunk]
            for ln, row in chunk:
                if len(row) != ncols:
                    raise DataError(f"{path}:{ln}: expected {ncols} fields, got {len(row)}")
            line_parts.append(np.array(lines, dtype=np.int64))
            columns = zip(*(row for _, row in chunk), strict=True)
            for j, values in enumerate(columns):
                if j in numeric_idx:
                    hint = ("leave the cell empty to mark a missing value."
                            if names[j] in missing_ok else nonfinite_hint)
                    parts[j].append(_to_float(path, values, lines, names[j], j + 1,
                                              names[j] in missing_ok, names[j] in as_missing,
                                              hint))
                else:
                    parts[j].extend(map(memos[j].__getitem__, values))
    out = {}
    for j, name in enumerate(names):
        if j in numeric_idx:
            out[name] = np.concatenate(parts[j]) if parts[j] else np.zeros(0, np.float64)
        else:
            col = np.empty(len(parts[j]), dtype=object)
            col[:] = parts[j]
            out[name] = col
        parts[j] = None
    line_numbers = np.concatenate(line_parts) if line_parts else np.zeros(0, np.int64)
    return out, line_numbers


def read_csv(
    path: str | os.PathLike,
    names: Sequence[str] | None = None,
    numeric: Collection[str] = (),
    sep: str = ",",
    header: bool = True,
    strip: bool = True,
    allow_missing: Collection[str] = (),
    missing_numeric: Collection[str] = (),
) -> dict[str, np.ndarray]:
    """Read a delimited text file (plain, or gzipped if the name ends in ``.gz``) by column.

    Blank lines are skipped. With a one-character ``sep`` the file is parsed by the
    :mod:`csv` module (double-quoted fields may hold the separator); a longer ``sep`` (such
    as the ``", "`` of the UCI files) splits each line on it.

    Args:
        path: the file.
        names: column names. Default: the header row. Given together with ``header=True``,
            they replace the header's names.
        numeric: columns parsed as float64; the others stay strings.
        sep: field separator. Default ``","``.
        header: the first non-blank line holds column names. Default True.
        strip: strip surrounding whitespace from string cells. Default True.
        allow_missing: numeric columns in which an empty cell reads as NaN (elsewhere an
            empty numeric cell is an error).
        missing_numeric: numeric columns in which an empty cell and a non-finite number
            (``nan``, ``inf``, or beyond float32's range) read as NaN, for the caller to
            impute. Elsewhere a non-finite number is an error.

    Returns:
        Column name -> array, in file order: float64 for numeric columns, else an ``object``
        array of ``str``.

    Raises:
        DataError: missing file, bytes that are not UTF-8 or malformed quoting
            (``file:line``), wrong field count (``file:line``), or text or a non-finite
            number in a numeric column (``file:line``, the field number and the column).
    """
    return read_csv_with_lines(path, names, numeric, sep, header, strip, allow_missing,
                               missing_numeric)[0]


def as_tasks(label_columns: Mapping[str, str | TaskSpec]) -> tuple[TaskSpec, ...]:
    """The tasks of ``{label column: kind or TaskSpec}``, in order (a kind is checked)."""
    if not label_columns:
        raise UserError("label_columns must name at least one label column.")
    tasks = []
    for name, kind in label_columns.items():
        if isinstance(kind, TaskSpec):
            if kind.name != name:
                raise UserError(f"label_columns[{name!r}] is a TaskSpec named {kind.name!r}.")
            tasks.append(kind)
        else:
            tasks.append(TaskSpec(name, kind))
    return tuple(tasks)


def multiclass_expects(column: str, num_classes: int) -> str:
    """What a cell of a multiclass label column may hold, for error messages.

    Example:
        >>> multiclass_expects("digit", 10)
        "multiclass label column 'digit' expects a class id 0..9 (an integer) or empty"
    """
    return (f"multiclass label column {column!r} expects a class id 0..{num_classes - 1} "
            f"(an integer) or empty")


def check_fractions(validation_fraction: float, test_fraction: float,
                    together: bool = True) -> None:
    """Each fraction in [0, 1) and, when both cut the same rows (``together``), their sum < 1.

    Raises:
        UserError: naming the fraction and the value.
    """
    for frac, what in ((validation_fraction, "validation_fraction"),
                       (test_fraction, "test_fraction")):
        if not 0 <= frac < 1:
            raise UserError(f"{what} must be in [0, 1), got {frac}.")
    if together and validation_fraction + test_fraction >= 1:
        raise UserError(f"validation_fraction + test_fraction must be < 1, got "
                        f"{validation_fraction} + {test_fraction}.")


def check_columns_present(path, columns: Sequence[str],
                          wanted: Sequence[tuple[str, Sequence[str]]]) -> None:
    """Every column named in ``wanted`` (``(kind, names)`` pairs) is one of ``columns``.

    Raises:
        DataError: ``<path>: no <kind> column(s) [...]; columns are [...]``, for the first
            kind with a column missing.
    """
    for kind, names in wanted:
        absent = [c for c in names if c not in columns]
        if absent:
            raise DataError(f"{path}: no {kind} column(s) {absent}; columns are {columns}.")


def _header(path, sep: str, header: bool, names: Sequence[str] | None) -> list[str]:
    """Column names of a file: ``names`` if given, else its header row."""
    if names is not None:
        return [str(n) for n in names]
    if not header:
        raise UserError("Give names when the file has no header row.")
    with _open_text(path) as f:
        first = next(_rows(f, sep, path), None)
    if first is None:
        raise DataError(f"{path}: empty file, expected a header row.")
    return [n.strip() for n in first[1]]


NONFINITE_POLICIES = ("error", "impute")
_IMPUTE_HINT = ("fix the value, or pass nonfinite='impute' (--csv_nonfinite=impute) to use the "
                "training mean for empty and non-finite numeric cells.")


def _read_split(path, tasks, categorical, numeric, sep, header, names, nonfinite) -> Split:
    columns = _header(path, sep, header, names)
    check_columns_present(path, columns, (("label", [t.name for t in tasks]),
                                          ("numeric", numeric), ("categorical", categorical)))
    label_names = [t.name for t in tasks]
    cols, lines = read_csv_with_lines(
        path, names=names, numeric=[*label_names, *numeric], sep=sep, header=header,
        allow_missing=label_names, missing_numeric=numeric if nonfinite == "impute" else (),
        nonfinite_hint=_IMPUTE_HINT)
    if not len(lines):
        raise DataError(f"{path}: no data rows{' after the header' if header else ''}.")
    labels = {}
    for task in tasks:
        y = cols[task.name]
        if task.kind == "binary":
            bad = ~np.isnan(y) & (y != 0) & (y != 1)
            if bad.any():
                i = int(np.argmax(bad))
                raise DataError(f"{path}:{lines[i]}: binary label column {task.name!r} "
                                f"expects 0, 1 or empty, got {y[i]:g}")
        elif task.kind == "multiclass":
            bad = ~np.isnan(y) & ((y != np.round(y)) | (y < 0) | (y >= task.num_classes))
            if bad.any():
                i = int(np.argmax(bad))
                expects = multiclass_expects(task.name, task.num_classes)
                raise DataError(f"{path}:{lines[i]}: {expects}, got {y[i]:g}")
        labels[task.name] = y.astype(np.float32)
    return Split({c: cols[c] for c in [*categorical, *numeric]}, labels)


def impute_training_mean(splits: Mapping[str, Split], numeric: Sequence[str],
                         log_numeric: Collection[str] = (), source: str = "") -> dict:
    """Replace NaN numeric cells of every split by the training split's mean, in place.

    The mean is taken over the finite training values after the feature's transform
    (``log1p(max(x, 0))`` for ``log_numeric``), and the raw value stored is the one whose
    transform equals it, so an imputed cell normalises to exactly 0: what the serving
    signatures give a NaN, infinite or missing numeric input. Each imputed column is logged
    with its counts per split.

    Args:
        splits: ``{"train": ..., "validation": ..., "test": ...}``; ``"train"`` is required.
        numeric: the numeric columns to impute.
        log_numeric: the subset normalised after ``log1p``.
        source: file name for the log lines and errors.

    Returns:
        ``{column: {split: cells imputed}}`` for the columns with any.

    Raises:
        DataError: a column has no finite value in the training split.

    Example:
        >>> train = Split({"x": np.array([1.0, np.nan, 3.0])}, {})
        >>> impute_training_mean({"train": train}, ["x"]), train.features["x"].tolist()
        ({'x': {'train': 1}}, [1.0, 2.0, 3.0])
    """
    from absl import logging

    counts = {}
    for name in numeric:
        missing = {k: np.isnan(s.features[name]) for k, s in splits.items()}
        if not any(m.any() for m in missing.values()):
            continue
        x = splits["train"].features[name][~missing["train"]]
        if not len(x):
            raise DataError(f"{source}: column {name!r} has no finite value in the training "
                            f"split; there is no mean to impute.")
        if name in log_numeric:
            fill = float(np.expm1(np.mean(np.log1p(np.maximum(x, 0.0)))))
        else:
            fill = float(np.mean(x))
        for key, split in splits.items():
            split.features[name][missing[key]] = fill
        counts[name] = {k: int(m.sum()) for k, m in missing.items() if m.any()}
        logging.warning("%s: column %r: %s empty or non-finite cells imputed with the "
                        "training mean %.6g.", source, name,
                        ", ".join(f"{n} {k}" for k, n in counts[name].items()), fill)
    return counts


def load_csv_dataset(
    train_path: str | os.PathLike,
    test_path: str | os.PathLike | None = None,
    label_columns: Mapping[str, str | TaskSpec] | None = None,
    categorical: Sequence[str] | None = None,
    numeric: Sequence[str] = (),
    log_numeric: Sequence[str] = (),
    hashed: Mapping[str, int] | None = None,
    min_count: int = 1,
    max_vocabulary: int | None = None,
    sep: str = ",",
    header: bool = True,
    names: Sequence[str] | None = None,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    name: str = "csv",
    nonfinite: str = "error",
) -> MultiTaskData:
    """A multi-task dataset from your own delimited file(s).

    Labels are read as float32; an empty label cell is NaN, a missing label that training
    masks out of that task's loss. Binary labels must be 0 or 1, multiclass labels class ids
    ``0 .. K-1`` (``"2"`` or ``"2.0"``); ``nan``, ``inf`` or a number
    beyond float32's range in a label is an error naming file, line and field. The feature
    spec is fitted on the training split only.

    Numeric feature cells must be finite numbers by default (``nonfinite="error"``): an
    empty cell, ``nan``, ``inf`` or a number float32 cannot hold is an error naming file,
    line and field. With ``nonfinite="impute"`` such cells are missing values, replaced by
    the training mean (see :func:`impute_training_mean`; counts are logged per column).

    With only ``train_path``, its rows are shuffled by ``seed`` and cut into train,
    validation (``validation_fraction``) and test (``test_fraction``). With ``test_path``
    too, that file is the test split and ``validation_fraction`` of the first file's rows
    (random by ``seed``) is the validation split.

    Args:
        train_path: the (training) file.
        test_path: an optional separate test file with the same columns.
        label_columns: label column -> task kind (``"binary"``, ``"regression"`` or
            ``"multiclass:K"`` for ``K`` classes), or a :class:`TaskSpec` named like the
            column.
        categorical: categorical feature columns. Default None: every column that is not
            a label and not numeric.
        numeric: numeric feature columns (float; an empty cell is an error).
        log_numeric: subset of ``numeric`` to ``log1p``-compress (heavy-tailed amounts).
        hashed: categorical columns to hash instead of looking up, with bucket counts.
        min_count: rarer categorical values go to the out-of-vocabulary bucket. Default 1.
        max_vocabulary: keep at most this many values per categorical feature.
        sep: field separator. Default ``","``.
        header: the files start with a header row. Default True.
        names: column names (required when ``header=False``).
        validation_fraction: share of training-file rows held out for validation. 0.1.
        test_fraction: share held out for test when there is no test file. 0.1.
        seed: seed of the random split. Default 0.
        name: dataset name. Default ``"csv"``.
        nonfinite: ``"error"`` (default) or ``"impute"``: what an empty or non-finite
            numeric feature cell does.

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "log.csv"
        >>> _ = path.write_text("item,price,click\\n" + "a,1,1\\nb,2,0\\n" * 10)
        >>> data = load_csv_dataset(path, label_columns={"click": "binary"},
        ...                         numeric=["price"])
        >>> len(data.train), len(data.validation), len(data.test)
        (16, 2, 2)
    """
    if label_columns is None:
        raise UserError("label_columns is required, e.g. {'click': 'binary'}.")
    tasks = as_tasks(label_columns)
    if nonfinite not in NONFINITE_POLICIES:
        raise UserError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {nonfinite!r}.")
    check_fractions(validation_fraction, test_fraction, together=test_path is None)
    label_names = [t.name for t in tasks]
    overlap = sorted(set(label_names) & {*numeric, *(categorical or ())})
    if overlap:
        raise UserError(f"Columns {overlap} are labels and cannot also be features.")
    unknown_log = sorted(set(log_numeric) - set(numeric))
    if unknown_log:
        raise UserError(f"log_numeric {unknown_log} must also be listed in numeric.")

    if categorical is None:
        columns = _header(train_path, sep, header, names)
        categorical = [c for c in columns if c not in {*label_names, *numeric}]
    categorical, numeric = list(categorical), list(numeric)
    not_categorical = sorted(set(hashed or {}) - set(categorical))
    if not_categorical:
        raise UserError(f"Hashed columns {not_categorical} are not categorical feature "
                        f"columns ({categorical}).")
    if not categorical and not numeric:
        raise UserError("No feature columns: every column is a label.")

    def read(path):
        return _read_split(path, tasks, categorical, numeric, sep, header, names, nonfinite)

    full = read(train_path)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(full))
    n_val = int(round(validation_fraction * len(full)))
    if test_path is None:
        n_test = int(round(test_fraction * len(full)))
        test = full.take(np.sort(order[:n_test]))
        validation = full.take(np.sort(order[n_test:n_test + n_val]))
        train = full.take(np.sort(order[n_test + n_val:]))
    else:
        test = read(test_path)
        validation = full.take(np.sort(order[:n_val]))
        train = full.take(np.sort(order[n_val:]))
    if len(train) == 0:
        raise DataError(f"{train_path}: no training rows left after the split.")
    if nonfinite == "impute":
        impute_training_mean({"train": train, "validation": validation, "test": test},
                             numeric, log_numeric, source=os.fspath(train_path))
    spec = FeatureSpec.fit(train.features, categorical=categorical, numeric=numeric,
                           log_numeric=log_numeric, hashed=hashed, min_count=min_count,
                           max_vocabulary=max_vocabulary)
    return MultiTaskData(name, train, validation, test, spec, tasks)
