"""An export with a multiclass task: per-class probabilities, as TF Serving would return them.

The model (one binary, one 3-class and one regression task over the shared ``tiny`` data)
is exported once; a child process loads it with the ``serve`` tag and neither tfmtnas nor
tf-keras importable, runs both signatures and writes the outputs; the parent compares them
with the in-memory model (a slow test). The C API session (TensorFlow's C++ runtime, as a
model server uses it) and the SavedModel predictor are checked on the same export in this
process.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from tfmtnas import keras
from tfmtnas.data import Split
from tfmtnas.data.pipeline import make_dataset
from tfmtnas.export import SavedModelPredictor, client, export_saved_model, read_metadata
from tfmtnas.export.capi import CApiSession
from tfmtnas.features import TaskSpec
from tfmtnas.models import MultiTaskModel
from tfmtnas.pipelines.evaluating import evaluate_split

from .conftest import make_columns, make_labels

TASKS = (TaskSpec("click"), TaskSpec("colour", "multiclass:3"),
         TaskSpec("watch_time", "regression"))

CHILD = r'''
import base64, importlib.abc, importlib.machinery, json, sys


class Block(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Packages TF Serving does not have: importing one fails, as it would there."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"tfmtnas", "tf_keras", "tensorflow_recommenders"}:
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise ImportError(f"{module.__name__} is blocked by the test")


sys.meta_path.insert(0, Block())
import numpy as np
import tensorflow as tf

args = json.load(open(sys.argv[1]))
loaded = tf.saved_model.load(args["path"], tags=["serve"])
serve = loaded.signatures["serving_default"]
feats = {k: tf.constant(v, dtype=args["dtypes"][k]) for k, v in args["columns"].items()}
out = {f"serve/{k}": v.numpy() for k, v in serve(**feats).items()}
examples = tf.constant([base64.b64decode(e) for e in args["examples_b64"]])
out.update({f"examples/{k}": v.numpy() for k, v in
            loaded.signatures["predict_examples"](examples=examples).items()})
empty = {k: tf.zeros([0], v.dtype) for k, v in feats.items()}
out.update({f"empty/{k}": v.numpy() for k, v in serve(**empty).items()})
np.savez(args["out"], **out)
print(json.dumps({k: [s.dtype.name, s.shape.as_list()]
                  for k, s in serve.structured_outputs.items()}))
'''


@pytest.fixture(scope="module")
def multiclass(tmp_path_factory):
    """A briefly trained model with a 3-class task (the colour id), exported once."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    from tfmtnas.features import FeatureSpec

    train = make_columns(512, seed=0)
    labels = make_labels(train, 0)
    labels["colour"] = np.searchsorted(["blue", "green", "red"], train["color"]).astype(
        "float32")
    labels["colour"][::5] = np.nan
    spec = FeatureSpec.fit(train, categorical=["color", "item"], numeric=["price", "age"],
                           log_numeric=["price"], hashed={"item": 16})
    model = MultiTaskModel(spec, TASKS, sharing={"kind": "mmoe", "expert_units": [8],
                                                 "num_experts": 2}, tower_units=(8,))
    model.compile(keras.optimizers.Adam(2e-2), jit_compile=False)
    model.fit(make_dataset(Split(train, labels), spec, 32, shuffle=True, seed=0), epochs=4,
              verbose=0)
    heldout = make_columns(32, seed=7)
    heldout["color"][:2] = ["purple", ""]  # out of vocabulary
    path = export_saved_model(model, tmp_path_factory.mktemp("saved_models"), name="mc")
    return types.SimpleNamespace(model=model, spec=spec, heldout=heldout, path=path,
                                 train=Split(train, labels))


@pytest.mark.slow  # a child process importing TensorFlow: about 14 s here
def test_fresh_process_returns_class_probabilities_equal_to_keras(multiclass, tmp_path):
    spec = multiclass.spec
    args = {"path": str(multiclass.path),
            "columns": {k: v.tolist() for k, v in multiclass.heldout.items()},
            "dtypes": {n: spec.raw_dtype(n).name for n in spec.names},
            "examples_b64": [base64.b64encode(e).decode()
                             for e in client.to_tf_examples(multiclass.heldout, spec)],
            "out": str(tmp_path / "out.npz")}
    (tmp_path / "args.json").write_text(json.dumps(args))
    (tmp_path / "child.py").write_text(CHILD)
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    result = subprocess.run([sys.executable, str(tmp_path / "child.py"),
                             str(tmp_path / "args.json")], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    shapes = json.loads(result.stdout.strip().splitlines()[-1])
    assert shapes == {"click": ["float32", [None]], "colour": ["float32", [None, 3]],
                      "watch_time": ["float32", [None]]}
    out = dict(np.load(tmp_path / "out.npz"))
    expected = multiclass.model.predict_raw(multiclass.heldout)
    assert expected["colour"].shape == (32, 3)
    for signature in ("serve", "examples"):
        probs = out[f"{signature}/colour"]
        assert probs.shape == (32, 3)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        assert np.all(probs >= 0)
        for task in ("click", "colour", "watch_time"):
            assert np.max(np.abs(out[f"{signature}/{task}"] - expected[task])) <= 1e-5
    assert out["empty/colour"].shape == (0, 3) and out["empty/click"].shape == (0,)
    # Trained on the colour id, the model picks it for known colours.
    known = slice(2, None)
    truth = np.searchsorted(["blue", "green", "red"], multiclass.heldout["color"][known])
    assert np.mean(out["serve/colour"][known].argmax(axis=1) == truth) >= 0.9


def test_metadata_names_the_class_probabilities(multiclass):
    meta = read_metadata(multiclass.path)
    assert meta.tasks == TASKS
    details = meta.signatures["serving_default"]["output_details"]
    assert details["colour"] == {
        "kind": "multiclass:3", "shape": [None, 3],
        "value": "probability of each class id 0..2: column j is P(class j); each row sums "
                 "to 1"}
    assert details["click"]["shape"] == [None]
    assert meta.signatures["predict_examples"]["output_details"] == details


def test_c_api_predictor_and_evaluation_take_the_probability_matrix(multiclass):
    expected = multiclass.model.predict_raw(multiclass.heldout)
    with CApiSession(multiclass.path) as session:
        session.set_inputs(client.to_columns(multiclass.heldout, multiclass.spec))
        got = session.run()
    assert got["colour"].shape == (32, 3) and got["click"].shape == (32,)
    np.testing.assert_allclose(got["colour"], expected["colour"], atol=1e-5)
    predictor = SavedModelPredictor(multiclass.path)
    by_predictor = predictor.predict(multiclass.heldout, batch_size=10)
    np.testing.assert_allclose(by_predictor["colour"], expected["colour"], atol=1e-5)
    assert predictor.predict({k: v[:0] for k, v in multiclass.heldout.items()})[
        "colour"].shape == (0, 3)
    report = evaluate_split(predictor.predict, multiclass.train, multiclass.spec, TASKS)
    assert report["labelled"]["colour"] == int(np.sum(~np.isnan(
        multiclass.train.labels["colour"])))
    assert report["metrics"]["colour_accuracy"] >= 0.9
    assert set(report["metrics"]) == {"click_auc", "colour_accuracy", "watch_time_rmse"}
