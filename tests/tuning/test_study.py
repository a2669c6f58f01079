"""A whole study on tiny data, in this process: what each trial records, the objective the
oracle saw, the front, the selection and its export, reruns that resume or extend it."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tests.tuning.conftest import TINY_OPTIONS
from tfmtnas.errors import ResumeMismatchError, UserError
from tfmtnas.search import forward_flops, preset
from tfmtnas.tuning import TuneConfig, run_tuning
from tfmtnas.tuning.objective import Goal
from tfmtnas.tuning.pareto import pareto_front

SPACE = {"architecture": ["mmoe", "shared_bottom"], "expert_units": [4, 8], "tower_units": 4,
         "embedding_dim": 4, "num_experts": [2, 4]}


def _config(tmp, csv, **kw) -> TuneConfig:
    base = dict(dataset="csv", dataset_options={"train_path": str(csv), **TINY_OPTIONS},
                space=SPACE, oracle="random", max_trials=3, epochs=2, batch_size=64,
                jit_compile=False, latency_calls=20, model_dir=str(tmp / "study"),
                export_root=str(tmp / "saved_models"), export_name="tiny")
    base.update(kw)
    return TuneConfig(**base)


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_tune_csv, tiny_tune_data):
    tmp = tmp_path_factory.mktemp("tune_study")
    lines: list[str] = []
    cfg = _config(tmp, tiny_tune_csv)
    result = run_tuning(cfg, data=tiny_tune_data, progress=lines.append)
    return tmp, cfg, result, lines


def _trial_json(study_dir, trial_id):
    return json.loads((study_dir / "tuner" / f"trial_{trial_id}" / "trial.json").read_text())


def test_each_trial_records_metrics_and_costs(study, tiny_tune_data):
    tmp, cfg, result, lines = study
    assert [r["trial_id"] for r in result.records] == ["0", "1", "2"] and not result.failed
    input_dim = 1 * 4 + 2  # one categorical embedded in 4, two numerics
    for r in result.records:
        s = r["settings"]
        assert r["architecture"] in ("mmoe", "shared_bottom") and r["epochs"] == 2
        assert set(r["validation"]) == {"click_auc", "click_loss", "buy_auc", "buy_loss"}
        assert 0.0 <= r["validation"]["click_auc"] <= 1.0
        # FLOPs by hand: experts, gates and mixing of the sharing layer, then two towers
        # u -> 4 -> 1.
        u = s["expert_units"]
        if r["architecture"] == "mmoe":
            e = s["num_experts"]
            sharing = 2 * e * input_dim * u + 2 * (2 * e * u + 2 * input_dim * e)
        else:
            sharing = 2 * input_dim * u + 2 * (2 * u)
        towers = 2 * (2 * u * 4 + 2 * 4 * 1)
        assert r["cost"]["sharing_flops"] == sharing
        assert r["cost"]["flops"] == sharing + towers
        kind = r["architecture"]
        assert sharing == forward_flops(preset(kind, ["click", "buy"], (u,),
                                               num_experts=s["num_experts"]), input_dim)
        assert r["cost"]["latency_ms"] > 0 and r["cost"]["params"] > r["cost"]["sharing_params"]
        # The run dir is a tfmtnas-train model dir: its metrics are the record's.
        run = tmp / "study" / "tuner" / f"trial_{r['trial_id']}" / "run"
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["validation"] == r["validation"]
    assert sum("done in" in ln for ln in lines) == 3
    assert any(ln.startswith("[tune] trial 1 (2/3) ") for ln in lines)


def test_the_oracle_scored_each_trial_by_its_mean_validation_auc(study):
    tmp, _, result, _ = study
    for r in result.records:
        trial = _trial_json(tmp / "study", r["trial_id"])
        by_hand = (r["validation"]["click_auc"] + r["validation"]["buy_auc"]) / 2
        assert trial["status"] == "COMPLETED"
        assert trial["score"] == pytest.approx(by_hand, abs=1e-12)
        assert r["metrics"]["mean_auc"] == pytest.approx(by_hand, abs=1e-12)


def test_front_selection_and_export(study, tiny_tune_data):
    tmp, _, result, _ = study
    study_dir = tmp / "study"
    goals = [Goal("click_auc", "max"), Goal("buy_auc", "max"), Goal("flops", "min")]
    points = [r["metrics"] for r in result.records]
    expected = [result.records[i]["trial_id"] for i in pareto_front(points, goals)]
    assert result.front == expected
    saved = json.loads((study_dir / "pareto.json").read_text())
    assert [t["trial_id"] for t in saved["trials"]] == expected
    assert saved["metrics"] == ["max:click_auc", "max:buy_auc", "min:flops"]
    assert (study_dir / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert (study_dir / "pareto.md").read_text().count("\n| ") == len(expected) + 1
    trials = json.loads((study_dir / "trials.json").read_text())
    assert [t["status"] for t in trials] == ["COMPLETED"] * 3
    # The selected trial has the best mean validation AUC; its model is exported.
    best = max(result.records, key=lambda r: r["metrics"]["mean_auc"])
    assert result.selected["trial_id"] == best["trial_id"]
    assert result.export_path == tmp / "saved_models" / "tiny" / "1"
    selected = json.loads((study_dir / "selected.json").read_text())
    assert selected["trial_id"] == best["trial_id"]
    assert selected["export_path"] == str(result.export_path)
    from tfmtnas.pipelines.training import load_model

    run = study_dir / "tuner" / f"trial_{best['trial_id']}" / "run"
    model = load_model(run)
    rows = {"color": np.array(["red", "blue", "never"]), "x": np.array([1.0, -1.0, 0.0]),
            "z": np.array([0.0, 2.0, 0.5])}
    want = model.predict_raw(rows)
    served = tf.saved_model.load(str(result.export_path), tags=["serve"])
    got = served.signatures["serving_default"](
        color=tf.constant(rows["color"]), x=tf.constant(rows["x"], tf.float32),
        z=tf.constant(rows["z"], tf.float32))
    for task in ("click", "buy"):
        np.testing.assert_allclose(got[task].numpy(), want[task], atol=1e-5)


def test_rerun_resumes_extends_and_refuses_other_settings(study, tiny_tune_csv,
                                                          tiny_tune_data):
    tmp, cfg, result, _ = study
    copy = tmp / "copy"
    shutil.copytree(tmp / "study", copy / "study")
    before = {r["trial_id"]: (r["finished"], r["pid"]) for r in result.records}
    lines: list[str] = []
    again = run_tuning(_config(copy, tiny_tune_csv, export_root=str(tmp / "saved_models")),
                       data=tiny_tune_data, progress=lines.append)
    # Finished: no trial runs again, the same trial is selected and not exported twice.
    assert not any("done in" in ln for ln in lines)
    assert {r["trial_id"]: (r["finished"], r["pid"]) for r in again.records} == before
    assert again.export_path is None or again.export_path.name == "1"
    # A larger --max_trials extends the study by exactly the new trials.
    lines.clear()
    more = run_tuning(_config(copy, tiny_tune_csv, max_trials=4, export=False),
                      data=tiny_tune_data, progress=lines.append)
    assert [r["trial_id"] for r in more.records] == ["0", "1", "2", "3"]
    assert sum("done in" in ln for ln in lines) == 1
    assert {r["trial_id"]: (r["finished"], r["pid"]) for r in more.records[:3]} == before
    # Other per-trial settings would mix incomparable trials: refused in one line.
    with pytest.raises(ResumeMismatchError, match="--trial"):
        run_tuning(_config(copy, tiny_tune_csv, epochs=3), data=tiny_tune_data)
    with pytest.raises(ResumeMismatchError, match="--space"):
        run_tuning(_config(copy, tiny_tune_csv, space={**SPACE, "embedding_dim": 8}),
                   data=tiny_tune_data)


def test_select_rule_under_a_flops_budget_and_no_match(study, tiny_tune_csv, tiny_tune_data):
    tmp, _, result, _ = study
    cheapest = min(r["metrics"]["flops"] for r in result.records)
    copy = tmp / "select"
    shutil.copytree(tmp / "study", copy / "study")
    rule = f"buy_auc,flops<={cheapest:.0f}"
    chosen = run_tuning(_config(copy, tiny_tune_csv, select=rule, export=False),
                        data=tiny_tune_data, progress=lambda _: None)
    qualifying = [r for r in result.records if r["metrics"]["flops"] <= cheapest]
    assert chosen.selected["trial_id"] == max(
        qualifying, key=lambda r: r["metrics"]["buy_auc"])["trial_id"]
    assert chosen.export_path is None
    with pytest.raises(UserError, match="No finished trial meets"):
        run_tuning(_config(copy, tiny_tune_csv, select="mean_auc,flops<=1", export=False),
                   data=tiny_tune_data, progress=lambda _: None)


@pytest.mark.parametrize("changes, message", [
    ({"objective": "mean_rmse"}, "unknown metric 'mean_rmse'"),
    ({"select": "latency_ms,speed<=1"}, "unknown metric 'speed'"),
    ({"oracle": "grid"}, "--oracle must be one of"),
    ({"strategy": "multi_worker"}, "not 'multi_worker'"),
    ({"max_trials": None}, "--max_trials is required"),
    ({"space": {"architecture": ["mmoe"], "depth": 2}}, "unknown dimension"),
])
def test_bad_settings_are_user_errors(tmp_path, tiny_tune_csv, tiny_tune_data, changes,
                                      message):
    with pytest.raises(UserError, match=message):
        run_tuning(_config(tmp_path, tiny_tune_csv, **changes), data=tiny_tune_data)
    assert not (tmp_path / "study" / "tuner").exists()


def test_metrics_never_nan_in_records(study):
    _, _, result, _ = study
    for r in result.records:
        assert all(not math.isnan(v) for v in r["metrics"].values())
