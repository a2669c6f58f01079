"""Search with a multiclass task: every method trains a step on a 4-class and a binary task
and derives a child whose multiclass output is a probability matrix."""

import numpy as np
import pytest
import tensorflow as tf

from tfmtnas import keras
from tfmtnas.features import CategoricalFeature, FeatureSpec, NumericFeature, TaskSpec
from tfmtnas.search.derive import derive_child
from tfmtnas.search.methods import METHODS, make_method, search_space
from tfmtnas.search.model import SearchModel

SPEC = FeatureSpec((CategoricalFeature("c", vocabulary=("x", "y", "z")),),
                   (NumericFeature("n1"), NumericFeature("n2")))
TASKS = (TaskSpec("digit", "multiclass:4"), TaskSpec("click"))


def _batch(rng, n=16):
    features = {"categorical": rng.integers(0, 4, size=[n, 1]).astype(np.int32),
                "numeric": rng.normal(size=[n, 2]).astype(np.float32)}
    digit = rng.integers(0, 4, n).astype(np.float32)
    digit[::3] = np.nan  # missing labels, masked as for the other kinds
    return features, {"digit": digit, "click": (rng.random(n) < 0.5).astype(np.float32)}


# Gumbel in the default suite; the others compile larger steps (10-15 s each here).
@pytest.mark.parametrize("method", [m if m == "gumbel" else pytest.param(m, marks=pytest.mark.slow)
                                    for m in METHODS])
def test_search_step_and_derived_child_with_a_multiclass_task(method):
    rng = np.random.default_rng(0)
    pairs = tf.data.Dataset.from_tensors((_batch(rng), _batch(rng))).repeat(2)
    space = search_space(method, [t.name for t in TASKS], num_layers=2, num_experts=2,
                         expert_units=(4,))
    model = SearchModel(SPEC, TASKS, make_method(method, space),
                        arch_optimizer=keras.optimizers.Adam(0.05), embedding_dim=2,
                        tower_units=(4,))
    model.compile(keras.optimizers.Adam(0.05), jit_compile=True)
    arch_before = [v.numpy().copy() for v in model.method.trainable_variables]
    logs = model.fit(pairs, epochs=1, verbose=0).history
    assert np.isfinite(logs["digit_loss"][0]) and np.isfinite(logs["arch_loss"][0])
    assert "digit_accuracy" in logs and "click_auc" in logs
    # The architecture step (MTNAS: REINFORCE on the validation loss) moved something.
    assert any(not np.array_equal(b, v.numpy())
               for b, v in zip(arch_before, model.method.trainable_variables, strict=True))
    features, labels = _batch(np.random.default_rng(1))
    assert model.logits(features).shape == (16, 5)
    child = derive_child(model, inherit=True)
    out = child(features)
    assert out["digit"].shape == (16, 4) and out["click"].shape == (16,)
    np.testing.assert_allclose(out["digit"].numpy().sum(axis=1), 1.0, rtol=1e-5)
    child.compile(keras.optimizers.Adam(0.01), jit_compile=False)
    metrics = child.evaluate(tf.data.Dataset.from_tensors((features, labels)),
                             return_dict=True, verbose=0)
    assert 0.0 <= metrics["digit_accuracy"] <= 1.0 and np.isfinite(metrics["digit_loss"])
