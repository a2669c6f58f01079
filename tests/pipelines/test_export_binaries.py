"""``tfmtnas-export`` and ``tfmtnas-evaluate`` end to end on a tiny CSV dataset."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from absl.testing import flagsaver

from tests.pipelines.conftest import binary_module
from tfmtnas.data import load_dataset
from tfmtnas.export import existing_versions, read_metadata
from tfmtnas.pipelines.evaluating import Progress, binary_auc, rmse
from tfmtnas.pipelines.exporting import export_model_dir
from tfmtnas.pipelines.training import TrainConfig, load_model, train_and_evaluate

CSV_OPTIONS = {"label_columns": {"click": "binary", "watch": "regression"},
               "numeric": ["price", "age"]}


@pytest.fixture
def export_main():
    """``tfmtnas-export``'s main, its flags defined in this process."""
    with binary_module("tfmtnas.pipelines.export") as module:
        yield module.main


@pytest.fixture
def evaluate_main():
    """``tfmtnas-evaluate``'s main, its flags defined in this process."""
    with binary_module("tfmtnas.pipelines.evaluate") as module:
        yield module.main


def _write_csv(path, n=600, seed=0):
    rng = np.random.default_rng(seed)
    color = rng.choice(["red", "blue", "green"], n)
    item = rng.choice([f"i{k}" for k in range(12)], n)
    price = rng.lognormal(2.0, 0.7, n)
    age = rng.normal(40, 10, n)
    z = (color == "red") * 1.5 - 0.05 * (age - 40) + rng.normal(0, 0.5, n)
    lines = ["color,item,price,age,click,watch"]
    lines += [f"{c},{i},{p:.4f},{a:.2f},{int(v > 0.5)},{np.log1p(p) + 0.5 * v:.4f}"
              for c, i, p, a, v in zip(color, item, price, age, z)]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp("bins")
    csv = work / "log.csv"
    _write_csv(csv)
    options = dict(CSV_OPTIONS, train_path=str(csv))
    cfg = TrainConfig(dataset="csv", dataset_options=options, model="mmoe",
                      expert_units=(16,), num_experts=2, tower_units=(8,), epochs=2,
                      batch_size=64, jit_compile=False, model_dir=str(work / "runs" / "mmoe"))
    result = train_and_evaluate(cfg, verbose=0)
    return work, cfg, result


def _export(main, capsys, **flag_values):
    with flagsaver.flagsaver(**flag_values):
        main(["tfmtnas-export"])
    return capsys.readouterr().out


def _evaluate(main, capsys, **flag_values):
    with flagsaver.flagsaver(**flag_values):
        main(["tfmtnas-evaluate"])
    return json.loads(capsys.readouterr().out)


def _user_error(capsys, main, argv, **flag_values) -> str:
    with flagsaver.flagsaver(**flag_values), pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_export_prints_path_and_a_sample_request(export_main, trained, capsys):
    work, cfg, _ = trained
    root = work / "saved_models"
    out = _export(export_main, capsys, model_dir=cfg.model_dir, export_root=str(root))
    path = root / "mmoe" / "1"
    assert f"to {path}" in out
    assert (path / "saved_model.pb").is_file()
    body = out.split("-d '")[1].split("'")[0]
    request = json.loads(body)
    assert request["signature_name"] == "serving_default"
    assert sorted(request["instances"][0]) == ["age", "color", "item", "price"]
    assert "http://localhost:8501/v1/models/mmoe:predict" in out
    meta = read_metadata(path)
    assert meta.extra["train_config"]["dataset"] == "csv"
    assert [t.name for t in meta.tasks] == ["click", "watch"]


def test_export_versions_overwrite_and_name(export_main, trained, capsys):
    work, cfg, _ = trained
    root = work / "versions"
    flag_values = {"model_dir": cfg.model_dir, "export_root": str(root), "name": "ranker"}
    _export(export_main, capsys, **flag_values, version=4)
    _export(export_main, capsys, **flag_values)
    assert existing_versions(root / "ranker") == [4, 5]
    err = _user_error(capsys, export_main, ["x"], **flag_values, version=4)
    assert err.startswith("tfmtnas-export: error: Version 4 of ")
    assert "--overwrite" in err
    out = _export(export_main, capsys, **flag_values, version=4, overwrite=True,
                  warmup_requests=True, serving_jit_compile=True)
    assert f"to {root / 'ranker' / '4'}" in out
    assert read_metadata(root / "ranker" / "4").jit_compile is True
    assert (root / "ranker" / "4" / "assets.extra" / "tf_serving_warmup_requests").is_file()
    assert existing_versions(root / "ranker") == [4, 5]


def test_export_bad_input_is_one_line(export_main, trained, capsys, tmp_path):
    work, cfg, _ = trained
    err = _user_error(capsys, export_main, ["x"], model_dir=str(tmp_path / "nope"))
    assert err == f"tfmtnas-export: error: --model_dir {tmp_path / 'nope'} does not exist."
    err = _user_error(capsys, export_main, ["x"], model_dir=str(tmp_path))
    assert "model.json is missing" in err
    err = _user_error(capsys, export_main, ["x"], model_dir=None)
    assert "--model_dir is required" in err
    err = _user_error(capsys, export_main, ["x"], model_dir=cfg.model_dir,
                      export_root=str(tmp_path), name="bad name")
    assert "Invalid model name 'bad name'" in err


