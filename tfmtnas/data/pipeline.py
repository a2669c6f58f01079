"""``tf.data`` input pipelines: raw columns -> preprocessed, shuffled, batched numbers.

String lookups and hashing happen here, in ``Dataset.map`` (they cannot be XLA-compiled);
the compiled model core only ever sees the numbers :class:`~tfmtnas.features.FeaturePreprocessor`
produces. Lookups run once per split (the mapped result is cached), then each epoch
shuffles and batches numbers.

Example:
    >>> ds = make_dataset(data.train, data.spec, batch_size=512, shuffle=True, seed=0)
    >>> features, labels = next(iter(ds))
    >>> sorted(features)
    ['categorical', 'numeric']
"""

from __future__ import annotations

import tensorflow as tf

from tfmtnas.data.base import DataError, Split
from tfmtnas.features import FeaturePreprocessor, FeatureSpec

_LOOKUP_CHUNK = 16384


def _raw_dataset(split: Split, spec: FeatureSpec) -> tf.data.Dataset:
    missing = [n for n in spec.names if n not in split.features]
    if missing:
        raise DataError(f"Split lacks features {missing} named in the feature spec.")
    raw = {}
    for name in spec.names:
        col = split.features[name]
        if spec.raw_dtype(name) == tf.string:
            raw[name] = col if col.dtype == object else col.astype(str)
        else:
            raw[name] = col.astype("float32")
    labels = {k: v.astype("float32") for k, v in split.labels.items()}
    return tf.data.Dataset.from_tensor_slices((raw, labels))


def make_dataset(
    split: Split,
    spec: FeatureSpec,
    batch_size: int,
    shuffle: bool = False,
    seed: int | None = None,
    repeat: bool = False,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """A dataset of ``(features, labels)`` batches ready for the model core.

    Args:
        split: raw columns and labels.
        spec: feature spec used to preprocess (fitted on the training split).
        batch_size: global batch size (divided per replica when ``input_context`` is given).
        shuffle: reshuffle examples every epoch.
        seed: shuffle seed.
        repeat: repeat forever (for step-driven loops).
        input_context: ``tf.distribute`` input context; the data is sharded per worker.
    """
    if len(split) == 0:
        raise DataError("Cannot build a dataset from an empty split.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    preprocessor = FeaturePreprocessor(spec)
    ds = _raw_dataset(split, spec)
    if input_context is not None:
        ds = ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    # Zero-width parts (a spec without categorical or numeric features) are dropped around
    # unbatch, which crashes on [batch, 0] tensors in TensorFlow 2.21, and restored after.
    empty = {k: d for k, d, n in (("categorical", tf.int32, len(spec.categorical)),
                                  ("numeric", tf.float32, len(spec.numeric))) if n == 0}

    def lookup(features, labels):
        numbers = preprocessor(features)
        return {k: v for k, v in numbers.items() if k not in empty}, labels

    def restore(numbers, labels):
        rows = tf.shape(next(iter(numbers.values())))[0]
        return {**numbers, **{k: tf.zeros([rows, 0], d) for k, d in empty.items()}}, labels

    ds = (
        ds.batch(_LOOKUP_CHUNK)
        .map(lookup, num_parallel_calls=tf.data.AUTOTUNE)
        .cache()
        .unbatch()
    )
    if shuffle:
        ds = ds.shuffle(min(len(split), 200_000), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size)
    if empty:
        ds = ds.map(restore)
    return ds.prefetch(tf.data.AUTOTUNE)
