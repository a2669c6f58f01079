"""Write an in-memory dataset as a prepared folder: :func:`write_prepared`.

Holds :func:`write_prepared`, which writes a :class:`~tfmtnas.data.base.MultiTaskData`
(Census, MovieLens, your CSV) in the layout :func:`~tfmtnas.data.prepare.prepare` writes
(:mod:`tfmtnas.data.layout`): its spec kept as it is, its own train/validation/test splits
serialized with the same record encoder and shard files, so the streaming binaries read
it like a prepared click log.

Example: see :func:`write_prepared`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfmtnas.data import layout
from tfmtnas.data.base import MultiTaskData
from tfmtnas.data.prepare.example import RecordEncoder
from tfmtnas.data.prepare.fitting import label_stats, label_sums, spec_doc, write_vocabulary
from tfmtnas.data.prepare.staging import Staging, write_json
from tfmtnas.data.prepare.tfrecord import DEFAULT_COMPRESSION_LEVEL, ShardFiles, shard_pieces
from tfmtnas.features import CategoricalFeature, FeatureSpec


def write_prepared(data: MultiTaskData, output_dir: str | os.PathLike, num_shards: int = 8,
                   compression_level: int = DEFAULT_COMPRESSION_LEVEL,
                   overwrite: bool = False, chunk_rows: int = 65_536) -> dict:
    """Write an in-memory dataset as a prepared folder, with its spec and its splits.

    The spec is kept as it is (inline vocabularies stay inline; a ``vocabulary_file`` is
    copied to ``vocabularies/``). Validation and test get proportionally fewer shards than
    train (by their row counts), at least one.

    Args:
        data: the dataset (e.g. from :func:`tfmtnas.data.load_dataset`).
        output_dir: the prepared folder to create.
        num_shards: train shard files. Default 8.
        compression_level: gzip level 1..9. Default 3.
        overwrite: replace an existing prepared folder. Default False.
        chunk_rows: rows serialized at a time. Default 65,536.

    Returns:
        The manifest (also written to ``<output_dir>/manifest.json``).

    Example:
        >>> from tfmtnas.data import make_synthetic
        >>> import tempfile
        >>> data = make_synthetic(num_train=100, num_validation=10, num_test=10)
        >>> write_prepared(data, tempfile.mkdtemp() + "/synthetic")["splits"]["train"]["rows"]
        100
    """
    started = time.perf_counter()
    spec, tasks = data.spec, tuple(data.tasks)
    splits = data.splits()
    n_train = max(len(splits["train"]), 1)
    shard_counts = {s: num_shards if s == "train" else
                    max(1, min(num_shards, round(num_shards * len(splits[s]) / n_train)))
                    for s in layout.SPLITS}
    staging = Staging(Path(output_dir), overwrite)
    writers: dict[str, ShardFiles] = {}
    try:
        features = []
        for f in spec.categorical:
            if f.vocabulary_file is not None:
                values = Path(f.vocabulary_file).read_bytes().split(b"\n")[:f.vocabulary_size]
                path = write_vocabulary(staging.path, f.name, values)
                f = CategoricalFeature(f.name, vocabulary_file=path,
                                       vocabulary_size=f.vocabulary_size)
            features.append(f)
        spec = FeatureSpec(tuple(features), spec.numeric)
        encoder = RecordEncoder([f.name for f in spec.categorical],
                                [f.name for f in spec.numeric] + [t.name for t in tasks])
        writers = {s: ShardFiles(staging.path, s, shard_counts[s]) for s in layout.SPLITS}
        counts = [shard_counts[s] for s in layout.SPLITS]
        labels = np.zeros((len(layout.SPLITS), len(tasks), 2))
        for s, split in enumerate(layout.SPLITS):
            part = splits[split]
            for start in range(0, len(part), chunk_rows):
                rows = part.take(slice(start, start + chunk_rows))
                cats = [_as_bytes(rows.features[f.name]) for f in spec.categorical]
                y = np.stack([np.asarray(rows.labels[t.name], np.float64) for t in tasks],
                             axis=1)
                floats = np.concatenate(
                    [np.stack([np.asarray(rows.features[f.name], np.float64)
                               for f in spec.numeric], axis=1).reshape(len(rows), -1), y],
                    axis=1)
                records = encoder.encode(cats, floats.astype(np.float32))
                pieces = shard_pieces(records, np.full(len(rows), s), start // chunk_rows,
                                      counts, compression_level)
                for (_, shard), piece in sorted(pieces.items()):
                    writers[split].add(shard, piece)
                labels[s] += label_sums(y)
        shards = {s: w.close() for s, w in writers.items()}
        writers = {}
        write_json(staging.path / layout.SPEC, spec_doc(spec, tasks))
        rows = {s: sum(x["rows"] for x in shards[s]) for s in layout.SPLITS}
        seconds = time.perf_counter() - started
        manifest = {
            "format": layout.FORMAT, "source": data.name, "inputs": [],
            "options": {"num_shards": shard_counts, "compression_level": compression_level},
            "rows": sum(rows.values()), "skipped_rows": 0, "skipped": [],
            "splits": {s: {"rows": rows[s], "shards": shards[s]} for s in layout.SPLITS},
            "columns": {}, "labels": label_stats(tasks, labels),
            "seconds": round(seconds, 3),
            "rows_per_second": round(sum(rows.values()) / seconds, 1) if seconds else None,
        }
        write_json(staging.path / layout.MANIFEST, manifest)
        staging.commit()
        return manifest
    except BaseException:
        for w in writers.values():
            w.abort()
        staging.abort()
        raise


def _as_bytes(column: np.ndarray) -> np.ndarray:
    """A raw categorical column as UTF-8 bytes, as the preprocessor would see it."""
    column = np.asarray(column)
    if column.dtype.kind in "OUS":
        return np.array([v if isinstance(v, bytes) else str(v).encode("utf-8")
                         for v in column.tolist()], dtype=object)
    return tf.strings.as_string(column).numpy()
