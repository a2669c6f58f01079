"""Streaming input from a prepared dataset directory (written by ``tfmtnas-prepare``).

:func:`load_prepared` opens a directory laid out as :mod:`tfmtnas.data.layout` says and
returns a :class:`PreparedData`. Its :meth:`PreparedData.dataset` reads a split as a
``tf.data`` pipeline that never holds the split in memory: shard files read interleaved,
a bounded shuffle buffer of serialized records, batches parsed and looked up in parallel
(``parse_example`` then :class:`~tfmtnas.features.FeaturePreprocessor`), prefetch. Under
``tf.distribute`` each worker reads its own files (or, with fewer files than workers,
every n-th record) through the ``InputContext``.

:class:`PreparedData` answers the same calls as the in-memory
:class:`~tfmtnas.data.base.MultiTaskData` (``dataset``, ``num_rows``, ``spec``, ``tasks``),
so the binaries train, search and evaluate on either.

Example:
    >>> data = load_prepared("clicks_prepared")
    >>> ds = data.dataset("train", batch_size=1024, shuffle=True, seed=0)
    >>> features, labels = next(iter(ds))
    >>> sorted(features), sorted(labels)
    (['categorical', 'numeric'], ['buy', 'click'])
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfmtnas.data import layout
from tfmtnas.data.base import DataError
from tfmtnas.data.pipeline import seeded_shuffle
from tfmtnas.features import FeaturePreprocessor, FeatureSpec, TaskSpec

DEFAULT_SHUFFLE_BUFFER = 100_000


@dataclasses.dataclass
class PreparedData:
    """A prepared dataset on disk: its spec, tasks, manifest and shard files.

    Args:
        name: dataset name (the folder name).
        path: the dataset folder.
        spec: the feature spec, vocabulary files resolved against ``path``.
        tasks: the tasks, in label order.
        manifest: the parsed ``manifest.json``.
    """

    name: str
    path: Path
    spec: FeatureSpec
    tasks: tuple[TaskSpec, ...]
    manifest: dict

    def files(self, split: str) -> list[str]:
        """The shard files of ``split`` in manifest order."""
        return [str(self.path / s["path"]) for s in self._split(split)["shards"]]

    def num_rows(self, split: str) -> int:
        """Rows of ``split`` (from the manifest)."""
        return int(self._split(split)["rows"])

    def _split(self, split: str) -> dict:
        splits = self.manifest.get("splits", {})
        if split not in splits:
            raise DataError(f"{self.path}: no split {split!r} in the manifest (has "
                            f"{sorted(splits)}).")
        return splits[split]

    def dataset(self, split: str, batch_size: int, shuffle: bool = False,
                seed: int | None = None, repeat: bool = False,
                input_context: tf.distribute.InputContext | None = None,
                part: tuple[int, int] | None = None,
                shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
                epoch: tf.Variable | None = None) -> tf.data.Dataset:
        """``(features, labels)`` batches of ``split``; see :func:`make_stream_dataset`."""
        if self.num_rows(split) == 0:
            raise DataError(f"{self.path}: split {split!r} has no rows.")
        return make_stream_dataset(self.files(split), self.spec, self.tasks, batch_size,
                                   shuffle=shuffle, seed=seed, repeat=repeat,
                                   input_context=input_context, part=part,
                                   shuffle_buffer=shuffle_buffer,
                                   num_rows=self.num_rows(split), epoch=epoch)

    def raw_batches(self, split: str, batch_size: int
                    ) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
        """Raw (unpreprocessed) feature and label columns of ``split``, in file order.

        Categorical values come as ``object`` arrays of UTF-8 ``bytes``, numeric ones and
        labels as float32 (NaN = missing label): what a serving signature takes.
        """
        ds = _records(self.files(split), shuffle=False, seed=None)
        description = layout.record_description(self.spec, self.tasks)
        ds = ds.batch(batch_size).map(lambda r: tf.io.parse_example(r, description),
                                      num_parallel_calls=tf.data.AUTOTUNE)
        task_names = {t.name for t in self.tasks}
        for parsed in ds.prefetch(2).as_numpy_iterator():
            yield ({k: v for k, v in parsed.items() if k not in task_names},
                   {k: parsed[k] for k in task_names})


def load_prepared(path: str | os.PathLike) -> PreparedData:
    """Open a prepared dataset folder.

    Raises:
        DataError: the folder does not exist, is not a prepared dataset, or is incomplete (a
            prepare that was killed leaves no ``manifest.json``).
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: no such prepared dataset folder (create one with "
                        f"tfmtnas-prepare).")
    manifest_path, spec_path = path / layout.MANIFEST, path / layout.SPEC
    if not manifest_path.is_file():
        raise DataError(f"{path}: not a complete prepared dataset ({layout.MANIFEST} is "
                        f"missing); run tfmtnas-prepare again.")
    try:
        manifest = json.loads(manifest_path.read_text())
        spec_doc = json.loads(spec_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: unreadable {layout.MANIFEST} or {layout.SPEC}: {err}") from None
    if spec_doc.get("format") != layout.FORMAT or manifest.get("format") != layout.FORMAT:
        raise DataError(f"{path}: prepared with format {manifest.get('format')!r}; this "
                        f"tfmtnas reads format {layout.FORMAT}. Prepare the data again.")
    spec = FeatureSpec.from_dict(spec_doc["features"]).resolved(path)
    tasks = tuple(TaskSpec(**t) for t in spec_doc["tasks"])
    return PreparedData(path.name, path, spec, tasks, manifest)


def _records(files: list[str], shuffle: bool, seed: int | None,
             input_context: tf.distribute.InputContext | None = None,
             epoch: tf.Variable | None = None) -> tf.data.Dataset:
    """Serialized records of ``files``, sharded per input pipeline; interleaved reads."""
    if not files:
        raise DataError("No shard files to read.")
    pipelines = input_context.num_input_pipelines if input_context else 1
    names = tf.data.Dataset.from_tensor_slices(files)
    by_file = pipelines > 1 and len(files) >= pipelines
    if by_file:
        names = names.shard(pipelines, input_context.input_pipeline_id)
    if shuffle:
        names = seeded_shuffle(names, len(files), seed, epoch)
    # A sequential interleave: a parallel one hands every record between threads, which
    # measured 171k against 257k records/s here (decompression is cheap; the hand-off isn't).
    ds = names.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type=layout.COMPRESSION,
                                          buffer_size=1 << 20),
        cycle_length=min(len(files), 4), block_length=16)
    if pipelines > 1 and not by_file:
        ds = ds.shard(pipelines, input_context.input_pipeline_id)
    return ds


