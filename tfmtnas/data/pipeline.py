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


def seeded_shuffle(ds: tf.data.Dataset, buffer_size: int, seed: int | None,
                   epoch: tf.Variable | None = None, repeat: bool = False) -> tf.data.Dataset:
    """``ds`` shuffled afresh each epoch; with ``epoch``, in an order fixed by the epoch number.

    Without ``epoch`` the order of the k-th pass depends on how many passes this dataset
    object made before, so a run resumed at epoch k would see epoch 0's order again. With
    ``epoch`` (an int64 variable a callback sets at each epoch's start) the order is a
    function of ``(seed, epoch)`` only: a resumed run sees exactly the uninterrupted run's
    data order. With ``repeat`` the shuffled data repeats forever, each pass in a new order
    (still a function of ``(seed, epoch)``).

    Example:
        >>> epoch = tf.Variable(0, dtype=tf.int64)
        >>> ds = seeded_shuffle(tf.data.Dataset.range(5), 5, seed=1, epoch=epoch)
        >>> first = list(ds.as_numpy_iterator()); epoch.assign(1)
        >>> sorted(list(ds.as_numpy_iterator())) == sorted(first)
        True
    """
    if epoch is None:
        ds = ds.shuffle(buffer_size, seed=seed, reshuffle_each_iteration=True)
        return ds.repeat() if repeat else ds
    base = tf.constant(0 if seed is None else seed, tf.int64) * 1_000_003

    def one_epoch(_):
        # With a graph-level seed of 0 (set_random_seed(0)), TensorFlow's seed resolution
        # compares the op seed with 0 in Python, which a tensor seed cannot answer; the
        # order here depends on (seed, epoch) only, so the graph-level seed is left out.
        graph = tf.compat.v1.get_default_graph()
        saved, graph.seed = graph.seed, None
        try:
            shuffled = ds.shuffle(buffer_size, seed=base + epoch.read_value(),
                                  reshuffle_each_iteration=True)
            return shuffled.repeat() if repeat else shuffled
        finally:
            graph.seed = saved

    return tf.data.Dataset.from_tensors(0).flat_map(
        tf.autograph.experimental.do_not_convert(one_epoch))


def half_members(num_rows: int, half: int, seed: int, epoch) -> tf.Tensor:
    """``[num_rows]`` bool: the rows in ``half`` (0 or 1) of epoch ``epoch``'s 50/50 split.

    The rows are permuted by a stateless shuffle seeded by ``(seed, epoch)``; half 0 is the
    first ``num_rows // 2`` of the permutation, half 1 the rest. Same seed and epoch, same
    halves, on any machine and after a restart.

    Example:
        >>> first = half_members(6, 0, seed=3, epoch=0)
        >>> int(tf.reduce_sum(tf.cast(first, tf.int32)))
        3
        >>> bool(tf.reduce_all(first != half_members(6, 1, seed=3, epoch=0)))
        True
    """
    order = tf.argsort(tf.random.stateless_uniform(
        [num_rows], tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])))
    rank = tf.scatter_nd(order[:, None], tf.range(num_rows), [num_rows])
    first = rank < num_rows // 2
    return first if half == 0 else tf.logical_not(first)


def epoch_halves(ds: tf.data.Dataset, num_rows: int, half: int, seed: int,
                 epoch: tf.Variable) -> tf.data.Dataset:
    """``(features, labels)`` of the elements of ``ds`` in ``half`` of the current epoch's split.

    ``ds`` yields ``(features, (labels, row))``, ``row`` being the element's index among the
    ``num_rows`` of the whole split. Each pass reads ``epoch`` when it starts, so a pass made
    in epoch ``k`` yields the rows :func:`half_members` gives for ``(seed, k)``, in the order
    of ``ds``.
    """

    def one_epoch(_):
        keep = half_members(num_rows, half, seed, epoch.read_value())
        return (ds.filter(lambda features, labels: keep[labels[1]])
                .map(lambda features, labels: (features, labels[0])))

    return tf.data.Dataset.from_tensors(0).flat_map(
        tf.autograph.experimental.do_not_convert(one_epoch))


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
    epoch: tf.Variable | None = None,
    half: int | None = None,
    half_seed: int = 0,
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
        epoch: an int64 variable holding the current epoch: the shuffle order is then a
            function of ``(seed, epoch)`` (see :func:`seeded_shuffle`).
        half: 0 or 1, with ``epoch``: only the rows of that half of a 50/50 split of
            ``split`` drawn afresh every epoch (:func:`epoch_halves`, MTL-NAS's split
            reshuffled each epoch); the two halves of one epoch are complementary.
        half_seed: seed of the halves (give both halves the same one).
    """
    if len(split) == 0:
        raise DataError("Cannot build a dataset from an empty split.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if half not in (None, 0, 1):
        raise ValueError(f"half must be None, 0 or 1, got {half!r}.")
    if half is not None and epoch is None:
        raise ValueError("Halves drawn afresh every epoch need the epoch variable.")
    rows = len(split) if half is None else (len(split) // 2 if half == 0
                                           else len(split) - len(split) // 2)
    preprocessor = FeaturePreprocessor(spec)
    ds = _raw_dataset(split, spec)
    if half is not None:
        # The row's index in the whole split travels with it (through sharding and the
        # cache) until the epoch's half is picked.
        ds = ds.enumerate().map(lambda i, item: (item[0], (item[1], i)))
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
    if half is not None:
        ds = epoch_halves(ds, len(split), half, half_seed, epoch)
    if shuffle:
        ds = seeded_shuffle(ds, min(rows, 200_000), seed, epoch, repeat)
    elif repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size)
    if empty:
        ds = ds.map(restore)
    if not repeat and input_context is None:
        ds = ds.apply(tf.data.experimental.assert_cardinality(-(-rows // batch_size)))
    return ds.prefetch(tf.data.AUTOTUNE)
