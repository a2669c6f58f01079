"""The README's demo end to end on the real Census-Income data (slow: `make test-slow`)."""

import re

import pytest

from tests.pipelines.conftest import run_module


@pytest.mark.slow
def test_demo_trains_searches_exports_and_prints_the_table(tmp_path):
    done = run_module("tfmtnas.pipelines.demo", "--baselines=mmoe", "--method=mtnas",
                      f"--model_dir={tmp_path / 'runs'}",
                      f"--export_root={tmp_path / 'saved_models'}", timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {m.group(1): (float(m.group(2)), float(m.group(3)))
            for m in re.finditer(r"^(mmoe|mtnas child)\s+(0\.\d+)\s+(0\.\d+)", done.stdout,
                                 re.M)}
    assert set(rows) == {"mmoe", "mtnas child"}, done.stdout[-3000:]
    for income, marital in rows.values():
        assert income > 0.94 and marital > 0.99
    exported = list((tmp_path / "saved_models").glob("census_*/1/saved_model.pb"))
    assert len(exported) == 1
    assert "curl -X POST http://localhost:8501/v1/models/census_" in done.stdout
    assert (tmp_path / "runs" / "mtnas" / "derived_spec.json").exists()


def test_demo_exports_the_best_model_by_validation_not_test(tmp_path, monkeypatch, capsys):
    """The model with the better validation AUC is exported."""
    import pathlib

    import tfmtnas.export
    import tfmtnas.export.client
    from tfmtnas.pipelines.census_demo import export_best

    exported = []
    monkeypatch.setattr(tfmtnas.export, "export_saved_model", lambda model, root, name: (
        exported.append((model, root, name)) or pathlib.Path(root, name, "1")))
    monkeypatch.setattr(tfmtnas.export.client, "curl_request", lambda path, name: "curl ...")
    # Validation says "ple" (mean 0.90 vs 0.85); the test split would have said "mmoe".
    models = {"mmoe": ("mmoe-model", {"income_auc": 0.80, "marital_auc": 0.90}),
              "ple": ("ple-model", {"income_auc": 0.85, "marital_auc": 0.95})}
    assert export_best(models, str(tmp_path)) == "ple"
    assert exported == [("ple-model", str(tmp_path), "census_ple")]
    assert "Best model by mean validation AUC: ple" in capsys.readouterr().out


def test_search_result_carries_child_validation_metrics(tiny_csv, tmp_path):
    import json

    from tfmtnas.data import load_dataset
    from tfmtnas.pipelines.searching import SearchConfig, run_search

    data = load_dataset("csv", train_path=tiny_csv, numeric=["x", "z"],
                        label_columns={"click": "binary", "watch": "regression"})
    res = run_search(SearchConfig(dataset="csv", method="gumbel", epochs=1, child_epochs=0,
                                  num_layers=1, num_experts=2, expert_units=(4,),
                                  tower_units=(2,), batch_size=64, jit_compile=False,
                                  model_dir=str(tmp_path / "s")), data=data, verbose=0)
    assert set(res.child_validation_metrics) == {"click_auc", "click_loss", "watch_rmse",
                                                 "watch_loss"}
    # Validation metrics are not the test metrics under another name.
    assert res.child_validation_metrics != res.child_metrics
    saved = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert saved["child_validation"] == pytest.approx(res.child_validation_metrics)
