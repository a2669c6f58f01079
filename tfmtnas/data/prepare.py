"""Prepare a click log for streaming: one pass over CSV/TSV files into sharded TFRecords.

:func:`prepare` reads delimited text files (plain or gzipped, each with a header row) once,
as a stream of byte blocks, and writes a prepared dataset folder as
:mod:`tfmtnas.data.layout` describes it: train/validation/test shards of ``tf.Example``
records, ``spec.json`` (the :class:`~tfmtnas.features.FeatureSpec` and the tasks),
vocabulary files and ``manifest.json``. :func:`write_prepared` writes an in-memory
:class:`~tfmtnas.data.base.MultiTaskData` (Census, MovieLens, your CSV) in the same layout.

What it computes, from the training split only:

- **Vocabularies** by frequency, most frequent first, ties broken by value (as
  :meth:`FeatureSpec.fit`). A value seen fewer than ``min_count`` times (default 2) goes
  to the out-of-vocabulary id 0, so that id is trained on real rows. When a column has
  more qualifying values than ``max_vocabulary``, the rarest go to the out-of-vocabulary
  id too; the manifest records per column the distinct values, the values kept and the
  share of training rows that fall to out-of-vocabulary. A vocabulary of more than
  ``inline_vocabulary_max`` values is written to ``vocabularies/<column>.txt`` (one value
  per line; the empty string is a legal value, an empty line) and the spec points to that
  file; smaller ones stay inline in the spec.
- **Hashed columns** (``hash_columns``) are not counted: each value goes to one of
  ``bins`` buckets (the hash :class:`~tfmtnas.features.FeaturePreprocessor` uses), so
  distinct values may collide and share an embedding row. The manifest records the bins
  and how many of them training rows occupy.
- **Mean and standard deviation** of numeric columns (after ``log1p(max(x, 0))`` for
  ``log_numeric`` columns, as :meth:`FeatureSpec.fit`), combined chunk by chunk with the
  numerically stable pairwise update (Chan et al.), plus minimum and maximum.
- **Label checks** per split and task: rows with a label and positives (binary) or the
  mean (regression). A binary label is 0, 1 or empty; an empty label is missing (NaN).

The split of a row is decided by a hash of its ``key_column`` cell (of the whole line when
there is none): the same key always lands in the same split, whatever the files, their
order or the number of rows. Within each block, the rows of a split go to its shards
round-robin (starting at a shard that moves on by one per block).

Bad rows (wrong field count, a numeric cell or label that is not a finite number within
float32's range, a bad binary label, bytes that are not UTF-8, malformed quoting, a
categorical value with a carriage return) fail with ``file:line: column 'x' ...``
(``bad_rows="error"``, the default) or are skipped and counted (``bad_rows="skip"``; the
manifest keeps the count and the first 20 messages). Categorical and label cells are
stripped of surrounding ASCII whitespace, as the in-memory CSV loader does; a block of the
file that holds a double quote is parsed by Python's :mod:`csv` module (quoted fields may
hold the separator, not a line break), which is slower than the vectorised path.

The output is atomic and reproducible: everything is built in ``<output>.partial-<random>``
beside the output, ``manifest.json`` is written last and the folder is renamed into place,
so a killed prepare never leaves a folder that looks complete (the next run removes its
leftovers). Two runs on the same input with the same options (and ``chunk_bytes``) write
byte-identical shards, whatever the number of worker threads.

``manifest.json``::

    {"format": 1,
     "inputs": [{"path": "logs/a.csv.gz", "bytes": 123456}, ...],
     "options": {"labels": {"click": "binary"}, "categorical": [...], "numeric": [...],
                 "log_numeric": [...], "hash_columns": {"query": 1000000},
                 "key_column": "user", "validation_fraction": 0.1, "test_fraction": 0.1,
                 "min_count": {"user": 2, ...}, "max_vocabulary": {"user": null, ...},
                 "inline_vocabulary_max": 10000,
                 "num_shards": {"train": 8, "validation": 1, "test": 1},
                 "bad_rows": "error", "sep": ",", "compression_level": 3},
     "rows": 2000000,                      # data rows read, skipped ones included
     "skipped_rows": 0, "skipped": ["a.csv:17: column 'price' expects a number, got 'x'"],
     "splits": {"train": {"rows": 1600000, "shards": [
                    {"path": "train/part-00000-of-00008.tfrecord.gz", "rows": 200000,
                     "bytes": 8123456, "sha256": "..."}, ...]},
                "validation": {...}, "test": {...}},
     "columns": {"user": {"kind": "vocabulary", "distinct": 176639, "kept": 59696,
                          "min_count": 2, "max_vocabulary": null, "oov_rows": 150000,
                          "oov_share": 0.09, "vocabulary_file": "vocabularies/user.txt"},
                 "query": {"kind": "hashed", "bins": 1000000, "occupied_bins": 412345},
                 "price": {"kind": "numeric", "mean": 2.1, "std": 1.2, "log": true,
                           "min": 0.0, "max": 9000.0}},
     "labels": {"train": {"click": {"rows_with_label": 1600000, "positives": 160000},
                          "watch": {"rows_with_label": 1500000, "mean": 31.5}}, ...},
     "seconds": 10.3, "rows_per_second": 194684.0}

How it is fast: blocks of a few MB are parsed, checked and serialized by TensorFlow string
ops on two worker threads (``decode_csv``, ``regex_full_match``, ``to_number``, the
``tf.Example`` wire format assembled with ``strings.join`` from per-length header tables),
which also frame the records as TFRecords (CRC-32C in NumPy, many records at once) and
deflate each block's share of every shard; the main thread merges counts and appends the
pieces to the shard files in file order. Each shard is one gzip member; a row's shard is
decided by its block and its place in it, so the bytes depend on ``chunk_bytes`` too.

Example:
    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "log.csv").write_text("user,price,click\\n" + "u1,3,1\\nu2,5,0\\n" * 50)
    >>> manifest = prepare([folder / "log.csv"], folder / "prepared", {"click": "binary"},
    ...                    numeric=["price"], key_column="user", num_shards=2)
    >>> manifest["splits"]["train"]["rows"] + manifest["splits"]["test"]["rows"] + \\
    ...     manifest["splits"]["validation"]["rows"]
    100
"""

from __future__ import annotations

