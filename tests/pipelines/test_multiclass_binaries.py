"""The binaries with a multiclass label column: train, export and evaluate agree (slow)."""

import json

import numpy as np
import pytest

from tests.pipelines.conftest import last_line, run_module


@pytest.mark.slow  # three binaries in subprocesses: about a minute here
def test_train_export_evaluate_with_a_multiclass_label(tmp_path):
    rng = np.random.default_rng(0)
    n = 600
    color = rng.choice(["red", "green", "blue"], n)
    x = rng.normal(size=n)
    shade = np.searchsorted(["blue", "green", "red"], color)  # the class is the colour id
    lines = ["color,x,shade,click"] + [
        f"{c},{a:.4f},{'' if i % 9 == 0 else s},{int(a > 0)}"
        for i, (c, a, s) in enumerate(zip(color, x, shade))]
    (tmp_path / "log.csv").write_text("\n".join(lines) + "\n")
    run = tmp_path / "run"
    done = run_module("tfmtnas.pipelines.train", "--dataset=csv",
                      f"--csv_train={tmp_path / 'log.csv'}", "--csv_numeric=x",
                      "--csv_labels=shade:multiclass:3,click:binary", "--model=mmoe",
                      "--epochs=6", "--batch_size=32", "--expert_units=8", "--tower_units=4",
                      "--learning_rate=0.02", f"--model_dir={run}")
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((run / "config.json").read_text())
    assert config["dataset_options"]["label_columns"] == {"shade": "multiclass:3",
                                                          "click": "binary"}
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert test["shade_accuracy"] > 0.9 and "shade_top5_accuracy" not in test
    done = run_module("tfmtnas.pipelines.export", f"--model_dir={run}",
                      f"--export_root={tmp_path / 'saved_models'}")
    assert done.returncode == 0, done.stderr[-3000:]
    done = run_module("tfmtnas.pipelines.evaluate",
                      f"--saved_model={tmp_path / 'saved_models' / 'run' / '1'}",
                      "--split=test")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout[done.stdout.index("{"):])
    assert report["metrics"]["shade_accuracy"] == pytest.approx(test["shade_accuracy"],
                                                                abs=1e-6)
    # A class id beyond K-1 is a one-line error naming file, line and column.
    (tmp_path / "bad.csv").write_text("color,x,shade,click\nred,1.0,3,1\n")
    done = run_module("tfmtnas.pipelines.train", "--dataset=csv",
                      f"--csv_train={tmp_path / 'bad.csv'}", "--csv_numeric=x",
                      "--csv_labels=shade:multiclass:3,click:binary", "--epochs=1",
                      f"--model_dir={tmp_path / 'bad_run'}")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert last_line(done.stderr).endswith(
        "bad.csv:2: multiclass label column 'shade' expects a class id 0..2 (an integer) or "
        "empty, got 3")
