"""Raw rows or columns -> one NumPy column per feature, in the dtypes the signatures take.

Shared by the client helpers (requests), the SavedModel predictor and the evaluate binary,
so every path sends a feature the same way: categorical values as strings, numeric values
as float32.

Example:
    >>> to_columns([{"color": "red", "size": 1}, {"color": "blue", "size": 2.5}], spec)
    {'color': array(['red', 'blue'], dtype=object), 'size': array([1. , 2.5], dtype=float32)}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from tfmtnas.errors import UserError
from tfmtnas.features import FeatureSpec

Rows = Sequence[Mapping[str, object]]
Columns = Mapping[str, Sequence]


def _as_text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def rows_to_columns(rows: Rows) -> dict[str, list]:
    """A list of row dicts -> a dict of columns; every row must have the same keys."""
    if not isinstance(rows, Sequence) or isinstance(rows, str | bytes):
        raise TypeError(f"Expected a list of row dicts, got {type(rows).__name__}.")
    if not rows:
        raise UserError("No rows given.")
    keys = list(rows[0])
    cols: dict[str, list] = {k: [] for k in keys}
    for i, row in enumerate(rows):
        if set(row) != set(keys):
            missing = sorted(set(keys) - set(row))
            extra = sorted(set(row) - set(keys))
            raise UserError(f"Row {i} has different features than row 0: missing {missing}, "
                            f"extra {extra}.")
        for k in keys:
            cols[k].append(row[k])
    return cols


def to_columns(data: Rows | Columns, spec: FeatureSpec | None = None) -> dict[str, np.ndarray]:
    """Rows (list of dicts) or columns (dict of sequences) -> ``{feature: 1-D array}``.

    With ``spec``: exactly the spec's features, in spec order (extra keys are dropped),
    categorical as an object array of ``str``, numeric as ``float32``; a missing feature or
    a non-numeric value of a numeric feature raises ``ValueError`` naming the feature.
    Without ``spec``: every key, strings kept as strings, numbers as ``float32``.
    """
    cols = dict(data) if isinstance(data, Mapping) else rows_to_columns(data)
    if spec is not None:
        missing = [n for n in spec.names if n not in cols]
        if missing:
            raise UserError(f"Missing features {missing}; the model takes {spec.names}.")
        kinds = {f.name: "categorical" for f in spec.categorical}
        kinds.update({f.name: "numeric" for f in spec.numeric})
    else:
        kinds = {k: _guess_kind(k, v) for k, v in cols.items()}
    out = {}
    for name, kind in kinds.items():
        raw = np.asarray(cols[name])
        values = raw.astype(object) if raw.dtype.kind in "US" else np.asarray(cols[name],
                                                                               dtype=object)
        if values.ndim != 1:
            raise UserError(f"Feature {name!r}: expected one value per example (a flat "
                            f"list), got shape {values.shape}.")
        if kind == "categorical":
            if raw.dtype.kind == "U":
                out[name] = values
            else:
                out[name] = np.array([_as_text(v) for v in values], dtype=object)
        else:
            try:
                out[name] = values.astype(np.float32)
            except (TypeError, ValueError):
                raise UserError(f"Feature {name!r} is numeric; got non-numeric values "
                                f"{values[:3].tolist()}.") from None
    lengths = {n: len(v) for n, v in out.items()}
    if len(set(lengths.values())) > 1:
        raise UserError(f"Features have different numbers of values: {lengths}.")
    return out


def _guess_kind(name: str, values) -> str:
    values = list(values)
    if all(isinstance(v, str | bytes) for v in values):
        return "categorical"
    if all(isinstance(v, int | float | np.number) and not isinstance(v, bool) for v in values):
        return "numeric"
    raise UserError(f"Feature {name!r}: cannot tell whether it is categorical or numeric "
                    f"from its values; pass the model's feature spec.")
