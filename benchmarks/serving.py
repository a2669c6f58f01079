"""Serving latency of exported SavedModels, measured in a fresh process as TF Serving loads them.

What it does:

1. trains MMoE and PLE on UCI Census-Income (KDD) for ``--epochs`` (default 1; quality does
   not matter here, realistic shapes and vocabularies do: 35 categorical + 7 numeric raw
   features, the demo's default sizes) and exports each with :func:`export_saved_model`,
   once as is and once with ``jit_compile=True`` (XLA-compiled model core; TF Serving on
   CPU needs ``--xla_cpu_compilation_enabled=true`` for those);
2. writes 512 raw census test rows to a file;
3. starts a **new Python process** that imports only TensorFlow and NumPy (not tfmtnas),
   loads each SavedModel with the ``serve`` tag, and calls ``serving_default`` with
   prebuilt tensors: batch 1 (``--calls`` timed calls after ``--warmup`` untimed ones,
   cycling through the rows; p50 / p99 latency) and batch 512 (rows per second);
4. in the same process, loads each SavedModel again through TensorFlow's C API
   (:mod:`tfmtnas.export.capi`: ``TF_LoadSessionFromSavedModel`` + ``TF_SessionRun``, the
   C++ path a model server takes) and times the same calls there, after checking that its
   outputs equal the Python signature's;
5. prints one table and the command that produced it.

The Python call of a loaded signature costs about 15 us per input (42 inputs here) before
the graph runs; a C++ server does not pay it, so the C API columns are the closer
measure of a server's compute per request (it adds its own RPC and proto conversion).

More models (e.g. a derived child and its supernet, once exported) join the table with
``--saved_model label=path`` (repeatable), or from Python through
:func:`measure_in_fresh_process` with a list of ``(label, saved_model_path)``.

Run: ``python benchmarks/serving.py`` (about a minute on 2 cores, census cached);
``--skip_train --saved_model mmoe=saved_models/mmoe/1`` measures existing exports only.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from capi_loader import load_capi  # benchmarks/ is on sys.path when a script runs

BATCH = 512


# --------------------------------------------------------------------------- fresh process


def _measure_c_api(capi, path: str, cols: dict, python_batch_out: dict, warmup: int,
                   calls: int, batch_calls: int) -> dict:
    """Batch-1 latency and batch-512 rows/s through the C API; inputs built untimed."""
    n = len(next(iter(cols.values())))
    with capi.CApiSession(path) as session:
        session.set_inputs({k: v[:BATCH] for k, v in cols.items()})
        out = session.run()
        diff = max(float(np.abs(out[k] - python_batch_out[k]).max()) for k in out)
        batch_times = session.time_runs(5 + batch_calls)[5:]
        times = []
        for i in range(warmup + calls):
            session.set_inputs({k: v[i % n:i % n + 1] for k, v in cols.items()})
            times += session.time_runs(1)
    ms = np.array(times[warmup:]) * 1e3
    return {"capi_p50_ms": float(np.percentile(ms, 50)),
            "capi_p99_ms": float(np.percentile(ms, 99)),
            "capi_rows_per_s": float(BATCH * len(batch_times) / sum(batch_times)),
            "capi_max_diff": diff}


def _measure_main(args_path: str) -> None:
    """Child process: TensorFlow only, like a model server."""
    args = json.loads(Path(args_path).read_text())
    if args.get("cpus"):
        os.sched_setaffinity(0, args["cpus"])  # before TensorFlow sizes its thread pools
    import tensorflow as tf

    capi = load_capi()
    rows = np.load(args["rows"], allow_pickle=False)
    overheads: dict[tuple, float] = {}
    results = []
    for label, path in args["models"]:
        t0 = time.perf_counter()
        loaded = tf.saved_model.load(path, tags=["serve"])
        load_s = time.perf_counter() - t0
        fn = loaded.signatures["serving_default"]
        specs = fn.structured_input_signature[1]
        cols = {name: rows[name] for name in specs}
        n = len(next(iter(cols.values())))
        singles = [{k: tf.constant(v[i:i + 1], dtype=specs[k].dtype) for k, v in cols.items()}
                   for i in range(n)]
        batch = {k: tf.constant(v[:BATCH], dtype=specs[k].dtype) for k, v in cols.items()}
        times = _time_calls(fn, singles, args["warmup"], args["calls"])
        key = tuple(sorted((k, s.dtype.name) for k, s in specs.items()))
        if key not in overheads:
            # The floor a Python caller pays whatever the model: a SavedModel whose
            # serving_default has the same inputs and returns one of them, saved and loaded
            # the same way. TF Serving's C++ server does not pay this Python binding cost.
            overhead = _time_calls(_identity_signature(specs), singles, args["warmup"],
                                   args["calls"])
            overheads[key] = float(np.percentile(np.array(overhead) * 1e3, 50))
        batch_out = {k: v.numpy() for k, v in fn(**batch).items()}
        for _ in range(4):
            fn(**batch)
        batch_times = []
        for _ in range(args["batch_calls"]):
            t = time.perf_counter()
            fn(**batch)
            batch_times.append(time.perf_counter() - t)
        weights = sum(int(np.prod(v.shape)) for v in loaded.model_variables)
        ms = np.array(times) * 1e3
        results.append({
            "label": label, "path": path, "params": weights, "load_s": load_s,
            "calls": len(times), "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()),
            "binding_ms": overheads[key],
            "graph_p50_ms": float(np.percentile(ms, 50)) - overheads[key],
            "batch": BATCH, "batch_p50_ms": float(np.median(batch_times) * 1e3),
            "rows_per_s": float(BATCH * len(batch_times) / sum(batch_times)),
            **_measure_c_api(capi, path, cols, batch_out, args["warmup"], args["calls"],
                             args["batch_calls"])})
    print(json.dumps(results))


def _first(*inputs):
    return {"y": inputs[0]}


def _identity_signature(specs):
    import tensorflow as tf

    module = tf.Module()
    module.f = tf.function(_first, autograph=False, input_signature=[
        tf.TensorSpec([None], s.dtype, name=k) for k, s in specs.items()])
    with tempfile.TemporaryDirectory() as tmp:
        tf.saved_model.save(module, tmp, signatures={"serving_default": module.f})
        return tf.saved_model.load(tmp, tags=["serve"]).signatures["serving_default"]


def _time_calls(fn, inputs: list[dict], warmup: int, calls: int) -> list[float]:
    for i in range(warmup):
        fn(**inputs[i % len(inputs)])
    times = []
    for i in range(calls):
        x = inputs[i % len(inputs)]
        t = time.perf_counter()
        fn(**x)
        times.append(time.perf_counter() - t)
    return times


def measure_in_fresh_process(models: list[tuple[str, str]], rows_path: str | os.PathLike,
                             calls: int = 2000, warmup: int = 200,
                             batch_calls: int = 50, cpus: list[int] | None = None) -> list[dict]:
    """Measure each ``(label, saved_model_path)`` in one new Python process; return rows.

    ``rows_path`` is a ``.npz`` of raw feature columns (at least ``BATCH`` rows). ``cpus``
    pins the measuring process to those CPUs (default: all).
    """
    if calls < 500:
        raise ValueError(f"Use at least 500 timed calls for a p99, got {calls}.")
    with tempfile.TemporaryDirectory() as tmp:
        args = Path(tmp) / "args.json"
        args.write_text(json.dumps({"models": [[label, str(p)] for label, p in models],
                                    "rows": str(rows_path), "calls": calls,
                                    "warmup": warmup, "batch_calls": batch_calls,
                                    "cpus": cpus}))
        env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        done = subprocess.run([sys.executable, __file__, "--_measure", str(args)],
                              capture_output=True, text=True, env=env, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"measuring process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- train + export
def train_and_export(kinds: list[str], epochs: int, export_root: Path, seed: int,
                     rows: int, rows_path: Path, xla: bool = True) -> list[tuple[str, str]]:
    """Train each zoo model on census and export it (and an XLA variant if ``xla``);
    write ``rows`` raw test rows."""
    from tfmtnas.data import load_census
    from tfmtnas.export import export_saved_model
    from tfmtnas.pipelines.training import TrainConfig, train_and_evaluate

    data = load_census(seed=seed)
    test = data.test
    cols = {}
    for name in data.spec.names:
        col = test.features[name][:rows]
        cols[name] = (col.astype(str) if data.spec.raw_dtype(name).name == "string"
                      else col.astype(np.float32))
    np.savez(rows_path, **cols)
    exported = []
    for kind in kinds:
        cfg = TrainConfig(model=kind, epochs=epochs, seed=seed)
        t = time.perf_counter()
        result = train_and_evaluate(cfg, data=data, verbose=0)
        path = export_saved_model(result.model, export_root, name=f"census_{kind}")
        auc = ", ".join(f"{k}={v:.4f}" for k, v in result.test_metrics.items()
                        if k.endswith("_auc"))
        print(f"{kind}: trained {epochs} epoch(s) in {time.perf_counter() - t:.0f} s "
              f"(test {auc}); exported to {path}", flush=True)
        exported.append((kind, str(path)))
        if xla:
            path = export_saved_model(result.model, export_root, name=f"census_{kind}_xla",
                                      jit_compile=True)
            exported.append((f"{kind} (xla core)", str(path)))
    return exported


def search_and_export(methods: list[str], epochs: int, export_root: Path, seed: int) -> list:
    """Search each method on census, export its supernet and its inherited child."""
    from tfmtnas.data import load_census
    from tfmtnas.export import export_saved_model
    from tfmtnas.pipelines.searching import SearchConfig, run_search

    data = load_census(seed=seed)
    exported = []
    for method in methods:
        t = time.perf_counter()
        res = run_search(SearchConfig(method=method, epochs=epochs, child="inherit", seed=seed),
                         data=data, verbose=0)
        print(f"{method}: searched {epochs} epoch(s) in {time.perf_counter() - t:.0f} s; child "
              f"FLOPs {res.cost['child_flops']:,} vs supernet {res.cost['supernet_flops']:,}",
              flush=True)
        for label, model in (("child", res.child), ("supernet", res.search_model)):
            path = export_saved_model(model, export_root, name=f"census_{method}_{label}")
            exported.append((f"{method} {label}", str(path)))
    return exported


def format_table(results: list[dict]) -> str:
    cols = [("model", "label", "{}"), ("params", "params", "{:,}"),
            ("batch-1 p50 ms", "p50_ms", "{:.3f}"), ("batch-1 p99 ms", "p99_ms", "{:.3f}"),
            ("batch-1 mean ms", "mean_ms", "{:.3f}"),
            ("identity p50 ms", "binding_ms", "{:.3f}"),
            ("p50 - identity ms", "graph_p50_ms", "{:.3f}"),
            (f"batch-{BATCH} p50 ms", "batch_p50_ms", "{:.2f}"),
            (f"batch-{BATCH} rows/s", "rows_per_s", "{:,.0f}"),
            ("C API p50 ms", "capi_p50_ms", "{:.3f}"), ("C API p99 ms", "capi_p99_ms", "{:.3f}"),
            (f"C API batch-{BATCH} rows/s", "capi_rows_per_s", "{:,.0f}"),
            ("C API max |diff|", "capi_max_diff", "{:.1e}")]
    cells = [[fmt.format(r[key]) for _, key, fmt in cols] for r in results]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (h, _, _) in enumerate(cols)]
    lines = ["  ".join(h.ljust(w) for (h, _, _), w in zip(cols, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mmoe,ple",
                        help="Zoo models to train and export (comma-separated).")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--export_root", default=None,
                        help="Where to export (default: a temporary folder).")
    parser.add_argument("--search", default="",
                        help="Search methods whose supernet and derived child to export and "
                        "measure too (comma-separated, e.g. mtnas).")
    parser.add_argument("--saved_model", action="append", default=[],
                        metavar="LABEL=PATH", help="Also measure this export (repeatable), "
                        "e.g. child=saved_models/child/1 supernet=saved_models/supernet/1.")
    parser.add_argument("--skip_train", action="store_true",
                        help="Measure only --saved_model exports (rows from census test).")
    parser.add_argument("--no_xla", action="store_true",
                        help="Skip the variants exported with an XLA-compiled model core.")
    parser.add_argument("--calls", type=int, default=2000, help="Timed batch-1 calls.")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--batch_calls", type=int, default=50, help=f"Timed batch-{BATCH} calls.")
    parser.add_argument("--measure_cpus", default="",
                        help="Pin the measuring process to these CPUs, e.g. 0 (default: all). "
                        "A latency-tuned server is pinned: here a request whose threads stay "
                        "on one core answered in about half the time.")
    args = parser.parse_args(argv)

    command = "python benchmarks/serving.py " + " ".join(shlex.quote(a) for a in
                                                         (argv if argv is not None
                                                          else sys.argv[1:]))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.export_root) if args.export_root else Path(tmp) / "saved_models"
        rows_path = Path(tmp) / "rows.npz"
        kinds = [] if args.skip_train else [k for k in args.models.split(",") if k]
        models = train_and_export(kinds, args.epochs, root, args.seed, BATCH, rows_path,
                                  xla=not args.no_xla)
        methods = [m for m in args.search.split(",") if m]
        if methods:
            models += search_and_export(methods, args.epochs, root, args.seed)
        for item in args.saved_model:
            label, _, path = item.partition("=")
            if not path:
                parser.error(f"--saved_model wants LABEL=PATH, got {item!r}")
            models.append((label, path))
        if not models:
            parser.error("nothing to measure: drop --skip_train or add --saved_model")
        cpus = [int(c) for c in args.measure_cpus.split(",") if c] or None
        print(f"measuring {len(models)} model(s) in a fresh process "
              f"(load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs, measuring on "
              f"{'all' if cpus is None else cpus}) ...", flush=True)
        results = measure_in_fresh_process(models, rows_path, calls=args.calls,
                                           warmup=args.warmup, batch_calls=args.batch_calls,
                                           cpus=cpus)
    print()
    print(f"serving_default of exported SavedModels, fresh process, {args.calls} batch-1 "
          f"calls after {args.warmup} warm-up, {args.batch_calls} batch-{BATCH} calls")
    print(format_table(results))
    print(f"\ncommand: {command}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--_measure":
        _measure_main(sys.argv[2])
    else:
        main()
