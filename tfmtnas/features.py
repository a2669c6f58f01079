"""Declarative feature specs and the preprocessing layer that turns raw features into numbers.

A :class:`FeatureSpec` lists categorical features (by vocabulary or by hashing, each with an
out-of-vocabulary bucket) and numeric features (optionally ``log1p``-compressed, then
standardised). It is JSON-serialisable, so a model directory fully describes its inputs.
Large vocabularies live in files the spec names (relative to the folder of the JSON that
names them: :meth:`FeatureSpec.resolved`, :meth:`FeatureSpec.copy_vocabularies`); they are
read by lookup-table initialisers and exported as SavedModel assets, never inlined.

:class:`FeaturePreprocessor` maps a dict of raw feature tensors (strings for categorical
values, floats for numeric ones) to the two dense tensors the compiled model core consumes::

    {"categorical": int32 [batch, n_categorical]  # ids into one concatenated table
     "numeric":     float32 [batch, n_numeric]}

String lookups and hashing cannot be XLA-compiled, so the preprocessor runs in the
``tf.data`` pipeline and inside the serving signature, never inside the jitted train step.

Example:
    >>> import numpy as np
    >>> spec = FeatureSpec.fit(
    ...     {"color": np.array(["red", "blue", "red"]), "size": np.array([1.0, 2.0, 3.0])},
    ...     categorical=["color"], numeric=["size"])
    >>> spec.categorical[0].vocabulary
    ('red', 'blue')
    >>> out = FeaturePreprocessor(spec)({"color": tf.constant(["blue", "green"]),
    ...                                  "size": tf.constant([2.0, 2.0])})
    >>> out["categorical"].numpy().ravel().tolist()  # "green" is out of vocabulary -> 0
    [2, 0]
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from tfmtnas import keras
from tfmtnas.errors import DataError, MissingFileError, UserError

TASK_KINDS = ("binary", "regression", "multiclass")
DEFAULT_TOP_K = 5


@dataclasses.dataclass(frozen=True)
class CategoricalFeature:
    """A categorical feature looked up in a vocabulary or hashed into buckets.

    Large vocabularies (click-log user and item ids) live in a file, one value per line,
    most frequent first, instead of in the spec: ``vocabulary_file`` with
    ``vocabulary_size`` lines. The file is read by a lookup-table initialiser and carried
    as a SavedModel asset, never copied into the graph or the model JSON. An empty line is
    the value ``""``; a line's trailing ``"\\r"`` (Windows line end) is not part of the
    value, as TensorFlow's file reader drops it; every value appears once.

    Args:
        name: raw feature name.
        vocabulary: known values; id 0 is the out-of-vocabulary bucket, ``i + 1`` the i-th value.
        hash_bins: number of hash buckets, instead of a vocabulary.
        vocabulary_file: path of a vocabulary file (line ``i`` holds the value of id
            ``i + 1``), instead of ``vocabulary``; relative paths are resolved against the
            folder of the spec that names them.
        vocabulary_size: number of lines of ``vocabulary_file`` (required with it).

    Example:
        >>> CategoricalFeature("user", vocabulary_file="vocabularies/user.txt",
        ...                    vocabulary_size=1_000_000).size
        1000001
    """

    name: str
    vocabulary: tuple[str, ...] | None = None
    hash_bins: int | None = None
    vocabulary_file: str | None = None
    vocabulary_size: int | None = None

    def __post_init__(self):
        given = [k for k in ("vocabulary", "hash_bins", "vocabulary_file")
                 if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"Categorical feature {self.name!r}: give exactly one of vocabulary, "
                f"hash_bins or vocabulary_file, got {given or 'none'}."
            )
        if (self.vocabulary_file is None) != (self.vocabulary_size is None):
            raise ValueError(f"Categorical feature {self.name!r}: vocabulary_file and "
                             f"vocabulary_size go together, got vocabulary_file="
                             f"{self.vocabulary_file!r}, vocabulary_size={self.vocabulary_size!r}.")
        if self.vocabulary_size is not None and self.vocabulary_size < 0:
            raise ValueError(f"Categorical feature {self.name!r}: vocabulary_size must be "
                             f">= 0, got {self.vocabulary_size}.")
        if self.hash_bins is not None and self.hash_bins < 1:
            raise ValueError(f"Categorical feature {self.name!r}: hash_bins must be >= 1, "
                             f"got {self.hash_bins}.")
        if self.vocabulary is not None:
            object.__setattr__(self, "vocabulary", tuple(str(v) for v in self.vocabulary))

    @property
    def size(self) -> int:
        """Number of distinct ids, out-of-vocabulary bucket included."""
        if self.hash_bins is not None:
            return self.hash_bins
        if self.vocabulary_file is not None:
            return self.vocabulary_size + 1
        return len(self.vocabulary) + 1

    def read_vocabulary(self, limit: int | None = None) -> tuple[str, ...]:
        """The known values in id order (value ``i`` has id ``i + 1``), from the file if any.

        Args:
            limit: read at most this many values (default all).

        Example:
            >>> CategoricalFeature("color", ("red", "blue")).read_vocabulary(1)
            ('red',)
        """
        if self.hash_bins is not None:
            raise ValueError(f"Categorical feature {self.name!r} is hashed: it has no "
                             f"vocabulary.")
        if self.vocabulary is not None:
            return self.vocabulary[:limit]
        values = []
        with _open_vocabulary(self) as lines:
            for line in lines:
                if limit is not None and len(values) >= limit:
                    break
                values.append(_line_value(line).decode("utf-8"))
        return tuple(values)


def _is_absolute(path: str) -> bool:
    """An absolute local path or a URL-like path (``gs://...``) that no base folder changes."""
    return os.path.isabs(path) or "://" in path


def _join(base_dir: str | os.PathLike, path: str) -> str:
    base_dir = os.fspath(base_dir)
    if "://" in base_dir:
        return f"{base_dir.rstrip('/')}/{path}"
    return os.path.abspath(os.path.join(base_dir, path))


def _open_vocabulary(feature: CategoricalFeature):
    """The feature's vocabulary file opened for binary reading (errors name the feature)."""
    path = feature.vocabulary_file
    try:
        if "://" in path:
            return tf.io.gfile.GFile(path, "rb")
        return open(path, "rb")  # noqa: SIM115 - the caller closes it
    except (OSError, tf.errors.NotFoundError):
        raise MissingFileError(f"Categorical feature {feature.name!r}: vocabulary file "
                               f"{path} not found.") from None


def _line_value(line: bytes) -> bytes:
    """A vocabulary line without its line end (``\\n``, ``\\r\\n``), as TensorFlow reads it."""
    if line.endswith(b"\n"):
        line = line[:-1]
    return line[:-1] if line.endswith(b"\r") else line


def _count_lines(path: str) -> tuple[int, bool]:
    """``(lines, whether one is empty)`` of a vocabulary file, read in large chunks (about
    20 ms for a million lines here, so not cached: a file rewritten within the clock's
    resolution would look unchanged to a cache keyed by size and time)."""
    lines, empty, window = 0, False, b"\n"  # as if a line ended just before the file
    with (tf.io.gfile.GFile(path, "rb") if "://" in path else open(path, "rb")) as f:
        for chunk in iter(functools.partial(f.read, 1 << 24), b""):
            lines += chunk.count(b"\n")
            window = window[-2:] + chunk
            empty = empty or b"\n\n" in window or b"\n\r\n" in window
            window = window[-2:]
    if window[-1:] != b"\n":  # the last line has no line end
        lines += 1
        empty = empty or window.endswith(b"\n\r")
    return lines, empty


def check_vocabulary_file(feature: CategoricalFeature) -> bool:
    """Check that the feature's vocabulary file exists with ``vocabulary_size`` lines.

    Duplicate values are found when a lookup table is filled from the file
    (:class:`FeaturePreprocessor`), which reads every value anyway.

    Args:
        feature: a categorical feature with a ``vocabulary_file``.

    Returns:
        Whether one of the lines is empty (the value ``""``).

    Raises:
        FileNotFoundError: the file does not exist (the message names feature and path).
        ValueError: the file has another number of lines than ``vocabulary_size``.

    Example:
        >>> check_vocabulary_file(CategoricalFeature("user", vocabulary_file="user.txt",
        ...                                          vocabulary_size=3))
        False
    """
    path = feature.vocabulary_file
    try:
        stat = tf.io.gfile.stat(path)
    except tf.errors.NotFoundError:
        raise MissingFileError(f"Categorical feature {feature.name!r}: vocabulary file "
                               f"{path} not found.") from None
    if stat.is_directory:
        raise MissingFileError(f"Categorical feature {feature.name!r}: vocabulary file "
                               f"{path} is a directory.")
    lines, empty = _count_lines(path)
    if lines != feature.vocabulary_size:
        raise DataError(f"Categorical feature {feature.name!r}: vocabulary file {path} has "
                         f"{lines} lines, but vocabulary_size is {feature.vocabulary_size}.")
    return empty


def _repeated_value(feature: CategoricalFeature) -> str | None:
    """The first value the feature's vocabulary file repeats, with its lines, or None."""
    first: dict[str, int] = {}
    for line, value in enumerate(feature.read_vocabulary(), start=1):
        if value in first:
            return f"{value!r} on lines {first[value]} and {line}"
        first[value] = line
    return None


@dataclasses.dataclass(frozen=True)
class NumericFeature:
    """A numeric feature: ``(f(x) - mean) / std`` with ``f = log1p(max(x, 0))`` if ``log``.

    Args:
        name: raw feature name.
        mean: mean of ``f(x)`` on training data.
        std: standard deviation of ``f(x)`` on training data (must be > 0).
        log: compress heavy tails with ``log1p`` first.
    """

    name: str
    mean: float = 0.0
    std: float = 1.0
    log: bool = False

    def __post_init__(self):
        if not self.std > 0:
            raise ValueError(f"Numeric feature {self.name!r}: std must be > 0, got {self.std}.")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One prediction task.

    Args:
        name: task name; also the label key and the output name.
        kind: ``"binary"`` (cross-entropy, AUC, probability output), ``"regression"``
            (mean squared error, RMSE, value output) or ``"multiclass"`` (softmax
            cross-entropy, accuracy and top-k accuracy, one probability per class). The
            text form ``"multiclass:K"`` sets ``num_classes`` too.
        weight: weight of this task's loss in the total loss.
        num_classes: number of classes ``K`` of a multiclass task (>= 2); its labels are
            the class ids ``0 .. K-1``. None for the other kinds.
        top_k: ``k`` of a multiclass task's top-k accuracy; default 5 when ``K > 5``, else
            no top-k metric. Must be in ``[1, K)``.

    Raises:
        UserError: an unknown kind, or ``num_classes``/``top_k`` missing, out of range or
            given to a kind that has no classes.

    Example:
        >>> task = TaskSpec("digit", "multiclass:10")
        >>> task.kind, task.num_classes, task.top_k, task.width, task.kind_text
        ('multiclass', 10, 5, 10, 'multiclass:10')
        >>> TaskSpec("click").width
        1
    """

    name: str
    kind: str = "binary"
    weight: float = 1.0
    num_classes: int | None = None
    top_k: int | None = None

    def __post_init__(self):
        kind, sep, classes = str(self.kind).partition(":")
        if sep and kind == "multiclass":
            if self.num_classes is not None and str(self.num_classes) != classes:
                raise UserError(f"Task {self.name!r}: kind {self.kind!r} and num_classes="
                                f"{self.num_classes} disagree; give the classes once.")
            if not classes.isdigit():
                raise UserError(f"Task {self.name!r}: a multiclass kind is multiclass:K with "
                                f"K the number of classes, got {self.kind!r}.")
            object.__setattr__(self, "kind", kind)
            object.__setattr__(self, "num_classes", int(classes))
        if self.kind not in TASK_KINDS:
            raise UserError(f"Task {self.name!r}: kind must be one of binary, regression or "
                            f"multiclass:K (K classes), got {self.kind!r}.")
        if self.kind != "multiclass":
            if self.num_classes is not None or self.top_k is not None:
                raise UserError(f"Task {self.name!r}: num_classes and top_k are for "
                                f"multiclass tasks, not {self.kind!r} ones.")
            return
        if (self.num_classes is None or isinstance(self.num_classes, bool)
                or int(self.num_classes) != self.num_classes or self.num_classes < 2):
            raise UserError(f"Task {self.name!r}: a multiclass task needs num_classes >= 2 "
                            f"(kind 'multiclass:K'), got {self.num_classes!r}.")
        object.__setattr__(self, "num_classes", int(self.num_classes))
        top_k = self.top_k
        if top_k is None and self.num_classes > DEFAULT_TOP_K:
            top_k = DEFAULT_TOP_K
        if top_k is not None and not (isinstance(top_k, int) and 1 <= top_k < self.num_classes):
            raise UserError(f"Task {self.name!r}: top_k must be an integer in [1, "
                            f"{self.num_classes}) (below num_classes), got {top_k!r}.")
        object.__setattr__(self, "top_k", top_k)

    @property
    def width(self) -> int:
        """Outputs of the task's tower: ``num_classes`` logits for multiclass, else 1."""
        return self.num_classes if self.kind == "multiclass" else 1

    @property
    def kind_text(self) -> str:
        """The kind as flags and ``label_columns`` write it: ``"multiclass:10"``, ``"binary"``."""
        return f"multiclass:{self.num_classes}" if self.kind == "multiclass" else self.kind

    @property
    def metric_names(self) -> list[str]:
        """The task's quality metrics, as training logs and evaluations name them.

        ``<task>_auc`` (binary), ``<task>_rmse`` (regression), ``<task>_accuracy`` and
        ``<task>_top<k>_accuracy`` (multiclass, the latter with a ``top_k``). The first is
        the one a study ranks the task by.

        Example:
            >>> TaskSpec("digit", "multiclass:10").metric_names
            ['digit_accuracy', 'digit_top5_accuracy']
        """
        if self.kind == "binary":
            return [f"{self.name}_auc"]
        if self.kind == "regression":
            return [f"{self.name}_rmse"]
        top = [] if self.top_k is None else [f"{self.name}_top{self.top_k}_accuracy"]
        return [f"{self.name}_accuracy", *top]

    def to_dict(self) -> dict:
        """The JSON form; the class fields appear only for multiclass tasks.

        Example:
            >>> TaskSpec("click").to_dict()
            {'name': 'click', 'kind': 'binary', 'weight': 1.0}
        """
        out = {"name": self.name, "kind": self.kind, "weight": self.weight}
        if self.kind == "multiclass":
            out.update(num_classes=self.num_classes, top_k=self.top_k)
        return out


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """The raw inputs of a model: categorical then numeric features, in a fixed order."""

    categorical: tuple[CategoricalFeature, ...] = ()
    numeric: tuple[NumericFeature, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "categorical", tuple(self.categorical))
        object.__setattr__(self, "numeric", tuple(self.numeric))
        names = [f.name for f in self.categorical] + [f.name for f in self.numeric]
        dupes = sorted(n for n, c in collections.Counter(names).items() if c > 1)
        if dupes:
            raise UserError(f"Feature names must be unique; repeated: {dupes}.")
        if not names:
            raise ValueError("A FeatureSpec needs at least one feature.")

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.categorical] + [f.name for f in self.numeric]

    @property
    def offsets(self) -> list[int]:
        """Start of each categorical feature's ids in the concatenated embedding table."""
        return [int(x) for x in np.cumsum([0] + [f.size for f in self.categorical])[:-1]]

    @property
    def total_ids(self) -> int:
        """Rows of the concatenated embedding table."""
        return int(sum(f.size for f in self.categorical))

    @property
    def vocabulary_files(self) -> dict[str, str]:
        """``{feature name: vocabulary_file}`` of the features whose vocabulary is a file."""
        return {f.name: f.vocabulary_file for f in self.categorical
                if f.vocabulary_file is not None}

    def resolved(self, base_dir: str | os.PathLike) -> FeatureSpec:
        """The spec with relative ``vocabulary_file`` paths made absolute from ``base_dir``.

        A spec stored in a folder (a prepared dataset's ``spec.json``, a model dir's
        ``model.json``, an export's metadata) names its files relative to that folder;
        resolve it against the folder before use. Absolute paths are kept.

        Args:
            base_dir: the folder the relative paths start from.

        Example:
            >>> spec = FeatureSpec([CategoricalFeature(
            ...     "user", vocabulary_file="vocabularies/user.txt", vocabulary_size=3)])
            >>> spec.resolved("/data/clicks").categorical[0].vocabulary_file
            '/data/clicks/vocabularies/user.txt'
        """
        return dataclasses.replace(self, categorical=tuple(
            dataclasses.replace(f, vocabulary_file=_join(base_dir, f.vocabulary_file))
            if f.vocabulary_file is not None and not _is_absolute(f.vocabulary_file) else f
            for f in self.categorical))

    def copy_vocabularies(self, base_dir: str | os.PathLike,
                          folder: str = "vocabularies") -> FeatureSpec:
        """Copy each vocabulary file into ``<base_dir>/<folder>/``; return the spec naming
        the copies relative to ``base_dir`` (what a model dir's ``model.json`` stores).

        The copy of a feature's file is ``<folder>/<feature name>.txt`` (characters other
        than letters, digits, ``_ . -`` replaced by ``_``). Each file is checked first
        (exists, ``vocabulary_size`` lines) and copied aside, then renamed into place, so
        an interrupted copy never looks complete. A file already in place is kept.

        Args:
            base_dir: the folder the returned spec's paths are relative to.
            folder: sub-folder of ``base_dir`` for the copies (default ``"vocabularies"``,
                as in a prepared dataset).

        Returns:
            The spec with relative paths (``self`` if no vocabulary is a file); resolve it
            with :meth:`resolved` after reading it back.

        Example:
            >>> saved = spec.copy_vocabularies("runs/mmoe")   # runs/mmoe/vocabularies/user.txt
            >>> saved.categorical[0].vocabulary_file
            'vocabularies/user.txt'
        """
        if not self.vocabulary_files:
            return self
        base_dir = os.fspath(base_dir)
        tf.io.gfile.makedirs(_join(base_dir, folder))
        used: set[str] = set()
        cats = []
        for f in self.categorical:
            if f.vocabulary_file is None:
                cats.append(f)
                continue
            check_vocabulary_file(f)
            stem = re.sub(r"[^A-Za-z0-9_.-]", "_", f.name)
            name, n = f"{stem}.txt", 1
            while name in used:
                name, n = f"{stem}-{n}.txt", n + 1
            used.add(name)
            relative = f"{folder}/{name}"
            target = _join(base_dir, relative)
            if _join(base_dir, f.vocabulary_file) != target:
                tf.io.gfile.copy(f.vocabulary_file, target + ".tmp", overwrite=True)
                tf.io.gfile.rename(target + ".tmp", target, overwrite=True)
            cats.append(dataclasses.replace(f, vocabulary_file=relative))
        return dataclasses.replace(self, categorical=tuple(cats))

    def raw_dtype(self, name: str) -> tf.DType:
        """The dtype a raw value of ``name`` has (string for categorical, float32 numeric)."""
        return tf.string if name in {f.name for f in self.categorical} else tf.float32

    def to_dict(self) -> dict:
        return {
            # The file fields appear only where used, so older model JSON stays as it was.
            "categorical": [{k: v for k, v in dataclasses.asdict(f).items()
                             if v is not None or k in ("vocabulary", "hash_bins")}
                            for f in self.categorical],
            "numeric": [dataclasses.asdict(f) for f in self.numeric],
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> FeatureSpec:
        return cls(
            categorical=tuple(CategoricalFeature(**f) for f in d.get("categorical", ())),
            numeric=tuple(NumericFeature(**f) for f in d.get("numeric", ())),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        return cls.from_dict(json.loads(text))

    @classmethod
    def fit(
        cls,
        columns: Mapping[str, np.ndarray],
        categorical: Sequence[str] = (),
        numeric: Sequence[str] = (),
        log_numeric: Iterable[str] = (),
        hashed: Mapping[str, int] | None = None,
        min_count: int = 1,
        max_vocabulary: int | None = None,
    ) -> FeatureSpec:
        """Build a spec from training columns.

        Args:
            columns: raw training columns by name.
            categorical: names of categorical columns (vocabulary from the data).
            numeric: names of numeric columns (mean and std from the data).
            log_numeric: subset of ``numeric`` to ``log1p``-compress first.
            hashed: categorical names to hash instead, with their bucket counts.
            min_count: values seen fewer times go to the out-of-vocabulary bucket.
            max_vocabulary: keep at most this many most frequent values per feature.
        """
        hashed = dict(hashed or {})
        log_numeric = set(log_numeric)
        missing = [n for n in [*categorical, *numeric, *hashed] if n not in columns]
        if missing:
            raise KeyError(f"Columns not found: {missing}; available: {sorted(columns)}.")
        cats = []
        for name in categorical:
            if name in hashed:
                cats.append(CategoricalFeature(name, hash_bins=hashed[name]))
                continue
            counts = collections.Counter(np.asarray(columns[name]).astype(str).tolist())
            vocab = rank_vocabulary(counts, min_count, max_vocabulary)
            cats.append(CategoricalFeature(name, vocabulary=tuple(vocab)))
        nums = []
        for name in numeric:
            x = np.asarray(columns[name], dtype=np.float64)
            if name in log_numeric:
                x = np.log1p(np.maximum(x, 0.0))
            std = float(x.std())
            nums.append(NumericFeature(name, float(x.mean()), std if std > 0 else 1.0,
                                       name in log_numeric))
        return cls(tuple(cats), tuple(nums))


def rank_vocabulary(counts: Mapping[Any, int], min_count: int = 1,
                    max_vocabulary: int | None = None) -> list:
    """The values seen at least ``min_count`` times, most frequent first, ties broken by
    value (so a vocabulary is deterministic), at most ``max_vocabulary`` of them.

    Example:
        >>> rank_vocabulary({"b": 2, "a": 2, "c": 5, "d": 1}, min_count=2)
        ['c', 'a', 'b']
    """
    kept = [(value, n) for value, n in counts.items() if n >= min_count]
    kept.sort(key=lambda vn: (-vn[1], vn[0]))
    return [value for value, _ in kept[:max_vocabulary]]


_TABLE_NUMBERS = itertools.count()


class _VocabularyFileInitializer(tf.lookup.TextFileInitializer):
    """``TextFileInitializer`` of a vocabulary file: line ``i`` -> id ``first_id + i``.

    Two changes to the parent class:

    - A unique shared name per table. The parent's is made of the path, the size and the
      offset, so in one process a second table over a file rewritten at the same path would
      silently be the first one again. (Anonymous tables avoid that, but TensorFlow's C++
      SavedModel loader, the one TF Serving uses, leaves them uninitialised: "Table not
      initialized".)
    - ``whole_file=True`` for a file with an empty line (the value ``""``), which
      TensorFlow's text-file reader refuses ("Invalid content ... empty line found"): the
      file is read whole with ``tf.io.read_file``, split on ``"\\n"`` in the graph, a
      trailing ``"\\r"`` dropped per line as that reader does, and the lines imported with
      their ids. It holds the file in memory while the table fills, hence only for such
      files.

    Either way the file is a tracked ``tf.saved_model.Asset`` (the parent class tracks it):
    a SavedModel carries it under ``assets/`` and reads that copy when loaded.
    """

    def __init__(self, filename: str, vocab_size: int, first_id: int, whole_file: bool):
        super().__init__(filename, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64,
                         tf.lookup.TextFileIndex.LINE_NUMBER, vocab_size=vocab_size,
                         value_index_offset=first_id)
        self._size, self._first_id, self._whole_file = vocab_size, first_id, whole_file
        self._number = next(_TABLE_NUMBERS)

    @property
    def _shared_name(self):
        return f"{super()._shared_name}_{self._number}"

    def initialize(self, table):
        if not self._whole_file:
            return super().initialize(table)
        # self._filename is the tracked Asset: its path is the asset's path once loaded.
        content = tf.io.read_file(self._filename)
        lines = tf.strings.split(content, "\n")[:self._size]
        lines = tf.strings.regex_replace(lines, "\r$", "")
        ids = tf.range(self._first_id, self._first_id + self._size, dtype=tf.int64)
        return tf.raw_ops.LookupTableImportV2(table_handle=table.resource_handle, keys=lines,
                                              values=ids)


def _vocabulary_table(feature: CategoricalFeature,
                      offset: int) -> tf.lookup.StaticHashTable | None:
    """Value -> id in the concatenated table (``offset + 1 + i`` for value ``i``), else -1.

    None for an empty vocabulary. An inline vocabulary is a constant of the graph; a file
    is read by a ``TextFileInitializer`` (a SavedModel asset), after checking its line
    count; a duplicate value fails while the table fills and is reported with its lines.
    """
    if feature.vocabulary is not None:
        if not feature.vocabulary:
            return None
        return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
            tf.constant(feature.vocabulary),
            tf.range(offset + 1, offset + 1 + len(feature.vocabulary), dtype=tf.int64)),
            default_value=-1)
    has_empty_line = check_vocabulary_file(feature)
    if feature.vocabulary_size == 0:
        return None
    initializer = _VocabularyFileInitializer(feature.vocabulary_file, feature.vocabulary_size,
                                             offset + 1, whole_file=has_empty_line)
    try:
        return tf.lookup.StaticHashTable(initializer, default_value=-1)
    except tf.errors.OpError as err:
        repeated = _repeated_value(feature)
        if repeated is not None:
            raise DataError(f"Categorical feature {feature.name!r}: vocabulary file "
                            f"{feature.vocabulary_file} repeats {repeated}; each value "
                             f"must appear once.") from None
        raise DataError(f"Categorical feature {feature.name!r}: cannot read vocabulary "
                        f"file {feature.vocabulary_file}: "
                        f"{err.message.splitlines()[-1]}") from err