def test_export_finds_a_search_dirs_child(export_main, trained, capsys, tmp_path):
    import shutil

    work, cfg, _ = trained
    search_dir = tmp_path / "gumbel"
    shutil.copytree(cfg.model_dir, search_dir / "child")
    shutil.copy(os.path.join(cfg.model_dir, "config.json"), search_dir / "config.json")
    (search_dir / "child" / "config.json").unlink()
    out = _export(export_main, capsys, model_dir=str(search_dir), export_root=str(tmp_path / "sm"))
    assert f"to {tmp_path / 'sm' / 'gumbel' / '1'}" in out
    assert read_metadata(tmp_path / "sm" / "gumbel" / "1").extra["train_config"]["dataset"] \
        == "csv"


def test_evaluate_saved_model_and_model_dir_agree(evaluate_main, trained, capsys, tmp_path):
    work, cfg, result = trained
    root = work / "eval_models"
    export_model_dir(cfg.model_dir, root)
    output = tmp_path / "out" / "metrics.json"
    from_saved = _evaluate(evaluate_main, capsys, saved_model=str(root / "mmoe" / "1"),
                           output=str(output))
    from_dir = _evaluate(evaluate_main, capsys, model_dir=cfg.model_dir)
    assert json.loads(output.read_text()) == from_saved
    assert from_saved["dataset"] == "csv" and from_saved["split"] == "test"
    assert from_saved["dataset_from"] == "training record"
    assert from_saved["examples"] == 60 and from_saved["labelled"] == {"click": 60, "watch": 60}
    assert sorted(from_saved["metrics"]) == ["click_auc", "watch_rmse"]
    for key, value in from_saved["metrics"].items():
        assert value == pytest.approx(from_dir["metrics"][key], abs=1e-5)
    # The same numbers computed here from the in-memory model on the same test split.
    data = load_dataset("csv", seed=cfg.seed, **cfg.dataset_options)
    pred = load_model(cfg.model_dir).predict_raw(data.test.features)
    assert from_saved["metrics"]["click_auc"] == pytest.approx(
        binary_auc(data.test.labels["click"], pred["click"]), abs=1e-6)
    assert from_saved["metrics"]["watch_rmse"] == pytest.approx(
        rmse(data.test.labels["watch"], pred["watch"]), abs=1e-5)
    # ... and close to what training reported (Keras' AUC uses 200 thresholds).
    assert from_saved["metrics"]["click_auc"] == pytest.approx(
        result.test_metrics["click_auc"], abs=0.02)
    assert from_saved["metrics"]["watch_rmse"] == pytest.approx(
        result.test_metrics["watch_rmse"], rel=1e-3)


def test_evaluate_other_split(evaluate_main, trained, capsys):
    _, cfg, _ = trained
    out = _evaluate(evaluate_main, capsys, model_dir=cfg.model_dir, split="validation")
    assert out["split"] == "validation" and out["examples"] == 60


def test_evaluate_bad_input_is_one_line(evaluate_main, trained, capsys, tmp_path):
    _, cfg, _ = trained
    err = _user_error(capsys, evaluate_main, ["x"])
    assert "Give exactly one of --saved_model" in err
    err = _user_error(capsys, evaluate_main, ["x"], saved_model="a", model_dir="b")
    assert "Give exactly one of --saved_model" in err
    err = _user_error(capsys, evaluate_main, ["x"], saved_model=str(tmp_path / "none"))
    assert err.endswith("does not exist.")
    err = _user_error(capsys, evaluate_main, ["x"], saved_model=str(tmp_path))
    assert "No SavedModel in" in err
    err = _user_error(capsys, evaluate_main, ["x"], model_dir=cfg.model_dir,
                      dataset="synthetic", synthetic_examples=50)
    assert "the dataset does not have" in err
    err = _user_error(capsys, evaluate_main, ["x"], model_dir=cfg.model_dir,
                      csv_numeric=["age"])
    assert "--csv_numeric needs --dataset=csv" in err


def test_python_dash_m_export_runs(trained, tmp_path):
    _, cfg, _ = trained
    result = subprocess.run(
        [sys.executable, "-m", "tfmtnas.pipelines.export", f"--model_dir={cfg.model_dir}",
         f"--export_root={tmp_path}", "--name=cli", "--version=7"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"to {tmp_path / 'cli' / '7'}" in result.stdout
    again = subprocess.run(
        [sys.executable, "-m", "tfmtnas.pipelines.export", f"--model_dir={cfg.model_dir}",
         f"--export_root={tmp_path}", "--name=cli", "--version=7"],
        capture_output=True, text=True, timeout=300)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines()[-1].startswith(
        "tfmtnas-export: error: Version 7 of")


def test_binary_auc_matches_pairwise_definition():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300).astype(float)
    scores = np.round(rng.random(300), 1)  # many ties
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairwise = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum())
    assert binary_auc(labels, scores) == pytest.approx(pairwise / (len(pos) * len(neg)),
                                                       abs=1e-12)
    assert binary_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    assert binary_auc([1, 1], [0.2, 0.3]) is None
    assert rmse([1.0, 2.0], [1.0, 4.0]) == pytest.approx(np.sqrt(2.0))
    assert rmse([], []) is None


def test_progress_lines_when_not_a_terminal():
    stream = io.StringIO()
    progress = Progress("eval", stream)
    for done in range(10, 101, 10):
        progress(done, 100)
    lines = stream.getvalue().splitlines()
    assert [line.split(" rows")[0] for line in lines] == [
        "eval: 30/100", "eval: 50/100", "eval: 80/100", "eval: 100/100"]
