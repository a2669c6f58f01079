"""tfmtnas-train end to end on tiny data, and its one-line errors for bad input."""

import json

from tests.pipelines.conftest import CSV_FLAGS, last_line, run_module


def test_train_writes_config_metrics_and_a_reloadable_model(tiny_csv, tmp_path):
    out = tmp_path / "run"
    done = run_module("tfmtnas.pipelines.train", *CSV_FLAGS, f"--csv_train={tiny_csv}",
                      "--model=ple", "--epochs=8", "--batch_size=32", "--expert_units=8",
                      "--tower_units=4", f"--model_dir={out}", "--learning_rate=0.01")
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "ple" and config["epochs"] == 8
    assert config["dataset_options"]["label_columns"] == {"click": "binary",
                                                          "watch": "regression"}
    metrics = json.loads((out / "metrics.json").read_text())
    # The click label is a threshold of x and color: a trained model separates it well.
    assert metrics["test"]["click_auc"] > 0.85
    assert 0 < metrics["test"]["watch_rmse"] < 2.0
    assert "click_loss" in done.stdout + done.stderr  # per-task loss in the progress logs
    # TensorFlow's INFO lines (checkpoint sharding each epoch) stay out without --verbosity.
    assert "Sharding callback" not in done.stderr

    from tfmtnas.pipelines.training import load_model

    model = load_model(out)
    assert model.get_config()["sharing"]["kind"] == "ple"


def _error(done, *needles):
    assert done.returncode != 0
    line = last_line(done.stderr)
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    for needle in needles:
        assert needle in line, line
    return line


def test_csv_row_with_wrong_field_count_names_file_and_line(tiny_csv, tmp_path):
    lines = tiny_csv.read_text().splitlines()
    lines[7] += ",extra"
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    done = run_module("tfmtnas.pipelines.train", *CSV_FLAGS, f"--csv_train={bad}",
                      "--epochs=1")
    _error(done, "tfmtnas-train: error:", "bad.csv:8", "expected 5 fields, got 6")


def test_text_in_numeric_column_names_file_line_and_column(tiny_csv, tmp_path):
    lines = tiny_csv.read_text().splitlines()
    parts = lines[3].split(",")
    parts[1] = "abc"
    lines[3] = ",".join(parts)
    bad = tmp_path / "text.csv"
    bad.write_text("\n".join(lines) + "\n")
    done = run_module("tfmtnas.pipelines.train", *CSV_FLAGS, f"--csv_train={bad}",
                      "--epochs=1")
    _error(done, "text.csv:4", "'x'", "'abc'")


def test_missing_file_and_missing_data_dir(tmp_path):
    done = run_module("tfmtnas.pipelines.train", *CSV_FLAGS,
                      f"--csv_train={tmp_path / 'nope.csv'}", "--epochs=1")
    _error(done, "nope.csv")
    done = run_module("tfmtnas.pipelines.train", "--dataset=census",
                      f"--data_dir={tmp_path / 'no_such_dir'}", "--epochs=1")
    _error(done, "no_such_dir")


def test_absent_label_column_is_named(tiny_csv):
    done = run_module("tfmtnas.pipelines.train", "--dataset=csv", f"--csv_train={tiny_csv}",
                      "--csv_labels=clicks:binary", "--csv_numeric=x,z", "--epochs=1")
    _error(done, "clicks")


def test_unknown_model_kind_and_bad_flag_value():
    done = run_module("tfmtnas.pipelines.train", "--model=moe")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "--model" in done.stderr and "mmoe" in done.stderr
    done = run_module("tfmtnas.pipelines.train", "--expert_units=64,abc")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "--expert_units must be a comma-separated list of positive integers" in done.stderr


def test_non_finite_cells_error_by_default_and_impute_on_request(tiny_csv, tmp_path):
    lines = tiny_csv.read_text().splitlines()
    for i, bad in ((5, "inf"), (9, "nan"), (12, "")):
        parts = lines[i].split(",")
        parts[1] = bad
        lines[i] = ",".join(parts)
    bad = tmp_path / "nonfinite.csv"
    bad.write_text("\n".join(lines) + "\n")
    done = run_module("tfmtnas.pipelines.train", *CSV_FLAGS, f"--csv_train={bad}",
                      "--epochs=1")
    assert done.returncode == 2
    _error(done, "nonfinite.csv:6: field 2 (column 'x'): 'inf' is not a finite number",
           "--csv_nonfinite=impute")
    out = tmp_path / "run"
    done = run_module("tfmtnas.pipelines.train", *CSV_FLAGS, f"--csv_train={bad}",
                      "--csv_nonfinite=impute", "--epochs=1", "--batch_size=64",
                      "--expert_units=4", "--tower_units=4", f"--model_dir={out}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "empty or non-finite cells imputed with the training mean" in done.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert all(v == v for split in ("validation", "test") for v in metrics[split].values())
