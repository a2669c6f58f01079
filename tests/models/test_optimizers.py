"""LazyAdam: sparse rows follow a NumPy lazy-Adam reference; untouched rows never move."""

import numpy as np
import pytest
import tensorflow as tf

from tfmtnas import keras
from tfmtnas.features import CategoricalFeature, FeatureSpec, NumericFeature, TaskSpec
from tfmtnas.models import LazyAdam, MultiTaskModel, make_optimizer


def _numpy_lazy_adam(w, grads, lr=0.01, b1=0.9, b2=0.999, eps=1e-7):
    """Reference: per step a list of (row, gradient row) pairs, duplicates summed first."""
    w = w.astype(np.float64).copy()
    m, v = np.zeros_like(w), np.zeros_like(w)
    for t, pairs in enumerate(grads, 1):
        summed: dict[int, np.ndarray] = {}
        for r, g in pairs:
            summed[r] = summed.get(r, 0) + g
        alpha = lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        for r, g in summed.items():
            m[r] = b1 * m[r] + (1 - b1) * g
            v[r] = b2 * v[r] + (1 - b2) * g * g
            w[r] -= alpha * m[r] / (np.sqrt(v[r]) + eps)
    return w


@pytest.mark.parametrize("masked_rows_per_id", [0.0, 8.0, 1e9],
                         ids=["rows-form", "auto", "masked-form"])
@pytest.mark.parametrize("in_graph", [False, True, "xla"],
                         ids=["eager", "tf.function", "keras-xla-updates"])
def test_sparse_steps_match_numpy_reference_with_duplicate_rows(masked_rows_per_id, in_graph):
    """``keras-xla-updates``: Keras compiles every update with XLA, as it does on GPU."""
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(6, 3)).astype("float32")
    steps = [[(1, rng.normal(size=3)), (4, rng.normal(size=3)), (1, rng.normal(size=3))],
             [(4, rng.normal(size=3))],
             [(0, rng.normal(size=3)), (1, rng.normal(size=3))]]
    table = tf.Variable(w0)
    opt = LazyAdam(0.01, masked_rows_per_id=masked_rows_per_id)
    if in_graph == "xla":
        opt.jit_compile = True  # what Keras sets where a GPU is present
    apply = opt.apply_gradients
    if in_graph:
        apply = tf.function(lambda g, rows: opt.apply_gradients(
            [(tf.IndexedSlices(g, rows, tf.constant([6, 3])), table)]), reduce_retracing=True)
    for pairs in steps:
        rows = tf.constant([r for r, _ in pairs])
        values = tf.constant(np.stack([g for _, g in pairs]).astype("float32"))
        if in_graph:
            apply(values, rows)
        else:
            apply([(tf.IndexedSlices(values, rows, tf.constant([6, 3])), table)])
    want = _numpy_lazy_adam(w0, steps)
    np.testing.assert_allclose(table.numpy(), want, rtol=1e-5, atol=1e-6)
    # Rows 2, 3 and 5 never appeared: exactly unchanged, as are their moments.
    np.testing.assert_array_equal(table.numpy()[[2, 3, 5]], w0[[2, 3, 5]])
    slots = [s.numpy() for s in opt.variables if s.shape == (6, 3)]
    assert len(slots) == 2 and all(np.all(s[[2, 3, 5]] == 0) for s in slots)


@pytest.mark.parametrize("fuse_dense", [True, False], ids=["xla-fused", "tf-ops"])
def test_dense_gradients_are_plain_adam(fuse_dense):
    rng = np.random.default_rng(1)
    a, a2 = (tf.Variable(rng.normal(size=(3, 2)).astype("float32")) for _ in range(2))
    b, b2 = tf.Variable(a.numpy()), tf.Variable(a2.numpy())
    lazy, adam = LazyAdam(0.05, fuse_dense=fuse_dense), keras.optimizers.Adam(0.05)
    for _ in range(4):
        g, g2 = (tf.constant(rng.normal(size=(3, 2)).astype("float32")) for _ in range(2))
        lazy.apply_gradients([(g, a), (g2, a2)])  # same shapes: each keeps its own moments
        adam.apply_gradients([(g, b), (g2, b2)])
    # The fused kernel rounds 1 - beta in float32 where tf-keras rounds it from float64: a
    # few ulps after 4 steps (2e-6 relative); a wrong formula would be far off.
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5)
    np.testing.assert_allclose(a2.numpy(), b2.numpy(), rtol=1e-5)
    assert lazy._fusing() is fuse_dense


