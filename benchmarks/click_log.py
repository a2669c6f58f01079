"""Click-log scale on one machine: generate a click log, prepare it, report rows/s and memory.

:func:`write_click_log` writes a CSV click log of any size, vectorised in NumPy and in
chunks (memory does not grow with rows): zipf-distributed ``user`` and ``item`` ids (the
most popular id is the most frequent, as in real logs), eight small categoricals ``c0`` ..
``c7``, five numerics (``n0`` normal, ``n1`` log-normal price, ``n2`` exponential dwell
time, ``n3`` Pareto counts, ``n4`` uniform; three heavy-tailed), a ``click`` label that
depends on a few of them, and a ``buy`` label drawn only for clicked rows: ``buy`` is
**empty (missing) when there was no click**, so a conversion task learns from clicked rows
only (the missing-label path), as in post-click conversion models.

The script then runs the phases in one process and prints what each measured:

- ``generate``: writes the CSV unless ``--out`` already exists;
- ``prepare``: :func:`tfmtnas.data.prepare.prepare` into ``--prepare_dir`` (rows/s);
- ``train``: ``tfmtnas-train``'s library function on the prepared folder (``--dataset=prepared``):
  MMoE, ``--train_epochs`` epochs streamed from the shards, then validation and test
  evaluation; prints training examples/s;
- ``--compare_in_memory``: the same model, spec and training rows once streamed and once
  from memory (the rows read into NumPy columns, looked up once and cached, as the
  in-memory datasets are), each timed as the median of ``--compare_epochs`` epochs after a
  warm-up epoch, in this one process; prints both examples/s and their ratio. Kept out of
  the memory measurement (it holds the training split in memory on purpose);

then the peak RSS of the process (``ru_maxrss``) and the command that produced them.

Run: ``python benchmarks/click_log.py --rows=2000000`` (1M user ids, 200k item ids);
``make bench-click-log ROWS=20000000`` for the 20 M-row run.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time

import numpy as np

COLUMNS = (["user", "item"] + [f"c{k}" for k in range(8)] + [f"n{k}" for k in range(5)]
           + ["click", "buy"])
NUMERIC = [f"n{k}" for k in range(5)]
LOG_NUMERIC = ["n1", "n2", "n3"]
_SMALL_SIZES = (2, 3, 5, 7, 12, 24, 50, 100)  # values of c0 .. c7
_CHUNK = 200_000


def _zipf_sampler(vocabulary: int, exponent: float = 1.1):
    """Draws ids 0..vocabulary-1 with P(id) proportional to (id + 1) ** -exponent."""
    cdf = np.cumsum(np.arange(1, vocabulary + 1, dtype=np.float64) ** -exponent)
    cdf /= cdf[-1]
    return lambda rng, n: np.minimum(np.searchsorted(cdf, rng.random(n)), vocabulary - 1)


def _strings(values: np.ndarray, table: np.ndarray | None = None) -> list[str]:
    return (table[values] if table is not None else values.astype(str)).tolist()


def _decimals(x: np.ndarray, places: int) -> list[str]:
    return np.round(x, places).astype(str).tolist()


def write_click_log(path: str | os.PathLike, rows: int, users: int = 10**6,
                    items: int = 2 * 10**5, seed: int = 0) -> int:
    """Write a generated click log as CSV with a header row; returns its size in bytes.

    Args:
        path: the CSV file to write (``.gz``: gzipped).
        rows: data rows.
        users: distinct possible user ids (zipf, exponent 1.1). Default 10^6.
        items: distinct possible item ids (zipf, exponent 1.1). Default 2·10^5.
        seed: random seed. Default 0.

    Example:
        >>> import tempfile
        >>> size = write_click_log(tempfile.mkdtemp() + "/log.csv", 1000, users=100, items=50)
    """
    rng = np.random.default_rng(seed)
    user_ids, item_ids = _zipf_sampler(users), _zipf_sampler(items)
    user_text = np.array([str(i) for i in range(users)], dtype=object)
    item_text = np.array([str(i) for i in range(items)], dtype=object)
    small_text = np.array([str(i) for i in range(max(_SMALL_SIZES))], dtype=object)
    opener = __import__("gzip").open if os.fspath(path).endswith(".gz") else open
    tmp = f"{os.fspath(path)}.tmp-{os.getpid()}"
    with opener(tmp, "wt", newline="") as f:
        f.write(",".join(COLUMNS) + "\n")
        for start in range(0, rows, _CHUNK):
            n = min(_CHUNK, rows - start)
            user, item = user_ids(rng, n), item_ids(rng, n)
            small = [rng.integers(0, size, n) for size in _SMALL_SIZES]
            n0 = rng.normal(size=n)
            n1 = rng.lognormal(2.0, 1.2, n)  # price
            n2 = rng.exponential(30.0, n)  # dwell seconds
            n3 = np.floor(rng.pareto(1.5, n))  # counts
            n4 = rng.random(n)
            logit = (-2.4 + 0.8 * n0 + 0.6 * (small[0] == 0) - 0.25 * np.log1p(n1)
                     + 0.3 * (item < 100) + 0.2 * np.sin(user % 7))
            click = rng.random(n) < 1 / (1 + np.exp(-logit))
            buy = rng.random(n) < 1 / (1 + np.exp(-(-1.2 + 0.5 * n0 + 0.4 * (small[1] == 1))))
            buy_text = np.where(click, np.where(buy, "1", "0"), "")
            columns = ([_strings(user, user_text), _strings(item, item_text)]
                       + [_strings(c, small_text) for c in small]
                       + [_decimals(n0, 3), _decimals(n1, 2), _decimals(n2, 1),
                          _strings(n3.astype(np.int64)), _decimals(n4, 3),
                          _strings(click.astype(np.int64), small_text), buy_text.tolist()])
            f.write("\n".join(map(",".join, zip(*columns))) + "\n")
    os.replace(tmp, path)
    return os.path.getsize(path)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def generate(args) -> None:
    """Write the click log unless ``--out`` exists."""
    if os.path.exists(args.out):
        print(f"generate: using {args.out} ({os.path.getsize(args.out) / 1e6:,.0f} MB)",
              flush=True)
        return
    started = time.perf_counter()
    size = write_click_log(args.out, args.rows, args.users, args.items, args.seed)
    print(f"generate: {args.rows:,} rows, {size / 1e6:,.0f} MB in "
          f"{time.perf_counter() - started:.1f} s -> {args.out}", flush=True)


def prepare_phase(args) -> dict:
    """Prepare the click log into ``--prepare_dir``; prints rows/s."""
    from tfmtnas.data.prepare import prepare

    def show(progress):
        print(f"prepare: {progress}", flush=True)

    manifest = prepare(
        [args.out], args.prepare_dir, {"click": "binary", "buy": "binary"},
        numeric=NUMERIC, log_numeric=LOG_NUMERIC, key_column="user",
        num_shards=args.num_shards, compression_level=args.compression_level,
        overwrite=True, progress=show, progress_seconds=10.0, workers=args.workers)
    rows = {s: v["rows"] for s, v in manifest["splits"].items()}
    vocab = {c: (s["kept"], s["distinct"]) for c, s in manifest["columns"].items()
             if c in ("user", "item")}
    print(f"prepare: {manifest['rows']:,} rows in {manifest['seconds']:.1f} s = "
          f"{manifest['rows_per_second']:,.0f} rows/s; splits {rows}; user/item "
          f"vocabularies kept/distinct {vocab}", flush=True)
    return manifest


def train_phase(args) -> float:
    """Train MMoE on the prepared folder as ``tfmtnas-train --dataset=prepared`` does."""
    from tfmtnas.data import load_prepared
    from tfmtnas.pipelines.training import TrainConfig, train_and_evaluate

    data = load_prepared(args.prepare_dir)
    cfg = TrainConfig(dataset="prepared", data_dir=args.prepare_dir, model="mmoe",
                      epochs=args.train_epochs, batch_size=args.batch_size,
                      model_dir=args.model_dir)
    result = train_and_evaluate(cfg, data=data, verbose=2)
    rate = args.train_epochs * data.num_rows("train") / result.seconds
    print(f"train: MMoE, {args.train_epochs} epoch(s) of {data.num_rows('train'):,} rows "
          f"streamed in {result.seconds:.1f} s = {rate:,.0f} examples/s (tracing included); "
          f"test {result.test_metrics}", flush=True)
    return rate


def compare_phase(args) -> float:
    """Streamed vs in-memory examples/s of one model on the same rows, in this process."""
    import statistics

    from timing import epoch_times  # benchmarks/ is on sys.path when a script runs

    from tfmtnas import keras
    from tfmtnas.data import MultiTaskData, Split, load_prepared, split_dataset
    from tfmtnas.pipelines.training import TrainConfig, build_model

    data = load_prepared(args.prepare_dir)
    features: dict[str, list] = {n: [] for n in data.spec.names}
    labels: dict[str, list] = {t.name: [] for t in data.tasks}
    for feats, labs in data.raw_batches("train", 65536):
        for k in features:
            features[k].append(feats[k])
        for k in labels:
            labels[k].append(labs[k])
    train = Split({k: np.concatenate(v) for k, v in features.items()},
                  {k: np.concatenate(v) for k, v in labels.items()})
    memory = MultiTaskData("in-memory", train, train.take(slice(0, 0)),
                           train.take(slice(0, 0)), data.spec, data.tasks)
    cfg = TrainConfig(model="mmoe", batch_size=args.batch_size)
    rates = {}
    for name, source in (("streamed", data), ("in-memory", memory)):
        keras.utils.set_random_seed(0)
        ds = split_dataset(source, "train", cfg.batch_size, shuffle=True, seed=0)
        seconds = statistics.median(epoch_times(build_model(source, cfg), ds,
                                                args.compare_epochs))
        rates[name] = len(train) / seconds
        print(f"compare: {name:9s} {rates[name]:,.0f} examples/s (median of "
              f"{args.compare_epochs} epochs after a warm-up)", flush=True)
    ratio = rates["streamed"] / rates["in-memory"]
    print(f"compare: streamed / in-memory = {ratio:.2f}", flush=True)
    return ratio


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--users", type=int, default=10**6)
    parser.add_argument("--items", type=int, default=2 * 10**5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="the CSV (default: under the temp dir, "
                        "named by rows, users, items and seed); written if absent")
    parser.add_argument("--prepare_dir", default=None,
                        help="prepared folder (default: the CSV's name + .prepared)")
    parser.add_argument("--num_shards", type=int, default=8)
    parser.add_argument("--compression_level", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--train_epochs", type=int, default=1,
                        help="training epochs on the prepared folder (0: no training)")
    parser.add_argument("--batch_size", type=int, default=1024)
    parser.add_argument("--model_dir", default=None, help="where the trained model goes")
    parser.add_argument("--compare_in_memory", action="store_true",
                        help="also time streamed against in-memory training (holds the "
                             "training split in memory)")
    parser.add_argument("--compare_epochs", type=int, default=2)
    parser.add_argument("--skip_prepare", action="store_true",
                        help="reuse an existing --prepare_dir")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = os.path.join(tempfile.gettempdir(), "tfmtnas-click-log",
                                f"click_{args.rows}_{args.users}_{args.items}_{args.seed}.csv")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    if args.prepare_dir is None:
        args.prepare_dir = args.out + ".prepared"
    print("command:", " ".join(["python", *sys.argv]), flush=True)
    if not args.skip_prepare:
        generate(args)
        prepare_phase(args)
    print(f"peak RSS after prepare: {_peak_rss_mb():,.0f} MB", flush=True)
    if args.train_epochs > 0:
        train_phase(args)
        print(f"peak RSS after training: {_peak_rss_mb():,.0f} MB", flush=True)
    if args.compare_in_memory:
        compare_phase(args)
    print(f"peak RSS: {_peak_rss_mb():,.0f} MB", flush=True)


if __name__ == "__main__":
    main()
