"""tfmtnas-search --method=mtlnas --warm_start_dir: columns from a finished single-task run
(Gao et al., CVPR 2020), its checks, and resume."""

import json
import shutil

import numpy as np
import pytest

from tests.pipelines.conftest import CSV_FLAGS, last_line, run_module
from tfmtnas.data import load_dataset
from tfmtnas.errors import MissingFileError, ResumeMismatchError, UserError
from tfmtnas.pipelines import searching
from tfmtnas.pipelines.searching import SearchConfig, run_search
from tfmtnas.pipelines.training import TrainConfig, load_model, train_and_evaluate

LABELS = {"click": "binary", "watch": "regression"}
SIZES = {"tower_units": (2,), "embedding_dim": 3, "batch_size": 64, "jit_compile": False}


def write_csv(path, rows=300, seed=0):
    rng = np.random.default_rng(seed)
    color = rng.choice(["red", "green", "blue"], rows)
    x, z = rng.normal(size=rows), rng.normal(size=rows)
    click = ((x + (color == "red")) > 0.5).astype(int)
    watch = 2 * x - z + rng.normal(scale=0.1, size=rows)
    lines = ["color,x,z,click,watch"] + [f"{c},{a:.4f},{b:.4f},{k},{w:.4f}" for c, a, b, k, w
                                         in zip(color, x, z, click, watch)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def csv_options(tmp_path_factory):
    path = write_csv(tmp_path_factory.mktemp("data") / "tiny.csv")
    return {"train_path": str(path), "label_columns": LABELS, "numeric": ["x", "z"],
            "categorical": ["color"]}


@pytest.fixture(scope="module")
def data(csv_options):
    return load_dataset("csv", **csv_options)


@pytest.fixture(scope="module")
def single_dir(tmp_path_factory, csv_options, data):
    """A finished single-task run: two-layer MLPs of 4 units per task."""
    out = tmp_path_factory.mktemp("single")
    train_and_evaluate(TrainConfig(dataset="csv", dataset_options=csv_options,
                                   model="single_task", expert_units=(4, 4), epochs=1,
                                   model_dir=str(out), **SIZES), data=data, verbose=0)
    return out


def search_config(csv_options, warm_start_dir, **changes) -> SearchConfig:
    """MTL-NAS columns of two 4-unit experts: the single-task run's MLPs, stage by stage."""
    base = dict(dataset="csv", dataset_options=csv_options, method="mtlnas", num_layers=2,
                expert_units=(4,), epochs=0, warm_start_dir=str(warm_start_dir), **SIZES)
    return SearchConfig(**{**base, **changes})


def test_search_starts_as_the_single_task_model(single_dir, csv_options, data, capsys):
    # No step (epochs=0): the evaluated supernet is the warm-started one. In inference mode
    # with its fusions at the identity it is the single-task model (see
    # tests/search/test_warm_start.py), so its test metrics are the single-task run's.
    result = run_search(search_config(csv_options, single_dir), data=data, verbose=0)
    assert f"Warm start: embedding, columns and towers from {single_dir}." in (
        capsys.readouterr().out)
    single = load_model(single_dir)
    model = result.search_model
    np.testing.assert_array_equal(model.embedding.table.numpy(),
                                  single.embedding.table.numpy())
    mlps = single.sharing.mlps
    for layer, bank in enumerate(model.sharing.banks):
        for ours, theirs in ((bank.kernels[0], mlps.kernels[layer]),
                             (bank.biases[0], mlps.biases[layer])):
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    for ours, theirs in zip(model.towers.weights, single.towers.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    recorded = json.loads((single_dir / "metrics.json").read_text())["test"]
    assert set(result.supernet_metrics) == set(recorded)
    for name, value in recorded.items():
        assert result.supernet_metrics[name] == pytest.approx(value, abs=1e-6), name


def test_resumed_search_does_not_warm_start_again(single_dir, csv_options, data, tmp_path,
                                                  monkeypatch):
    cfg = search_config(csv_options, single_dir, epochs=1, model_dir=str(tmp_path / "s"))
    first = run_search(cfg, data=data, verbose=0)
    trained = [v.numpy() for v in first.search_model.weights]
    embedding = first.search_model.embedding.table.numpy()
    assert np.abs(embedding - load_model(single_dir).embedding.table.numpy()).max() > 0

    def refuse(*args, **kwargs):
        raise AssertionError("the warm start ran again on a resumed search")

    monkeypatch.setattr(searching, "warm_start_columns", refuse)
    again = run_search(cfg, data=data, verbose=0)  # restores epoch 1: nothing left to train
    for value, v in zip(trained, again.search_model.weights, strict=True):
        np.testing.assert_array_equal(v.numpy(), value)
    # The flag is part of the run's fingerprint: another (or no) warm start is another run.
    with pytest.raises(ResumeMismatchError, match="--warm_start_dir differ"):
        run_search(SearchConfig(**{**cfg.to_dict(), "warm_start_dir": None}), data=data,
                   verbose=0)


def _copy(single_dir, tmp_path, edit=None, remove=None):
    out = tmp_path / "copy"
    shutil.copytree(single_dir, out)
    if edit:
        config = json.loads((out / "config.json").read_text())
        (out / "config.json").write_text(json.dumps({**config, **edit}))
    if remove:
        (out / remove).unlink()
    return out


@pytest.mark.parametrize("case, error, needle", [
    ("missing", MissingFileError, "--warm_start_dir {dir} does not exist: give the model dir "
                                  "of a finished tfmtnas-train --model=single_task run."),
    ("file", MissingFileError, "--warm_start_dir {dir} is a file"),
    ("empty", UserError, "--warm_start_dir {dir} has no readable config.json, so it is not a "
                         "tfmtnas-train model dir"),
    ("search", UserError, "--warm_start_dir {dir} holds a tfmtnas-search run: give the model "
                          "dir of a finished tfmtnas-train --model=single_task run."),
    ("mmoe", UserError, "--warm_start_dir {dir} holds a --model=mmoe run, not one MLP per "
                        "task: train one with tfmtnas-train --model=single_task"),
    ("unfinished", UserError, "--warm_start_dir {dir} holds an unfinished run (no "
                              "metrics.json): rerun its tfmtnas-train command to finish it."),
    ("other data", UserError, "--warm_start_dir {dir} was trained on other data than this "
                              "search reads"),
    ("one layer", UserError, "task 'click''s column in the supernet (4,): search with "
                             "--num_layers=2 --expert_units=4 "),
    ("gumbel", UserError, "--warm_start_dir applies to --method=mtlnas (columns started from "
                          "single-task models), not --method=gumbel."),
])
def test_bad_warm_start_dirs_are_one_line_errors(case, error, needle, single_dir, csv_options,
                                                 data, tmp_path):
    folder, changes, search_data = single_dir, {}, data
    if case == "missing":
        folder = tmp_path / "nowhere"
    elif case == "file":
        folder = tmp_path / "file"
        folder.write_text("x")
    elif case == "empty":
        folder = tmp_path / "empty"
        folder.mkdir()
    elif case == "search":
        folder = tmp_path / "search"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"method": "mtlnas"}))
    elif case == "mmoe":
        folder = _copy(single_dir, tmp_path, edit={"model": "mmoe"})
    elif case == "unfinished":
        folder = _copy(single_dir, tmp_path, remove="metrics.json")
    elif case == "other data":  # one label changed: same tasks and features, other data
        search_data = load_dataset("csv", **csv_options)
        search_data.train.labels["watch"] = search_data.train.labels["watch"] + 1e-3
    elif case == "one layer":
        changes = {"num_layers": 1}
    elif case == "gumbel":
        changes = {"method": "gumbel"}
    cfg = search_config(csv_options, folder, **changes)
    with pytest.raises(error) as err:
        run_search(cfg, data=search_data, verbose=0)
    message = str(err.value)
    assert needle.format(dir=folder) in message and "\n" not in message, message