def test_both_sparse_forms_train_a_model_to_the_same_weights():
    spec = FeatureSpec([CategoricalFeature("user", hash_bins=300),
                        CategoricalFeature("item", hash_bins=200)], [NumericFeature("x")])
    rng = np.random.default_rng(3)
    ids = np.stack([rng.integers(0, 300, 64), 300 + rng.integers(0, 200, 64)], 1)
    batch = ({"categorical": ids.astype("int32"), "numeric": rng.normal(size=(64, 1))},
             {"click": (rng.random(64) < 0.4).astype("float32")})
    weights = []
    for masked in (0.0, 1e9):
        keras.utils.set_random_seed(0)
        model = MultiTaskModel(spec, [TaskSpec("click")],
                               sharing={"kind": "mmoe", "expert_units": [8]})
        model.compile(LazyAdam(0.01, masked_rows_per_id=masked))
        for _ in range(3):
            model.train_on_batch(*batch)
        weights.append([w.numpy() for w in model.weights])
    for rows_form, masked_form in zip(*weights):
        np.testing.assert_allclose(rows_form, masked_form, rtol=1e-5, atol=1e-7)


def test_lazy_adam_config_round_trip_and_bad_ratio():
    opt = LazyAdam(0.02, masked_rows_per_id=3, fuse_dense=False)
    again = LazyAdam.from_config(opt.get_config())
    assert (again.masked_rows_per_id, again.fuse_dense) == (3.0, False)
    with pytest.raises(ValueError, match="masked_rows_per_id must be >= 0, got -1"):
        LazyAdam(masked_rows_per_id=-1)


def test_training_step_changes_only_the_rows_the_batch_touched():
    spec = FeatureSpec([CategoricalFeature("user", hash_bins=1000),
                        CategoricalFeature("item", hash_bins=500)], [NumericFeature("x")])
    model = MultiTaskModel(spec, [TaskSpec("click")], sharing={"kind": "mmoe",
                                                              "expert_units": [8]})
    model.compile(make_optimizer("lazy_adam", 0.01), jit_compile=False)
    before = model.embedding.table.numpy().copy()
    ids = np.array([[3, 1000 + 7], [3, 1000 + 9], [42, 1000 + 7]], "int32")
    batch = ({"categorical": ids, "numeric": np.ones([3, 1], "float32")},
             {"click": np.array([1.0, 0.0, 1.0], "float32")})
    model.train_on_batch(*batch)
    after = model.embedding.table.numpy()
    changed = np.flatnonzero(np.any(after != before, axis=1))
    assert changed.tolist() == [3, 42, 1007, 1009]
    # Dense Adam, by contrast, moves every row that ever had a gradient (here: after the
    # first step only the same rows, since the moments start at zero) -- so take 2 steps.
    dense = MultiTaskModel(spec, [TaskSpec("click")], sharing={"kind": "mmoe",
                                                              "expert_units": [8]})
    dense.compile(make_optimizer("adam", 0.01), jit_compile=False)
    dense.train_on_batch(*batch)
    start = dense.embedding.table.numpy().copy()
    other = ({"categorical": np.array([[5, 1000 + 1]], "int32"),
              "numeric": np.ones([1, 1], "float32")}, {"click": np.array([1.0], "float32")})
    dense.train_on_batch(*other)
    moved = np.flatnonzero(np.any(dense.embedding.table.numpy() != start, axis=1))
    assert {3, 42, 1007, 1009} <= set(moved.tolist())  # stale rows keep moving under Adam


def test_unknown_optimizer_is_named():
    with pytest.raises(ValueError, match="'sgdx'.*lazy_adam"):
        make_optimizer("sgdx", 0.1)


def test_fused_table_update_is_one_function_for_every_optimizer():
    # Compiled per optimizer instance, each trained model left its XLA executable in the
    # process-wide cache (a tuning study grew by about 11 MB a trial); one function of
    # variable handles serves every table of a shape, in every optimizer.
    from tfmtnas.models import optimizers

    before = optimizers._masked_adam_xla.experimental_get_tracing_count()
    grad = tf.IndexedSlices(tf.ones([2, 3]), tf.constant([1, 4]), tf.constant([6, 3]))
    tables = []
    for _ in range(3):
        table = tf.Variable(tf.zeros([6, 3]))
        opt = LazyAdam(0.1, masked_rows_per_id=1e9)
        assert opt._fusing()
        opt.apply_gradients([(grad, table)])
        tables.append(table.numpy())
    assert optimizers._masked_adam_xla.experimental_get_tracing_count() - before <= 1
    for t in tables:  # Adam's first step moves a touched row by lr: -0.1, the others not at all
        np.testing.assert_allclose(t[[1, 4]], -0.1, rtol=1e-5)
        np.testing.assert_array_equal(t[[0, 2, 3, 5]], 0.0)
