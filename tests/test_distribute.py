"""tfmtnas.distribute: strategies by name, and training on real clusters on 127.0.0.1.

The cluster tests start real processes (free ports chosen at run time, every process
ended in a ``finally``, every wait bounded): 2 ``multi_worker`` workers; a
``parameter_server`` chief with 2 workers and 2 parameter servers.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tfmtnas import fsutil
from tfmtnas.distribute import STRATEGIES, cluster_config, is_chief, make_strategy
from tfmtnas.errors import UserError

TIMEOUT = 300  # seconds any one cluster test may take


def test_default_strategy_is_chief_and_names_are_the_flag_values(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert STRATEGIES == ("default", "mirrored", "multi_worker", "parameter_server")
    assert is_chief(make_strategy("default"))
    assert cluster_config() == {}


@pytest.mark.parametrize("name", ["multi_worker", "parameter_server"])
def test_cluster_strategies_without_tf_config_are_a_user_error(monkeypatch, name):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(UserError, match="TF_CONFIG"):
        make_strategy(name)


def test_bad_tf_config_is_a_user_error(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        cluster_config()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["127.0.0.1:1"]},
                                                "task": {"type": "chief", "index": 0}}))
    with pytest.raises(UserError, match=r"\['ps', 'worker'\]|\['worker', 'ps'\]"):
        make_strategy("parameter_server")


# --- real clusters on 127.0.0.1 ---------------------------------------------------------


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _write_csv(path: Path, ids: int = 0) -> None:
    """400 rows: a categorical, two numerics, a binary and a regression label (and with
    ``ids``, a user id column of that many distinct values)."""
    rng = np.random.default_rng(0)
    n = 400
    color = rng.choice(["red", "green", "blue"], n)
    x, z = rng.normal(size=n), rng.normal(size=n)
    click = ((x + (color == "red")) > 0.5).astype(int)
    watch = 2 * x - z + rng.normal(scale=0.1, size=n)
    uid = rng.integers(0, max(ids, 1), n)
    head = "color,x,z,click,watch" + (",uid" if ids else "")
    rows = [f"{c},{a:.4f},{b:.4f},{k},{w:.4f}" + (f",u{u}" if ids else "")
            for c, a, b, k, w, u in zip(color, x, z, click, watch, uid)]
    path.write_text("\n".join([head, *rows]) + "\n")


class _Cluster:
    """Processes with their logs; :meth:`stop` ends every one (called in a ``finally``)."""

    def __init__(self, root: Path):
        self.root = root
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []

    def start(self, name: str, args: list[str], tf_config: dict, cwd: Path,
              env: dict | None = None) -> None:
        env = dict(os.environ, TF_CONFIG=json.dumps(tf_config), TF_CPP_MIN_LOG_LEVEL="2",
                   **(env or {}))
        log = self.root / f"{name}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, stdout=out,
                                    stderr=subprocess.STDOUT)
        self.procs.append((name, proc, log))

    def log(self, name: str) -> str:
        return next(log for n, _, log in self.procs if n == name).read_text()

    def wait_for_text(self, name: str, text: str, deadline: float) -> None:
        proc = next(p for n, p, _ in self.procs if n == name)
        while text not in self.log(name):
            assert proc.poll() is None, f"{name} exited:\n{self.log(name)[-3000:]}"
            assert time.monotonic() < deadline, f"{name} never said {text!r}"
            time.sleep(0.2)

    def wait(self, name: str, deadline: float) -> int:
        proc = next(p for n, p, _ in self.procs if n == name)
        try:
            return proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name} did not finish in time:\n{self.log(name)[-3000:]}")

    def stop(self) -> None:
        for _, proc, _ in self.procs:
            if proc.poll() is None:
                proc.kill()
        for _, proc, _ in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass


WORKER_SCRIPT = textwrap.dedent("""
    import json, sys
    from tfmtnas.pipelines.training import TrainConfig, train_and_evaluate

    csv, model_dir, strategy = sys.argv[1], sys.argv[2], sys.argv[3]
    cfg = TrainConfig(
        dataset="csv", model="mmoe", expert_units=(8,), num_experts=2, tower_units=(4,),
        epochs=2, batch_size=32, learning_rate=0.01, seed=0, model_dir=model_dir,
        strategy=strategy,
        dataset_options={"train_path": csv, "label_columns": {"click": "binary",
                         "watch": "regression"}, "categorical": ["color"],
                         "numeric": ["x", "z"]})
    result = train_and_evaluate(cfg, verbose=0)
    # The model's variables (metric states, summed over replicas when read, left out).
    weights = [w.numpy().tolist() for w in result.model.trainable_weights]
    print("RESULT " + json.dumps({"metrics": result.test_metrics, "weights": weights}))
