"""Clusters on 127.0.0.1: a 2·10^6-row table over two parameter servers, and examples/s of
one process against two ``multi_worker`` workers.

``--mode=large_table``:

1. writes a click-log-like CSV (``--rows`` rows; a user id column of about ``--rows``
   distinct values hashed into ``--hash_bins`` buckets, default 2,000,000, so the embedding
   table has 2·10^6 + a few rows of width 8; a color, two numerics, a binary and a
   regression label);
2. starts 2 parameter servers and 2 workers (``tfmtnas-server`` processes) and a chief
   running ``tfmtnas-train --strategy=parameter_server`` (MMoE, ``lazy_adam``), every
   process ended in a ``finally``;
3. prints the shard shapes of the table from ``metrics.json``;
4. exports the model with ``tfmtnas-export`` in a new process, then loads the SavedModel in
   another new process (TensorFlow and the model only: no cluster, no parameter server),
   runs ``serving_default`` on 2,000 rows and compares with the chief's model reloaded with
   ``load_model`` (max |diff|, the target being 1e-5).

``--mode=throughput``: trains the same MMoE on the same CSV (``--epochs``, batch
``--batch_size``) as one process (``--strategy=default``) and as two ``multi_worker``
workers, alternately, ``--repeats`` times each, and prints training examples/s
(rows x epochs / the run's ``train_seconds``) and the ratio. On one 2-core machine the two
workers share the cores, so no speed-up is expected: the ratio shows the cost per step of
the collective all-reduce and the global-batch split.

Run: ``python benchmarks/cluster.py --mode=large_table`` (about 2 minutes) and
``python benchmarks/cluster.py --mode=throughput`` (about 3 minutes); ``make bench-cluster``
runs both.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

TIMEOUT = 1800
CSV_FLAGS = ["--dataset=csv", "--csv_labels=click:binary,watch:regression",
             "--csv_numeric=x,z", "--csv_categorical=color,uid"]
MODEL_FLAGS = ["--model=mmoe", "--num_experts=4", "--expert_units=64", "--tower_units=32"]


def write_csv(path: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    color = rng.choice(["red", "green", "blue"], rows)
    x, z = rng.normal(size=rows), rng.normal(size=rows)
    uid = rng.integers(0, 10 * rows, rows)
    click = ((x + (color == "red") + (uid % 7 == 0)) > 0.5).astype(int)
    watch = 2 * x - z + rng.normal(scale=0.1, size=rows)
    lines = ["color,x,z,click,watch,uid"]
    lines += [f"{c},{a:.4f},{b:.4f},{k},{w:.4f},u{u}"
              for c, a, b, k, w, u in zip(color, x, z, click, watch, uid)]
    path.write_text("\n".join(lines) + "\n")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class Processes:
    """Started processes with their logs; :meth:`stop` ends every one."""

    def __init__(self, root: Path):
        self.root, self.procs = root, {}

    def start(self, name: str, args: list[str], tf_config: dict | None = None) -> None:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        if tf_config is not None:
            env["TF_CONFIG"] = json.dumps(tf_config)
        log = self.root / f"{name}.log"
        with open(log, "w") as out:
            self.procs[name] = (subprocess.Popen([sys.executable, *args], env=env, stdout=out,
                                                 stderr=subprocess.STDOUT, cwd=self.root), log)

    def wait_for(self, name: str, text: str, deadline: float) -> None:
        proc, log = self.procs[name]
        while text not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not say {text!r}:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)

    def wait(self, name: str, deadline: float) -> None:
        proc, log = self.procs[name]
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        if code != 0:
            raise RuntimeError(f"{name} exited {code}:\n{log.read_text()[-4000:]}")

    def stop(self) -> None:
        for proc, _ in self.procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc, _ in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass


COMPARE = textwrap.dedent("""
    import csv, itertools, json, sys
    import tensorflow as tf
    saved_model, path = sys.argv[1], sys.argv[2]
    rows = list(itertools.islice(csv.DictReader(open(path)), 2000))
    serve = tf.saved_model.load(saved_model, tags=["serve"]).signatures["serving_default"]
    inputs = {"color": tf.constant([r["color"] for r in rows]),
              "uid": tf.constant([r["uid"] for r in rows]),
              "x": tf.constant([float(r["x"]) for r in rows], tf.float32),
              "z": tf.constant([float(r["z"]) for r in rows], tf.float32)}
    served = {k: v.numpy().reshape(-1) for k, v in serve(**inputs).items()}
    print("SERVED " + json.dumps({k: v.tolist() for k, v in served.items()}))
""")

KERAS = textwrap.dedent("""
    import csv, itertools, json, sys
    import numpy as np
    from tfmtnas.pipelines.training import load_model
    model_dir, path = sys.argv[1], sys.argv[2]
    rows = list(itertools.islice(csv.DictReader(open(path)), 2000))
    model = load_model(model_dir)
    out = model.predict_raw({"color": np.array([r["color"] for r in rows]),
                             "uid": np.array([r["uid"] for r in rows]),
                             "x": np.array([float(r["x"]) for r in rows]),
                             "z": np.array([float(r["z"]) for r in rows])})
    print("KERAS " + json.dumps({k: v.reshape(-1).tolist() for k, v in out.items()}))