def make_stream_dataset(
    files: list[str],
    spec: FeatureSpec,
    tasks: tuple[TaskSpec, ...] | list[TaskSpec],
    batch_size: int,
    shuffle: bool = False,
    seed: int | None = None,
    repeat: bool = False,
    input_context: tf.distribute.InputContext | None = None,
    part: tuple[int, int] | None = None,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    num_rows: int | None = None,
    epoch: tf.Variable | None = None,
) -> tf.data.Dataset:
    """Batches of ``(preprocessed features, labels)`` streamed from prepared shard files.

    Args:
        files: TFRecord shard files (GZIP) of one split.
        spec: the feature spec used to look up and normalise.
        tasks: the tasks whose labels are read (NaN = missing).
        batch_size: global batch size (divided per replica under ``input_context``).
        shuffle: shuffle shard order and records (bounded by ``shuffle_buffer``) each epoch.
        seed: shuffle seed.
        repeat: repeat forever.
        input_context: ``tf.distribute`` input context: each input pipeline reads its own
            files (or every n-th record when there are fewer files than pipelines).
        part: ``(k, n)``: keep only records ``i`` with ``i % n == k`` (in file order, before
            shuffling), e.g. the two halves MTL-NAS trains weights and edges on.
        shuffle_buffer: records in the shuffle buffer. Default 100,000.
        num_rows: rows in ``files``; when given (and no worker shards the stream) the dataset
            reports its number of batches, so progress bars show a total.
        epoch: an int64 variable holding the current epoch: shard order and shuffle are
            then a function of ``(seed, epoch)``, so a resumed run reads what the
            uninterrupted one would have (see :func:`~tfmtnas.data.pipeline.seeded_shuffle`).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if shuffle_buffer < 1:
        raise ValueError(f"shuffle_buffer must be >= 1, got {shuffle_buffer}.")
    ds = _records(list(files), shuffle, seed, input_context, epoch)
    if part is not None:
        k, n = part
        if not 0 <= k < n:
            raise ValueError(f"part must be (k, n) with 0 <= k < n, got {part}.")
        ds = ds.enumerate().filter(lambda i, _: i % n == k).map(lambda _, r: r)
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    if shuffle:
        ds = seeded_shuffle(ds, shuffle_buffer, seed, epoch, repeat)
    elif repeat:
        ds = ds.repeat()
    description = layout.record_description(spec, tasks)
    preprocessor = FeaturePreprocessor(spec)
    task_names = [t.name for t in tasks]

    def parse(records):
        parsed = tf.io.parse_example(records, description)
        labels = {name: parsed.pop(name) for name in task_names}
        return preprocessor(parsed), labels

    ds = ds.batch(batch_size).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    if num_rows is not None and not repeat and input_context is None:
        if part is not None:  # records k, k + n, k + 2n, ... of num_rows
            num_rows = (num_rows - part[0] + part[1] - 1) // part[1]
        ds = ds.apply(tf.data.experimental.assert_cardinality(-(-num_rows // batch_size)))
    return ds.prefetch(tf.data.AUTOTUNE)