""")


@pytest.mark.slow
def test_multi_worker_training_gives_identical_weights_and_only_the_chief_writes(tmp_path):
    csv = tmp_path / "tiny.csv"
    _write_csv(csv)
    model_dir = tmp_path / "run"  # one folder both workers see, as on a shared file system
    ports = _free_ports(2)
    workers = [f"127.0.0.1:{p}" for p in ports]
    cluster = _Cluster(tmp_path)
    deadline = time.monotonic() + TIMEOUT
    try:
        for i in range(2):
            tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
            cluster.start(f"worker{i}", ["-c", WORKER_SCRIPT, str(csv), str(model_dir),
                                         "multi_worker"], tf_config, cwd=tmp_path)
        codes = [cluster.wait(f"worker{i}", deadline) for i in range(2)]
    finally:
        cluster.stop()
    logs = [cluster.log(f"worker{i}") for i in range(2)]
    assert codes == [0, 0], "\n\n".join(log[-3000:] for log in logs)
    results = [json.loads(next(ln for ln in log.splitlines() if ln.startswith("RESULT "))[7:])
               for log in logs]
    w0, w1 = ([np.array(w) for w in r["weights"]] for r in results)
    assert len(w0) == len(w1) > 0
    assert all(np.array_equal(a, b) for a, b in zip(w0, w1))
    # One process on the same global batches takes the same steps (two epochs of them).
    single = subprocess.run([sys.executable, "-c", WORKER_SCRIPT, str(csv),
                             str(tmp_path / "one"), "default"], capture_output=True, text=True,
                            timeout=TIMEOUT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert single.returncode == 0, single.stderr[-3000:]
    one = [np.array(w) for w in _result(single.stdout)["weights"]]
    for a, b in zip(w0, one, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    # Both evaluated (a distributed evaluation); only worker 0, the chief, wrote.
    assert results[0]["metrics"]["click_auc"] > 0.6
    assert results[1]["metrics"] == results[0]["metrics"]
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["strategy"] == "multi_worker" and metrics["replicas"] == 2
    # The chief keeps the last epoch's checkpoint (as with one process); the other worker's
    # temporary checkpoints and saved model were removed.
    written = sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*"))
    assert [p for p in written if "/" not in p] == [
        "checkpoints", "config.json", "fingerprint.json", "metrics.json", "model.json",
        "weights"], written
    assert sorted(p.name for p in (model_dir / "checkpoints").iterdir()) == [
        "checkpoint", "ckpt-2.data-00000-of-00001", "ckpt-2.index"], written


@pytest.mark.slow
def test_parameter_server_training_shards_the_embedding_and_only_the_chief_writes(tmp_path):
    csv = tmp_path / "ids.csv"
    _write_csv(csv, ids=300)
    out = tmp_path / "run"
    ports = _free_ports(5)
    spec = {"chief": [f"127.0.0.1:{ports[0]}"],
            "worker": [f"127.0.0.1:{p}" for p in ports[1:3]],
            "ps": [f"127.0.0.1:{p}" for p in ports[3:5]]}
    cluster = _Cluster(tmp_path)
    deadline = time.monotonic() + TIMEOUT
    server_dirs = []
    try:
        for job in ("ps", "worker"):
            for i in range(2):
                cwd = tmp_path / f"{job}{i}"
                cwd.mkdir()
                server_dirs.append(cwd)
                cluster.start(f"{job}{i}", ["-m", "tfmtnas.pipelines.server"],
                              {"cluster": spec, "task": {"type": job, "index": i}}, cwd)
        for job in ("ps", "worker"):
            for i in range(2):
                cluster.wait_for_text(f"{job}{i}", "serving at", deadline)
        cluster.start("chief", [
            "-m", "tfmtnas.pipelines.train", "--strategy=parameter_server", "--dataset=csv",
            f"--csv_train={csv}", "--csv_labels=click:binary,watch:regression",
            "--csv_numeric=x,z", "--csv_categorical=color,uid", "--csv_hash=uid:20000",
            "--model=mmoe", "--num_experts=2", "--expert_units=8", "--tower_units=4",
            "--epochs=2", "--batch_size=32", "--learning_rate=0.01", f"--model_dir={out}"],
            {"cluster": spec, "task": {"type": "chief", "index": 0}}, cwd=tmp_path)
        code = cluster.wait("chief", deadline)
        for name in ("ps0", "ps1", "worker0", "worker1"):
            assert cluster.procs[[n for n, _, _ in cluster.procs].index(name)][1].poll() is None
    finally:
        cluster.stop()
    assert code == 0, cluster.log("chief")[-4000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["strategy"] == "parameter_server"
    from tfmtnas.pipelines.training import load_model

    model = load_model(out)
    (table,) = [w for w in model.weights if "table" in w.name]
    rows, dim = table.shape
    # The table (20000 hashed ids + color's ids, 8 wide, about 640 KB) split over both
    # parameter servers in row shards of at least 256 KiB; the dense kernels stay whole.
    shards = metrics["sharded_variables"]
    assert len(shards) == 1, shards
    (shapes,) = shards.values()
    assert shapes == [[rows - rows // 2, dim], [rows // 2, dim]], (shapes, rows)
    assert 0 < metrics["test"]["watch_rmse"] < 3.0
    assert np.isfinite(model.predict_raw({"color": np.array(["red"]), "uid": np.array(["u1"]),
                                          "x": np.array([0.5]), "z": np.array([0.0])})
                       ["click"]).all()
    # Workers and parameter servers wrote nothing where they ran.
    assert all(not any(d.iterdir()) for d in server_dirs)


LAZY_ADAM_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import tensorflow as tf
    from tfmtnas.distribute import make_strategy
    from tfmtnas.models.embedding import FeatureEmbedding
    from tfmtnas.models.optimizers import LazyAdam

    ids = tf.constant([[3, 700], [3, 999]])
    weights = tf.range(16.0)
    kinds = []

    def loss_of(emb):
        out = emb({"categorical": ids, "numeric": tf.zeros([2, 0])})
        return tf.reduce_sum(out * weights)

    def step_fn(emb, opt):
        with tf.GradientTape() as tape:
            loss = loss_of(emb)
        grads = tape.gradient(loss, emb.trainable_weights)
        kinds.extend(type(g).__name__ for g in grads)  # recorded while tracing
        opt.apply_gradients(zip(grads, emb.trainable_weights))

    # 1000 x 8 float32 = 32,000 bytes: shards of at least 16,000 bytes, so one per server.
    strategy = make_strategy("parameter_server", min_shard_bytes=16000)
    with strategy.scope():
        sharded = FeatureEmbedding(total_ids=1000, num_categorical=2, embedding_dim=8)
        sharded.build(None)
        opt = LazyAdam(0.1)
    coordinator = tf.distribute.experimental.coordinator.ClusterCoordinator(strategy)
    table = sharded.table
    before = np.concatenate([v.numpy() for v in table.variables])

    @tf.function
    def ps_step():
        strategy.run(step_fn, args=(sharded, opt))

    @tf.function
    def ps_forward():
        return strategy.run(lambda: sharded({"categorical": ids, "numeric": tf.zeros([2, 0])}))

    fwd = coordinator.schedule(ps_forward).fetch()
    forward_ok = bool(np.array_equal(fwd, before[[3, 700, 3, 999]].reshape(2, 16)))
    for _ in range(3):
        coordinator.schedule(ps_step)
    coordinator.join()
    after = np.concatenate([v.numpy() for v in table.variables])

    plain = FeatureEmbedding(total_ids=1000, num_categorical=2, embedding_dim=8)
    plain.build(None)
    plain.table.assign(before)
    plain_opt = LazyAdam(0.1)
    for _ in range(3):
        step_fn(plain, plain_opt)
    moved = sorted(set(np.nonzero(np.any(after != before, axis=1))[0].tolist()))
    print("RESULT " + json.dumps({
        "sharded_type": type(table).__name__,
        "shards": [v.shape.as_list() for v in table.variables],
        "devices": [v.device for v in table.variables],
        "gradient_kinds": sorted(set(kinds)),
        "slot_shards": [[s.shape.as_list() for s in getattr(v, "variables", [v])]
                        for v in opt.variables() if v.shape.rank == 2],
        "moved_rows": moved,
        "forward_ok": forward_ok,
        "iterations": [int(opt.iterations.numpy()), int(plain_opt.iterations.numpy())],
        "max_diff_to_plain": float(np.max(np.abs(after - plain.table.numpy())))}))
""")


