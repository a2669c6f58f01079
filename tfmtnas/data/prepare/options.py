"""The options of a prepare, checked: what each input column is, per-column values, shards.

Holds :class:`Columns` (the role of every header column, as indices: categorical, numeric,
label, hashed, split key) and :func:`columns`, which builds it from the header and the
options with errors that name the column; :func:`per_column` (one value or ``{column:
value}`` with a ``"*"`` default, as ``min_count`` and ``max_vocabulary`` take) and
:func:`shard_counts` (validation and test get shards in proportion to train).

Example:
    >>> from tfmtnas.features import TaskSpec
    >>> cols = columns(["user", "price", "click"], "log.csv", [TaskSpec("click", "binary")],
    ...                None, ["price"], [], {}, "user")
    >>> cols.categorical, cols.numeric, cols.labels, cols.key
    ([0], [1], [2], 0)
    >>> shard_counts(8, 0.1, 0.1)
    {'train': 8, 'validation': 1, 'test': 1}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from tfmtnas.data.csv import check_columns_present
from tfmtnas.errors import UserError
from tfmtnas.features import TaskSpec

BAD_ROW_POLICIES = ("error", "skip")


@dataclasses.dataclass
class Columns:
    """What prepare does with each input column: indices into the header."""

    names: list[str]
    categorical: list[int]
    numeric: list[int]
    log: list[bool]
    labels: list[int]
    binary: list[bool]
    classes: list[int | None]  # per label: K of a multiclass task, else None
    hashed: dict[int, int]  # position in categorical -> bins
    key: int | None

    @property
    def used(self) -> list[int]:
        return sorted({*self.categorical, *self.numeric, *self.labels,
                       *([self.key] if self.key is not None else [])})


def shard_counts(num_shards: int, validation_fraction: float, test_fraction: float
                 ) -> dict[str, int]:
    """Shard files per split: ``num_shards`` for train, the others in proportion, >= 1."""
    train = max(1.0 - validation_fraction - test_fraction, 1e-9)
    return {"train": num_shards,
            "validation": max(1, round(num_shards * validation_fraction / train)),
            "test": max(1, round(num_shards * test_fraction / train))}


def per_column(value: int | Mapping[str, int] | None, names: Sequence[str], what: str,
               default: int | None, minimum: int) -> dict[str, int | None]:
    """One value for every column, or ``{column: value}`` (key ``"*"``: the other columns)."""
    if value is None or isinstance(value, (int, np.integer)):
        out = {n: (default if value is None else int(value)) for n in names}
    else:
        value = dict(value)
        default = value.pop("*", default)
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise UserError(f"{what} names {unknown}, which are not vocabulary columns "
                            f"{list(names)}.")
        out = {n: (int(value[n]) if n in value else default) for n in names}
    bad = {n: v for n, v in out.items() if v is not None and v < minimum}
    if bad:
        raise UserError(f"{what} must be >= {minimum}, got {bad}.")
    return out


def columns(names: list[str], path: str, tasks: Sequence[TaskSpec],
            categorical: Sequence[str] | None, numeric: Sequence[str],
            log_numeric: Sequence[str], hashed: Mapping[str, int],
            key_column: str | None) -> Columns:
    """The role of each of the header ``names`` of ``path``, checked against the options.

    Raises:
        DataError: a named column is not in the header.
        UserError: the options contradict each other (a label that is also a feature, a
            hashed column that is not categorical, no feature column, ...).
    """
    label_names = [t.name for t in tasks]
    if categorical is None:
        categorical = [c for c in names if c not in {*label_names, *numeric}]
    check_columns_present(path, names, (("label", label_names), ("numeric", numeric),
                                        ("categorical", categorical),
                                        ("key", [key_column] if key_column else [])))
    overlap = sorted(set(label_names) & {*numeric, *categorical})
    if overlap:
        raise UserError(f"Columns {overlap} are labels and cannot also be features.")
    both = sorted(set(numeric) & set(categorical))
    if both:
        raise UserError(f"Columns {both} are both numeric and categorical.")
    if not categorical and not numeric:
        raise UserError("No feature columns: every column is a label.")
    unknown_log = sorted(set(log_numeric) - set(numeric))
    if unknown_log:
        raise UserError(f"log_numeric {unknown_log} must also be numeric columns.")
    unknown_hash = sorted(set(hashed) - set(categorical))
    if unknown_hash:
        raise UserError(f"hash_columns {unknown_hash} must be categorical columns "
                        f"{list(categorical)}.")
    bad_bins = {c: b for c, b in hashed.items() if int(b) < 1}
    if bad_bins:
        raise UserError(f"hash_columns bins must be >= 1, got {bad_bins}.")
    index = {n: i for i, n in enumerate(names)}
    return Columns(
        names=names, categorical=[index[c] for c in categorical],
        numeric=[index[c] for c in numeric], log=[c in set(log_numeric) for c in numeric],
        labels=[index[c] for c in label_names], binary=[t.kind == "binary" for t in tasks],
        classes=[t.num_classes if t.kind == "multiclass" else None for t in tasks],
        hashed={list(categorical).index(c): int(b) for c, b in hashed.items()},
        key=index[key_column] if key_column else None)
