"""tf.data pipelines: preprocessed numbers per batch, all-numeric specs, paired batches."""

import numpy as np
import pytest

from tfmtnas.data import DataError, MultiTaskData, make_synthetic
from tfmtnas.data.base import Split
from tfmtnas.data.pipeline import make_dataset
from tfmtnas.data.sources import num_rows, search_pairs, split_half
from tfmtnas.features import FeatureSpec


def test_all_numeric_dataset_batches_with_empty_categorical():
    data = make_synthetic(num_train=100, num_validation=10, num_test=10, dim=5, seed=0)
    batches = list(make_dataset(data.train, data.spec, batch_size=32))
    assert [b[0]["numeric"].shape[0] for b in batches] == [32, 32, 32, 4]
    assert batches[0][0]["categorical"].shape == (32, 0)
    x = np.concatenate([b[0]["numeric"].numpy() for b in batches])
    f = data.spec.numeric[0]
    np.testing.assert_allclose(x[:, 0], (data.train.features["x0"] - f.mean) / f.std,
                               rtol=1e-4, atol=1e-5)
    y = np.concatenate([b[1]["y1"].numpy() for b in batches])
    np.testing.assert_allclose(y, data.train.labels["y1"], rtol=1e-6)


def test_categorical_ids_and_shuffle_keeps_rows_together():
    features = {"c": np.array(["a", "b", "a", "z"] * 10, dtype=object),
                "n": np.arange(40, dtype=float)}
    spec = FeatureSpec.fit(features, categorical=["c"], numeric=["n"])
    split = Split(features, {"t": np.arange(40, dtype="float32")})
    rows = [(int(x["categorical"][i, 0]), float(y["t"][i]))
            for x, y in make_dataset(split, spec, 16, shuffle=True, seed=1)
            for i in range(len(y["t"]))]
    assert sorted(r[1] for r in rows) == list(range(40))
    expected = {"a": 1, "b": 2, "z": 3}  # "a" most frequent, then ties by value
    for cat_id, t in rows:
        assert cat_id == expected[features["c"][int(t)]]


def test_empty_split_and_empty_architecture_split_are_clear_errors():
    data = make_synthetic(num_train=20, num_validation=5, num_test=5, dim=3)
    empty = data.validation.take(np.arange(0))
    with pytest.raises(DataError, match="empty split"):
        make_dataset(empty, data.spec, 8)
    no_validation = MultiTaskData("d", data.train, empty, data.test, data.spec, data.tasks)
    with pytest.raises(DataError, match="validation split is empty"):
        search_pairs(no_validation, halves=False, batch_size=8)


def test_in_memory_half_sizes_are_the_halves_search_trains_on():
    data = make_synthetic(num_train=21, num_validation=5, num_test=5, dim=3)
    halves = split_half(data.train, seed=4)
    assert [num_rows(data, "train", half=k) for k in (0, 1)] == [len(h) for h in halves]
    assert [len(h) for h in halves] == [10, 11]
