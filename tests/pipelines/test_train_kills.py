"""tfmtnas-train and tfmtnas-search killed (SIGKILL) at three points and rerun: each ends
with the weights of an uninterrupted run, the search also with its derived spec. The
per-epoch checkpoint restores weights, optimizer state and step counters, and each epoch's
input order is a function of (seed, epoch), not of how many epochs this process ran."""

import os
import signal

import numpy as np
import pytest

from tests.pipelines.conftest import CSV_FLAGS, run_module
from tfmtnas import fsutil


def _train(tiny_csv, model_dir, fault=None):
    env_fault = {fsutil.FAULT_ENV: fault} if fault else {}
    old = {k: os.environ.get(k) for k in env_fault}
    os.environ.update(env_fault)
    try:
        return run_module("tfmtnas.pipelines.train", *CSV_FLAGS, f"--csv_train={tiny_csv}",
                          "--model=mmoe", "--epochs=4", "--batch_size=32", "--expert_units=8",
                          "--tower_units=4", "--learning_rate=0.01", f"--model_dir={model_dir}")
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _weights(model_dir):
    from tfmtnas.pipelines.training import load_model

    return [w.numpy() for w in load_model(model_dir).weights]


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["train_epoch_0", "train_batch_2_3", "train_epoch_3"])
def test_killed_training_reruns_to_the_uninterrupted_weights(tiny_csv, tmp_path, fault):
    done = _train(tiny_csv, tmp_path / "whole")
    assert done.returncode == 0, done.stderr[-2000:]
    killed = _train(tiny_csv, tmp_path / "killed", fault=fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (tmp_path / "killed" / "metrics.json").exists()
    rerun = _train(tiny_csv, tmp_path / "killed")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    for got, want in zip(_weights(tmp_path / "killed"), _weights(tmp_path / "whole"),
                         strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("method, fault", [
    ("gumbel", "search_epoch_0"), ("gumbel", "search_batch_1_2"), ("gumbel", "search_epoch_2"),
    # MTL-NAS: the 50/50 split redrawn each epoch and the NDDR layers' own optimizer.
    ("mtlnas", "search_epoch_0"), ("mtlnas", "search_batch_1_2")])
def test_killed_search_reruns_to_the_uninterrupted_spec(tiny_csv, tmp_path, method, fault):
    def search(model_dir, fault=None):
        env = {fsutil.FAULT_ENV: fault} if fault else {}
        os.environ.update(env)
        try:
            return run_module("tfmtnas.pipelines.search", *CSV_FLAGS,
                              f"--csv_train={tiny_csv}", f"--method={method}", "--epochs=3",
                              "--batch_size=32", "--expert_units=4", "--tower_units=4",
                              "--child=inherit", f"--model_dir={model_dir}")
        finally:
            os.environ.pop(fsutil.FAULT_ENV, None)

    assert search(tmp_path / "whole").returncode == 0
    assert search(tmp_path / "killed", fault).returncode == -signal.SIGKILL
    rerun = search(tmp_path / "killed")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    # The same derived spec, and the same weights: the child inherits the supernet's.
    assert ((tmp_path / "killed" / "derived_spec.json").read_text()
            == (tmp_path / "whole" / "derived_spec.json").read_text())
    for got, want in zip(_weights(tmp_path / "killed" / "child"),
                         _weights(tmp_path / "whole" / "child"), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
