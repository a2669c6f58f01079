"""Several training steps per call of the train function (MultiTaskModel's default) train
the same weights as one step per call, and the pipelines' per-step callbacks still see every
step they watch."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfmtnas import keras
from tfmtnas.errors import DivergedError
from tfmtnas.features import CategoricalFeature, FeatureSpec, NumericFeature, TaskSpec
from tfmtnas.models import LazyAdam, MultiTaskModel
from tfmtnas.models.multitask import DEFAULT_STEPS_PER_EXECUTION
from tfmtnas.pipelines import training

SPEC = FeatureSpec([CategoricalFeature("user", hash_bins=50),
                    CategoricalFeature("item", hash_bins=30)], [NumericFeature("x")])


def _data(n=10 * 16, batch=16):
    rng = np.random.default_rng(0)
    ids = np.stack([rng.integers(0, 50, n), 50 + rng.integers(0, 30, n)], 1).astype("int32")
    x = {"categorical": ids, "numeric": rng.normal(size=(n, 1)).astype("float32")}
    y = {"click": (rng.random(n) < 0.4).astype("float32")}
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def _model(**compile_kwargs):
    keras.utils.set_random_seed(0)
    model = MultiTaskModel(SPEC, [TaskSpec("click")], sharing={"kind": "mmoe",
                                                              "expert_units": [8]})
    model.compile(LazyAdam(0.01), **compile_kwargs)
    return model


def test_default_is_several_steps_per_call_and_an_explicit_value_wins():
    assert DEFAULT_STEPS_PER_EXECUTION == 8
    assert int(_model()._steps_per_execution.numpy()) == 8
    assert int(_model(steps_per_execution=1)._steps_per_execution.numpy()) == 1


def test_same_weights_as_one_step_per_call():
    # 10 batches an epoch: one full call of 8 steps and a partial one of 2, twice.
    weights = {}
    for spe in (1, 8):
        model = _model(steps_per_execution=spe)
        history = model.fit(_data(), epochs=2, verbose=0)
        weights[spe] = ([w.numpy() for w in model.weights], history.history["click_auc"],
                        int(model.optimizer.iterations.numpy()))
    assert weights[1][2] == weights[8][2] == 20
    for a, b in zip(weights[1][0], weights[8][0]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(weights[1][1], weights[8][1], rtol=1e-5)


def test_fault_points_fire_for_every_batch_of_a_call(monkeypatch):
    seen = []
    monkeypatch.setattr(training, "fault_point", seen.append)
    model = _model()
    model.fit(_data(), epochs=1, verbose=0, callbacks=[training.FaultPoints("train")])
    assert [s for s in seen if "_batch_" in s] == [f"train_batch_0_{b}" for b in range(10)]
    assert seen[-1] == "train_epoch_0"


@pytest.mark.parametrize("every,want", [(3, [", step 8", ", step 10", ""]),
                                        (8, [", step 8", ""]), (50, [""])])
def test_non_finite_check_runs_where_a_multiple_of_every_was_reached(every, want):
    checks = []

    class Recording(training.StopOnNonFiniteLoss):
        def _check(self, logs, step):
            checks.append(step)

    model = _model()
    model.fit(_data(), epochs=1, verbose=0, callbacks=[Recording(every=every)])
    assert checks == want


def test_non_finite_loss_still_stops_training():
    model = _model()
    x = {"categorical": np.zeros([32, 2], "int32"),
         "numeric": np.full([32, 1], math.nan, "float32")}
    data = tf.data.Dataset.from_tensor_slices((x, {"click": np.ones(32, "float32")})).batch(4)
    with pytest.raises(DivergedError, match="click_loss became nan|loss became nan"):
        model.fit(data, epochs=1, verbose=0, callbacks=[training.StopOnNonFiniteLoss(every=8)])


def test_on_batch_methods_run_one_step_and_keep_the_setting():
    model = _model()
    x, y = next(iter(_data()))
    model.train_on_batch(x, y)
    model.train_on_batch(x, y)
    assert int(model.optimizer.iterations.numpy()) == 2
    logs = model.test_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["click_loss"])
    assert model.predict_on_batch(x)["click"].shape == (16,)
    assert int(model._steps_per_execution.numpy()) == 8
    model.fit(_data(), epochs=1, verbose=0)  # then a full epoch of 10 steps as usual
    assert int(model.optimizer.iterations.numpy()) == 12
