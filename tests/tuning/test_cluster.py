"""tfmtnas-tune as the chief of a parameter-server cluster on 127.0.0.1: every trial, a zoo
model's and a search method's (seed 3 draws one of each), trains on the cluster (a new
ParameterServerStrategy per trial in one chief process)."""

from __future__ import annotations

import json
import time

import pytest

from tests.test_distribute import TIMEOUT, _Cluster, _free_ports
from tests.tuning.conftest import TINY_FLAGS, write_tiny_csv


@pytest.mark.slow
def test_trials_train_on_a_parameter_server_cluster(tmp_path):
    csv = tmp_path / "tiny.csv"
    write_tiny_csv(csv)
    study = tmp_path / "study"
    ports = _free_ports(5)
    spec = {"chief": [f"127.0.0.1:{ports[0]}"],
            "worker": [f"127.0.0.1:{p}" for p in ports[1:3]],
            "ps": [f"127.0.0.1:{p}" for p in ports[3:5]]}
    cluster = _Cluster(tmp_path)
    deadline = time.monotonic() + TIMEOUT
    try:
        for job in ("ps", "worker"):
            for i in range(2):
                cwd = tmp_path / f"{job}{i}"
                cwd.mkdir()
                cluster.start(f"{job}{i}", ["-m", "tfmtnas.pipelines.server"],
                              {"cluster": spec, "task": {"type": job, "index": i}}, cwd)
        for job in ("ps", "worker"):
            for i in range(2):
                cluster.wait_for_text(f"{job}{i}", "serving at", deadline)
        cluster.start("chief", [
            "-m", "tfmtnas.pipelines.tune", "--strategy=parameter_server", *TINY_FLAGS,
            f"--csv_train={csv}", "--hp=architecture=mmoe|gumbel", "--hp=expert_units=8",
            "--hp=tower_units=4", "--hp=embedding_dim=4", "--hp=num_layers=1",
            "--max_trials=2", "--seed=3", "--epochs=2", "--child_epochs=1",
            "--batch_size=32", "--latency_calls=10", f"--model_dir={study}",
            f"--export_root={tmp_path / 'saved_models'}"],
            {"cluster": spec, "task": {"type": "chief", "index": 0}}, cwd=tmp_path)
        code = cluster.wait("chief", deadline)
    finally:
        cluster.stop()
    assert code == 0, cluster.log("chief")[-4000:]
    architectures = set()
    for trial_id in ("0", "1"):
        run = study / "tuner" / f"trial_{trial_id}" / "run"
        assert json.loads((run / "config.json").read_text())["strategy"] == "parameter_server"
        record = json.loads((run.parent / "record.json").read_text())
        assert set(record["validation"]) == {"click_auc", "click_loss", "buy_auc", "buy_loss"}
        assert record["cost"]["latency_ms"] > 0
        architectures.add(record["architecture"])
    assert architectures == {"mmoe", "gumbel"}
    assert (tmp_path / "saved_models" / "study" / "1" / "saved_model.pb").is_file()
