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


# Multiclass: hand-chosen logits [B, 1 + 4] (click, then 4 digit classes) and labels.
MC_TASKS = [TaskSpec("click"), TaskSpec("digit", "multiclass:4", top_k=2)]
MC_LOGITS = np.array([[0.5, 2.0, 1.0, 0.0, -1.0],   # digit 0: top-1 right
                      [-0.5, 0.0, 3.0, 1.0, 0.0],   # digit 2: second highest, top-2 only
                      [1.0, 1.0, 0.0, 0.0, 5.0],    # digit 1: third, neither
                      [0.0, 0.0, 0.0, 9.0, 0.0],    # missing: would be wrong as class 0
                      [2.0, 4.0, 0.0, 0.0, 0.0]],   # digit 0: top-1 right
                     np.float32)
MC_LABELS = {"click": np.array([1, 0, 1, 0, 1], np.float32),
             "digit": np.array([0, 2, 1, np.nan, 0], np.float32)}


def _mc_model():
    keras.utils.set_random_seed(0)
    m = MultiTaskModel(SPEC, MC_TASKS, sharing={"kind": "mmoe", "expert_units": [8]},
                       embedding_dim=4, tower_units=(4,))
    m.compile(keras.optimizers.Adam(1e-2))
    return m


def test_multiclass_loss_and_metrics_match_numpy_on_hand_values():
    model = _mc_model()
    click, digit = model.task_losses_from_logits(MC_LABELS, tf.constant(MC_LOGITS))
    # Softmax cross-entropy over the four labelled rows: logsumexp(z) - z[label].
    z, y = MC_LOGITS[[0, 1, 2, 4], 1:].astype(np.float64), np.array([0, 2, 1, 0])
    ce = np.log(np.exp(z).sum(axis=1)) - z[np.arange(4), y]
    assert float(digit) == pytest.approx(ce.mean(), rel=1e-6)
    zc, t = MC_LOGITS[:, 0].astype(np.float64), MC_LABELS["click"]
    bce = np.mean(np.maximum(zc, 0) - zc * t + np.log1p(np.exp(-np.abs(zc))))
    assert float(click) == pytest.approx(bce, rel=1e-6)
    results = {m.name: float(m.result()) for m in model.metrics}
    assert results["digit_accuracy"] == pytest.approx(2 / 4)   # rows 0 and 4
    assert results["digit_top2_accuracy"] == pytest.approx(3 / 4)  # and row 1
    assert results["digit_loss"] == pytest.approx(ce.mean(), rel=1e-6)


def test_multiclass_logits_columns_and_softmax_outputs():
    model = _mc_model()
    assert model.task_columns == ((0, 1), (1, 4))
    x, _ = _batch(16)
    logits = model.logits(x).numpy()
    assert logits.shape == (16, 5)
    out = model(x)
    assert out["click"].shape == (16,) and out["digit"].shape == (16, 4)
    e = np.exp(logits[:, 1:] - logits[:, 1:].max(axis=1, keepdims=True))
    np.testing.assert_allclose(out["digit"].numpy(), e / e.sum(axis=1, keepdims=True),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out["digit"].numpy().sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out["click"].numpy(), 1 / (1 + np.exp(-logits[:, 0])),
                               rtol=1e-5)


def test_multiclass_fit_under_xla_logs_accuracies_and_learns():
    model = _mc_model()
    model.compile(keras.optimizers.Adam(2e-2), jit_compile=True)
    x, y = _batch(256)
    y = {"click": y["click"], "digit": (x["categorical"][:, 0] % 4).astype("float32")}
    y["digit"][::7] = np.nan
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    before = model.evaluate(ds, return_dict=True, verbose=0)
    hist = model.fit(ds, epochs=15, verbose=0).history
    assert {"digit_loss", "digit_accuracy", "digit_top2_accuracy", "click_auc"} <= set(hist)
    assert hist["digit_loss"][-1] < before["digit_loss"]
    assert hist["digit_accuracy"][-1] > 0.9  # the class is a function of the category


def test_all_binary_towers_keep_their_variables():
    # A model without multiclass tasks builds the towers it always did: checkpoints of
    # earlier models still restore.
    model = _model()
    assert model.towers.output_units is None
    assert [tuple(w.shape) for w in model.towers.weights] == [(2, 8, 4), (2, 4), (2, 4, 1),
                                                              (2, 1)]


def test_multiclass_model_config_round_trips():
    model = _mc_model()
    config = model.get_config()
    assert config["tasks"][1] == {"name": "digit", "kind": "multiclass", "weight": 1.0,
                                  "num_classes": 4, "top_k": 2}
    again = MultiTaskModel.from_config(config)
    assert again.tasks == model.tasks and again.towers.output_units == (1, 4)
    x, _ = _batch(4)
    again(x)
    again.set_weights(model.get_weights())
    np.testing.assert_allclose(again(x)["digit"].numpy(), model(x)["digit"].numpy(),
                               rtol=1e-6)
