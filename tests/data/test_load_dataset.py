"""Tests for tfmtnas.data.load_dataset dispatch."""

import pytest

from tfmtnas import data as data_lib


def test_dispatch_synthetic():
    data = data_lib.load_dataset("synthetic", seed=4, num_train=50, num_validation=5,
                                 num_test=5, dim=4, correlation=0.9)
    direct = data_lib.make_synthetic(num_train=50, num_validation=5, num_test=5, dim=4,
                                     correlation=0.9, seed=4)
    assert data.name == "synthetic"
    assert (data.train.labels["y1"] == direct.train.labels["y1"]).all()


def test_dispatch_csv(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("item,click\n" + "".join(f"i{k % 3},{k % 2}\n" for k in range(20)))
    data = data_lib.load_dataset("csv", train_path=path, label_columns={"click": "binary"})
    assert data.name == "csv" and len(data.train) == 16


def test_dispatch_census_reads_data_dir(tmp_path):
    with pytest.raises(data_lib.DataError, match="census data_dir does not exist"):
        data_lib.load_dataset("census", data_dir=tmp_path / "missing")


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"Unknown dataset 'movielens-1m'; valid names: "
                                         r"\['census', 'csv', 'mnist', 'movielens', "
                                         r"'prepared', 'synthetic'\]"):
        data_lib.load_dataset("movielens-1m")
    assert data_lib.dataset_names() == ["census", "csv", "mnist", "movielens", "prepared",
                                        "synthetic"]


def test_generated_and_csv_datasets_reject_data_dir(tmp_path):
    with pytest.raises(ValueError, match="no data_dir"):
        data_lib.load_dataset("synthetic", data_dir=tmp_path)
    with pytest.raises(ValueError, match="train_path"):
        data_lib.load_dataset("csv", data_dir=tmp_path)


def test_public_names():
    for name in ("load_census", "make_synthetic", "load_csv_dataset", "read_csv", "DataError",
                 "Split", "MultiTaskData", "load_dataset"):
        assert hasattr(data_lib, name), name