""")


def _tagged(stdout: str, tag: str) -> dict:
    return json.loads(next(ln for ln in stdout.splitlines() if ln.startswith(tag + " "))
                      [len(tag) + 1:])


def _run(args: list[str]) -> str:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=TIMEOUT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    if done.returncode != 0:
        raise RuntimeError(f"{args[:2]} exited {done.returncode}:\n{done.stderr[-4000:]}")
    return done.stdout


def large_table(args, work: Path) -> None:
    csv = work / "clicks.csv"
    write_csv(csv, args.rows)
    ports = free_ports(5)
    spec = {"chief": [f"127.0.0.1:{ports[0]}"],
            "worker": [f"127.0.0.1:{p}" for p in ports[1:3]],
            "ps": [f"127.0.0.1:{p}" for p in ports[3:5]]}
    procs = Processes(work)
    deadline = time.monotonic() + TIMEOUT
    model_dir = work / "run"
    start = time.perf_counter()
    try:
        for job in ("ps", "worker"):
            for i in range(2):
                procs.start(f"{job}{i}", ["-m", "tfmtnas.pipelines.server"],
                            {"cluster": spec, "task": {"type": job, "index": i}})
        for name in ("ps0", "ps1", "worker0", "worker1"):
            procs.wait_for(name, "serving at", deadline)
        procs.start("chief", ["-m", "tfmtnas.pipelines.train", "--strategy=parameter_server",
                              *CSV_FLAGS, f"--csv_train={csv}",
                              f"--csv_hash=uid:{args.hash_bins}", *MODEL_FLAGS,
                              f"--epochs={args.epochs}", f"--batch_size={args.batch_size}",
                              f"--model_dir={model_dir}"],
                    {"cluster": spec, "task": {"type": "chief", "index": 0}})
        procs.wait("chief", deadline)
    finally:
        procs.stop()
    seconds = time.perf_counter() - start
    metrics = json.loads((model_dir / "metrics.json").read_text())
    export_root = work / "saved_models"
    _run(["-m", "tfmtnas.pipelines.export", f"--model_dir={model_dir}",
          f"--export_root={export_root}", "--name=clicks"])
    (version,) = sorted((export_root / "clicks").iterdir())
    served = _tagged(_run(["-c", COMPARE, str(version), str(csv)]), "SERVED")
    keras = _tagged(_run(["-c", KERAS, str(model_dir), str(csv)]), "KERAS")
    diff = max(float(np.max(np.abs(np.array(served[k]) - np.array(keras[k])))) for k in keras)
    size = sum(f.stat().st_size for f in version.rglob("*") if f.is_file())
    print(json.dumps({"sharded_variables": metrics["sharded_variables"],
                      "test": metrics["test"], "train_seconds": metrics["train_seconds"],
                      "cluster_seconds": round(seconds, 1),
                      "export_mb": round(size / 2**20, 1),
                      "served_vs_chief_max_abs_diff": diff}, indent=1))


def _multi_worker(args, work: Path, csv: Path, run: int) -> dict:
    ports = free_ports(2)
    workers = [f"127.0.0.1:{p}" for p in ports]
    model_dir = work / f"two{run}"
    procs = Processes(work)
    deadline = time.monotonic() + TIMEOUT
    try:
        for i in range(2):
            procs.start(f"two{run}_worker{i}", [
                "-m", "tfmtnas.pipelines.train", "--strategy=multi_worker", *CSV_FLAGS,
                f"--csv_train={csv}", *MODEL_FLAGS, f"--epochs={args.epochs}",
                f"--batch_size={args.batch_size}", f"--model_dir={model_dir}"],
                {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
        for i in range(2):
            procs.wait(f"two{run}_worker{i}", deadline)
    finally:
        procs.stop()
    return json.loads((model_dir / "metrics.json").read_text())


def throughput(args, work: Path) -> None:
    csv = work / "clicks.csv"
    write_csv(csv, args.rows)
    train_rows = None
    rates = {"one process": [], "two workers": []}
    for run in range(args.repeats):
        _run(["-m", "tfmtnas.pipelines.train", *CSV_FLAGS, f"--csv_train={csv}", *MODEL_FLAGS,
              f"--epochs={args.epochs}", f"--batch_size={args.batch_size}",
              f"--model_dir={work / f'one{run}'}"])
        one = json.loads((work / f"one{run}" / "metrics.json").read_text())
        two = _multi_worker(args, work, csv, run)
        if train_rows is None:
            from tfmtnas.data import load_dataset

            data = load_dataset("csv", train_path=str(csv),
                                label_columns={"click": "binary", "watch": "regression"},
                                categorical=["color", "uid"], numeric=["x", "z"])
            train_rows = len(data.train)
        rates["one process"].append(train_rows * args.epochs / one["train_seconds"])
        rates["two workers"].append(train_rows * args.epochs / two["train_seconds"])
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(json.dumps({"train_rows": train_rows, "epochs": args.epochs,
                      "batch_size": args.batch_size,
                      "examples_per_second": {k: [round(x) for x in v] for k, v in rates.items()},
                      "median": {k: round(v) for k, v in med.items()},
                      "two_over_one": round(med["two workers"] / med["one process"], 3)},
                     indent=1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("large_table", "throughput"), required=True)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--hash_bins", type=int, default=2_000_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    print("command: python benchmarks/cluster.py " + shlex.join(sys.argv[1:] if argv is None
                                                                 else argv), flush=True)
    with tempfile.TemporaryDirectory(prefix="tfmtnas-cluster-") as tmp:
        (large_table if args.mode == "large_table" else throughput)(args, Path(tmp))


if __name__ == "__main__":
    main()