import collections
import concurrent.futures
import csv as _csv
import dataclasses
import functools
import glob
import gzip
import hashlib
import io
import json
import math
import os
import re
import secrets
import shutil
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl import logging

from tfmtnas.data import layout
from tfmtnas.data.base import DataError, MultiTaskData
from tfmtnas.errors import MissingFileError, UserError
from tfmtnas.features import CategoricalFeature, FeatureSpec, NumericFeature, TaskSpec

BAD_ROW_POLICIES = ("error", "skip")
DEFAULT_CHUNK_BYTES = 4 << 20
DEFAULT_COMPRESSION_LEVEL = 3
MAX_REPORTED_BAD_ROWS = 20
_HEAD_TABLE = 1024  # values shorter than this take the vectorised path; longer, Python's
_VARINT_TABLE = 1 << 14  # records shorter than this take the vectorised path
_SPLIT_BUCKETS = 1 << 30
_FLOAT32_MAX = float(np.finfo(np.float32).max)  # records hold float32: larger is inf
_OWNER = ".owner"
_NUMBER = r"[ \t]*[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?[ \t]*"
_NUMBER_RE = re.compile(_NUMBER.encode())
_SPLIT_IDS = {name: i for i, name in enumerate(layout.SPLITS)}


@dataclasses.dataclass(frozen=True)
class Progress:
    """How far a prepare has come; passed to the ``progress`` callback.

    Args:
        rows: data rows read so far (skipped rows included).
        skipped: rows skipped as bad so far.
        bytes_read: input bytes read so far (compressed bytes for ``.gz`` files).
        total_bytes: total size of the input files.
        seconds: wall time since the start.
        done: True for the last report.
    """

    rows: int
    skipped: int
    bytes_read: int
    total_bytes: int
    seconds: float
    done: bool = False

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        return (f"{self.rows:,} rows ({self.skipped:,} skipped), "
                f"{self.rows_per_second:,.0f} rows/s, {self.bytes_read / 1e6:,.1f} of "
                f"{self.total_bytes / 1e6:,.1f} MB read, {self.seconds:.1f} s")


def log_progress(progress: Progress) -> None:
    """The default progress callback: one absl INFO line."""
    logging.info("prepare: %s", progress)


# --- tf.Example wire format -------------------------------------------------------------
# Example{features=1: Features{feature=1: map entry{key=1, value=2: Feature}}} with
# Feature{bytes_list=1: BytesList{value=1}, float_list=2: FloatList{packed value=1}}.


def _varint(x: int) -> bytes:
    out = bytearray()
    while True:
        low, x = x & 0x7F, x >> 7
        if not x:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _len_field(payload: bytes) -> bytes:
    """Field 1 of wire type 2 (tag byte 0x0A) holding ``payload``."""
    return b"\x0a" + _varint(len(payload)) + payload


def _bytes_entry(key: bytes, value: bytes) -> bytes:
    """One ``features`` map entry of a one-value bytes feature, framed as field 1."""
    feature = _len_field(_len_field(value))  # Feature.bytes_list = BytesList(value=[v])
    entry = _len_field(key) + b"\x12" + _varint(len(feature)) + feature
    return _len_field(entry)


def _float_entry_prefix(key: bytes) -> bytes:
    """A one-value float feature's map entry up to its 4 little-endian float bytes."""
    # Feature.float_list (field 2) = FloatList(packed value: tag 0x0A, 4 bytes).
    entry_head = _len_field(key) + b"\x12\x08\x12\x06\x0a\x04"
    return b"\x0a" + _varint(len(entry_head) + 4) + entry_head