@keras.utils.register_keras_serializable(package="tfmtnas")
class FeaturePreprocessor(keras.layers.Layer):
    """Raw feature dict -> ``{"categorical": int32 ids, "numeric": float32}``.

    Categorical ids are offset into one concatenated table (one gather instead of one lookup
    per feature). Raw categorical values may be strings or integers (converted to strings).

    Few ops per call, which matters at serving batch sizes where each op costs more than its
    arithmetic: one hash-table lookup per vocabulary feature (the tables return -1 for an
    unknown value, replaced by the feature's out-of-vocabulary id in one ``where``), one
    ``to_hash_bucket_fast`` per distinct bucket count for hashed features (the hash of
    ``keras.layers.Hashing``), and numeric features normalised as one matrix. (One joint
    table keyed by feature and value was twice as fast at batch 1 but four times slower at
    batch 512, because it builds a new string per value.)

    A vocabulary file (``CategoricalFeature.vocabulary_file``) fills its table through a
    ``tf.lookup.TextFileInitializer``: the values never become a graph constant, and a
    SavedModel of this layer carries the file under ``assets/``. The file is checked when
    the layer is built: it must exist, have ``vocabulary_size`` lines and no value twice
    (errors name the feature and the path). TensorFlow's text-file reader refuses empty
    lines, so a file holding ``""`` is read whole and split in the graph instead (same ids,
    same asset). Relative paths are relative to the working directory: resolve a stored
    spec first (:meth:`FeatureSpec.resolved`).

    A numeric value that is NaN or infinite (or whose normalisation overflows float32) is
    imputed with the training mean: its normalised value is 0.

    Args:
        spec: the :class:`FeatureSpec` (or its dict form).
    """

    def __init__(self, spec: FeatureSpec | Mapping, **kwargs):
        super().__init__(**kwargs)
        self.spec = spec if isinstance(spec, FeatureSpec) else FeatureSpec.from_dict(spec)
        cats, offsets = self.spec.categorical, self.spec.offsets
        self._vocab_columns = [i for i, f in enumerate(cats) if f.hash_bins is None]
        # Each known value maps to its id in the concatenated table, an unknown one to -1;
        # a feature with an empty vocabulary has no table: everything is unknown.
        self._tables = [_vocabulary_table(cats[i], offsets[i]) for i in self._vocab_columns]
        # An empty vocabulary file has no table to carry it; export it all the same, so
        # every vocabulary_file of the spec is in the SavedModel's assets.
        self._empty_vocabulary_files = [
            tf.saved_model.Asset(cats[i].vocabulary_file) for i, t in
            zip(self._vocab_columns, self._tables) if t is None and cats[i].vocabulary_file]
        self._oov_ids = np.array([offsets[i] for i in self._vocab_columns], np.int64)
        # Hashed features grouped by bucket count: one hashing op per group.
        groups: dict[int, list[int]] = {}
        for i, f in enumerate(cats):
            if f.hash_bins is not None:
                groups.setdefault(f.hash_bins, []).append(i)
        self._hash_groups = [(bins, cols, np.array([offsets[i] for i in cols], np.int64))
                             for bins, cols in sorted(groups.items())]
        # Columns come out as [vocabulary..., hash groups...]; this puts them back in order.
        produced = self._vocab_columns + [i for _, cols, _ in self._hash_groups for i in cols]
        self._order = [produced.index(i) for i in range(len(cats))]
        num = self.spec.numeric
        self._mean = np.array([f.mean for f in num], np.float32)
        self._std = np.array([f.std for f in num], np.float32)
        self._log = np.array([f.log for f in num], bool)

    def _string(self, features, column: int) -> tf.Tensor:
        """The raw values of categorical feature ``column`` as a string vector."""
        raw = tf.convert_to_tensor(features[self.spec.categorical[column].name])
        if raw.dtype != tf.string:
            raw = tf.strings.as_string(raw)
        return tf.reshape(raw, [-1])

    def _strings(self, features, columns: list[int]) -> tf.Tensor:
        """The raw values of categorical ``columns`` as strings, ``[batch, len(columns)]``."""
        return tf.stack([self._string(features, i) for i in columns], axis=1)

    def _categorical_ids(self, features) -> tf.Tensor:
        parts = []
        if self._vocab_columns:
            found = []
            for i, table in zip(self._vocab_columns, self._tables):
                raw = self._string(features, i)
                found.append(table.lookup(raw) if table is not None
                             else tf.fill(tf.shape(raw), tf.constant(-1, tf.int64)))
            found = tf.stack(found, axis=1)
            parts.append(tf.where(found < 0, self._oov_ids, found))
        for bins, cols, offsets in self._hash_groups:
            parts.append(tf.strings.to_hash_bucket_fast(self._strings(features, cols), bins)
                         + offsets)
        ids = tf.concat(parts, axis=1)
        if self._order != list(range(len(self._order))):
            ids = tf.gather(ids, self._order, axis=1)
        return tf.cast(ids, tf.int32)

    def call(self, features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        missing = [n for n in self.spec.names if n not in features]
        if missing:
            raise KeyError(f"Missing raw features {missing}; expected {self.spec.names}.")
        batch = tf.shape(tf.reshape(features[self.spec.names[0]], [-1]))[0]
        if self.spec.categorical:
            ids = self._categorical_ids(features)
        else:
            ids = tf.zeros([batch, 0], tf.int32)
        if self.spec.numeric:
            x = tf.stack([tf.reshape(tf.cast(features[f.name], tf.float32), [-1])
                          for f in self.spec.numeric], axis=1)
            finite = tf.math.is_finite(x)
            if self._log.any():
                x = tf.where(self._log, tf.math.log1p(tf.maximum(x, 0.0)), x)
            numeric = (x - self._mean) / self._std
            # NaN, +-inf (and values whose normalisation overflows) take the training mean,
            # which normalises to 0: a missing number, never a NaN prediction.
            numeric = tf.where(finite & tf.math.is_finite(numeric), numeric, 0.0)
        else:
            numeric = tf.zeros([batch, 0])
        return {"categorical": ids, "numeric": numeric}

    def get_config(self) -> dict:
        return {**super().get_config(), "spec": self.spec.to_dict()}
