"""TFRecord framing and the GZIP shard files of a prepared folder, without a TFRecordWriter.

Holds CRC-32C in NumPy (:func:`crc32c`, many records at once), :func:`frame` (a TFRecord
is: uint64 length, masked CRC-32C of the length, the data, masked CRC-32C of the data),
:func:`shard_pieces` (a block's framed records per shard, deflated and ended by a full flush)
and :class:`ShardFiles`, which appends pieces to the shard files of one split. Computing
the CRCs here lets the worker threads frame and deflate their own blocks: a shard file is
one gzip member whose deflate stream is the blocks' pieces in file order, then an empty
final block; ``tf.data.TFRecordDataset(..., compression_type="GZIP")`` reads it.

Example:
    >>> import numpy as np
    >>> words = np.frombuffer(b"123456789" + b"\\0" * 3, "<u4").reshape(1, 3)
    >>> hex(int(crc32c(words, np.array([9]))[0]))  # the CRC-32C check value
    '0xe3069283'
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfmtnas.data import layout

DEFAULT_COMPRESSION_LEVEL = 3
_CRC_PAD = 64  # records are CRC'd in groups padded to a multiple of this many bytes
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # no name, mtime 0


@functools.cache
def _crc_tables() -> tuple[np.ndarray, np.ndarray]:
    """Slicing-by-4 tables of CRC-32C, and tables that undo up to 64 trailing zero bytes."""
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ np.uint32(0x82F63B78), t >> 1).astype(np.uint32)
    tables = [t]
    for _ in range(3):
        tables.append((tables[-1] >> 8) ^ t[tables[-1] & 0xFF])
    # One zero byte maps the register c to t[c & 255] ^ (c >> 8); the top byte of t[j]
    # identifies j, which inverts that step. undo[k, j, b]: the register before k zero
    # bytes, for byte j of the register after them being b (the map is linear).
    low = np.zeros(256, np.int64)
    low[(t >> 24).astype(np.int64)] = np.arange(256)

    def unstep(c):
        j = low[(c >> 24).astype(np.int64)]
        return (((c ^ t[j]) << 8) | j.astype(np.uint32)).astype(np.uint32)

    bits = ((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(bool)
    basis = (np.uint32(1) << np.arange(32, dtype=np.uint32)).astype(np.uint32)
    undo = np.zeros((_CRC_PAD + 1, 4, 256), np.uint32)
    for k in range(_CRC_PAD + 1):
        for j in range(4):
            undo[k, j] = np.bitwise_xor.reduce(np.where(bits, basis[8 * j:8 * j + 8], 0),
                                               axis=1)
        basis = unstep(basis)
    return np.stack(tables), undo


def crc32c(words: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """CRC-32C of messages given as ``[n, w]`` little-endian words, zero-padded at the end
    by at most 64 bytes beyond ``lengths``."""
    (t0, t1, t2, t3), undo = _crc_tables()
    c = np.full(len(words), 0xFFFFFFFF, np.uint32)
    for w in np.ascontiguousarray(words.T):
        c ^= w
        c = t3[c & 255] ^ t2[(c >> 8) & 255] ^ t1[(c >> 16) & 255] ^ t0[c >> 24]
    pad = words.shape[1] * 4 - lengths
    out = np.zeros_like(c)
    for j in range(4):
        out ^= undo[pad, j, (c >> (8 * j)) & 255]
    return out ^ np.uint32(0xFFFFFFFF)


def _masked(crc: np.ndarray) -> np.ndarray:
    return (((crc >> 15) | (crc << 17)) + np.uint32(0xA282EAD8)).astype(np.uint32)


def frame(records: tf.Tensor) -> tf.Tensor:
    """TFRecord-framed ``records`` (a ``[n]`` string tensor), one string each."""
    n = int(records.shape[0])
    lengths = tf.strings.length(records).numpy().astype(np.int64)
    groups = np.maximum((lengths + _CRC_PAD - 1) // _CRC_PAD, 1)
    crc = np.empty(n, np.uint32)
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        part = records if len(rows) == n else tf.gather(records, rows)
        words = tf.io.decode_raw(part, tf.int32, fixed_length=int(g) * _CRC_PAD)
        crc[rows] = crc32c(words.numpy().view(np.uint32), lengths[rows])
    fixed = np.empty((n, 16), np.uint8)  # length, its CRC; the data CRC
    fixed[:, :8] = lengths.astype("<u8")[:, None].view(np.uint8)
    fixed[:, 8:12] = _masked(crc32c(fixed[:, :8].copy().view("<u4"), np.full(n, 8)))[
        :, None].astype("<u4").view(np.uint8)
    fixed[:, 12:] = _masked(crc)[:, None].astype("<u4").view(np.uint8)
    head = tf.strings.substr(tf.constant(fixed[:, :12].tobytes()), tf.range(n) * 12,
                             tf.fill([n], 12))
    tail = tf.strings.substr(tf.constant(fixed[:, 12:].tobytes()), tf.range(n) * 4,
                             tf.fill([n], 4))
    return tf.strings.join([head, records, tail])


@dataclasses.dataclass
class Piece:
    """A run of framed records for one shard, deflated and ended by a full flush."""

    data: bytes  # raw deflate
    raw: bytes  # the framed records (the main thread keeps the gzip CRC-32 over them)
    rows: int


def shard_pieces(records: tf.Tensor, split: np.ndarray, start: int, shard_counts: Sequence[int],
           level: int) -> dict[tuple[int, int], Piece]:
    """Deflated pieces per (split id, shard) of a block's records.

    Row ``j`` of split ``s`` within the block goes to shard ``(start + j) % count``.
    """
    out = {}
    framed = frame(records) if len(split) else None
    for s, count in enumerate(shard_counts):
        rows = np.flatnonzero(split == s)
        if not len(rows):
            continue
        shard = (start + np.arange(len(rows))) % count
        for t in range(count):
            chosen = rows[shard == t]
            if not len(chosen):
                continue
            data = tf.strings.reduce_join(tf.gather(framed, chosen)).numpy()
            deflate = zlib.compressobj(level, zlib.DEFLATED, -15)
            out[s, t] = Piece(deflate.compress(data) + deflate.flush(zlib.Z_FULL_FLUSH),
                              data, len(chosen))
    return out


class ShardFiles:
    """The gzip shard files of one split, appended piece by piece in block order."""

    def __init__(self, root: Path, split: str, count: int):
        self.paths = [layout.shard_path(split, i, count) for i in range(count)]
        (root / split).mkdir(parents=True, exist_ok=True)
        self._files = [open(root / p, "wb") for p in self.paths]
        self._sha = [hashlib.sha256() for _ in self.paths]
        self._crc = [0] * count
        self._size = [0] * count
        self._bytes = [0] * count
        self.rows = [0] * count
        for shard in range(count):
            self._write(shard, _GZIP_HEADER)

    def _write(self, shard: int, data: bytes) -> None:
        self._files[shard].write(data)
        self._sha[shard].update(data)
        self._bytes[shard] += len(data)

    def add(self, shard: int, piece: Piece) -> None:
        self._write(shard, piece.data)
        self._crc[shard] = zlib.crc32(piece.raw, self._crc[shard])
        self._size[shard] += len(piece.raw)
        self.rows[shard] += piece.rows

    def close(self) -> list[dict]:
        """End the gzip members; the manifest entries (path, rows, bytes, sha256)."""
        out = []
        for shard, path in enumerate(self.paths):
            # An empty final deflate block, then CRC-32 and size of the uncompressed data.
            self._write(shard, b"\x03\x00" + struct.pack(
                "<II", self._crc[shard], self._size[shard] & 0xFFFFFFFF))
            self._files[shard].close()
            out.append({"path": path, "rows": self.rows[shard], "bytes": self._bytes[shard],
                        "sha256": self._sha[shard].hexdigest()})
        return out

    def abort(self) -> None:
        for f in self._files:
            f.close()

