"""One way for the binaries to read a split, whether the data is in memory or prepared on disk.

A data source is either a :class:`~tfmtnas.data.base.MultiTaskData` (columns in memory:
Census, MovieLens, synthetic, a small CSV) or a :class:`~tfmtnas.data.stream.PreparedData`
(sharded TFRecord files streamed by ``tf.data``). Both give ``spec`` and ``tasks``; this
module gives both the same ``split_dataset``, ``num_rows`` and search pairs.

Example:
    >>> data = load_dataset("synthetic", num_train=200, num_validation=20, num_test=20)
    >>> num_rows(data, "train"), num_rows(data, "train", half=0)
    (200, 100)
    >>> ds = split_dataset(data, "train", batch_size=64, shuffle=True, seed=0)
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfmtnas.data.base import DataError, MultiTaskData, Split
from tfmtnas.data.pipeline import make_dataset
from tfmtnas.data.stream import PreparedData

DataSource = MultiTaskData | PreparedData


def split_half(split: Split, seed: int) -> tuple[Split, Split]:
    """A seeded 50/50 split of in-memory rows (MTL-NAS trains weights and edges on halves)."""
    order = np.random.default_rng(seed).permutation(len(split))
    half = len(split) // 2
    return split.take(np.sort(order[:half])), split.take(np.sort(order[half:]))


def _in_memory_split(data: MultiTaskData, split: str, half: int | None, seed: int) -> Split:
    rows = data.splits()[split]
    return rows if half is None else split_half(rows, seed)[half]


def num_rows(data: DataSource, split: str, half: int | None = None) -> int:
    """Rows of ``split`` (or of one ``half`` of it, 0 or 1)."""
    n = data.num_rows(split) if isinstance(data, PreparedData) else len(data.splits()[split])
    if half is None:
        return n
    # Prepared: even / odd records. In memory: split_half's first len // 2 rows / the rest.
    return (n + 1 - half) // 2 if isinstance(data, PreparedData) else (
        n // 2 if half == 0 else n - n // 2)


def split_dataset(data: DataSource, split: str, batch_size: int, shuffle: bool = False,
                  seed: int | None = None, repeat: bool = False,
                  input_context: tf.distribute.InputContext | None = None,
                  half: int | None = None, half_seed: int | None = None,
                  shuffle_buffer: int | None = None, epoch: tf.Variable | None = None
                  ) -> tf.data.Dataset:
    """``(preprocessed features, labels)`` batches of ``split`` of either kind of source.

    Args:
        data: in-memory or prepared data.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        batch_size: global batch size.
        shuffle: reshuffle every epoch (prepared data: shard order and a bounded buffer).
        seed: shuffle seed.
        repeat: repeat forever.
        input_context: ``tf.distribute`` input context (sharding per input pipeline).
        half: 0 or 1: only one half of the split. In memory, with ``epoch``: a 50/50 split
            drawn afresh every epoch from ``(half_seed, epoch)``
            (:func:`~tfmtnas.data.pipeline.half_members`; MTL-NAS reshuffles its split
            each epoch); without ``epoch``: one fixed seeded split (:func:`split_half`).
            Prepared: every other record, the same halves every epoch (a streamed split
            has no cheap random 50/50 split per epoch; only the order within each half is
            reshuffled).
        half_seed: seed that picks the in-memory halves (default ``seed``); give both
            halves the same one.
        shuffle_buffer: records in the shuffle buffer of prepared data (default 100,000).
        epoch: an int64 variable holding the current epoch, to make the shuffle order a
            function of ``(seed, epoch)`` (resumed runs read what uninterrupted ones would).
    """
    if half not in (None, 0, 1):
        raise ValueError(f"half must be None, 0 or 1, got {half!r}.")
    if isinstance(data, PreparedData):
        kwargs = {} if shuffle_buffer is None else {"shuffle_buffer": shuffle_buffer}
        return data.dataset(split, batch_size, shuffle=shuffle, seed=seed, repeat=repeat,
                            input_context=input_context,
                            part=None if half is None else (half, 2), epoch=epoch, **kwargs)
    if half_seed is None:
        half_seed = 0 if seed is None else seed
    if half is not None and epoch is not None:
        return make_dataset(data.splits()[split], data.spec, batch_size, shuffle=shuffle,
                            seed=seed, repeat=repeat, input_context=input_context,
                            epoch=epoch, half=half, half_seed=half_seed)
    rows = _in_memory_split(data, split, half, half_seed)
    return make_dataset(rows, data.spec, batch_size, shuffle=shuffle, seed=seed, repeat=repeat,
                        input_context=input_context, epoch=epoch)


def search_pairs(data: DataSource, halves: bool, batch_size: int, seed: int | None = None,
                 shuffle_buffer: int | None = None, epoch: tf.Variable | None = None,
                 input_context: tf.distribute.InputContext | None = None,
                 repeat: bool = False) -> tuple[tf.data.Dataset, int]:
    """``(weight batch, architecture batch)`` pairs for a search ``train_step``, and the
    number of weight rows (one epoch is one pass over them).

    With ``halves`` the weights train on one half of the training split and the
    architecture on the other (MTL-NAS); otherwise on the training and validation splits.
    In memory and with ``epoch`` the halves are drawn afresh every epoch, as MTL-NAS does;
    prepared data keeps its even/odd records (see :func:`split_dataset`).
    The architecture stream repeats as needed. With ``epoch`` (the current epoch in an int64
    variable) both streams' orders are functions of ``(seed, epoch)``, so a resumed search
    reads what the uninterrupted one read. ``input_context`` and ``repeat`` make one
    parameter-server worker's endless share of the pairs.
    """
    if halves:
        (w_split, w_half), (a_split, a_half) = ("train", 0), ("train", 1)
    else:
        (w_split, w_half), (a_split, a_half) = ("train", None), ("validation", None)
    s = 0 if seed is None else seed
    if num_rows(data, a_split, a_half) == 0:
        where = "second half of the training" if halves else "validation"
        raise DataError(f"The {where} split is empty: the architecture step of a search "
                        f"needs examples.")
    weights = split_dataset(data, w_split, batch_size, shuffle=True, seed=seed, half=w_half,
                            half_seed=s, shuffle_buffer=shuffle_buffer, epoch=epoch,
                            input_context=input_context, repeat=repeat)
    arch = split_dataset(data, a_split, batch_size, shuffle=True,
                         seed=None if seed is None else seed + 1, repeat=True, half=a_half,
                         half_seed=s, shuffle_buffer=shuffle_buffer, epoch=epoch,
                         input_context=input_context)
    pairs = tf.data.Dataset.zip((weights, arch))
    length = tf.get_static_value(weights.cardinality())  # None while tracing a function
    if length is not None and length >= 0:
        # The repeated architecture stream hides the length of the pairs from Keras, which
        # then ends the first epoch by calling the train step once more until the input
        # runs out; that call fails for want of data but still advances the optimizers'
        # and the search's step counters, so a resumed search would count steps (and draw
        # its seeded routes) one off from the uninterrupted one.
        pairs = pairs.apply(tf.data.experimental.assert_cardinality(length))
    return pairs, num_rows(data, w_split, w_half)
