"""Export layout, versions, metadata, what the SavedModel carries, and the model contract."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf

from tfmtnas import keras
from tfmtnas.export import (
    METADATA_FILE,
    SavedModelPredictor,
    VersionExistsError,
    existing_versions,
    export_saved_model,
    next_version,
    read_metadata,
    versions,
)
from tfmtnas.features import FeaturePreprocessor, FeatureSpec, NumericFeature, TaskSpec


def _leftovers(model_path):
    return sorted(p.name for p in model_path.iterdir() if p.name.startswith("."))


def test_layout_and_metadata(exported, tiny):
    assert exported.path == exported.root / "tiny" / "1"
    assert (exported.path / "saved_model.pb").is_file()
    assert (exported.path / "variables" / "variables.index").is_file()
    assert _leftovers(exported.path.parent) == []
    meta = read_metadata(exported.path)
    assert meta.spec == tiny.spec
    assert meta.tasks == tiny.tasks
    assert meta.model_class == "MultiTaskModel"
    assert meta.extra == {"note": "test export"}
    details = {"click": {"kind": "binary", "shape": [None],
                         "value": "probability of the positive label (1)"},
               "watch_time": {"kind": "regression", "shape": [None],
                              "value": "predicted value"}}
    assert meta.signatures == {
        "serving_default": {"inputs": ["color", "item", "price", "age"],
                            "outputs": ["click", "watch_time"], "output_details": details},
        "predict_examples": {"inputs": ["examples"], "outputs": ["click", "watch_time"],
                             "output_details": details}}
    raw = json.loads((exported.path / METADATA_FILE).read_text())
    assert raw["format"] == 1 and raw["tfmtnas_version"]


def test_only_inference_weights_are_saved(exported, tiny):
    names = [n for n, _ in tf.train.list_variables(str(exported.path / "variables" /
                                                       "variables"))]
    assert not [n for n in names if "optimizer" in n or "metric" in n]
    saved = sum(int(np.prod(s)) for n, s in tf.train.list_variables(
        str(exported.path / "variables" / "variables")) if n != "_CHECKPOINTABLE_OBJECT_GRAPH")
    assert saved == sum(int(np.prod(v.shape)) for v in tiny.model.trainable_variables)


def test_predictor_matches_model(exported, tiny):
    predictor = SavedModelPredictor(exported.path)
    seen = []
    got = predictor.predict(tiny.heldout, batch_size=20, progress=lambda d, n: seen.append(d))
    expected = tiny.model.predict_raw(tiny.heldout)
    assert seen == [20, 40, 60, 64]
    for task in ("click", "watch_time"):
        np.testing.assert_allclose(got[task], expected[task], atol=1e-6)


def test_predictor_names_feature_with_wrong_values(exported, tiny):
    predictor = SavedModelPredictor(exported.path)
    bad = dict(tiny.heldout, age=np.array(["old"] * 64))
    with pytest.raises(ValueError, match=r"Feature 'age' is numeric; got non-numeric values"):
        predictor.predict(bad)
    with pytest.raises(ValueError, match=r"Missing features \['item'\]"):
        predictor.predict({k: v for k, v in tiny.heldout.items() if k != "item"})


def test_next_version_and_explicit_versions(tiny, tmp_path):
    model_path = tmp_path / "tiny"
    assert next_version(model_path) == 1
    assert export_saved_model(tiny.model, tmp_path, name="tiny").name == "1"
    (model_path / "notes").mkdir()  # not a version
    (model_path / "007").mkdir()  # not canonical; left alone
    (model_path / "9.txt").write_text("")
    assert next_version(model_path) == 2
    assert export_saved_model(tiny.model, tmp_path, name="tiny", version=5).name == "5"
    assert export_saved_model(tiny.model, tmp_path, name="tiny").name == "6"
    assert existing_versions(model_path) == [1, 5, 6]
    assert _leftovers(model_path) == []


def test_existing_version_is_refused_then_overwritten(tiny, tmp_path):
    first = export_saved_model(tiny.model, tmp_path, name="m", version=3)
    stamp = (first / METADATA_FILE).read_text()
    with pytest.raises(VersionExistsError, match=r"Version 3 of .* already exists"):
        export_saved_model(tiny.model, tmp_path, name="m", version=3)
    assert (first / METADATA_FILE).read_text() == stamp
    again = export_saved_model(tiny.model, tmp_path, name="m", version=3, overwrite=True,
                               metadata={"second": True})
    assert again == first
    assert read_metadata(first).extra == {"second": True}
    assert _leftovers(tmp_path / "m") == []
    assert existing_versions(tmp_path / "m") == [3]


def test_publish_refuses_a_version_that_appeared_meanwhile(tmp_path):
    staged = tmp_path / ".tmp-1-x"
    staged.mkdir()
    (staged / "saved_model.pb").write_text("new")
    final = tmp_path / "1"
    final.mkdir()
    (final / "saved_model.pb").write_text("old")
    with pytest.raises(VersionExistsError):
        versions.publish(staged, final)
    assert (final / "saved_model.pb").read_text() == "old"
    versions.publish(staged, final, overwrite=True)
    assert (final / "saved_model.pb").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]


@pytest.mark.parametrize("name", ["", "a/b", "..", ".hidden", "with space"])
def test_invalid_model_names(tiny, tmp_path, name):
    with pytest.raises(ValueError, match="Invalid model name"):
        export_saved_model(tiny.model, tmp_path, name=name)


@pytest.mark.parametrize("version", [-1, "x", 1.5, "01", True])
def test_invalid_versions(tiny, tmp_path, version):
    with pytest.raises(ValueError, match="A version must be an integer >= 0"):
        export_saved_model(tiny.model, tmp_path, name="m", version=version)


def test_version_given_as_string_is_accepted():
    assert versions.check_version("12") == 12


class _Broken(keras.Model):
    """Follows the contract but fails inside the serving graph."""

    def __init__(self, spec, tasks):
        super().__init__()
        self.spec, self.tasks = spec, tasks
        self.dense = keras.layers.Dense(1)

    def call(self, features):
        if not tf.executing_eagerly():
            raise RuntimeError("cannot trace")
        return {t.name: self.dense(features["numeric"])[:, 0] for t in self.tasks}


def test_failed_export_leaves_nothing_behind(tmp_path):
    spec = FeatureSpec(numeric=[NumericFeature("x")])
    with pytest.raises(RuntimeError, match="cannot trace"):
        export_saved_model(_Broken(spec, (TaskSpec("y", "regression"),)), tmp_path, name="b")
    assert list((tmp_path / "b").iterdir()) == []


def test_feature_names_tensorflow_would_rename_are_refused(tmp_path):
    spec = FeatureSpec(numeric=[NumericFeature("item-price"), NumericFeature("_x"),
                                NumericFeature("ok_1")])
    with pytest.raises(ValueError, match=r"Feature names \['item-price', '_x'\] cannot be "
                                         r"serving input names"):
        export_saved_model(_Broken(spec, (TaskSpec("y", "regression"),)), tmp_path)


class TinyChild(keras.Model):
    """Not a MultiTaskModel: only the contract (.spec, .tasks, call on preprocessed)."""

    def __init__(self, spec, tasks):
        super().__init__()
        self.spec, self.tasks = spec, tasks
        self.table = keras.layers.Embedding(spec.total_ids, 3)
        self.head = keras.layers.Dense(len(tasks))

    def call(self, features):
        emb = tf.reshape(self.table(features["categorical"]), [-1, 3 * len(self.spec.categorical)])
        z = self.head(tf.concat([emb, features["numeric"]], axis=1))
        return {t.name: tf.sigmoid(z[:, i]) if t.kind == "binary" else z[:, i]
                for i, t in enumerate(self.tasks)}


def test_any_model_following_the_contract_exports(tiny, tmp_path):
    keras.utils.set_random_seed(1)
    child = TinyChild(tiny.spec, tiny.tasks)
    path = export_saved_model(child, tmp_path, name="child")
    assert read_metadata(path).model_class == "TinyChild"
    got = SavedModelPredictor(path).predict(tiny.heldout)
    expected = child(FeaturePreprocessor(tiny.spec)(
        {k: tf.constant(v) for k, v in tiny.heldout.items()}))
    for task in ("click", "watch_time"):
        np.testing.assert_allclose(got[task], expected[task].numpy(), atol=1e-6)


def test_objects_without_the_contract_are_refused(tmp_path):
    with pytest.raises(TypeError, match=r"Cannot export Dense: a tfmtnas model needs \.spec"):
        export_saved_model(keras.layers.Dense(1), tmp_path)


def test_read_metadata_explains_what_is_wrong(exported, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"It holds versions \[1\]: pass one"):
        read_metadata(exported.root / "tiny")
    (tmp_path / "saved_model.pb").write_text("")
    with pytest.raises(FileNotFoundError, match="not a tfmtnas export"):
        read_metadata(tmp_path)


def test_xla_compiled_core_gives_the_same_predictions(tiny, tmp_path):
    path = export_saved_model(tiny.model, tmp_path, name="xla", jit_compile=True)
    assert read_metadata(path).jit_compile is True
    got = SavedModelPredictor(path).predict(tiny.heldout)
    expected = tiny.model.predict_raw(tiny.heldout)
    for task in ("click", "watch_time"):
        assert np.max(np.abs(got[task] - expected[task])) <= 1e-5