def test_binary_refuses_warm_start_for_other_methods(tmp_path):
    done = run_module("tfmtnas.pipelines.search", "--method=mtnas",
                      f"--warm_start_dir={tmp_path}", f"--model_dir={tmp_path / 'out'}")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert last_line(done.stderr) == (
        "tfmtnas-search: error: --warm_start_dir applies to --method=mtlnas (columns started "
        "from single-task models), not --method=mtnas.")


@pytest.mark.slow
def test_binaries_train_single_task_then_search_from_it_and_resume(tmp_path):
    path = write_csv(tmp_path / "tiny.csv")
    common = [*CSV_FLAGS, f"--csv_train={path}", "--tower_units=2", "--embedding_dim=3",
              "--batch_size=64", "--jit_compile=false"]
    single = tmp_path / "single"
    done = run_module("tfmtnas.pipelines.train", *common, "--model=single_task",
                      "--expert_units=4,4", "--epochs=1", f"--model_dir={single}")
    assert done.returncode == 0, done.stderr[-3000:]
    search = [*common, "--method=mtlnas", "--num_layers=2", "--expert_units=4", "--epochs=1",
              f"--warm_start_dir={single}", f"--model_dir={tmp_path / 'search'}"]
    done = run_module("tfmtnas.pipelines.search", *search)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Warm start: embedding, columns and towers from {single}." in done.stdout
    config = json.loads((tmp_path / "search" / "config.json").read_text())
    assert config["warm_start_dir"] == str(single)
    again = run_module("tfmtnas.pipelines.search", *search, "--epochs=2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Resuming the search at epoch 2 of 2." in again.stdout
    assert "Warm start" not in again.stdout
