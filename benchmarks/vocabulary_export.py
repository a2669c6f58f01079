"""Exports with a large file vocabulary: size on disk, load time, batch-1 serving latency.

What it does:

1. writes a user vocabulary file of ``--big`` values (default 10^6) and one of ``--small``
   (default 1,000), and builds the same MMoE model (tfmtnas-train's default sizes: 4
   experts of 64 units, towers of 32, embedding dimension 8; tasks click and buy) on a
   click-log-like spec: the user feature from the file, an item feature from a 1,000-line
   file (both models), 4 small inline categoricals and 3 numerics. Weights stay at their
   initial values: quality does not matter here, shapes do. A third model has the small
   user vocabulary inline (today's in-graph constant), to compare asset and constant;
2. exports each with :func:`tfmtnas.export.export_saved_model` and reports its size on disk
   (``variables/``, ``assets/``, ``saved_model.pb``);
3. loads each export ``--loads`` times (default 3), each time in a **new Python process**
   that imports only TensorFlow, and reports the median seconds of
   ``tf.saved_model.load`` (the vocabulary table is filled from the asset here);
4. loads all exports in **one** new process (TensorFlow only) and times batch-1 calls of
   ``serving_default`` interleaved across the models (``--calls`` rounds after
   ``--warmup``; the order of the models rotates each round, so load drifts on the
   shared machine hit all models alike), through the Python signature and through
   TensorFlow's C API (:mod:`tfmtnas.export.capi`, the runtime a model server uses, without
   Python's per-input call cost); each model's rows draw users uniformly from its own
   vocabulary (5 % unknown), so the big table is read at random places. Outputs of both
   ways are checked against Keras' predictions (max |diff|);
5. prints the numbers, the big/small latency ratios (issue 11's target: at most 1.2) and
   the command.

Run: ``python benchmarks/vocabulary_export.py`` (about two minutes on 2 cores).
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

ROWS = 512
SMALL_CATEGORIES = {"device": 4, "country": 30, "hour": 24, "slot": 6}
NUMERIC = ("price", "age_days", "position")


# --------------------------------------------------------------------------- fresh processes


def _load_main(path: str) -> None:
    """Child: import TensorFlow, then time one ``tf.saved_model.load`` of ``path``."""
    import tensorflow as tf

    t = time.perf_counter()
    loaded = tf.saved_model.load(path, tags=["serve"])
    seconds = time.perf_counter() - t
    loaded.signatures["serving_default"]  # noqa: B018 - the signature exists
    print(json.dumps({"load_s": seconds}))


def _latency_main(args_path: str) -> None:
    """Child: all models in one process, batch-1 calls interleaved; TensorFlow only."""
    args = json.loads(Path(args_path).read_text())
    import tensorflow as tf

    capi = load_capi()
    models = []
    for label, path, rows_path, keras_path in args["models"]:
        fn = tf.saved_model.load(path, tags=["serve"]).signatures["serving_default"]
        specs = fn.structured_input_signature[1]
        rows = np.load(rows_path, allow_pickle=False)
        cols = {k: rows[k] for k in specs}
        singles = [{k: tf.constant(v[i:i + 1], dtype=specs[k].dtype) for k, v in cols.items()}
                   for i in range(ROWS)]
        batch = {k: tf.constant(v, dtype=specs[k].dtype) for k, v in cols.items()}
        python_out = {k: v.numpy() for k, v in fn(**batch).items()}
        session = capi.CApiSession(path)
        session.set_inputs(cols)
        capi_out = session.run()
        expected = np.load(keras_path)
        diff = max(max(float(np.abs(python_out[k] - expected[k]).max()),
                       float(np.abs(capi_out[k] - expected[k]).max())) for k in python_out)
        c_singles = [{k: v[i:i + 1] for k, v in cols.items()} for i in range(ROWS)]
        models.append({"label": label, "fn": fn, "singles": singles, "session": session,
                       "c_singles": c_singles, "py": [], "c": [], "max_diff": diff})
    for i in range(args["warmup"]):
        for m in models:
            m["fn"](**m["singles"][i % ROWS])
            m["session"].set_inputs(m["c_singles"][i % ROWS])
            m["session"].time_runs(1)
    n = len(models)
    for i in range(args["calls"]):
        for j in range(n):
            m = models[(i + j) % n]
            x = m["singles"][i % ROWS]
            t = time.perf_counter()
            m["fn"](**x)
            m["py"].append(time.perf_counter() - t)
            m["session"].set_inputs(m["c_singles"][i % ROWS])
            m["c"] += m["session"].time_runs(1)
    results = []
    for m in models:
        m["session"].close()
        py, c = np.array(m["py"]) * 1e3, np.array(m["c"]) * 1e3
        results.append({"label": m["label"], "max_diff": m["max_diff"],
                        "p50_ms": float(np.median(py)), "p90_ms": float(np.percentile(py, 90)),
                        "p99_ms": float(np.percentile(py, 99)),
                        "capi_p50_ms": float(np.median(c)),
                        "capi_p90_ms": float(np.percentile(c, 90))})
    print(json.dumps(results))


def _child(mode: str, arg: str, cpus: str) -> dict | list:
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cmd = [sys.executable, __file__, mode, arg]
    if cpus:
        cmd = ["taskset", "-c", cpus, *cmd]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"{mode} process failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- build + export
def _write_vocabulary(path: Path, prefix: str, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    width = len(str(size))
    path.write_text("".join(f"{prefix}{i:0{width}d}\n" for i in range(size)))


def build_and_export(label: str, users: int, inline: bool, work: Path, seed: int) -> dict:
    """Build the MMoE model with ``users`` user ids, export it, write its rows; a summary."""
    from tfmtnas import keras
    from tfmtnas.export import export_saved_model
    from tfmtnas.features import CategoricalFeature, FeatureSpec, NumericFeature, TaskSpec
    from tfmtnas.models import MultiTaskModel
    from tfmtnas.pipelines.training import TrainConfig

    vocab_dir = work / f"vocabularies-{label}"
    user_values = [f"u{i:0{len(str(users))}d}" for i in range(users)]
    if inline:
        user = CategoricalFeature("user", tuple(user_values))
    else:
        _write_vocabulary(vocab_dir / "user.txt", "u", users)
        user = CategoricalFeature("user", vocabulary_file=str(vocab_dir / "user.txt"),
                                  vocabulary_size=users)
    _write_vocabulary(vocab_dir / "item.txt", "i", 1000)
    spec = FeatureSpec(
        [user, CategoricalFeature("item", vocabulary_file=str(vocab_dir / "item.txt"),
                                  vocabulary_size=1000),
         *(CategoricalFeature(name, tuple(f"{name}{j}" for j in range(k)))
           for name, k in SMALL_CATEGORIES.items())],
        [NumericFeature(name, 1.0, 2.0) for name in NUMERIC])
    cfg = TrainConfig()
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    t = time.perf_counter()
    model = MultiTaskModel(spec, (TaskSpec("click"), TaskSpec("buy")), sharing=cfg.sharing(),
                           embedding_dim=cfg.embedding_dim, tower_units=cfg.tower_units)
    model(model.dummy_features())
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    path = export_saved_model(model, work / "saved_models", name=label)
    export_s = time.perf_counter() - t
    # Rows: users uniform over this model's vocabulary, 5 % unknown.
    rng = np.random.default_rng(seed)
    cols = {"user": np.where(rng.random(ROWS) < 0.05, "unknown",
                             np.array(user_values)[rng.integers(0, users, ROWS)]),
            "item": np.array([f"i{j:04d}" for j in rng.integers(0, 1000, ROWS)])}
    for name, k in SMALL_CATEGORIES.items():
        cols[name] = np.array([f"{name}{j}" for j in rng.integers(0, k, ROWS)])
    for name in NUMERIC:
        cols[name] = rng.normal(1.0, 2.0, ROWS).astype(np.float32)
    rows_path, keras_path = work / f"rows-{label}.npz", work / f"keras-{label}.npz"
    np.savez(rows_path, **cols)
    np.savez(keras_path, **model.predict_raw(cols))

    def size(sub: str) -> float:
        files = [p for p in (path / sub).rglob("*") if p.is_file()] if sub else []
        return sum(p.stat().st_size for p in files) / 1e6

    return {"label": label, "path": str(path), "rows": str(rows_path),
            "keras": str(keras_path), "users": users,
            "user_vocabulary": "inline" if inline else "file",
            "embedding_rows": spec.total_ids, "build_s": build_s, "export_s": export_s,
            "total_mb": sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6,
            "variables_mb": size("variables"), "assets_mb": size("assets"),
            "graph_mb": (path / "saved_model.pb").stat().st_size / 1e6}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big", type=int, default=1_000_000, help="User ids of the big model.")
    parser.add_argument("--small", type=int, default=1000, help="User ids of the small model.")
    parser.add_argument("--no_inline", action="store_true",
                        help="Skip the small model with an inline (in-graph) user vocabulary.")
    parser.add_argument("--loads", type=int, default=3,
                        help="Fresh-process loads per export (median reported).")
    parser.add_argument("--calls", type=int, default=2000,
                        help="Timed batch-1 rounds (one call per model per round).")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--measure_cpus", default="",
                        help="Pin the measuring processes to these CPUs, e.g. 0 (taskset).")
    parser.add_argument("--keep", default="",
                        help="Write the exports and vocabularies here and keep them "
                        "(default: a temporary folder).")
    args = parser.parse_args(argv)
    command = " ".join(["python benchmarks/vocabulary_export.py", *(
        shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))])

    variants = [(f"user_file_{args.big}", args.big, False),
                (f"user_file_{args.small}", args.small, False)]
    if not args.no_inline:
        variants.append((f"user_inline_{args.small}", args.small, True))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        exports = []
        for label, users, inline in variants:
            exports.append(build_and_export(label, users, inline, work, args.seed))
            e = exports[-1]
            print(f"{label}: built in {e['build_s']:.1f} s, exported in {e['export_s']:.1f} s "
                  f"-> {e['path']}", flush=True)
        print(f"loading each export {args.loads} times in fresh processes (load average "
              f"{os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs) ...", flush=True)
        for e in exports:
            times = [_child("--_load", e["path"], args.measure_cpus)["load_s"]
                     for _ in range(args.loads)]
            e["load_s"] = float(np.median(times))
            e["load_all_s"] = times
        print(f"timing batch-1 calls, all models in one fresh process, interleaved (load "
              f"average {os.getloadavg()[0]:.2f}) ...", flush=True)
        latency_args = work / "latency.json"
        latency_args.write_text(json.dumps({
            "models": [[e["label"], e["path"], e["rows"], e["keras"]] for e in exports],
            "calls": args.calls, "warmup": args.warmup}))
        for e, r in zip(exports, _child("--_latency", str(latency_args), args.measure_cpus)):
            e.update(r)
    print()
    print(f"MMoE exports (4 experts x 64, towers 32, embedding dim 8), batch-1 "
          f"serving_default: {args.calls} interleaved calls per model after {args.warmup} "
          f"warm-up; load: median of {args.loads} fresh processes")
    cols = [("model", "label", "{}"), ("user vocab", "user_vocabulary", "{}"),
            ("embedding rows", "embedding_rows", "{:,}"), ("size MB", "total_mb", "{:.1f}"),
            ("variables MB", "variables_mb", "{:.1f}"), ("assets MB", "assets_mb", "{:.1f}"),
            ("graph MB", "graph_mb", "{:.2f}"), ("load s", "load_s", "{:.2f}"),
            ("p50 ms", "p50_ms", "{:.3f}"), ("p90 ms", "p90_ms", "{:.3f}"),
            ("p99 ms", "p99_ms", "{:.3f}"), ("C API p50 ms", "capi_p50_ms", "{:.3f}"),
            ("C API p90 ms", "capi_p90_ms", "{:.3f}"), ("max |diff| vs Keras", "max_diff",
                                                        "{:.1e}")]
    cells = [[fmt.format(e[key]) for _, key, fmt in cols] for e in exports]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (h, _, _) in enumerate(cols)]
    print("  ".join(h.ljust(w) for (h, _, _), w in zip(cols, widths)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    big, small = exports[0], exports[1]
    print(f"\nbig / small file vocabulary: p50 {big['p50_ms'] / small['p50_ms']:.3f}x "
          f"(Python signature), {big['capi_p50_ms'] / small['capi_p50_ms']:.3f}x (C API); "
          f"target <= 1.2x")
    if len(exports) > 2:
        inline = exports[2]
        print(f"small file / small inline vocabulary: p50 "
              f"{small['p50_ms'] / inline['p50_ms']:.3f}x (Python), "
              f"{small['capi_p50_ms'] / inline['capi_p50_ms']:.3f}x (C API)")
    print("loads (s): " + "; ".join(
        f"{e['label']} " + ", ".join(f"{t:.2f}" for t in e["load_all_s"]) for e in exports))
    print(f"\ncommand: {command}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--_load":
        _load_main(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "--_latency":
        _latency_main(sys.argv[2])
    else:
        main()
