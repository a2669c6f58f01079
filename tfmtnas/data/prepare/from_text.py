"""Prepare delimited text files for streaming: :func:`prepare`, the one pass itself.

Holds :func:`prepare`: it checks the options, reads the header, hands blocks of lines to
worker threads (:class:`~tfmtnas.data.prepare.blocks.BlockProcessor`), merges their
results in file order into the shard files and the totals, fits the spec and writes the
manifest, reporting :class:`~tfmtnas.data.prepare.progress.Progress` on the way. What it
computes and writes is described in :mod:`tfmtnas.data.prepare`.

Example:
    >>> import pathlib, tempfile
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> lines = "".join(f"u{i}\\t{i % 2}\\n" for i in range(100)) + "u0\\tyes\\n"
    >>> _ = (folder / "log.tsv").write_text("user\\tclick\\n" + lines)
    >>> manifest = prepare(folder / "log.tsv", folder / "out", {"click": "binary"},
    ...                    bad_rows="skip", progress=None)
    >>> manifest["rows"], manifest["skipped_rows"], manifest["options"]["sep"]
    (101, 1, '\\t')
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tfmtnas.data import layout
from tfmtnas.data.base import DataError
from tfmtnas.data.csv import as_tasks, check_fractions
from tfmtnas.data.prepare.blocks import BlockProcessor
from tfmtnas.data.prepare.example import RecordEncoder
from tfmtnas.data.prepare.fitting import Result, Totals, fit_spec, label_stats, spec_doc
from tfmtnas.data.prepare.inputs import (
    DEFAULT_CHUNK_BYTES,
    Block,
    FileReader,
    default_sep,
    expand_inputs,
)
from tfmtnas.data.prepare.options import BAD_ROW_POLICIES, columns, per_column, shard_counts
from tfmtnas.data.prepare.progress import Progress, log_progress
from tfmtnas.data.prepare.staging import Staging, write_json
from tfmtnas.data.prepare.tfrecord import DEFAULT_COMPRESSION_LEVEL, ShardFiles
from tfmtnas.errors import UserError
from tfmtnas.features import TaskSpec


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
        labels: label column -> task kind (``"binary"``, ``"regression"`` or
            ``"multiclass:K"``) or :class:`TaskSpec`.
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
    started = time.perf_counter()
    try:
        tasks = as_tasks(labels)
    except ValueError as err:  # an unknown task kind
        raise err if isinstance(err, UserError) else UserError(str(err)) from None
    check_fractions(validation_fraction, test_fraction)
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
    files = expand_inputs(inputs)
    sep = default_sep(files) if sep is None else sep
    if not sep or "\n" in sep or '"' in sep:
        raise UserError(f"sep must be a non-empty string without newline or quote, "
                        f"got {sep!r}.")
    sizes = [os.path.getsize(f) for f in files]
    hashed = dict(hash_columns or {})

    first = FileReader(files[0], chunk_bytes)
    try:
        header = first.header(sep)
    except BaseException:
        first.close()
        raise
    cols = columns(header, files[0], tasks, categorical, list(numeric), list(log_numeric),
                   hashed, key_column)
    cat_names = [header[c] for c in cols.categorical]
    vocab_names = [n for j, n in enumerate(cat_names) if j not in cols.hashed]
    min_counts = per_column(min_count, vocab_names, "min_count", 2, 1)
    max_vocabs = per_column(max_vocabulary, vocab_names, "max_vocabulary", None, 0)
    encoder = RecordEncoder(cat_names, [header[c] for c in cols.numeric]
                            + [t.name for t in tasks])
    shards_per_split = shard_counts(num_shards, validation_fraction, test_fraction)
    processor = BlockProcessor(cols, sep, encoder, validation_fraction, test_fraction,
                               bad_rows, [shards_per_split[s] for s in layout.SPLITS],
                               compression_level)
    options = {
        "labels": {t.name: t.kind_text for t in tasks}, "categorical": cat_names,
        "numeric": [header[c] for c in cols.numeric],
        "log_numeric": [header[c] for c, log in zip(cols.numeric, cols.log) if log],
        "hash_columns": hashed, "key_column": key_column,
        "validation_fraction": validation_fraction, "test_fraction": test_fraction,
        "min_count": min_counts, "max_vocabulary": max_vocabs,
        "inline_vocabulary_max": inline_vocabulary_max, "num_shards": shards_per_split,
        "bad_rows": bad_rows, "sep": sep, "compression_level": compression_level,
    }

    staging = Staging(Path(output_dir), overwrite)
    writers: dict[str, ShardFiles] = {}
    pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="prepare")
    try:
        writers = {s: ShardFiles(staging.path, s, shards_per_split[s]) for s in layout.SPLITS}
        totals = Totals(cols)
        done_bytes = 0
        last_report = time.perf_counter()
        pending: collections.deque = collections.deque()

        def merge(result: Result) -> None:
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
            reader = first if k == 0 else FileReader(path, chunk_bytes)
            try:
                if k > 0:
                    names = reader.header(sep)
                    if names != header:
                        raise DataError(f"{path}: header {names} differs from the header "
                                        f"of {files[0]} {header}.")
                for first_line, data in reader.blocks():
                    block = Block(block_index, path, first_line, data)
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

        spec, column_stats = fit_spec(staging.path, cols, header, totals, min_counts,
                                      max_vocabs, inline_vocabulary_max, split_rows["train"])
        write_json(staging.path / layout.SPEC, spec_doc(spec, tasks))
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
            "labels": label_stats(tasks, totals.labels),
            "seconds": round(seconds, 3),
            "rows_per_second": round(totals.rows / seconds, 1) if seconds > 0 else None,
        }
        write_json(staging.path / layout.MANIFEST, manifest)
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