@pytest.mark.slow
def test_lazy_adam_updates_only_touched_rows_of_an_embedding_sharded_over_two_servers(
        tmp_path):
    ports = _free_ports(5)
    cluster = {"chief": [f"127.0.0.1:{ports[0]}"],
               "worker": [f"127.0.0.1:{p}" for p in ports[1:3]],
               "ps": [f"127.0.0.1:{p}" for p in ports[3:5]]}
    servers = _Cluster(tmp_path)
    deadline = time.monotonic() + 120
    try:
        for job in ("ps", "worker"):
            for i in range(2):
                servers.start(f"{job}{i}", ["-m", "tfmtnas.pipelines.server"],
                              {"cluster": cluster, "task": {"type": job, "index": i}}, tmp_path)
        for job in ("ps", "worker"):
            for i in range(2):
                servers.wait_for_text(f"{job}{i}", "serving at", deadline)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "chief", "index": 0}}))
        done = subprocess.run([sys.executable, "-c", LAZY_ADAM_SCRIPT], capture_output=True,
                              text=True, timeout=max(1.0, deadline - time.monotonic()),
                              env=env, cwd=tmp_path)
    finally:
        servers.stop()
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(next(ln for ln in done.stdout.splitlines()
                             if ln.startswith("RESULT "))[7:])
    assert result["sharded_type"] == "ShardedVariable"
    assert result["shards"] == [[500, 8], [500, 8]]
    assert ["/job:ps/replica:0/task:0" in result["devices"][0],
            "/job:ps/replica:0/task:1" in result["devices"][1]] == [True, True], result
    # Sparse gradients; both Adam moments sharded like the table (one shard per server).
    assert result["gradient_kinds"] == ["IndexedSlices"]
    assert result["slot_shards"] == [[[500, 8], [500, 8]]] * 2, result
    assert result["forward_ok"] and result["iterations"] == [3, 3]
    assert result["moved_rows"] == [3, 700, 999]
    assert result["max_diff_to_plain"] < 1e-6, json.dumps(result)


