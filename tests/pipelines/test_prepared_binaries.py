"""The binaries on a prepared folder: prepare -> train -> evaluate -> export -> search.

The tiny CSV's ``color`` column goes to a vocabulary *file* (``inline_vocabulary_max=1``),
so the run also covers file vocabularies in model dirs and exports end to end.
"""

import json

import numpy as np
import pytest
import tensorflow as tf

from tests.pipelines.conftest import run_module
from tfmtnas.data.prepare import prepare


@pytest.fixture
def prepared(tiny_csv, tmp_path):
    out = tmp_path / "prepared"
    prepare([tiny_csv], out, {"click": "binary", "watch": "regression"},
            categorical=["color"], numeric=["x", "z"], min_count=1, inline_vocabulary_max=1,
            num_shards=3, progress=None)
    return out


def test_train_evaluate_export_on_a_prepared_folder(prepared, tmp_path):
    spec = json.loads((prepared / "spec.json").read_text())["features"]
    assert spec["categorical"][0]["vocabulary_file"] == "vocabularies/color.txt"
    run = tmp_path / "run"
    done = run_module("tfmtnas.pipelines.train", "--dataset=prepared",
                      f"--data_dir={prepared}", "--model=mmoe", "--epochs=8",
                      "--batch_size=32", "--expert_units=8", "--tower_units=4",
                      "--learning_rate=0.01", f"--model_dir={run}")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    # click is a threshold of x and color: a model trained from the shards separates it.
    assert metrics["test"]["click_auc"] > 0.85, metrics
    model_json = json.loads((run / "model.json").read_text())
    assert model_json["spec"]["categorical"][0]["vocabulary_file"] == "vocabularies/color.txt"
    assert (run / "vocabularies" / "color.txt").read_text() == (
        prepared / "vocabularies" / "color.txt").read_text()

    # tfmtnas-evaluate streams the test split from the shards: the metrics of training.
    done = run_module("tfmtnas.pipelines.evaluate", f"--model_dir={run}", "--split=test")
    assert done.returncode == 0, done.stderr[-3000:]
    evaluated = json.loads(done.stdout[done.stdout.index("{"):])
    assert evaluated["dataset"] == "prepared"
    assert evaluated["metrics"]["click_auc"] == pytest.approx(metrics["test"]["click_auc"],
                                                              abs=2e-3)

    root = tmp_path / "saved_models"
    done = run_module("tfmtnas.pipelines.export", f"--model_dir={run}",
                      f"--export_root={root}", "--name=clicks")
    assert done.returncode == 0, done.stderr[-3000:]
    version = root / "clicks" / "1"
    assert (version / "assets" / "color.txt").exists()
    loaded = tf.saved_model.load(str(version), tags=["serve"])
    out = loaded.signatures["serving_default"](
        color=tf.constant(["red", "blue", "never-seen"]), x=tf.constant([1.0, -1.0, 0.0]),
        z=tf.constant([0.0, 0.0, 0.0]))
    click = out["click"].numpy()
    assert np.all((click > 0) & (click < 1)) and click[0] > click[1]


def test_search_on_a_prepared_folder_uses_two_streams(prepared, tmp_path):
    run = tmp_path / "search"
    done = run_module("tfmtnas.pipelines.search", "--dataset=prepared",
                      f"--data_dir={prepared}", "--method=mtlnas", "--epochs=2",
                      "--batch_size=32", "--expert_units=4", "--tower_units=4",
                      "--child=inherit", f"--model_dir={run}")
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["child_test"]) >= {"click_auc", "watch_rmse"}
    assert (run / "child" / "vocabularies" / "color.txt").exists()
