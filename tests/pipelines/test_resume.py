"""A model dir resumes only the run that started it: same resolved config and same data."""

import json

import numpy as np
import pytest

from tests.pipelines.conftest import CSV_FLAGS, last_line, run_module
from tfmtnas.data import load_dataset
from tfmtnas.errors import ResumeMismatchError
from tfmtnas.pipelines.resume import (
    CHECKPOINTS,
    FINGERPRINT_FILE,
    EpochCheckpoints,
    check_resume,
    data_fingerprint,
)
from tfmtnas.pipelines.training import TrainConfig


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", num_train=64, num_validation=8, num_test=8, dim=4)


def _state(model_dir, name=CHECKPOINTS):
    (model_dir / name).mkdir(parents=True, exist_ok=True)
    (model_dir / name / "chief").write_text("state")


def test_same_config_and_data_resume(tmp_path, data):
    cfg = TrainConfig(dataset="synthetic", model_dir=str(tmp_path)).to_dict()
    check_resume(tmp_path, CHECKPOINTS, cfg, data)
    _state(tmp_path)
    check_resume(tmp_path, CHECKPOINTS, cfg, data)  # no error
    check_resume(tmp_path, CHECKPOINTS, {**cfg, "epochs": 9, "model_dir": "x"}, data)


def test_other_flags_are_refused_in_one_line(tmp_path, data):
    cfg = TrainConfig(dataset="synthetic", model_dir=str(tmp_path)).to_dict()
    check_resume(tmp_path, CHECKPOINTS, cfg, data)
    _state(tmp_path)
    with pytest.raises(ResumeMismatchError) as err:
        check_resume(tmp_path, CHECKPOINTS, {**cfg, "learning_rate": 0.1, "model": "ple"}, data)
    assert str(err.value) == (
        f"{tmp_path} holds a run with other settings (--learning_rate, --model "
        f"differ); rerun with the same flags and data to resume or continue it, or start "
        f"fresh with another --model_dir (or after deleting {tmp_path / CHECKPOINTS}).")
    recorded = json.loads((tmp_path / FINGERPRINT_FILE).read_text())
    assert recorded["config"]["learning_rate"] == cfg["learning_rate"]  # not overwritten


def test_other_data_is_refused(tmp_path, data):
    cfg = TrainConfig(dataset="synthetic").to_dict()
    check_resume(tmp_path, CHECKPOINTS, cfg, data)
    _state(tmp_path)
    changed = load_dataset("synthetic", num_train=64, num_validation=8, num_test=8, dim=4)
    assert data_fingerprint(changed) == data_fingerprint(data)
    changed.train.labels["y1"] = changed.train.labels["y1"].copy()
    changed.train.labels["y1"][3] += np.float32(1e-3)
    with pytest.raises(ResumeMismatchError, match=r"\(the data differ\)"):
        check_resume(tmp_path, CHECKPOINTS, cfg, changed)


def test_state_without_fingerprint_is_refused(tmp_path, data):
    _state(tmp_path)
    with pytest.raises(ResumeMismatchError, match="without a readable fingerprint.json"):
        check_resume(tmp_path, CHECKPOINTS, {}, data)


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
        f"tfmtnas-train: error: {out} holds a run with other settings "
        f"(--learning_rate differ); rerun with the same flags and data to resume or continue "
        f"it, or start fresh with another --model_dir (or after deleting "
        f"{out / 'checkpoints'}).")


def test_search_binary_refuses_a_resume_with_other_flags(tiny_csv, tmp_path):
    out = tmp_path / "search"
    args = [*CSV_FLAGS, f"--csv_train={tiny_csv}", "--method=gumbel", "--expert_units=4",
            "--tower_units=2", "--num_experts=2", "--batch_size=64", "--child_epochs=0",
            "--jit_compile=false", "--epochs=1", f"--model_dir={out}"]
    first = run_module("tfmtnas.pipelines.search", *args)
    assert first.returncode == 0, first.stderr[-2000:]
    done = run_module("tfmtnas.pipelines.search", *args, "--num_layers=1")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "holds a run with other settings (--num_layers differ)" in \
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


def _fit_synthetic(data, model_dir, epochs, chief=True):
    """A fresh MMoE trained to ``epochs`` under EpochCheckpoints in ``model_dir``."""
    import tensorflow as tf

    from tfmtnas import keras
    from tfmtnas.data import split_dataset
    from tfmtnas.pipelines.training import build_model

    keras.utils.set_random_seed(0)
    cfg = TrainConfig(dataset="synthetic", expert_units=(4,), num_experts=2, tower_units=(2,),
                      batch_size=16, learning_rate=0.01, jit_compile=False)
    epoch = tf.Variable(0, dtype=tf.int64)
    model = build_model(data, cfg)
    resume = EpochCheckpoints(model_dir / CHECKPOINTS, epoch, chief=chief, model=model)
    start = resume.restore()
    train = split_dataset(data, "train", 16, shuffle=True, seed=0, epoch=epoch)
    model.fit(train, epochs=epochs, initial_epoch=start, callbacks=[resume], verbose=0)
    return model, start, epoch


def test_epoch_checkpoints_continue_a_run_to_the_uninterrupted_weights(tmp_path, data):
    whole, start, _ = _fit_synthetic(data, tmp_path / "whole", epochs=3)
    assert start == 0
    _fit_synthetic(data, tmp_path / "parts", epochs=2)
    # A new process's rerun with more epochs: restored at epoch 2, trains epoch 3 only.
    parts, start, epoch = _fit_synthetic(data, tmp_path / "parts", epochs=3)
    assert start == 2 and int(epoch) == 3
    assert int(parts.optimizer.iterations) == int(whole.optimizer.iterations) == 3 * 4
    for got, want in zip(parts.weights, whole.weights, strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-7)
    assert sorted(p.name for p in (tmp_path / "parts" / CHECKPOINTS).iterdir()) == [
        "checkpoint", "ckpt-3.data-00000-of-00001", "ckpt-3.index"]  # one kept


def test_epoch_checkpoints_of_other_workers_write_nothing(tmp_path, data):
    _fit_synthetic(data, tmp_path, epochs=1, chief=False)
    assert not (tmp_path / CHECKPOINTS).exists()
