"""One block of input lines, end to end on a worker thread: parse, check, split, serialize.

Holds :class:`BlockProcessor`, whose :meth:`~BlockProcessor.process` turns a
:class:`~tfmtnas.data.prepare.inputs.Block` into a :class:`~.fitting.Result`: its rows parsed by
TensorFlow string ops (``decode_csv``; Python's :mod:`csv` for a block with a double
quote), checked (numbers, labels, UTF-8, field counts; each bad row explained as
``file:line: column 'x' ...``), assigned to a split by the hash of the key, serialized and
deflated into shard pieces, and summarised for the spec (value counts, occupied hash
buckets, moments, label sums). A processor holds no per-block state, so several threads
share one.

Example:
    >>> from tfmtnas.data.prepare.options import columns
    >>> from tfmtnas.features import TaskSpec
    >>> cols = columns(["user", "price", "click"], "log.csv", [TaskSpec("click", "binary")],
    ...                None, ["price"], [], {}, "user")
    >>> encoder = RecordEncoder(["user"], ["price", "click"])
    >>> processor = BlockProcessor(cols, ",", encoder, 0.1, 0.1, "skip", [8, 1, 1], 3)
    >>> result = processor.process(Block(0, "log.csv", 2, b"u1,3,1\\nu2,x,0"))
    >>> result.rows, result.bad
    (2, ["log.csv:3: column 'price' expects a number, got 'x'"])
"""

from __future__ import annotations

import csv as _csv
import functools
import math
import re
import threading
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from tfmtnas.data import layout
from tfmtnas.data.base import FLOAT32_MAX
from tfmtnas.data.csv import multiclass_expects
from tfmtnas.data.prepare.example import RecordEncoder
from tfmtnas.data.prepare.fitting import Result, label_sums
from tfmtnas.data.prepare.inputs import Block, split_line
from tfmtnas.data.prepare.options import Columns
from tfmtnas.data.prepare.tfrecord import shard_pieces

_SPLIT_BUCKETS = 1 << 30
_NUMBER = r"[ \t]*[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?[ \t]*"
_NUMBER_RE = re.compile(_NUMBER.encode())


class BlockProcessor:
    """Parses, checks and serializes blocks; thread-safe (holds no per-block state)."""

    def __init__(self, cols: Columns, sep: str, encoder: RecordEncoder,
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
            faults.append(~ok | ~(tf.abs(x[-1]) <= FLOAT32_MAX))
        y = []
        for c, binary, classes in zip(self.cols.labels, self.cols.binary, self.cols.classes):
            cell = text(c)
            empty = tf.equal(cell, "")
            ok = tf.strings.regex_full_match(cell, _NUMBER)
            value = tf.strings.to_number(tf.where(ok, cell, "0"), tf.float64)
            fault = ~empty & (~ok | ~(tf.abs(value) <= FLOAT32_MAX))
            if binary:
                fault |= ~empty & tf.not_equal(value, 0.0) & tf.not_equal(value, 1.0)
            if classes is not None:
                fault |= ~empty & (tf.not_equal(value, tf.round(value)) | (value < 0.0)
                                   | (value >= classes))
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

    def process(self, block: Block) -> Result:
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
                    fields = split_line(lines[i].decode("utf-8"), self.sep)
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
            return Result(int(keep.sum()), [f"{block.path}:{numbers[first]}: {bad[first]}"],
                          {}, {}, {}, np.zeros(0), np.zeros(0), np.zeros(0))
        if self.cols.key is None:
            key = tf.constant(np.array(lines, dtype=object)[good] if len(good)
                              else np.zeros(0, object))
        split = self._split(key).numpy() if len(good) else np.zeros(0, np.int32)
        return self._summarise(block, numbers, keep, bad, cat, x, y, split)

    def _summarise(self, block, numbers, keep, bad, cat, x, y, split) -> Result:
        cols = self.cols
        train = split == 0
        floats = np.concatenate([x, y], axis=1).astype(np.float32)
        pieces = shard_pieces(self.encoder.encode(cat, floats), split, block.index,
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
        labels = np.stack([label_sums(y[split == s]) for s in range(len(layout.SPLITS))])
        messages = [f"{block.path}:{numbers[i]}: {bad[i]}" for i in sorted(bad)]
        return Result(int(keep.sum()), messages, pieces, vocab, buckets, moments, minmax,
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
            fields = split_line(text, self.sep)
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
            if abs(float(value)) > FLOAT32_MAX:
                return (f"column {cols.names[c]!r} expects a number within float32's range, "
                        f"got {value!r}")
        for c, binary, classes in zip(cols.labels, cols.binary, cols.classes):
            value = fields[c].strip()
            if not value:
                continue
            number = float(value) if _NUMBER_RE.fullmatch(value.encode()) else None
            if binary and number not in (0.0, 1.0):
                return f"binary label column {cols.names[c]!r} expects 0, 1 or empty, " \
                       f"got {value!r}"
            if classes is not None and (number is None or number != round(number)
                                        or not 0 <= number < classes):
                return f"{multiclass_expects(cols.names[c], classes)}, got {value!r}"
            if number is None or not abs(number) <= FLOAT32_MAX:
                return f"label column {cols.names[c]!r} expects a finite number within " \
                       f"float32's range or empty, got {value!r}"
        return "unreadable row"  # pragma: no cover - the checks above mirror the TF ones


def _is_number(value: str) -> bool | None:
    """True: a finite float; False: a float that is not finite; None: not a float."""
    try:
        return math.isfinite(float(value))
    except ValueError:
        return None

