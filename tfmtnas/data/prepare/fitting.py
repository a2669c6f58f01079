"""What a prepare learns from the data: block results merged, then the spec and the stats.

Holds :class:`Result` (one block's rows, bad-row messages, shard pieces and training
summaries), :func:`label_sums`, :class:`Totals` (results merged in file order: vocabulary
counts, occupied hash buckets, numeric moments by the pairwise update of Chan et al.,
minimum and maximum, label sums), and what is fitted from the totals: :func:`fit_spec`
(the :class:`~tfmtnas.features.FeatureSpec`, vocabulary files and the manifest's
``columns``), :func:`label_stats` (its ``labels``) and :func:`spec_doc` (``spec.json``).

Example:
    >>> import numpy as np
    >>> label_sums(np.array([[1.0, 2.5], [0.0, np.nan], [1.0, 4.0]])).tolist()
    [[3.0, 2.0], [2.0, 6.5]]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tfmtnas.data import layout
from tfmtnas.data.prepare.options import Columns
from tfmtnas.data.prepare.tfrecord import Piece
from tfmtnas.features import (
    CategoricalFeature,
    FeatureSpec,
    NumericFeature,
    TaskSpec,
    rank_vocabulary,
)

MAX_REPORTED_BAD_ROWS = 20


@dataclasses.dataclass
class Result:
    """One block's contribution, merged in file order by the main thread."""

    rows: int  # data rows of the block (bad ones included)
    bad: list[str]  # "file:line: reason" of each bad row, in line order
    pieces: dict[tuple[int, int], Piece]  # (split id, shard) -> deflated records
    vocab: dict[int, tuple[list, list]]  # categorical position -> (values, counts), train
    buckets: dict[int, np.ndarray]  # categorical position -> occupied buckets, train
    moments: np.ndarray  # [3, n_numeric]: count, mean, M2 of training values
    minmax: np.ndarray  # [2, n_numeric]
    labels: np.ndarray  # [n_splits, n_tasks, 2]: rows with a label, sum of labels


def label_sums(y: np.ndarray) -> np.ndarray:
    """``[n_tasks, 2]``: per column of ``y`` (``[n, n_tasks]``, NaN = missing), the rows
    with a label and the sum of the labels."""
    has = ~np.isnan(y)
    return np.stack([has.sum(axis=0), np.where(has, y, 0.0).sum(axis=0)], axis=1)


class Totals:
    """Counts, moments and label sums merged over blocks."""

    def __init__(self, cols: Columns):
        self.rows = 0
        self.skipped = 0
        self.messages: list[str] = []
        self.vocab: dict[int, dict[bytes, int]] = {
            j: {} for j in range(len(cols.categorical)) if j not in cols.hashed}
        self.buckets = {j: np.zeros(bins, bool) for j, bins in cols.hashed.items()}
        k = len(cols.numeric)
        self.moments = np.zeros((3, k))
        self.minmax = np.stack([np.full(k, np.inf), np.full(k, -np.inf)])
        self.labels = np.zeros((len(layout.SPLITS), len(cols.labels), 2))

    def add(self, result: Result) -> None:
        self.rows += result.rows
        self.skipped += len(result.bad)
        room = MAX_REPORTED_BAD_ROWS - len(self.messages)
        self.messages += result.bad[:max(room, 0)]
        for j, (values, counts) in result.vocab.items():
            table = self.vocab[j]
            get = table.get
            for value, count in zip(values, counts):
                table[value] = get(value, 0) + count
        for j, occupied in result.buckets.items():
            self.buckets[j][occupied] = True
        (na, ma, m2a), (nb, mb, m2b) = self.moments, result.moments
        n = na + nb
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = mb - ma
            share = np.where(n > 0, nb / np.maximum(n, 1), 0.0)
            self.moments = np.stack([n, ma + delta * share,
                                     m2a + m2b + delta ** 2 * na * share])
        self.minmax = np.stack([np.minimum(self.minmax[0], result.minmax[0]),
                                np.maximum(self.minmax[1], result.minmax[1])])
        self.labels += result.labels


def write_vocabulary(root: Path, name: str, values: Sequence[bytes]) -> str:
    """Write ``values`` to the vocabulary file of feature ``name`` under ``root``, one a line;
    its path relative to ``root``."""
    relative = layout.vocabulary_path(name)
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for value in values:
            f.write(value + b"\n")
    return relative


def spec_doc(spec: FeatureSpec, tasks: Sequence[TaskSpec]) -> dict:
    """The ``spec.json`` document of a prepared folder."""
    return {"format": layout.FORMAT, "features": spec.to_dict(),
            "tasks": [t.to_dict() for t in tasks]}


def label_stats(tasks: Sequence[TaskSpec], sums: np.ndarray) -> dict:
    """The manifest's ``labels``: per split and task, rows with a label and positives
    (binary) or the mean (regression; none for a multiclass task), from
    ``[n_splits, n_tasks, 2]`` label sums."""
    out = {}
    for s, split in enumerate(layout.SPLITS):
        out[split] = {}
        for t, task in enumerate(tasks):
            n, total = int(sums[s, t, 0]), float(sums[s, t, 1])
            entry = {"rows_with_label": n}
            if task.kind == "binary":
                entry["positives"] = int(round(total))
            elif task.kind == "regression":
                entry["mean"] = total / n if n else None
            out[split][task.name] = entry
    return out


def fit_spec(root: Path, cols: Columns, header: list[str], totals: Totals,
             min_counts: dict, max_vocabs: dict, inline_max: int, train_rows: int
             ) -> tuple[FeatureSpec, dict]:
    """The feature spec from the merged training counts; vocabulary files; column stats."""
    features, stats = [], {}
    for j, c in enumerate(cols.categorical):
        name = header[c]
        if j in cols.hashed:
            features.append(CategoricalFeature(name, hash_bins=cols.hashed[j]))
            stats[name] = {"kind": "hashed", "bins": cols.hashed[j],
                           "occupied_bins": int(totals.buckets[j].sum())}
            continue
        counts = totals.vocab[j]
        values = rank_vocabulary(counts, min_counts[name], max_vocabs[name])
        oov_rows = train_rows - sum(counts[v] for v in values)
        entry = {"kind": "vocabulary", "distinct": len(counts), "kept": len(values),
                 "min_count": min_counts[name], "max_vocabulary": max_vocabs[name],
                 "oov_rows": oov_rows, "oov_share": oov_rows / train_rows}
        if len(values) > inline_max:
            path = write_vocabulary(root, name, values)
            features.append(CategoricalFeature(name, vocabulary_file=path,
                                               vocabulary_size=len(values)))
            entry["vocabulary_file"] = path
        else:
            features.append(CategoricalFeature(
                name, vocabulary=tuple(v.decode("utf-8") for v in values)))
        stats[name] = entry
    numeric = []
    (n, mean, m2), (lo, hi) = totals.moments, totals.minmax
    for i, c in enumerate(cols.numeric):
        std = math.sqrt(m2[i] / n[i]) if n[i] else 0.0
        numeric.append(NumericFeature(header[c], float(mean[i]), std if std > 0 else 1.0,
                                      cols.log[i]))
        stats[header[c]] = {"kind": "numeric", "mean": float(mean[i]), "std": std,
                            "log": cols.log[i], "min": float(lo[i]), "max": float(hi[i])}
    return FeatureSpec(tuple(features), tuple(numeric)), stats

