"""Tests for tfmtnas.data.synthetic (the MMoE paper's synthetic generator)."""

import numpy as np
import pytest

from tfmtnas.data import make_synthetic, synthetic_params


def _x(split, dim):
    return np.stack([split.features[f"x{i}"] for i in range(dim)], axis=1)


def test_weights_have_norm_c_and_cosine_p():
    for p in (-1.0, -0.3, 0.0, 0.5, 0.9, 1.0):
        params = synthetic_params(dim=20, correlation=p, scale=2.5, num_sin=4, seed=3)
        assert np.linalg.norm(params.w1) == pytest.approx(2.5)
        assert np.linalg.norm(params.w2) == pytest.approx(2.5)
        assert params.w1 @ params.w2 / 2.5**2 == pytest.approx(p, abs=1e-12)
        assert params.alpha.shape == params.beta.shape == (4,)


@pytest.mark.parametrize("p", [0.0, 0.5, 0.9])
def test_projection_correlation_equals_p(p):
    data = make_synthetic(num_train=20_000, num_validation=0, num_test=0, dim=100,
                          correlation=p, seed=7)
    params = synthetic_params(dim=100, correlation=p, seed=7)
    x = _x(data.train, 100)
    r = np.corrcoef(x @ params.w1, x @ params.w2)[0, 1]
    assert abs(r - p) < 0.02


def test_labels_follow_the_formula_up_to_noise():
    data = make_synthetic(num_train=5000, num_validation=10, num_test=10, dim=16,
                          correlation=0.3, num_sin=10, noise_std=0.01, seed=11)
    params = synthetic_params(dim=16, correlation=0.3, num_sin=10, seed=11)
    x = _x(data.train, 16)
    y1, y2 = params.labels(x)
    # By hand for one row: w.x + sum_i sin(a_i w.x + b_i).
    z = x[0] @ params.w1
    assert y1[0] == pytest.approx(z + sum(np.sin(a * z + b)
                                          for a, b in zip(params.alpha, params.beta, strict=True)))
    for name, y in (("y1", y1), ("y2", y2)):
        residual = data.train.labels[name] - y
        assert residual.std() == pytest.approx(0.01, rel=0.05)
        assert abs(residual.mean()) < 1e-3


def test_label_correlation_rises_with_p():
    corrs = []
    for p in (0.0, 0.5, 0.9):
        data = make_synthetic(num_train=10_000, num_validation=0, num_test=0, correlation=p,
                              seed=0)
        corrs.append(np.corrcoef(data.train.labels["y1"], data.train.labels["y2"])[0, 1])
    assert corrs[0] < corrs[1] < corrs[2]


def test_dataset_structure_and_determinism():
    a = make_synthetic(num_train=300, num_validation=40, num_test=50, dim=8, seed=2)
    b = make_synthetic(num_train=300, num_validation=40, num_test=50, dim=8, seed=2)
    c = make_synthetic(num_train=300, num_validation=40, num_test=50, dim=8, seed=3)
    assert a.name == "synthetic"
    assert [(t.name, t.kind) for t in a.tasks] == [("y1", "regression"), ("y2", "regression")]
    assert (len(a.train), len(a.validation), len(a.test)) == (300, 40, 50)
    assert a.spec.names == [f"x{i}" for i in range(8)] and not a.spec.categorical
    assert a.spec.numeric[0].mean == pytest.approx(a.train.features["x0"].mean())
    assert a.train.labels["y1"].dtype == np.float32
    np.testing.assert_array_equal(a.test.labels["y2"], b.test.labels["y2"])
    assert not np.array_equal(a.test.labels["y2"], c.test.labels["y2"])


def test_disjoint_labels_keep_one_task_per_training_row():
    full = make_synthetic(num_train=101, num_validation=20, num_test=30, dim=8, seed=4)
    part = make_synthetic(num_train=101, num_validation=20, num_test=30, dim=8, seed=4,
                          disjoint_labels=True)
    y1, y2 = part.train.labels["y1"], part.train.labels["y2"]
    # Even rows keep y1 only, odd rows y2 only; the kept labels are the full ones.
    assert np.isnan(y1[1::2]).all() and np.isnan(y2[0::2]).all()
    np.testing.assert_array_equal(y1[0::2], full.train.labels["y1"][0::2])
    np.testing.assert_array_equal(y2[1::2], full.train.labels["y2"][1::2])
    assert np.isnan(y1).sum() == 50 and np.isnan(y2).sum() == 51
    # Inputs, validation and test are untouched.
    np.testing.assert_array_equal(part.train.features["x3"], full.train.features["x3"])
    for split in ("validation", "test"):
        for name in ("y1", "y2"):
            np.testing.assert_array_equal(getattr(part, split).labels[name],
                                          getattr(full, split).labels[name])


@pytest.mark.parametrize("kwargs,match", [
    ({"correlation": 1.5}, r"correlation must be in \[-1, 1\], got 1.5"),
    ({"correlation": -1.01}, "correlation must be in"),
    ({"dim": 1}, "dim must be an integer >= 2"),
    ({"num_sin": -1}, "num_sin"),
    ({"noise_std": -0.1}, "noise_std"),
    ({"num_train": 0}, "num_train must be >= 1"),
    ({"num_test": -5}, "num_test must be an integer >= 0"),
])
def test_argument_checks(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_synthetic(**kwargs)
