"""Each oracle and each kind of data: Hyperband promotes a trial by continuing its
checkpoint, Bayesian optimisation proposes after its random start, a prepared (streamed)
folder and a tf.distribute strategy work as in-memory data does."""

from __future__ import annotations

import json

import pytest

from tests.tuning.conftest import TINY_OPTIONS
from tfmtnas.tuning import TuneConfig, run_tuning
from tfmtnas.tuning import tuner as tuner_module

SPACE = {"architecture": "mmoe", "expert_units": [4, 8], "tower_units": 4,
         "embedding_dim": 4}


def _config(tmp, csv, **kw) -> TuneConfig:
    base = dict(dataset="csv", dataset_options={"train_path": str(csv), **TINY_OPTIONS},
                space=SPACE, max_trials=3, epochs=2, batch_size=64, jit_compile=False,
                latency_calls=0, export=False, model_dir=str(tmp / "study"))
    base.update(kw)
    return TuneConfig(**base)


def _trial(tmp, trial_id):
    return json.loads((tmp / "study" / "tuner" / f"trial_{trial_id}" / "trial.json").read_text())


def test_hyperband_promotes_the_better_trial_from_its_checkpoint(tmp_path, tiny_tune_csv,
                                                                 tiny_tune_data, monkeypatch):
    continued = []
    original = tuner_module.continue_from

    def spy(previous, trial_dir):
        copied = original(previous, trial_dir)
        continued.append((previous.name, trial_dir.name, copied))
        return copied

    monkeypatch.setattr(tuner_module, "continue_from", spy)
    # max_epochs 2, factor 2: two 1-epoch trials, then the better one trained to 2 epochs.
    result = run_tuning(_config(tmp_path, tiny_tune_csv, oracle="hyperband",
                                hyperband_factor=2), data=tiny_tune_data,
                        progress=lambda _: None)
    assert [r["epochs"] for r in result.records] == [1, 1, 2]
    scores = {i: _trial(tmp_path, i)["score"] for i in ("0", "1")}
    best = max(scores, key=scores.get)
    values = _trial(tmp_path, "2")["hyperparameters"]["values"]
    assert values["tuner/trial_id"] == best
    assert (values["tuner/epochs"], values["tuner/initial_epoch"]) == (2, 1)
    assert continued == [(f"trial_{best}", "trial_2", True)]
    assert result.records[2]["settings"] == result.records[int(best)]["settings"]
    checkpoints = tmp_path / "study" / "tuner" / "trial_2" / "run" / "checkpoints"
    assert (checkpoints / "checkpoint").read_text().startswith('model_checkpoint_path: "ckpt-2"')


@pytest.mark.slow
def test_bayesian_optimisation_proposes_after_its_random_start(tmp_path, tiny_tune_csv,
                                                               tiny_tune_data):
    pytest.importorskip("sklearn")
    pytest.importorskip("scipy")
    cfg = _config(tmp_path, tiny_tune_csv, oracle="bayesian", max_trials=4, initial_points=2,
                  epochs=1, space={**SPACE, "learning_rate": {"min": 1e-3, "max": 1e-2}})
    result = run_tuning(cfg, data=tiny_tune_data, progress=lambda _: None)
    assert [r["trial_id"] for r in result.records] == ["0", "1", "2", "3"]
    oracle = json.loads((tmp_path / "study" / "tuner" / "oracle.json").read_text())
    assert oracle["num_initial_points"] == 2
    for r in result.records:
        assert 1e-3 <= r["settings"]["learning_rate"] <= 1e-2
        assert _trial(tmp_path, r["trial_id"])["score"] == pytest.approx(
            r["metrics"]["mean_auc"], abs=1e-12)


def test_a_prepared_folder_streams_into_every_trial(tmp_path, tiny_tune_data):
    from tfmtnas.data import load_prepared
    from tfmtnas.data.prepare.from_memory import write_prepared

    folder = tmp_path / "prepared"
    write_prepared(tiny_tune_data, folder)
    cfg = TuneConfig(dataset="prepared", data_dir=str(folder), space=SPACE, max_trials=2,
                     epochs=1, batch_size=64, jit_compile=False, latency_calls=10,
                     model_dir=str(tmp_path / "study"), export_root=str(tmp_path / "sm"))
    result = run_tuning(cfg, progress=lambda _: None)
    assert len(result.records) == 2 and result.export_path.is_dir()
    assert all(r["cost"]["latency_ms"] > 0 for r in result.records)
    config = json.loads((tmp_path / "study" / "tuner" / "trial_0" / "run" /
                         "config.json").read_text())
    assert config["dataset"] == "prepared" and config["data_dir"] == str(folder)
    assert load_prepared(folder).num_rows("train") == len(tiny_tune_data.train)


@pytest.mark.slow
def test_trials_run_under_a_mirrored_strategy(tmp_path, tiny_tune_csv, tiny_tune_data):
    """A zoo trial and a search-method trial, both under MirroredStrategy."""
    space = {**SPACE, "architecture": ["mmoe", "gumbel"], "num_layers": 1}
    result = run_tuning(_config(tmp_path, tiny_tune_csv, strategy="mirrored", max_trials=4,
                                space=space, child_epochs=1),
                        data=tiny_tune_data, progress=lambda _: None)
    assert len(result.records) == 4
    assert {r["architecture"] for r in result.records} == {"mmoe", "gumbel"}
    for r in result.records:
        config = json.loads((tmp_path / "study" / "tuner" / f"trial_{r['trial_id']}" /
                             "run" / "config.json").read_text())
        assert config["strategy"] == "mirrored"


@pytest.mark.slow
def test_time_budget_stops_starting_trials_and_a_rerun_continues(tmp_path, tiny_tune_csv,
                                                                 tiny_tune_data):
    lines: list[str] = []
    cfg = _config(tmp_path, tiny_tune_csv, epochs=1, time_budget=1e-3)
    first = run_tuning(cfg, data=tiny_tune_data, progress=lines.append)
    # The first trial always runs; none starts after the budget is spent.
    assert [r["trial_id"] for r in first.records] == ["0"] and first.stopped_by_budget
    assert any("time budget of 0.001 s spent: stopped after 1 trials" in ln for ln in lines)
    again = run_tuning(_config(tmp_path, tiny_tune_csv, epochs=1), data=tiny_tune_data,
                       progress=lambda _: None)
    assert [r["trial_id"] for r in again.records] == ["0", "1", "2"]
    assert again.records[0] == first.records[0] and not again.stopped_by_budget


@pytest.mark.slow
def test_diverging_trials_fail_alone_and_three_in_a_row_stop_the_study(tmp_path,
                                                                       tiny_tune_csv,
                                                                       tiny_tune_data):
    from tfmtnas.errors import UserError

    # A learning rate this large makes the loss NaN within the first epoch: each trial
    # fails (DivergedError), the oracle records it as FAILED and proposes the next one,
    # until keras-tuner's limit of three failures in a row.
    space = {**SPACE, "learning_rate": 1e12}
    with pytest.raises(UserError, match="3 trials in a row failed, the last with: .*diverged"):
        run_tuning(_config(tmp_path, tiny_tune_csv, epochs=1, max_trials=5, space=space),
                   data=tiny_tune_data, progress=lambda _: None)
    statuses = [_trial(tmp_path, i)["status"] for i in ("0", "1", "2")]
    # keras-tuner raises on the third failure before it saves that trial's file, so a
    # rerun would try trial 2 once more (and stop again if it fails again).
    assert statuses == ["FAILED", "FAILED", "RUNNING"]
    assert not (tmp_path / "study" / "tuner" / "trial_3").exists()
