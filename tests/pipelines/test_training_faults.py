"""Faults during training: a diverging loss, non-finite numbers in JSON, interrupted saves."""

import json
import math
import os

import numpy as np
import pytest

from tests.pipelines.conftest import CSV_FLAGS, last_line, run_module
from tfmtnas.data import load_dataset
from tfmtnas.errors import DivergedError, UserError
from tfmtnas.pipelines.training import (
    TrainConfig,
    finite_json,
    load_model,
    save_model,
    train_and_evaluate,
)


@pytest.fixture(scope="module")
def synthetic():
    return load_dataset("synthetic", num_train=512, num_validation=64, num_test=64, dim=8)


def _cfg(tmp_path, **kwargs):
    base = dict(dataset="synthetic", model="mmoe", expert_units=(4,), num_experts=2,
                tower_units=(4,), epochs=2, batch_size=64, jit_compile=False,
                model_dir=str(tmp_path / "run"))
    return TrainConfig(**{**base, **kwargs})


def test_diverging_loss_stops_the_run_and_saves_nothing(synthetic, tmp_path):
    cfg = _cfg(tmp_path, learning_rate=1e30, optimizer="adam")
    with pytest.raises(DivergedError, match=r"^Training diverged: loss became (nan|inf) in "
                                            r"epoch 1; nothing of this epoch was saved\. "
                                            r"Lower --learning_rate"):
        train_and_evaluate(cfg, data=synthetic, verbose=0)
    run = tmp_path / "run"
    assert not (run / "metrics.json").exists() and not (run / "model.json").exists()
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").rglob("*.index"))


def test_binary_exits_2_with_one_line_on_a_diverging_loss(tiny_csv, tmp_path):
    done = run_module("tfmtnas.pipelines.train", *CSV_FLAGS, f"--csv_train={tiny_csv}",
                      "--epochs=2", "--batch_size=64", "--expert_units=4", "--tower_units=4",
                      "--learning_rate=1e30", "--optimizer=adam",
                      f"--model_dir={tmp_path / 'run'}")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert last_line(done.stderr).startswith("tfmtnas-train: error: Training diverged: ")
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_json_files_never_hold_nan_tokens():
    text = finite_json({"test": {"auc": float("nan"), "rmse": float("inf"), "loss": 0.25},
                        "seconds": [1.0, float("-inf")]})
    assert json.loads(text) == {"test": {"auc": None, "rmse": None, "loss": 0.25},
                                "seconds": [1.0, None]}
    assert "NaN" not in text and "Infinity" not in text


@pytest.mark.parametrize("field, value", [("learning_rate", math.inf),
                                          ("learning_rate", math.nan)])
def test_non_finite_config_is_refused_before_anything_is_written(tmp_path, field, value):
    cfg = _cfg(tmp_path, **{field: value})
    with pytest.raises(UserError, match=rf"^{field} is {value}: give a finite number "
                                        rf"\(--{field}\)\.$"):
        train_and_evaluate(cfg, verbose=0)
    assert not (tmp_path / "run").exists()


def test_metrics_and_config_are_strict_json(synthetic, tmp_path):
    train_and_evaluate(_cfg(tmp_path, epochs=1), data=synthetic, verbose=0)
    for name in ("config.json", "metrics.json", "model.json"):
        text = (tmp_path / "run" / name).read_text()
        json.loads(text, parse_constant=lambda c, name=name: pytest.fail(f"{name}: {c}"))
    assert not list((tmp_path / "run").glob(".*"))  # no temporary files left


def test_weights_are_written_before_the_file_naming_them(synthetic, tmp_path, monkeypatch):
    first = train_and_evaluate(_cfg(tmp_path, epochs=1), data=synthetic, verbose=0).model
    run = tmp_path / "run"
    before = [w.copy() for w in load_model(run).get_weights()]
    model_json = (run / "model.json").read_text()
    second = train_and_evaluate(_cfg(tmp_path / "b", epochs=1, seed=3), data=synthetic,
                                verbose=0).model

    def killed(path, *args, **kwargs):  # the process dies while writing the new weights
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path + ".index", "w").close()
        raise KeyboardInterrupt

    monkeypatch.setattr(second, "save_weights", killed)
    with pytest.raises(KeyboardInterrupt):
        save_model(second, run)
    # The old model.json still names the old, complete weights.
    assert (run / "model.json").read_text() == model_json
    for a, b in zip(before, load_model(run).get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not list(run.glob(".weights-*"))
    del first


def test_a_run_without_a_model_dir_reads_each_epochs_own_order(synthetic, tmp_path):
    # With a model dir, EpochCheckpoints moves the data epoch on; without one, NextEpoch
    # must, or every epoch would re-read epoch 0's shuffle and the weights would differ.
    with_dir = train_and_evaluate(_cfg(tmp_path, epochs=3), synthetic).model
    without = train_and_evaluate(_cfg(tmp_path, epochs=3, model_dir=None), synthetic).model
    for a, b in zip(with_dir.get_weights(), without.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
