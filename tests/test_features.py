"""Feature specs and the preprocessing layer: values checked by hand."""

import json

import numpy as np
import pytest
import tensorflow as tf

from tfmtnas.features import (
    CategoricalFeature,
    FeaturePreprocessor,
    FeatureSpec,
    NumericFeature,
    TaskSpec,
)


def _spec():
    return FeatureSpec.fit(
        {"color": np.array(["red", "blue", "red", "green"]),
         "shop": np.array(["a", "b", "c", "d"]),
         "price": np.array([0.0, 9.0, 99.0, 999.0]),
         "size": np.array([1.0, 2.0, 3.0, 4.0])},
        categorical=["color", "shop"], numeric=["price", "size"], log_numeric=["price"],
        hashed={"shop": 5})


def test_fit_vocabulary_by_frequency_then_value_and_stats():
    spec = _spec()
    assert spec.categorical[0].vocabulary == ("red", "blue", "green")
    assert spec.categorical[1].hash_bins == 5
    assert spec.offsets == [0, 4] and spec.total_ids == 9
    logp = np.log1p([0.0, 9.0, 99.0, 999.0])
    assert spec.numeric[0].mean == pytest.approx(logp.mean())
    assert spec.numeric[0].std == pytest.approx(logp.std())
    assert spec.numeric[1].mean == pytest.approx(2.5)


def test_json_round_trip():
    spec = _spec()
    assert FeatureSpec.from_json(spec.to_json()) == spec
    json.loads(spec.to_json())


def test_preprocessor_values_and_oov():
    spec = _spec()
    out = FeaturePreprocessor(spec)({
        "color": tf.constant(["green", "purple"]), "shop": tf.constant(["a", "a"]),
        "price": tf.constant([9.0, -5.0]), "size": tf.constant([2.5, 4.0])})
    ids = out["categorical"].numpy()
    assert ids[:, 0].tolist() == [3, 0]  # green is the 3rd value; purple is out of vocabulary
    assert ids[0, 1] == ids[1, 1] and 4 <= ids[0, 1] < 9  # hashed ids offset past color
    p = spec.numeric[0]
    expected = (np.log1p([9.0, 0.0]) - p.mean) / p.std  # negative clipped to 0 before log1p
    np.testing.assert_allclose(out["numeric"].numpy()[:, 0], expected, rtol=1e-5)
    np.testing.assert_allclose(out["numeric"].numpy()[:, 1],
                               (np.array([2.5, 4.0]) - 2.5) / spec.numeric[1].std, rtol=1e-5)


def test_preprocessor_ids_equal_per_feature_keras_lookups():
    """The joint table and grouped hashing give the ids of one Keras lookup per feature."""
    from tfmtnas import keras

    rng = np.random.default_rng(0)
    cats = [CategoricalFeature("h7", hash_bins=7), CategoricalFeature("color", ("red", "blue")),
            CategoricalFeature("h3", hash_bins=3), CategoricalFeature("size", ("1", "2", "10")),
            CategoricalFeature("h7b", hash_bins=7), CategoricalFeature("empty", ())]
    spec = FeatureSpec(cats, [NumericFeature("x", 1.0, 2.0)])
    values = ["red", "blue", "1", "2", "10", "", "purple", "0\x1fred", "1\x1fred"]
    raw = {f.name: tf.constant(rng.choice(values, 50)) for f in cats}
    raw["size"] = tf.constant(rng.choice([1, 2, 10, 11], 50))  # integers become strings
    raw["x"] = tf.constant(rng.normal(size=50).astype("float32"))
    got = FeaturePreprocessor(spec)(raw)["categorical"].numpy()
    for j, (f, offset) in enumerate(zip(cats, spec.offsets)):
        column = tf.strings.as_string(raw[f.name]) if f.name == "size" else raw[f.name]
        if f.vocabulary is None:
            expected = keras.layers.Hashing(num_bins=f.hash_bins)(column).numpy()
        elif not f.vocabulary:  # no known value: everything is out of vocabulary
            expected = np.zeros(50, int)
        else:
            expected = keras.layers.StringLookup(vocabulary=list(f.vocabulary),
                                                 num_oov_indices=1, mask_token=None)(column)
        np.testing.assert_array_equal(got[:, j], np.asarray(expected) + offset, f.name)


def test_missing_raw_feature_is_named():
    spec = _spec()
    with pytest.raises(KeyError, match="size"):
        FeaturePreprocessor(spec)({"color": tf.constant(["a"]), "shop": tf.constant(["a"]),
                                   "price": tf.constant([1.0])})


@pytest.mark.parametrize("make, match", [
    (lambda: CategoricalFeature("c"), "exactly one of vocabulary, hash_bins or "
     "vocabulary_file, got none"),
    (lambda: CategoricalFeature("c", hash_bins=3, vocabulary=("a",)),
     "got \\['vocabulary', 'hash_bins'\\]"),
    (lambda: CategoricalFeature("c", vocabulary_file="v.txt"), "go together"),
    (lambda: CategoricalFeature("c", hash_bins=0), "hash_bins must be >= 1, got 0"),
    (lambda: NumericFeature("n", std=0.0), "std must be > 0, got 0.0"),
    (lambda: TaskSpec("t", kind="ranking"), "'ranking'"),
    (lambda: FeatureSpec([CategoricalFeature("a", hash_bins=2)], [NumericFeature("a")]),
     "repeated: \\['a'\\]"),
])
def test_bad_specs_raise_with_the_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()
