"""The layout of a prepared dataset directory (written by ``tfmtnas-prepare``, read by streams).

A prepared directory is complete when, and only when, :data:`MANIFEST` exists: the writer
builds everything in a temporary sibling folder and renames it into place at the end::

    <dir>/
      manifest.json                 rows and sha256 per shard, the options, skipped rows
      spec.json                     {"format", "features": FeatureSpec, "tasks": [TaskSpec]}
      vocabularies/<feature>.txt    one value per line, most frequent first (line i -> id i+1)
      train/part-00000-of-00008.tfrecord.gz
      validation/part-...
      test/part-...

Each record is a serialized ``tf.Example`` of the *raw* row: a categorical feature as one
``bytes`` value (the cell as written), a numeric feature as one ``float`` (not normalised),
and each task's label as one ``float``, NaN where the label is missing. Normalisation and
vocabulary lookups happen when the stream is read, with the spec, exactly as for in-memory
data.

Example:
    >>> shard_path("train", 3, 8)
    'train/part-00003-of-00008.tfrecord.gz'
"""

from __future__ import annotations

import tensorflow as tf

from tfmtnas.errors import DataError
from tfmtnas.features import FeatureSpec, TaskSpec

FORMAT = 1
MANIFEST = "manifest.json"
SPEC = "spec.json"
VOCABULARY_DIR = "vocabularies"
COMPRESSION = "GZIP"
SPLITS = ("train", "validation", "test")


def shard_path(split: str, index: int, count: int) -> str:
    """Path of shard ``index`` of ``count`` of ``split``, relative to the dataset folder."""
    return f"{split}/part-{index:05d}-of-{count:05d}.tfrecord.gz"


def vocabulary_path(feature: str) -> str:
    """Path of a feature's vocabulary file, relative to the dataset folder.

    Raises:
        DataError: the feature name cannot be a file name (it holds ``/`` or ``\\`` or
            starts with ``.``).
    """
    if "/" in feature or "\\" in feature or feature.startswith("."):
        raise DataError(f"Column {feature!r}: its vocabulary needs a file, and this name "
                        f"cannot be a file name; rename the column or hash it.")
    return f"{VOCABULARY_DIR}/{feature}.txt"


def record_description(spec: FeatureSpec, tasks: tuple[TaskSpec, ...] | list[TaskSpec]
                       ) -> dict[str, tf.io.FixedLenFeature]:
    """The ``tf.io.parse_example`` description of a prepared record.

    Categorical features: ``string``, default ``""``; numeric features: ``float32``,
    required; labels: ``float32``, default NaN (missing).
    """
    out: dict[str, tf.io.FixedLenFeature] = {}
    for f in spec.categorical:
        out[f.name] = tf.io.FixedLenFeature([], tf.string, default_value="")
    for f in spec.numeric:
        out[f.name] = tf.io.FixedLenFeature([], tf.float32)
    for t in tasks:
        out[t.name] = tf.io.FixedLenFeature([], tf.float32, default_value=float("nan"))
    return out