SEARCH_SCRIPT = textwrap.dedent("""
    import json, sys
    from tfmtnas.pipelines.searching import SearchConfig, run_search

    csv, model_dir, method, strategy = sys.argv[1:5]
    cfg = SearchConfig(
        dataset="csv", method=method, num_layers=2, num_experts=2, expert_units=(4,),
        tower_units=(4,), epochs=2, batch_size=32, learning_rate=0.01, seed=0,
        child="inherit", jit_compile=False, model_dir=model_dir, strategy=strategy,
        dataset_options={"train_path": csv, "label_columns": {"click": "binary",
                         "watch": "regression"}, "categorical": ["color"],
                         "numeric": ["x", "z"]})
    result = run_search(cfg, verbose=0)
    weights = [w.tolist() for w in result.search_model.method.get_weights()]
    print("RESULT " + json.dumps({"spec": result.derived.to_json(), "arch": weights,
                                  "child": result.child_metrics}))
""")


def _result(log: str) -> dict:
    return json.loads(next(ln for ln in log.splitlines() if ln.startswith("RESULT "))[7:])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gumbel", "mtnas", "mtlnas"])
def test_multi_worker_search_derives_the_one_process_spec_on_every_worker(tmp_path, method):
    csv = tmp_path / "tiny.csv"
    _write_csv(csv)
    single = subprocess.run(
        [sys.executable, "-c", SEARCH_SCRIPT, str(csv), str(tmp_path / "one"), method,
         "default"], capture_output=True, text=True, timeout=TIMEOUT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert single.returncode == 0, single.stderr[-3000:]
    model_dir = tmp_path / "run"  # one folder both workers see, as on a shared file system
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    cluster = _Cluster(tmp_path)
    deadline = time.monotonic() + TIMEOUT
    try:
        for i in range(2):
            tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
            cluster.start(f"worker{i}", ["-c", SEARCH_SCRIPT, str(csv), str(model_dir), method,
                                         "multi_worker"], tf_config, cwd=tmp_path)
        codes = [cluster.wait(f"worker{i}", deadline) for i in range(2)]
    finally:
        cluster.stop()
    logs = [cluster.log(f"worker{i}") for i in range(2)]
    assert codes == [0, 0], "\n\n".join(log[-3000:] for log in logs)
    one, chief, other = _result(single.stdout), _result(logs[0]), _result(logs[1])
    # Every worker derives the spec one process derives from the same global batches.
    assert chief["spec"] == other["spec"] == one["spec"]
    assert (model_dir / "derived_spec.json").read_text() == one["spec"]
    # The architecture variables agree (Adam may turn a gradient that is 0 on one device
    # and 1e-9 on two into a step of 1e-2 x its learning rate: hence the tolerance).
    for a, b in zip(chief["arch"], one["arch"], strict=True):
        np.testing.assert_allclose(a, b, atol=2e-3)
    assert chief["arch"] == other["arch"]
    # Only the chief wrote the outputs and evaluated the child.
    assert chief["child"] and other["child"] == {}
    assert {p.name for p in model_dir.iterdir()} == {
        "checkpoints", "child", "config.json", "derived_spec.json", "allocation.png",
        "derived_graph.png", "fingerprint.json", "metrics.json", "tensorboard"}


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["train_batch_0_3", "train_batch_1_2"])
def test_multi_worker_training_killed_worker_and_restarted_job_ends_as_uninterrupted(
        tmp_path, fault):
    """Worker 1 is killed (SIGKILL) mid-epoch; worker 0's collectives then fail and it
    exits (or is stopped, as a cluster manager would). The job is started again with the
    same model dir: both workers resume from the chief's last epoch checkpoint and end with
    the weights of one uninterrupted process on the same global batches."""
    csv = tmp_path / "tiny.csv"
    _write_csv(csv)
    model_dir = tmp_path / "run"
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    deadline = time.monotonic() + TIMEOUT

    def start(cluster, env1=None):
        for i in range(2):
            tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
            cluster.start(f"worker{i}", ["-c", WORKER_SCRIPT, str(csv), str(model_dir),
                                         "multi_worker"], tf_config, cwd=tmp_path,
                          env=env1 if i == 1 else None)

    first = _Cluster(tmp_path / "first")
    (tmp_path / "first").mkdir()
    try:
        start(first, {fsutil.FAULT_ENV: fault})
        assert first.wait("worker1", deadline) == -signal.SIGKILL, first.log("worker1")[-3000:]
        try:  # worker 0 notices the lost peer and fails; else it is stopped with the job
            first.procs[0][1].wait(timeout=90)
        except subprocess.TimeoutExpired:
            pass
    finally:
        first.stop()
    assert not (model_dir / "metrics.json").exists()
    second = _Cluster(tmp_path / "second")
    (tmp_path / "second").mkdir()
    try:
        start(second)
        codes = [second.wait(f"worker{i}", deadline) for i in range(2)]
    finally:
        second.stop()
    logs = [second.log(f"worker{i}") for i in range(2)]
    assert codes == [0, 0], "\n\n".join(log[-3000:] for log in logs)
    resumed = [np.array(w) for w in _result(logs[0])["weights"]]
    single = subprocess.run([sys.executable, "-c", WORKER_SCRIPT, str(csv),
                             str(tmp_path / "one"), "default"], capture_output=True, text=True,
                            timeout=TIMEOUT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert single.returncode == 0, single.stderr[-3000:]
    for a, b in zip(resumed, [np.array(w) for w in _result(single.stdout)["weights"]],
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_parameter_server_training_keeps_going_through_a_worker_restart(tmp_path):
    """A worker is killed (SIGKILL) while the chief trains and started again on its port:
    the coordinator sends its steps to the other worker meanwhile, and the job finishes."""
    csv = tmp_path / "tiny.csv"
    _write_csv(csv)
    out = tmp_path / "run"
    ports = _free_ports(4)
    spec = {"chief": [f"127.0.0.1:{ports[0]}"],
            "worker": [f"127.0.0.1:{p}" for p in ports[1:3]],
            "ps": [f"127.0.0.1:{ports[3]}"]}
    cluster = _Cluster(tmp_path)
    deadline = time.monotonic() + TIMEOUT

    def server(job, i, name):
        cwd = tmp_path / name
        cwd.mkdir(exist_ok=True)
        cluster.start(name, ["-m", "tfmtnas.pipelines.server"],
                      {"cluster": spec, "task": {"type": job, "index": i}}, cwd)
        cluster.wait_for_text(name, "serving at", deadline)

    try:
        for job, i in (("ps", 0), ("worker", 0), ("worker", 1)):
            server(job, i, f"{job}{i}")
        cluster.start("chief", [
            "-m", "tfmtnas.pipelines.train", "--strategy=parameter_server", "--dataset=csv",
            f"--csv_train={csv}", "--csv_labels=click:binary,watch:regression",
            "--csv_numeric=x,z", "--csv_categorical=color", "--model=mmoe", "--num_experts=2",
            "--expert_units=8", "--tower_units=4", "--epochs=8", "--batch_size=16",
            "--learning_rate=0.01", f"--model_dir={out}"],
            {"cluster": spec, "task": {"type": "chief", "index": 0}}, cwd=tmp_path)
        cluster.wait_for_text("chief", "Epoch 2/8", deadline)
        killed = cluster.procs[[n for n, _, _ in cluster.procs].index("worker1")][1]
        killed.kill()
        killed.wait(timeout=30)
        server("worker", 1, "worker1-again")
        chief = cluster.procs[[n for n, _, _ in cluster.procs].index("chief")][1]
        assert chief.poll() is None, "the chief finished before the worker came back"
        code = cluster.wait("chief", deadline)
    finally:
        cluster.stop()
    assert code == 0, cluster.log("chief")[-4000:]
    log = cluster.log("chief")
    assert "Worker /job:worker/replica:0/task:1 failed" in log and "Epoch 8/8" in log
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["strategy"] == "parameter_server"
    assert metrics["test"]["click_auc"] > 0.6


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gumbel", "mtnas"])
def test_parameter_server_search_runs_on_the_workers_and_the_chief_derives(tmp_path, method):
    csv = tmp_path / "tiny.csv"
    _write_csv(csv)
    model_dir = tmp_path / "run"
    ports = _free_ports(4)
    spec = {"chief": [f"127.0.0.1:{ports[0]}"],
            "worker": [f"127.0.0.1:{p}" for p in ports[1:3]],
            "ps": [f"127.0.0.1:{ports[3]}"]}
    cluster = _Cluster(tmp_path)
    deadline = time.monotonic() + TIMEOUT
    try:
        for job, i in (("ps", 0), ("worker", 0), ("worker", 1)):
            cwd = tmp_path / f"{job}{i}"
            cwd.mkdir()
            cluster.start(f"{job}{i}", ["-m", "tfmtnas.pipelines.server"],
                          {"cluster": spec, "task": {"type": job, "index": i}}, cwd)
            cluster.wait_for_text(f"{job}{i}", "serving at", deadline)
        cluster.start("chief", ["-c", SEARCH_SCRIPT, str(csv), str(model_dir), method,
                                "parameter_server"],
                      {"cluster": spec, "task": {"type": "chief", "index": 0}}, cwd=tmp_path)
        code = cluster.wait("chief", deadline)
    finally:
        cluster.stop()
    assert code == 0, cluster.log("chief")[-4000:]
    result = _result(cluster.log("chief"))
    assert (model_dir / "derived_spec.json").read_text() == result["spec"]
    # The chief's copy holds the searched architecture (moved from its uniform start) and
    # its child was evaluated.
    assert all(np.ptp(np.array(a)) > 0 for a in result["arch"] if np.size(a) > 1)
    assert result["child"]["click_auc"] > 0.6
