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
  mean (regression). A binary label is 0, 1 or empty, a multiclass (``multiclass:K``)
  label a class id ``0 .. K-1`` or empty; an empty label is missing (NaN).

The split of a row is decided by a hash of its ``key_column`` cell (of the whole line when
there is none): the same key always lands in the same split, whatever the files, their
order or the number of rows. Within each block, the rows of a split go to its shards
round-robin (starting at a shard that moves on by one per block).

Bad rows (wrong field count, a numeric cell or label that is not a finite number within
float32's range, a bad binary or multiclass label, bytes that are not UTF-8, malformed quoting, a
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

The package, one module a part (``tfmtnas.data.prepare.<module>``):

- :mod:`~tfmtnas.data.prepare.from_text`: :func:`prepare`, the pass itself;
- :mod:`~tfmtnas.data.prepare.from_memory`: :func:`write_prepared`;
- :mod:`~tfmtnas.data.prepare.options`: the options checked, the role of each column;
- :mod:`~tfmtnas.data.prepare.inputs`: input files, header, blocks of complete lines;
- :mod:`~tfmtnas.data.prepare.blocks`: a block parsed, checked, split and serialized;
- :mod:`~tfmtnas.data.prepare.example`: the ``tf.Example`` wire format;
- :mod:`~tfmtnas.data.prepare.tfrecord`: CRC-32C, TFRecord framing, the gzip shard files;
- :mod:`~tfmtnas.data.prepare.fitting`: block results merged; spec, vocabularies, stats;
- :mod:`~tfmtnas.data.prepare.staging`: the atomic output folder;
- :mod:`~tfmtnas.data.prepare.progress`: :class:`Progress` and :func:`log_progress`.

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

from tfmtnas.data.prepare.fitting import MAX_REPORTED_BAD_ROWS
from tfmtnas.data.prepare.from_memory import write_prepared
from tfmtnas.data.prepare.from_text import prepare
from tfmtnas.data.prepare.inputs import DEFAULT_CHUNK_BYTES
from tfmtnas.data.prepare.options import BAD_ROW_POLICIES
from tfmtnas.data.prepare.progress import Progress, log_progress
from tfmtnas.data.prepare.tfrecord import DEFAULT_COMPRESSION_LEVEL
from tfmtnas.data.prepare.tfrecord import crc32c as _crc32c  # noqa: F401 (tests' old names)
from tfmtnas.data.prepare.tfrecord import frame as _frame  # noqa: F401

__all__ = ["BAD_ROW_POLICIES", "DEFAULT_CHUNK_BYTES", "DEFAULT_COMPRESSION_LEVEL",
           "MAX_REPORTED_BAD_ROWS", "Progress", "log_progress", "prepare", "write_prepared"]
