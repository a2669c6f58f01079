"""A model dir resumes only the run that started it: same resolved config and same data."""

import json

import numpy as np
import pytest

from tests.pipelines.conftest import CSV_FLAGS, last_line, run_module
from tfmtnas.data import load_dataset
from tfmtnas.errors import ResumeMismatchError
from tfmtnas.pipelines.resume import FINGERPRINT_FILE, check_resume, data_fingerprint
from tfmtnas.pipelines.training import TrainConfig


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", num_train=64, num_validation=8, num_test=8, dim=4)


def _state(model_dir, name="backup"):
    (model_dir / name).mkdir(parents=True, exist_ok=True)
    (model_dir / name / "chief").write_text("state")


def test_same_config_and_data_resume(tmp_path, data):
    cfg = TrainConfig(dataset="synthetic", model_dir=str(tmp_path)).to_dict()
    check_resume(tmp_path, "backup", cfg, data)
    _state(tmp_path)
    check_resume(tmp_path, "backup", cfg, data)  # no error
    check_resume(tmp_path, "backup", {**cfg, "epochs": 9, "model_dir": "x"}, data)


def test_other_flags_are_refused_in_one_line(tmp_path, data):
    cfg = TrainConfig(dataset="synthetic", model_dir=str(tmp_path)).to_dict()
    check_resume(tmp_path, "backup", cfg, data)
    _state(tmp_path)
    with pytest.raises(ResumeMismatchError) as err:
        check_resume(tmp_path, "backup", {**cfg, "learning_rate": 0.1, "model": "ple"}, data)
    assert str(err.value) == (
        f"{tmp_path} holds an unfinished run with other settings (--learning_rate, --model "
        f"differ); rerun with the same flags and data to resume it, or start fresh with "
        f"another --model_dir (or after deleting {tmp_path / 'backup'}).")
    recorded = json.loads((tmp_path / FINGERPRINT_FILE).read_text())
    assert recorded["config"]["learning_rate"] == cfg["learning_rate"]  # not overwritten


def test_other_data_is_refused(tmp_path, data):
    cfg = TrainConfig(dataset="synthetic").to_dict()
    check_resume(tmp_path, "backup", cfg, data)
    _state(tmp_path)
    changed = load_dataset("synthetic", num_train=64, num_validation=8, num_test=8, dim=4)
    assert data_fingerprint(changed) == data_fingerprint(data)
    changed.train.labels["y1"] = changed.train.labels["y1"].copy()
    changed.train.labels["y1"][3] += np.float32(1e-3)
    with pytest.raises(ResumeMismatchError, match=r"\(the data differ\)"):
        check_resume(tmp_path, "backup", cfg, changed)


def test_state_without_fingerprint_is_refused(tmp_path, data):
    _state(tmp_path, "checkpoints")
    with pytest.raises(ResumeMismatchError, match="without a readable fingerprint.json"):
        check_resume(tmp_path, "checkpoints", {}, data)


def test_train_binary_refuses_a_resume_with_other_flags(tiny_csv, tmp_path):
    out = tmp_path / "run"
    args = [*CSV_FLAGS, f"--csv_train={tiny_csv}", "--batch_size=64", "--expert_units=4",
            "--tower_units=4", "--jit_compile=false", f"--model_dir={out}"]
    first = run_module("tfmtnas.pipelines.train", *args, "--epochs=1")
    assert first.returncode == 0, first.stderr[-2000:]
    _state(out)  # as a run killed mid-training leaves it
    done = run_module("tfmtnas.pipelines.train", *args, "--epochs=1", "--learning_rate=0.1")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert last_line(done.stderr) == (
        f"tfmtnas-train: error: {out} holds an unfinished run with other settings "
        f"(--learning_rate differ); rerun with the same flags and data to resume it, or start "
        f"fresh with another --model_dir (or after deleting {out / 'backup'}).")


def test_search_binary_refuses_a_resume_with_other_flags(tiny_csv, tmp_path):
    out = tmp_path / "search"
    args = [*CSV_FLAGS, f"--csv_train={tiny_csv}", "--method=gumbel", "--expert_units=4",
            "--tower_units=2", "--num_experts=2", "--batch_size=64", "--child_epochs=0",
            "--jit_compile=false", "--epochs=1", f"--model_dir={out}"]
    first = run_module("tfmtnas.pipelines.search", *args)
    assert first.returncode == 0, first.stderr[-2000:]
    done = run_module("tfmtnas.pipelines.search", *args, "--num_layers=1")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "holds an unfinished run with other settings (--num_layers differ)" in \
        last_line(done.stderr)


def test_prepared_fingerprint_is_content_not_place_or_timing(tiny_csv, tmp_path):
    import shutil

    from tfmtnas.data import load_prepared
    from tfmtnas.data.prepare import prepare

    def make(out, rows=None):
        source = tiny_csv
        if rows is not None:
            source = tmp_path / "fewer.csv"
            source.write_text("\n".join(tiny_csv.read_text().splitlines()[:rows]) + "\n")
        prepare([source], out, {"click": "binary", "watch": "regression"},
                categorical=["color"], numeric=["x", "z"], min_count=1,
                inline_vocabulary_max=1, progress=None)
        return data_fingerprint(load_prepared(out))

    first = make(tmp_path / "a")
    assert make(tmp_path / "b") == first  # prepared again: other timings in its manifest
    shutil.copytree(tmp_path / "a", tmp_path / "moved")
    assert data_fingerprint(load_prepared(tmp_path / "moved")) == first
    vocabulary = tmp_path / "moved" / "vocabularies" / "color.txt"
    vocabulary.write_text("\n".join(reversed(vocabulary.read_text().splitlines())) + "\n")
    assert data_fingerprint(load_prepared(tmp_path / "moved")) != first  # other ids
    assert make(tmp_path / "c", rows=300) != first  # other rows
