"""MultiTaskModel: masked per-task losses and metrics, weights, logs, zoo kinds."""

import numpy as np
import pytest
import tensorflow as tf

from tfmtnas import keras
from tfmtnas.features import CategoricalFeature, FeatureSpec, NumericFeature, TaskSpec
from tfmtnas.models import SHARING_KINDS, MultiTaskModel, build_sharing

SPEC = FeatureSpec([CategoricalFeature("c", hash_bins=7)], [NumericFeature("x")])
TASKS = [TaskSpec("click", "binary", weight=2.0), TaskSpec("watch", "regression", weight=0.5)]


def _batch(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = {"categorical": rng.integers(0, 7, (n, 1)).astype("int32"),
         "numeric": rng.normal(size=(n, 1)).astype("float32")}
    y = {"click": (rng.random(n) < 0.4).astype("float32"),
         "watch": rng.normal(size=n).astype("float32")}
    return x, y


def _model(kind="mmoe"):
    keras.utils.set_random_seed(0)
    m = MultiTaskModel(SPEC, TASKS, sharing={"kind": kind, "expert_units": [8]},
                       embedding_dim=4, tower_units=(4,))
    m.compile(keras.optimizers.Adam(1e-2))
    return m


def test_masked_loss_is_mean_over_labelled_rows_and_weighted():
    model = _model()
    x, y = _batch()
    y["click"][::3] = np.nan  # a third of the click labels are missing
    y["watch"][1::2] = np.nan
    logits = model.logits(x).numpy()
    loss = float(model.compute_loss((x, y)))
    c = ~np.isnan(y["click"])
    z, t = logits[c, 0], y["click"][c]
    bce = np.mean(np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z))))
    w = ~np.isnan(y["watch"])
    mse = np.mean((logits[w, 1] - y["watch"][w]) ** 2)
    assert loss == pytest.approx(2.0 * bce + 0.5 * mse, rel=1e-5)


def test_masked_labels_are_left_out_of_auc():
    model = _model()
    x, y = _batch(64)
    probs = model(x)["click"].numpy()
    y_masked = dict(y)
    y_masked["click"] = np.where(np.arange(64) < 20, np.nan, y["click"]).astype("float32")
    model.compute_loss((x, y_masked))
    auc = [m for m in model.metrics if m.name == "click_auc"][0].result().numpy()
    ref = keras.metrics.AUC()
    ref.update_state(y["click"][20:], probs[20:])
    assert auc == pytest.approx(ref.result().numpy(), abs=1e-6)


def test_call_gives_probabilities_and_values_from_logits():
    model = _model()
    x, _ = _batch()
    logits = model.logits(x).numpy()
    out = model(x)
    np.testing.assert_allclose(out["click"].numpy(), 1 / (1 + np.exp(-logits[:, 0])), rtol=1e-5)
    np.testing.assert_allclose(out["watch"].numpy(), logits[:, 1], rtol=1e-6)


def test_fit_logs_each_task_loss_and_learns_under_xla():
    model = _model()
    model.compile(keras.optimizers.Adam(1e-2), jit_compile=True)
    x, y = _batch(256)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    before = float(model.evaluate(ds, return_dict=True, verbose=0)["watch_loss"])
    hist = model.fit(ds, epochs=15, verbose=0).history
    assert {"click_loss", "watch_loss", "click_auc", "watch_rmse"} <= set(hist)
    assert hist["watch_loss"][-1] < before


@pytest.mark.parametrize("kind", SHARING_KINDS)
def test_every_zoo_kind_builds_and_round_trips_config(kind):
    model = _model(kind)
    x, _ = _batch(8)
    out = model(x)
    clone = MultiTaskModel.from_config(model.get_config())
    clone(x)
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(x)["click"].numpy(), out["click"].numpy(), rtol=1e-6)


def test_unknown_sharing_kind_lists_choices():
    with pytest.raises(ValueError, match="Unknown sharing kind 'moe'.*mmoe"):
        build_sharing("moe", 2)


def test_xla_core_training_matches_plain_tensorflow():
    x, y = _batch(128)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    weights = {}
    for jit in (True, False):
        model = _model()
        model.compile(keras.optimizers.Adam(1e-2), jit_compile=jit)
        assert model.core_jit is jit and not model._jit_compile
        model.fit(ds, epochs=2, verbose=0)
        weights[jit] = model.get_weights()
    for a, b in zip(weights[True], weights[False]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("jit", [False, True])
def test_mixed_bfloat16_policy_trains_and_matches_float32(jit):
    """Under mixed_bfloat16 the core computes in bfloat16; losses and outputs stay float32."""
    x, y = _batch(64)
    reference = _model()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(0)
        mixed = MultiTaskModel(SPEC, TASKS, sharing={"kind": "mmoe", "expert_units": [8]},
                               embedding_dim=4, tower_units=(4,))
        mixed.compile(keras.optimizers.Adam(1e-2), jit_compile=jit)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    mixed.set_weights(reference.get_weights())
    assert mixed.sharing.compute_dtype == "bfloat16"
    assert mixed.logits(x).dtype == tf.bfloat16
    # bfloat16 keeps 8 bits of mantissa: the same weights give the same outputs to ~1e-2.
    got, expected = mixed(x), reference(x)
    for task in ("click", "watch"):
        assert got[task].dtype == tf.float32
        np.testing.assert_allclose(got[task].numpy(), expected[task].numpy(), atol=3e-2)
    before = mixed.compute_loss((x, y))
    assert before.dtype == tf.float32
    assert float(before) == pytest.approx(float(reference.compute_loss((x, y))), rel=2e-2)
    before = float(before)
    history = mixed.fit(tf.data.Dataset.from_tensors((x, y)).repeat(20), verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert float(mixed.compute_loss((x, y))) < before
