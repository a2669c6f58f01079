"""The ``tf.Example`` wire format of a prepared record, written without protobuf.

Holds the protobuf pieces (:func:`varint`, length-delimited fields, one-value map entries)
and :class:`RecordEncoder`, which serializes whole blocks of rows at once with TensorFlow
string ops: a record is ``Example{features=1: Features{feature=1: map entry{key=1,
value=2: Feature}}}`` with ``Feature{bytes_list=1: BytesList{value=1}, float_list=2:
FloatList{packed value=1}}``, one value per feature, the bytes that
``tf.train.Example.SerializeToString`` writes for the same row.

Example:
    >>> varint(300)
    b'\\xac\\x02'
    >>> import numpy as np
    >>> encoder = RecordEncoder(["user"], ["click"])
    >>> record = encoder.encode([np.array([b"u1"], object)], np.array([[1.0]], np.float32))
    >>> tf.train.Example.FromString(record.numpy()[0]).features.feature["user"].bytes_list.value
    [b'u1']
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

_HEAD_TABLE = 1024  # values shorter than this take the vectorised path; longer, Python's
_VARINT_TABLE = 1 << 14  # records shorter than this take the vectorised path


def varint(x: int) -> bytes:
    """The protobuf base-128 varint of ``x >= 0``."""
    out = bytearray()
    while True:
        low, x = x & 0x7F, x >> 7
        if not x:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)
def _len_field(payload: bytes) -> bytes:
    """Field 1 of wire type 2 (tag byte 0x0A) holding ``payload``."""
    return b"\x0a" + varint(len(payload)) + payload


def _bytes_entry(key: bytes, value: bytes) -> bytes:
    """One ``features`` map entry of a one-value bytes feature, framed as field 1."""
    feature = _len_field(_len_field(value))  # Feature.bytes_list = BytesList(value=[v])
    entry = _len_field(key) + b"\x12" + varint(len(feature)) + feature
    return _len_field(entry)


def _float_entry_prefix(key: bytes) -> bytes:
    """A one-value float feature's map entry up to its 4 little-endian float bytes."""
    # Feature.float_list (field 2) = FloatList(packed value: tag 0x0A, 4 bytes).
    entry_head = _len_field(key) + b"\x12\x08\x12\x06\x0a\x04"
    return b"\x0a" + varint(len(entry_head) + 4) + entry_head


class RecordEncoder:
    """Serializes rows of one-value features as ``tf.Example`` bytes, vectorised.

    A bytes feature's map entry is a header that depends only on its key and the value's
    length, followed by the value: headers come from a per-column table indexed by length.
    Float entries are a constant prefix and 4 bytes, assembled in NumPy. Rows with a value
    longer than the table or a record longer than two varint bytes are encoded in Python
    to the same bytes.

    Args:
        categorical: names of the bytes features, in record order.
        floats: names of the float features, after them.
    """

    def __init__(self, categorical: Sequence[str], floats: Sequence[str]):
        self.categorical = list(categorical)
        self.floats = list(floats)
        self._keys = [k.encode() for k in self.categorical]
        self._heads, self._sizes = [], []
        for key in self._keys:
            entries = [_bytes_entry(key, b"\0" * length) for length in range(_HEAD_TABLE)]
            self._heads.append(tf.constant(np.array(
                [e[:len(e) - length] for length, e in enumerate(entries)], dtype=object)))
            self._sizes.append(tf.constant(np.array([len(e) for e in entries], np.int32)))
        self._varint = tf.constant(np.array([varint(i) for i in range(_VARINT_TABLE)],
                                            dtype=object))
        self._float_prefix = [_float_entry_prefix(k.encode()) for k in self.floats]
        self._float_width = sum(len(p) + 4 for p in self._float_prefix)
        self._assemble = tf.function(
            self._assemble_fn, input_signature=[
                [tf.TensorSpec([None], tf.string)] * len(self.categorical),
                tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.int32)])

    def _assemble_fn(self, cats, float_bytes, n):
        width = self._float_width
        size = tf.fill([n], width)
        fits = tf.ones([n], tf.bool)
        pieces = []
        for column, heads, sizes in zip(cats, self._heads, self._sizes):
            lengths = tf.strings.length(column)
            fits &= lengths < _HEAD_TABLE
            index = tf.minimum(lengths, _HEAD_TABLE - 1)
            pieces += [tf.gather(heads, index), column]
            size += tf.gather(sizes, index)
        if width:
            pieces.append(tf.strings.substr(float_bytes, tf.range(n) * width,
                                            tf.fill([n], width)))
        fits &= size < _VARINT_TABLE
        head = tf.gather(self._varint, tf.minimum(size, _VARINT_TABLE - 1))
        return tf.strings.join([tf.constant(b"\x0a"), head, *pieces]), fits

    def _float_bytes(self, floats: np.ndarray) -> np.ndarray:
        """``[n, width]`` uint8: each row's float entries."""
        floats = np.ascontiguousarray(floats, dtype="<f4").reshape(len(floats), -1)
        out = np.empty((len(floats), self._float_width), np.uint8)
        at = 0
        for j, prefix in enumerate(self._float_prefix):
            out[:, at:at + len(prefix)] = np.frombuffer(prefix, np.uint8)
            at += len(prefix)
            out[:, at:at + 4] = floats[:, j:j + 1].view(np.uint8)
            at += 4
        return out

    def encode(self, cats: Sequence[tf.Tensor | np.ndarray], floats: np.ndarray) -> tf.Tensor:
        """Records of ``n`` rows, a ``[n]`` string tensor.

        Args:
            cats: one ``[n]`` string column (UTF-8 bytes) per categorical feature.
            floats: ``[n, len(floats)]`` float32 values (NaN allowed).
        """
        n = len(floats)
        float_bytes = self._float_bytes(floats)
        cats = [tf.convert_to_tensor(c, tf.string) for c in cats]
        records, fits = self._assemble(cats, tf.constant(float_bytes.tobytes()),
                                       tf.constant(n))
        fits = fits.numpy()
        if not fits.all():
            rows = np.flatnonzero(~fits)
            values = [c.numpy()[rows] for c in cats]
            records = records.numpy()
            for k, i in enumerate(rows):
                records[i] = self._encode_row([v[k] for v in values],
                                              float_bytes[i].tobytes())
            records = tf.constant(records)
        return records

    def _encode_row(self, values: Sequence[bytes], float_bytes: bytes) -> bytes:
        body = b"".join(_bytes_entry(k, v) for k, v in zip(self._keys, values)) + float_bytes
        return _len_field(body)