class _RecordEncoder:
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
        self._varint = tf.constant(np.array([_varint(i) for i in range(_VARINT_TABLE)],
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


# --- TFRecord framing and gzip pieces ----------------------------------------------------
# A TFRecord is: uint64 length, masked CRC-32C of the length, the data, masked CRC-32C of
# the data. Computing the CRCs here, many records at once, lets the worker threads frame and
# deflate their own blocks: a shard file is one gzip member whose deflate stream is the
# blocks' pieces (each ended by a full flush) in file order, then an empty final block.

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


def _crc32c(words: np.ndarray, lengths: np.ndarray) -> np.ndarray:
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


def _frame(records: tf.Tensor) -> tf.Tensor:
    """TFRecord-framed ``records`` (a ``[n]`` string tensor), one string each."""
    n = int(records.shape[0])
    lengths = tf.strings.length(records).numpy().astype(np.int64)
    groups = np.maximum((lengths + _CRC_PAD - 1) // _CRC_PAD, 1)
    crc = np.empty(n, np.uint32)
    for g in np.unique(groups):
        rows = np.flatnonzero(groups == g)
        part = records if len(rows) == n else tf.gather(records, rows)
        words = tf.io.decode_raw(part, tf.int32, fixed_length=int(g) * _CRC_PAD)
        crc[rows] = _crc32c(words.numpy().view(np.uint32), lengths[rows])
    frame = np.empty((n, 16), np.uint8)
    frame[:, :8] = lengths.astype("<u8")[:, None].view(np.uint8)
    frame[:, 8:12] = _masked(_crc32c(frame[:, :8].copy().view("<u4"), np.full(n, 8)))[
        :, None].astype("<u4").view(np.uint8)
    frame[:, 12:] = _masked(crc)[:, None].astype("<u4").view(np.uint8)
    head = tf.strings.substr(tf.constant(frame[:, :12].tobytes()), tf.range(n) * 12,
                             tf.fill([n], 12))
    tail = tf.strings.substr(tf.constant(frame[:, 12:].tobytes()), tf.range(n) * 4,
                             tf.fill([n], 4))
    return tf.strings.join([head, records, tail])


@dataclasses.dataclass
class _Piece:
    """A run of framed records for one shard, deflated and ended by a full flush."""

    data: bytes  # raw deflate
    raw: bytes  # the framed records (the main thread keeps the gzip CRC-32 over them)
    rows: int


def _pieces(records: tf.Tensor, split: np.ndarray, start: int, shard_counts: Sequence[int],
            level: int) -> dict[tuple[int, int], _Piece]:
    """Deflated pieces per (split id, shard) of a block's records.

    Row ``j`` of split ``s`` within the block goes to shard ``(start + j) % count``.
    """
    out = {}
    framed = _frame(records) if len(split) else None
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
            out[s, t] = _Piece(deflate.compress(data) + deflate.flush(zlib.Z_FULL_FLUSH),
                               data, len(chosen))
    return out


# --- reading the input ------------------------------------------------------------------


@dataclasses.dataclass
class _Block:
    """Complete lines of one file: ``data`` without the final newline."""

    index: int  # running number of the block over all files
    path: str
    first_line: int  # 1-based line number of the first line of data
    data: bytes


class _CountingReader(io.RawIOBase):
    """A raw binary file that counts the bytes read from it."""

    def __init__(self, f):
        self._f = f
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._f.readinto(buffer)
        self.count += n or 0
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


def _expand_inputs(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files: list[str] = []
    for item in inputs:
        item = os.fspath(item)
        if glob.has_magic(item):
            found = sorted(p for p in glob.glob(item) if os.path.isfile(p))
            if not found:
                raise MissingFileError(f"{item}: no file matches this pattern.")
        elif os.path.isdir(item):
            raise DataError(f"{item}: is a directory, not a file.")
        elif not os.path.isfile(item):
            raise MissingFileError(f"{item}: does not exist.")
        else:
            found = [item]
        files += [p for p in found if p not in files]
    if not files:
        raise DataError("No input files given.")
    return files


def _default_sep(files: Sequence[str]) -> str:
    tsv = all(re.search(r"\.(tsv|tab)(\.gz)?$", f) for f in files)
    return "\t" if tsv else ","


def _split_line(line: str, sep: str) -> list[str]:
    """Fields of one text line: the csv module for a quoted line and one-character ``sep``."""
    if len(sep) == 1 and '"' in line:
        return next(_csv.reader([line], delimiter=sep, strict=True), [""])
    return line.split(sep)


class _FileReader:
    """Header and blocks of complete lines of one plain or gzipped file."""

    def __init__(self, path: str, chunk_bytes: int):
        self.path = path
        self._chunk = chunk_bytes
        self._raw = _CountingReader(open(path, "rb"))
        self._file = (gzip.GzipFile(fileobj=io.BufferedReader(self._raw), mode="rb")
                      if path.endswith(".gz") else self._raw)
        self._rest = b""
        self._line = 1  # line number of the first line of _rest
        self._eof = False

    @property
    def bytes_read(self) -> int:
        return self._raw.count

    def close(self) -> None:
        self._file.close()
        self._raw.close()

    def _fill(self) -> bool:
        if self._eof:
            return False
        try:
            data = self._file.read(self._chunk)
        except (OSError, EOFError, gzip.BadGzipFile) as err:
            raise DataError(f"{self.path}: cannot read: {err}") from None
        if not data:
            self._eof = True
            return False
        self._rest += data
        return True

    def header(self, sep: str) -> list[str]:
        """The column names of the first non-blank line (a UTF-8 BOM is dropped)."""
        while True:
            cut = self._rest.find(b"\n")
            if cut < 0 and self._fill():
                continue
            line = self._rest if cut < 0 else self._rest[:cut]
            self._rest = b"" if cut < 0 else self._rest[cut + 1:]
            lineno = self._line
            self._line += 1
            if self._line == 2 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            line = line.rstrip(b"\r")
            if line.strip():
                break
            if cut < 0:
                raise DataError(f"{self.path}: empty file, expected a header row.")
        try:
            text = line.decode("utf-8")
            names = [n.strip() for n in _split_line(text, sep)]
        except (UnicodeDecodeError, _csv.Error) as err:
            raise DataError(f"{self.path}:{lineno}: unreadable header row: {err}") from None
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DataError(f"{self.path}:{lineno}: repeated column names {dupes}.")
        return names

    def blocks(self) -> Iterator[tuple[int, bytes]]:
        """``(first line number, complete lines)`` of about ``chunk_bytes`` each."""
        while True:
            cut = self._rest.rfind(b"\n")
            while cut < 0 and self._fill():
                cut = self._rest.rfind(b"\n")
            if cut < 0:
                if self._rest:
                    yield self._line, self._rest
                return
            data, self._rest = self._rest[:cut], self._rest[cut + 1:]
            first = self._line
            self._line += data.count(b"\n") + 1
            yield first, data
            if not self._fill() and not self._rest:
                return


# --- per-block work (worker threads) ----------------------------------------------------


@dataclasses.dataclass
class _Columns:
    """What prepare does with each input column: indices into the header."""

    names: list[str]
    categorical: list[int]
    numeric: list[int]
    log: list[bool]
    labels: list[int]
    binary: list[bool]
    hashed: dict[int, int]  # position in categorical -> bins
    key: int | None

    @property
    def used(self) -> list[int]:
        return sorted({*self.categorical, *self.numeric, *self.labels,
                       *([self.key] if self.key is not None else [])})


@dataclasses.dataclass
class _Result:
    """One block's contribution, merged in file order by the main thread."""

    rows: int  # data rows of the block (bad ones included)
    bad: list[str]  # "file:line: reason" of each bad row, in line order
    pieces: dict[tuple[int, int], _Piece]  # (split id, shard) -> deflated records
    vocab: dict[int, tuple[list, list]]  # categorical position -> (values, counts), train
    buckets: dict[int, np.ndarray]  # categorical position -> occupied buckets, train
    moments: np.ndarray  # [3, n_numeric]: count, mean, M2 of training values
    minmax: np.ndarray  # [2, n_numeric]
    labels: np.ndarray  # [n_splits, n_tasks, 2]: rows with a label, sum of labels


class _BlockProcessor:
    """Parses, checks and serializes blocks; thread-safe (holds no per-block state)."""

    def __init__(self, cols: _Columns, sep: str, encoder: _RecordEncoder,
                 validation_fraction: float, test_fraction: float, bad_rows: str,
                 shard_counts: Sequence[int], compression_level: int):
        self.cols = cols
        self.shard_counts = list(shard_counts)
        self.compression_level = compression_level
        self.sep = sep
        self.encoder = encoder
        self.bad_rows = bad_rows
        self._ncols = len(cols.names)
        self._used = cols.used
        self._test_cut = int(round(test_fraction * _SPLIT_BUCKETS))
        self._validation_cut = int(round((test_fraction + validation_fraction)
                                         * _SPLIT_BUCKETS))
        strings = tf.TensorSpec([None], tf.string)
        self._decode = tf.function(self._decode_fn, input_signature=[strings])
        self._checkers: dict[tuple[bool, bool], Callable] = {}
        self._lock = threading.Lock()
        self._split = tf.function(self._split_fn, input_signature=[strings])
        self._counts = tf.function(self._counts_fn, input_signature=[
            [strings] * len(cols.categorical), tf.TensorSpec([None], tf.bool)])

    # TensorFlow parts ---------------------------------------------------------------

    def _decode_fn(self, lines):
        fields = tf.io.decode_csv(lines, [""] * self._ncols, field_delim=self.sep,
                                  use_quote_delim=False)
        return [fields[i] for i in self._used]

    def _checker(self, strip: bool, carriage_return: bool) -> Callable:
        """The check function for blocks with(out) whitespace and carriage returns."""
        with self._lock:
            key = (strip, carriage_return)
            if key not in self._checkers:
                self._checkers[key] = tf.function(
                    functools.partial(self._check_fn, strip=strip,
                                      carriage_return=carriage_return),
                    input_signature=[[tf.TensorSpec([None], tf.string)] * len(self._used)])
            return self._checkers[key]

    def _check_fn(self, cells, strip: bool, carriage_return: bool):
        """Stripped text, numbers and the rows with a fault, of the used columns."""
        at = {c: i for i, c in enumerate(self._used)}
        n = tf.shape(cells[0])[0]

        def text(c):
            return tf.strings.strip(cells[at[c]]) if strip else cells[at[c]]

        faults = []
        cat = [text(c) for c in self.cols.categorical]
        if carriage_return:
            faults += [tf.strings.regex_full_match(v, "(?s).*\r.*") for v in cat]
        x = []
        for c in self.cols.numeric:
            cell = cells[at[c]]
            ok = tf.strings.regex_full_match(cell, _NUMBER)
            x.append(tf.strings.to_number(tf.where(ok, cell, "0"), tf.float64))
            faults.append(~ok | ~(tf.abs(x[-1]) <= _FLOAT32_MAX))
        y = []
        for c, binary in zip(self.cols.labels, self.cols.binary):
            cell = text(c)
            empty = tf.equal(cell, "")
            ok = tf.strings.regex_full_match(cell, _NUMBER)
            value = tf.strings.to_number(tf.where(ok, cell, "0"), tf.float64)
            fault = ~empty & (~ok | ~(tf.abs(value) <= _FLOAT32_MAX))
            if binary:
                fault |= ~empty & tf.not_equal(value, 0.0) & tf.not_equal(value, 1.0)
            faults.append(fault)
            y.append(tf.where(empty, tf.constant(math.nan, tf.float64), value))
        bad = tf.reduce_any(tf.stack(faults, axis=1), axis=1)
        x = tf.stack(x, axis=1) if x else tf.zeros([n, 0], tf.float64)
        key = text(self.cols.key) if self.cols.key is not None else tf.zeros([0], tf.string)
        return cat, x, tf.stack(y, axis=1), key, bad

    def _split_fn(self, keys):
        bucket = tf.strings.to_hash_bucket_fast(keys, _SPLIT_BUCKETS)
        return tf.where(bucket < self._test_cut, 2, tf.where(bucket < self._validation_cut, 1, 0))

    def _counts_fn(self, cat, train):
        out = []
        for j, column in enumerate(cat):
            column = tf.boolean_mask(column, train)
            if j in self.cols.hashed:
                buckets = tf.strings.to_hash_bucket_fast(column, self.cols.hashed[j])
                out.append((tf.unique(buckets)[0], tf.zeros([0], tf.int32)))
            else:
                unique = tf.unique_with_counts(column)
                out.append((unique.y, unique.count))
        return out

    # Python parts -------------------------------------------------------------------

    def process(self, block: _Block) -> _Result:
        data = block.data
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
            if data.endswith(b"\r"):
                data = data[:-1]
        lines = data.split(b"\n")
        numbers = block.first_line + np.arange(len(lines))
        buf = np.frombuffer(data, np.uint8)
        ends = np.concatenate([np.flatnonzero(buf == 10), [len(buf)]])
        keep = np.diff(ends, prepend=-1) > 1  # blank lines are no rows
        bad: dict[int, str] = {}  # index into lines -> message
        try:
            data.decode("utf-8")
            utf8_ok = True
        except UnicodeDecodeError:
            utf8_ok = False
        if len(self.sep) == 1 and utf8_ok and b'"' not in data:
            seps = np.flatnonzero(buf == ord(self.sep))
            fields = np.diff(np.searchsorted(seps, np.concatenate([[-1], ends]))) + 1
            for i in np.flatnonzero(keep & (fields != self._ncols)):
                bad[i] = self._explain(lines[i])
            good = np.flatnonzero(keep & (fields == self._ncols))
            cells = self._decode(tf.constant(np.array(lines, dtype=object)[good]
                                             if len(good) < len(lines)
                                             else np.array(lines, dtype=object)))
        else:
            rows, good_list = [], []
            for i in np.flatnonzero(keep):
                try:
                    fields = _split_line(lines[i].decode("utf-8"), self.sep)
                except (UnicodeDecodeError, _csv.Error):
                    bad[i] = self._explain(lines[i])
                    continue
                if len(fields) != self._ncols:
                    bad[i] = self._explain(lines[i])
                    continue
                rows.append([fields[c].encode() for c in self._used])
                good_list.append(i)
            good = np.array(good_list, dtype=np.int64)
            table = np.array(rows, dtype=object).reshape(len(good), len(self._used))
            cells = [tf.constant(table[:, k].copy()) for k in range(len(self._used))]
        spaces = (b" ", b"\x0b", b"\x0c") + ((b"\t",) if self.sep != "\t" else ())
        check = self._checker(any(c in data for c in spaces), b"\r" in data)
        cat, x, y, key, row_bad = check(cells)
        x, y, row_bad = x.numpy(), y.numpy(), row_bad.numpy()
        if row_bad.any():
            for i in good[row_bad]:
                bad[i] = self._explain(lines[i])
            ok = ~row_bad
            good, x, y = good[ok], x[ok], y[ok]
            cat = [tf.boolean_mask(c, ok) for c in cat]
            if self.cols.key is not None:
                key = tf.boolean_mask(key, ok)
        if bad and self.bad_rows == "error":
            first = min(bad)
            return _Result(int(keep.sum()), [f"{block.path}:{numbers[first]}: {bad[first]}"],
                           {}, {}, {}, np.zeros(0), np.zeros(0), np.zeros(0))
        if self.cols.key is None:
            key = tf.constant(np.array(lines, dtype=object)[good] if len(good)
                              else np.zeros(0, object))
        split = self._split(key).numpy() if len(good) else np.zeros(0, np.int32)
        return self._summarise(block, numbers, keep, bad, cat, x, y, split)

    def _summarise(self, block, numbers, keep, bad, cat, x, y, split) -> _Result:
        cols = self.cols
        train = split == 0
        floats = np.concatenate([x, y], axis=1).astype(np.float32)
        pieces = _pieces(self.encoder.encode(cat, floats), split, block.index,
                         self.shard_counts, self.compression_level)
        vocab, buckets = {}, {}
        if cols.categorical and train.any():
            for j, (values, counts) in enumerate(self._counts(cat, tf.constant(train))):
                if j in cols.hashed:
                    buckets[j] = values.numpy()
                else:
                    vocab[j] = (values.numpy().tolist(), counts.numpy().tolist())
        xt = x[train]
        xt = np.where(np.array(cols.log, bool), np.log1p(np.maximum(xt, 0.0)), xt)
        n = len(xt)
        mean = xt.mean(axis=0) if n else np.zeros(xt.shape[1])
        moments = np.stack([np.full(xt.shape[1], float(n)), mean,
                            ((xt - mean) ** 2).sum(axis=0)])
        minmax = (np.stack([x[train].min(axis=0), x[train].max(axis=0)]) if n
                  else np.stack([np.full(x.shape[1], np.inf), np.full(x.shape[1], -np.inf)]))
        labels = np.zeros((len(layout.SPLITS), len(cols.labels), 2))
        for s in range(len(layout.SPLITS)):
            ys = y[split == s]
            has = ~np.isnan(ys)
            labels[s, :, 0] = has.sum(axis=0)
            labels[s, :, 1] = np.where(has, ys, 0.0).sum(axis=0)
        messages = [f"{block.path}:{numbers[i]}: {bad[i]}" for i in sorted(bad)]
        return _Result(int(keep.sum()), messages, pieces, vocab, buckets, moments, minmax,
                       labels)

    def _explain(self, line: bytes) -> str:
        """Why a line is bad: the message after ``file:line: ``."""
        cols = self.cols
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            where = "line"
            raw_fields = line.split(self.sep.encode())
            if len(raw_fields) == self._ncols:
                for name, raw in zip(cols.names, raw_fields):
                    try:
                        raw.decode("utf-8")
                    except UnicodeDecodeError:
                        where = f"column {name!r}"
                        break
            return f"{where} is not valid UTF-8 ({err.reason} at byte {err.start})"
        try:
            fields = _split_line(text, self.sep)
        except _csv.Error as err:
            return f"malformed quoting: {err}"
        if len(fields) != self._ncols:
            return f"expected {self._ncols} fields, got {len(fields)}"
        for c in cols.categorical:
            if "\r" in fields[c].strip():
                return (f"column {cols.names[c]!r} holds a carriage return, which a "
                        f"vocabulary line cannot: {fields[c]!r}")
        for c in cols.numeric:
            value = fields[c].strip()
            if not _NUMBER_RE.fullmatch(value.encode()):
                finite = _is_number(value)
                what = "a finite number" if finite is False else "a number"
                return f"column {cols.names[c]!r} expects {what}, got {value!r}"
            if not math.isfinite(float(value)):
                return f"column {cols.names[c]!r} expects a finite number, got {value!r}"
            if abs(float(value)) > _FLOAT32_MAX:
                return (f"column {cols.names[c]!r} expects a number within float32's range, "
                        f"got {value!r}")
        for c, binary in zip(cols.labels, cols.binary):
            value = fields[c].strip()
            if not value:
                continue
            number = float(value) if _NUMBER_RE.fullmatch(value.encode()) else None
            if binary and number not in (0.0, 1.0):
                return f"binary label column {cols.names[c]!r} expects 0, 1 or empty, " \
                       f"got {value!r}"
            if number is None or not abs(number) <= _FLOAT32_MAX:
                return f"label column {cols.names[c]!r} expects a finite number within " \
                       f"float32's range or empty, got {value!r}"
        return "unreadable row"  # pragma: no cover - the checks above mirror the TF ones


def _is_number(value: str) -> bool | None:
    """True: a finite float; False: a float that is not finite; None: not a float."""
    try:
        return math.isfinite(float(value))
    except ValueError:
        return None


# --- merging, in file order (main thread) -----------------------------------------------


class _ShardFiles:
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

    def add(self, shard: int, piece: _Piece) -> None:
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


class _Totals:
    """Counts, moments and label sums merged over blocks."""

    def __init__(self, cols: _Columns):
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

    def add(self, result: _Result) -> None:
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


def _rank(counts: Mapping[bytes, int], min_count: int, max_vocabulary: int | None
          ) -> list[bytes]:
    """Values seen at least ``min_count`` times, most frequent first, ties by value."""
    kept = [(value, n) for value, n in counts.items() if n >= min_count]
    kept.sort(key=lambda vn: (-vn[1], vn[0]))
    if max_vocabulary is not None:
        kept = kept[:max_vocabulary]
    return [value for value, _ in kept]


def _write_vocabulary(root: Path, name: str, values: Sequence[bytes]) -> str:
    if "/" in name or "\\" in name or name.startswith("."):
        raise DataError(f"Column {name!r}: its vocabulary needs a file, and this name cannot "
                        f"be a file name; rename the column or hash it.")
    relative = layout.vocabulary_path(name)
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for value in values:
            f.write(value + b"\n")
    return relative


# --- the output folder ------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(out: Path) -> list[Path]:
    """Remove ``<out>.partial-*`` / ``<out>.old-*`` folders left by runs that died."""
    removed = []
    host = socket.gethostname()
    for pattern in (".partial-*", ".old-*"):
        for folder in out.parent.glob(glob.escape(out.name) + pattern):
            try:
                owner_host, pid = (folder / _OWNER).read_text().split()
                pid = int(pid)
            except (OSError, ValueError):
                owner_host, pid = host, None
            if owner_host != host or (pid is not None and _alive(pid)):
                continue  # another machine's or a live run's
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _check_output(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder.")
    if (out / layout.MANIFEST).is_file():
        if not overwrite:
            raise DataError(f"{out}: a prepared dataset is already there; pass overwrite "
                            f"(--overwrite) to replace it.")
    elif any(out.iterdir()):
        raise DataError(f"{out}: folder is not empty and is not a prepared dataset; "
                        f"refusing to replace it.")


class _Staging:
    """A temporary sibling folder renamed into place when complete."""

    def __init__(self, out: Path, overwrite: bool):
        out.parent.mkdir(parents=True, exist_ok=True)
        _check_output(out, overwrite)
        for folder in _remove_stale(out):
            logging.info("prepare: removed %s, left by a run that did not finish", folder)
        self.out = out
        self.overwrite = overwrite
        self.path = out.parent / f"{out.name}.partial-{secrets.token_hex(4)}"
        self.path.mkdir()
        (self.path / _OWNER).write_text(f"{socket.gethostname()} {os.getpid()}\n")

    def commit(self) -> None:
        _check_output(self.out, self.overwrite)  # again: it may have appeared meanwhile
        (self.path / _OWNER).unlink()
        old = None
        if self.out.exists() and any(self.out.iterdir()):
            old = self.out.parent / f"{self.out.name}.old-{secrets.token_hex(4)}"
            os.rename(self.out, old)
        os.replace(self.path, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _write_json(path: Path, doc: dict) -> None:
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")


def _spec_doc(spec: FeatureSpec, tasks: Sequence[TaskSpec]) -> dict:
    return {"format": layout.FORMAT, "features": spec.to_dict(),
            "tasks": [dataclasses.asdict(t) for t in tasks]}


def _shard_counts(num_shards: int, validation_fraction: float, test_fraction: float
                  ) -> dict[str, int]:
    train = max(1.0 - validation_fraction - test_fraction, 1e-9)
    return {"train": num_shards,
            "validation": max(1, round(num_shards * validation_fraction / train)),
            "test": max(1, round(num_shards * test_fraction / train))}


def _label_stats(tasks: Sequence[TaskSpec], sums: np.ndarray) -> dict:
    out = {}
    for s, split in enumerate(layout.SPLITS):
        out[split] = {}
        for t, task in enumerate(tasks):
            n, total = int(sums[s, t, 0]), float(sums[s, t, 1])
            entry = {"rows_with_label": n}
            if task.kind == "binary":
                entry["positives"] = int(round(total))
            else:
                entry["mean"] = total / n if n else None
            out[split][task.name] = entry
    return out


# --- options ------------------------------------------------------------------------------


def _per_column(value: int | Mapping[str, int] | None, names: Sequence[str], what: str,
                default: int | None, minimum: int) -> dict[str, int | None]:
    """One value for every column, or ``{column: value}`` (key ``"*"``: the other columns)."""
    if value is None or isinstance(value, (int, np.integer)):
        out = {n: (default if value is None else int(value)) for n in names}
    else:
        value = dict(value)
        default = value.pop("*", default)
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise UserError(f"{what} names {unknown}, which are not vocabulary columns "
                            f"{list(names)}.")
        out = {n: (int(value[n]) if n in value else default) for n in names}
    bad = {n: v for n, v in out.items() if v is not None and v < minimum}
    if bad:
        raise UserError(f"{what} must be >= {minimum}, got {bad}.")
    return out


def _columns(names: list[str], path: str, tasks: Sequence[TaskSpec],
             categorical: Sequence[str] | None, numeric: Sequence[str],
             log_numeric: Sequence[str], hashed: Mapping[str, int],
             key_column: str | None) -> _Columns:
    label_names = [t.name for t in tasks]
    if categorical is None:
        categorical = [c for c in names if c not in {*label_names, *numeric}]
    for kind, wanted in (("label", label_names), ("numeric", numeric),
                         ("categorical", categorical),
                         ("key", [key_column] if key_column else [])):
        absent = [c for c in wanted if c not in names]
        if absent:
            raise DataError(f"{path}: no {kind} column(s) {absent}; columns are {names}.")
    overlap = sorted(set(label_names) & {*numeric, *categorical})
    if overlap:
        raise UserError(f"Columns {overlap} are labels and cannot also be features.")
    both = sorted(set(numeric) & set(categorical))
    if both:
        raise UserError(f"Columns {both} are both numeric and categorical.")
    if not categorical and not numeric:
        raise UserError("No feature columns: every column is a label.")
    unknown_log = sorted(set(log_numeric) - set(numeric))
    if unknown_log:
        raise UserError(f"log_numeric {unknown_log} must also be numeric columns.")
    unknown_hash = sorted(set(hashed) - set(categorical))
    if unknown_hash:
        raise UserError(f"hash_columns {unknown_hash} must be categorical columns "
                        f"{list(categorical)}.")
    bad_bins = {c: b for c, b in hashed.items() if int(b) < 1}
    if bad_bins:
        raise UserError(f"hash_columns bins must be >= 1, got {bad_bins}.")
    index = {n: i for i, n in enumerate(names)}
    return _Columns(
        names=names, categorical=[index[c] for c in categorical],
        numeric=[index[c] for c in numeric], log=[c in set(log_numeric) for c in numeric],
        labels=[index[c] for c in label_names], binary=[t.kind == "binary" for t in tasks],
        hashed={list(categorical).index(c): int(b) for c, b in hashed.items()},
        key=index[key_column] if key_column else None)


# --- the public functions -----------------------------------------------------------------


def prepare(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    labels: Mapping[str, str | TaskSpec],
    categorical: Sequence[str] | None = None,
    numeric: Sequence[str] = (),
    log_numeric: Sequence[str] = (),
    hash_columns: Mapping[str, int] | None = None,
    key_column: str | None = None,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    min_count: int | Mapping[str, int] = 2,
    max_vocabulary: int | Mapping[str, int] | None = None,
    inline_vocabulary_max: int = 10_000,
    num_shards: int = 8,
    bad_rows: str = "error",
    sep: str | None = None,
    compression_level: int = DEFAULT_COMPRESSION_LEVEL,
    overwrite: bool = False,
    progress: Callable[[Progress], None] | None = log_progress,
    progress_seconds: float = 5.0,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    workers: int = 2,
) -> dict:
    """Prepare delimited files as a sharded, streamable dataset folder (one pass).

    See the module docstring for what is computed and written. Every file must start with
    the same header row.

    Args:
        inputs: files or glob patterns (plain, or gzipped when the name ends in ``.gz``).
        output_dir: the prepared folder to create.
        labels: label column -> task kind (``"binary"`` or ``"regression"``) or
            :class:`TaskSpec`.
        categorical: categorical columns. Default None: every column that is neither a
            label nor numeric.
        numeric: numeric columns (a finite number in every row).
        log_numeric: numeric columns normalised after ``log1p(max(x, 0))``.
        hash_columns: categorical column -> hash bins, instead of a vocabulary.
        key_column: column whose hash decides the split (default: the whole line).
        validation_fraction: share of keys in the validation split. Default 0.1.
        test_fraction: share of keys in the test split. Default 0.1.
        min_count: fewer training occurrences go to the out-of-vocabulary id; one value
            for every column or ``{column: n}`` (the key ``"*"`` sets the columns not
            named, else 2). Default 2.
        max_vocabulary: most values kept per vocabulary column (the rarest go to the
            out-of-vocabulary id); one value or ``{column: n}`` (``"*"`` as for
            ``min_count``). Default None: no limit.
        inline_vocabulary_max: larger vocabularies go to files. Default 10,000.
        num_shards: train shard files; validation and test get proportionally fewer, at
            least one. Default 8.
        bad_rows: ``"error"`` (default) fails at the first bad row; ``"skip"`` skips and
            counts bad rows.
        sep: field separator. Default: tab for ``.tsv``/``.tab`` files, else comma.
        compression_level: gzip level of the shards, 1 (fast) to 9 (small). Default 3:
            on a 2 M-row click log, level 1 wrote 20 % more bytes at 1.1x the speed, level
            6 12 % fewer at 0.57x.
        overwrite: replace an existing prepared folder. Default False.
        progress: called with a :class:`Progress` at most every ``progress_seconds`` and
            at the end. Default: an absl INFO line. None: silent.
        progress_seconds: seconds between progress reports. Default 5.
        chunk_bytes: bytes of text per block of work. Default 4 MiB.
        workers: threads parsing and serializing blocks. Default 2.

    Returns:
        The manifest (also written to ``<output_dir>/manifest.json``).

    Raises:
        DataError: unreadable or missing file, missing column, a bad row (with
            ``bad_rows="error"``), no data rows, an existing output folder.
        UserError: inconsistent options (a ``ValueError`` too).

    Example:
        >>> prepare("clicks/*.csv.gz", "clicks_prepared", {"click": "binary", "buy": "binary"},
        ...         numeric=["price"], log_numeric=["price"], key_column="user",
        ...         hash_columns={"query": 100_000})  # doctest: +SKIP
    """
    from tfmtnas.data.csv import _as_tasks

    started = time.perf_counter()
    try:
        tasks = _as_tasks(labels)
    except ValueError as err:  # an unknown task kind
        raise err if isinstance(err, UserError) else UserError(str(err)) from None
    for frac, what in ((validation_fraction, "validation_fraction"),
                       (test_fraction, "test_fraction")):
        if not 0 <= frac < 1:
            raise UserError(f"{what} must be in [0, 1), got {frac}.")
    if validation_fraction + test_fraction >= 1:
        raise UserError(f"validation_fraction + test_fraction must be < 1, got "
                        f"{validation_fraction} + {test_fraction}.")
    if bad_rows not in BAD_ROW_POLICIES:
        raise UserError(f"bad_rows must be one of {BAD_ROW_POLICIES}, got {bad_rows!r}.")
    if num_shards < 1:
        raise UserError(f"num_shards must be >= 1, got {num_shards}.")
    if not 0 <= compression_level <= 9:
        raise UserError(f"compression_level must be in 0..9, got {compression_level}.")
    if inline_vocabulary_max < 0:
        raise UserError(f"inline_vocabulary_max must be >= 0, got {inline_vocabulary_max}.")
    if chunk_bytes < 1 or workers < 1:
        raise UserError(f"chunk_bytes and workers must be >= 1, got {chunk_bytes}, "
                        f"{workers}.")
    files = _expand_inputs(inputs)
    sep = _default_sep(files) if sep is None else sep
    if not sep or "\n" in sep or '"' in sep:
        raise UserError(f"sep must be a non-empty string without newline or quote, "
                        f"got {sep!r}.")
    sizes = [os.path.getsize(f) for f in files]
    hashed = dict(hash_columns or {})

    first = _FileReader(files[0], chunk_bytes)
    try:
        header = first.header(sep)
    except BaseException:
        first.close()
        raise
    cols = _columns(header, files[0], tasks, categorical, list(numeric), list(log_numeric),
                    hashed, key_column)
    cat_names = [header[c] for c in cols.categorical]
    vocab_names = [n for j, n in enumerate(cat_names) if j not in cols.hashed]
    min_counts = _per_column(min_count, vocab_names, "min_count", 2, 1)
    max_vocabs = _per_column(max_vocabulary, vocab_names, "max_vocabulary", None, 0)
    encoder = _RecordEncoder(cat_names, [header[c] for c in cols.numeric]
                             + [t.name for t in tasks])
    shard_counts = _shard_counts(num_shards, validation_fraction, test_fraction)
    processor = _BlockProcessor(cols, sep, encoder, validation_fraction, test_fraction,
                                bad_rows, [shard_counts[s] for s in layout.SPLITS],
                                compression_level)
    options = {
        "labels": {t.name: t.kind for t in tasks}, "categorical": cat_names,
        "numeric": [header[c] for c in cols.numeric],
        "log_numeric": [header[c] for c, log in zip(cols.numeric, cols.log) if log],
        "hash_columns": hashed, "key_column": key_column,
        "validation_fraction": validation_fraction, "test_fraction": test_fraction,
        "min_count": min_counts, "max_vocabulary": max_vocabs,
        "inline_vocabulary_max": inline_vocabulary_max, "num_shards": shard_counts,
        "bad_rows": bad_rows, "sep": sep, "compression_level": compression_level,
    }

    staging = _Staging(Path(output_dir), overwrite)
    writers: dict[str, _ShardFiles] = {}
    pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="prepare")
    try:
        writers = {s: _ShardFiles(staging.path, s, shard_counts[s]) for s in layout.SPLITS}
        totals = _Totals(cols)
        done_bytes = 0
        last_report = time.perf_counter()
        pending: collections.deque = collections.deque()

        def merge(result: _Result) -> None:
            if result.bad and bad_rows == "error":
                raise DataError(result.bad[0])
            totals.add(result)
            for (s, shard), piece in sorted(result.pieces.items()):
                writers[layout.SPLITS[s]].add(shard, piece)

        def report(reader_bytes: int, done: bool = False) -> None:
            nonlocal last_report
            now = time.perf_counter()
            if progress is not None and (done or now - last_report >= progress_seconds):
                last_report = now
                progress(Progress(totals.rows, totals.skipped, done_bytes + reader_bytes,
                                  sum(sizes), now - started, done))

        block_index = 0
        for k, path in enumerate(files):
            reader = first if k == 0 else _FileReader(path, chunk_bytes)
            try:
                if k > 0:
                    names = reader.header(sep)
                    if names != header:
                        raise DataError(f"{path}: header {names} differs from the header "
                                        f"of {files[0]} {header}.")
                for first_line, data in reader.blocks():
                    block = _Block(block_index, path, first_line, data)
                    block_index += 1
                    pending.append(pool.submit(processor.process, block))
                    while len(pending) > 2 * workers:
                        merge(pending.popleft().result())
                        report(reader.bytes_read)
            finally:
                reader.close()
            done_bytes += sizes[k]
        while pending:
            merge(pending.popleft().result())
            report(0)
        if totals.rows == 0:
            raise DataError(f"{files[0] if len(files) == 1 else 'The input files'}: no data "
                            f"rows after the header.")
        if totals.rows == totals.skipped:
            raise DataError(f"Every one of the {totals.rows} data rows is bad; the first: "
                            f"{totals.messages[0]}")
        shards = {s: w.close() for s, w in writers.items()}
        writers = {}
        split_rows = {s: sum(x["rows"] for x in shards[s]) for s in layout.SPLITS}
        if split_rows["train"] == 0:
            raise DataError(f"No training rows: all {totals.rows - totals.skipped} rows fell "
                            f"into validation or test; give more rows or smaller fractions.")

        spec, column_stats = _fit_spec(staging.path, cols, header, totals, min_counts,
                                       max_vocabs, inline_vocabulary_max, split_rows["train"])
        _write_json(staging.path / layout.SPEC, _spec_doc(spec, tasks))
        seconds = time.perf_counter() - started
        manifest = {
            "format": layout.FORMAT,
            "inputs": [{"path": f, "bytes": b} for f, b in zip(files, sizes)],
            "options": options,
            "rows": totals.rows,
            "skipped_rows": totals.skipped,
            "skipped": totals.messages,
            "splits": {s: {"rows": split_rows[s], "shards": shards[s]} for s in layout.SPLITS},
            "columns": column_stats,
            "labels": _label_stats(tasks, totals.labels),
            "seconds": round(seconds, 3),
            "rows_per_second": round(totals.rows / seconds, 1) if seconds > 0 else None,
        }
        _write_json(staging.path / layout.MANIFEST, manifest)
        staging.commit()
        if progress is not None:
            progress(Progress(totals.rows, totals.skipped, sum(sizes), sum(sizes), seconds,
                              done=True))
        return manifest
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        for w in writers.values():
            w.abort()
        staging.abort()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _fit_spec(root: Path, cols: _Columns, header: list[str], totals: _Totals,
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
        values = _rank(counts, min_counts[name], max_vocabs[name])
        oov_rows = train_rows - sum(counts[v] for v in values)
        entry = {"kind": "vocabulary", "distinct": len(counts), "kept": len(values),
                 "min_count": min_counts[name], "max_vocabulary": max_vocabs[name],
                 "oov_rows": oov_rows, "oov_share": oov_rows / train_rows}
        if len(values) > inline_max:
            path = _write_vocabulary(root, name, values)
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
    staging = _Staging(Path(output_dir), overwrite)
    writers: dict[str, _ShardFiles] = {}
    try:
        features = []
        for f in spec.categorical:
            if f.vocabulary_file is not None:
                values = Path(f.vocabulary_file).read_bytes().split(b"\n")[:f.vocabulary_size]
                path = _write_vocabulary(staging.path, f.name, values)
                f = CategoricalFeature(f.name, vocabulary_file=path,
                                       vocabulary_size=f.vocabulary_size)
            features.append(f)
        spec = FeatureSpec(tuple(features), spec.numeric)
        encoder = _RecordEncoder([f.name for f in spec.categorical],
                                 [f.name for f in spec.numeric] + [t.name for t in tasks])
        writers = {s: _ShardFiles(staging.path, s, shard_counts[s]) for s in layout.SPLITS}
        counts = [shard_counts[s] for s in layout.SPLITS]
        label_sums = np.zeros((len(layout.SPLITS), len(tasks), 2))
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
                pieces = _pieces(records, np.full(len(rows), s), start // chunk_rows, counts,
                                 compression_level)
                for (_, shard), piece in sorted(pieces.items()):
                    writers[split].add(shard, piece)
                has = ~np.isnan(y)
                label_sums[s, :, 0] += has.sum(axis=0)
                label_sums[s, :, 1] += np.where(has, y, 0.0).sum(axis=0)
        shards = {s: w.close() for s, w in writers.items()}
        writers = {}
        _write_json(staging.path / layout.SPEC, _spec_doc(spec, tasks))
        rows = {s: sum(x["rows"] for x in shards[s]) for s in layout.SPLITS}
        seconds = time.perf_counter() - started
        manifest = {
            "format": layout.FORMAT, "source": data.name, "inputs": [],
            "options": {"num_shards": shard_counts, "compression_level": compression_level},
            "rows": sum(rows.values()), "skipped_rows": 0, "skipped": [],
            "splits": {s: {"rows": rows[s], "shards": shards[s]} for s in layout.SPLITS},
            "columns": {}, "labels": _label_stats(tasks, label_sums),
            "seconds": round(seconds, 3),
            "rows_per_second": round(sum(rows.values()) / seconds, 1) if seconds else None,
        }
        _write_json(staging.path / layout.MANIFEST, manifest)
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
