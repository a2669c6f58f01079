"""A study killed (SIGKILL) during a trial and rerun ends with exactly ``max_trials`` trials,
none of the finished ones run again; the windows in which keras-tuner's own files disagree
after a kill are repaired."""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest

from tests.pipelines.conftest import run_module
from tests.tuning.conftest import TINY_FLAGS, TINY_OPTIONS, TRIAL_FLAGS
from tfmtnas import fsutil
from tfmtnas.tuning import TuneConfig, run_tuning


def _tune(csv, study, *extra, fault=None):
    old = os.environ.get(fsutil.FAULT_ENV)
    if fault:
        os.environ[fsutil.FAULT_ENV] = fault
    try:
        return run_module("tfmtnas.pipelines.tune", *TINY_FLAGS, f"--csv_train={csv}",
                          *TRIAL_FLAGS, "--hp=architecture=mmoe|shared_bottom",
                          f"--model_dir={study}", "--noexport", *extra)
    finally:
        if old is None:
            os.environ.pop(fsutil.FAULT_ENV, None)
        else:
            os.environ[fsutil.FAULT_ENV] = old


def _records(study) -> dict[str, dict]:
    out = {}
    for d in sorted((study / "tuner").glob("trial_*")):
        path = d / "record.json"
        if path.is_file():
            out[d.name[len("trial_"):]] = json.loads(path.read_text())
    return out


def _trial(study, trial_id) -> dict:
    return json.loads((study / "tuner" / f"trial_{trial_id}" / "trial.json").read_text())


def _check_killed_and_rerun(csv, study, fault, killed_trial, finished_before, trials=4):
    ids = [str(i) for i in range(trials)]
    killed = _tune(csv, study, f"--max_trials={trials}", fault=fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    before = _records(study)
    assert sorted(before) == finished_before
    hps_at_kill = _trial(study, killed_trial)["hyperparameters"]["values"]
    assert _trial(study, killed_trial)["status"] == "RUNNING"

    rerun = _tune(csv, study, f"--max_trials={trials}")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = _records(study)
    assert sorted(after) == ids
    assert sorted(p.name for p in (study / "tuner").glob("trial_*")) == [f"trial_{i}"
                                                                         for i in ids]
    for trial_id in ids:
        assert _trial(study, trial_id)["status"] == "COMPLETED"
    # Finished trials were not run again: same record, same process, same end time.
    first_pid = before[finished_before[0]]["pid"] if finished_before else None
    for trial_id, record in before.items():
        assert after[trial_id] == record
    oracle = json.loads((study / "tuner" / "oracle.json").read_text())
    assert oracle["end_order"] == ids and oracle["retry_queue"] == []
    # The interrupted trial reran with the hyperparameters it had, in the second process.
    assert _trial(study, killed_trial)["hyperparameters"]["values"] == hps_at_kill
    second_pid = after[ids[-1]]["pid"]
    assert second_pid != first_pid
    return before, after, rerun.stdout, second_pid


def test_study_killed_during_a_trial_reruns_to_max_trials(tiny_tune_csv, tmp_path):
    study = tmp_path / "study"
    # Killed in trial 1 after its model trained, before its latency and record.
    before, after, stdout, second = _check_killed_and_rerun(
        tiny_tune_csv, study, "tune_trial_1_trained", "1", ["0"], trials=3)
    assert after["1"]["pid"] == second and after["0"]["pid"] != second
    assert "[tune] trial 1 (2/3) " in stdout and "(rerun after an interruption)" in stdout
    assert "1 finished before" in stdout
    # Its objective is the mean of the validation AUCs it recorded.
    trial = _trial(study, "1")
    assert trial["score"] == pytest.approx(
        (after["1"]["validation"]["click_auc"] + after["1"]["validation"]["buy_auc"]) / 2,
        abs=1e-12)


@pytest.mark.slow
def test_study_killed_after_a_record_reuses_it(tiny_tune_csv, tmp_path):
    """Killed after trial 1 wrote its record, before keras-tuner heard of the result: the
    rerun reports the recorded result without training again."""
    study = tmp_path / "study"
    _, after, stdout, second = _check_killed_and_rerun(
        tiny_tune_csv, study, "tune_trial_1_recorded", "1", ["0", "1"])
    assert after["1"]["pid"] == after["0"]["pid"] != second


@pytest.mark.slow
def test_study_killed_mid_training_continues_the_trial(tiny_tune_csv, tmp_path):
    """Killed after the first epoch of trial 0: the rerun continues it from its checkpoint
    and ends with the weights of an uninterrupted study's trial 0."""
    import numpy as np

    from tfmtnas.pipelines.training import load_model

    study = tmp_path / "study"
    _check_killed_and_rerun(tiny_tune_csv, study, "train_epoch_0", "0", [])
    whole = tmp_path / "whole"
    done = _tune(tiny_tune_csv, whole, "--max_trials=1")
    assert done.returncode == 0, done.stderr[-3000:]
    got = load_model(study / "tuner" / "trial_0" / "run").get_weights()
    want = load_model(whole / "tuner" / "trial_0" / "run").get_weights()
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def _small(tmp, csv, max_trials):
    return TuneConfig(dataset="csv", dataset_options={"train_path": str(csv), **TINY_OPTIONS},
                      space={"architecture": "mmoe", "expert_units": [4, 8], "tower_units": 4,
                             "embedding_dim": 4},
                      max_trials=max_trials, epochs=1, batch_size=64, jit_compile=False,
                      latency_calls=0, export=False, model_dir=str(tmp / "study"))


def test_kill_windows_inside_keras_tuner_are_repaired(tiny_tune_csv, tiny_tune_data,
                                                      tmp_path):
    quiet = lambda _: None  # noqa: E731
    run_tuning(_small(tmp_path, tiny_tune_csv, 2), data=tiny_tune_data, progress=quiet)
    project = tmp_path / "study" / "tuner"
    before = _records(tmp_path / "study")
    # Killed in end_trial after trial 1's file said COMPLETED, before oracle.json did.
    oracle = json.loads((project / "oracle.json").read_text())
    oracle["ongoing_trials"] = {"tuner0": "1"}
    oracle["end_order"].remove("1")
    (project / "oracle.json").write_text(json.dumps(oracle))
    # Killed in create_trial after trial 2's file was written, before oracle.json was.
    shutil.copytree(project / "trial_1", project / "trial_2")
    (project / "trial_2" / "record.json").unlink()
    orphan = _trial(tmp_path / "study", "1")
    orphan.update(trial_id="2", status="RUNNING", score=None)
    (project / "trial_2" / "trial.json").write_text(json.dumps(orphan))

    lines: list[str] = []
    result = run_tuning(_small(tmp_path, tiny_tune_csv, 3), data=tiny_tune_data,
                        progress=lines.append)
    started = [ln for ln in lines if " done in " in ln]
    assert len(started) == 1 and started[0].startswith("[tune] trial 2 done")
    assert [r["trial_id"] for r in result.records] == ["0", "1", "2"]
    after = _records(tmp_path / "study")
    assert after["0"] == before["0"] and after["1"] == before["1"]
    assert after["2"]["pid"] == os.getpid()
    oracle = json.loads((project / "oracle.json").read_text())
    assert oracle["end_order"] == ["0", "1", "2"] and oracle["ongoing_trials"] == {}
