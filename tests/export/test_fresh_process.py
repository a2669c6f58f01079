"""The export as TF Serving sees it: a new process, the ``serve`` tag, no tfmtnas.

One child process (``sys.executable``) loads the exported folder with imports of tfmtnas,
tf-keras and TensorFlow Recommenders blocked, runs both signatures on held-out rows and a
set of bad inputs, and writes what it saw; the parent compares with the in-memory model.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tfmtnas.export import client

CHILD = r'''
import base64, importlib.abc, importlib.machinery, json, sys

# Packages TF Serving does not have: importing one fails here, as it would there.
BLOCKED = {"tfmtnas", "tf_keras", "tensorflow_recommenders", "keras"}
attempted = []


class Block(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        attempted.append(module.__name__)
        raise ImportError(f"{module.__name__} is not installed (blocked by the test)")


sys.meta_path.insert(0, Block())
import numpy as np
import tensorflow as tf

attempted.clear()  # TensorFlow's own import probes for keras; what matters is the load
args = json.load(open(sys.argv[1]))
loaded = tf.saved_model.load(args["path"], tags=["serve"])
serve = loaded.signatures["serving_default"]
by_example = loaded.signatures["predict_examples"]
report = {"signatures": sorted(loaded.signatures.keys())}
report["inputs"] = {k: [s.dtype.name, s.shape.as_list()]
                    for k, s in serve.structured_input_signature[1].items()}
report["outputs"] = sorted(serve.structured_outputs)
report["example_inputs"] = sorted(by_example.structured_input_signature[1])

dtypes = args["dtypes"]
feats = {k: tf.constant(v, dtype=dtypes[k]) for k, v in args["columns"].items()}
out = {f"serve/{k}": v.numpy() for k, v in serve(**feats).items()}
examples = tf.constant([base64.b64decode(e) for e in args["examples_b64"]])
out.update({f"examples/{k}": v.numpy() for k, v in by_example(examples=examples).items()})
one = {k: v[:1] for k, v in feats.items()}
out.update({f"oov_purple/{k}": v.numpy() for k, v in serve(**dict(
    one, color=tf.constant(["purple"]))).items()})
out.update({f"oov_unk/{k}": v.numpy() for k, v in serve(**dict(
    one, color=tf.constant(["[UNK]"]))).items()})
empty = {k: tf.zeros([0], v.dtype) for k, v in feats.items()}
out.update({f"empty/{k}": v.numpy() for k, v in serve(**empty).items()})
np.savez(args["out"], **out)

def example(**values):
    feature = {}
    for k, v in values.items():
        if isinstance(v, str):
            feature[k] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode()]))
        elif isinstance(v, float):
            feature[k] = tf.train.Feature(float_list=tf.train.FloatList(value=[v]))
        else:
            feature[k] = tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

good = dict(color="red", item="item3", price=5.0, age=30.0)
cases = {
    "missing_age": lambda: serve(**{k: v for k, v in one.items() if k != "age"}),
    "rank2_color": lambda: serve(**dict(one, color=tf.constant([["red"]]))),
    "rank0_price": lambda: serve(**dict(one, price=tf.constant(1.0))),
    "rows_age": lambda: serve(**dict(feats, age=feats["age"][:-1])),
    "dtype_price_tensor": lambda: serve(**dict(one, price=tf.constant(["x"]))),
    "dtype_price_numpy": lambda: serve(**dict(one, price=np.array(["x"]))),
    "unknown_input": lambda: serve(**dict(one, colour=tf.constant(["red"]))),
    "example_int_color": lambda: by_example(examples=tf.constant(
        [example(**dict(good, color=3))])),
    "example_garbage": lambda: by_example(examples=tf.constant([b"not a proto"])),
}
report["errors"] = {}
for name, call in cases.items():
    try:
        call()
        report["errors"][name] = None
    except Exception as err:  # what a caller of the loaded SavedModel sees
        report["errors"][name] = [type(err).__name__, str(err)]
missing_cat = by_example(examples=tf.constant(
    [example(**{k: v for k, v in good.items() if k != "color"}),
     example(**dict(good, color=""))]))
report["example_missing_color"] = {k: v.numpy().tolist() for k, v in missing_cat.items()}
no_age = by_example(examples=tf.constant(
    [example(**{k: v for k, v in good.items() if k != "age"})]))
report["missing_numeric"] = {"example": {k: v.numpy().tolist() for k, v in no_age.items()}}
for label, age in (("nan", float("nan")), ("inf", float("inf")), ("-inf", float("-inf"))):
    raw = {k: tf.constant([v]) for k, v in good.items()}
    raw["age"] = tf.constant([age])
    report["missing_numeric"][label] = {k: v.numpy().tolist() for k, v in serve(**raw).items()}
    example_row = example(**dict(good, age=age))
    report["missing_numeric"][f"example_{label}"] = {
        k: v.numpy().tolist() for k, v in by_example(examples=tf.constant([example_row])).items()}
report["imported_blocked"] = sorted(set(attempted))
print(json.dumps(report))
'''


def _run(cmd, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{cmd[:3]} failed:\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def child(tiny, exported, tmp_path_factory):
    work = tmp_path_factory.mktemp("child")
    cols = {k: v.tolist() for k, v in tiny.heldout.items()}
    dtypes = {n: tiny.spec.raw_dtype(n).name for n in tiny.spec.names}
    examples = [base64.b64encode(e).decode() for e in client.to_tf_examples(tiny.heldout,
                                                                             tiny.spec)]
    args = {"path": str(exported.path), "columns": cols, "dtypes": dtypes,
            "examples_b64": examples, "out": str(work / "out.npz")}
    (work / "args.json").write_text(json.dumps(args))
    (work / "child.py").write_text(CHILD)
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    result = _run([sys.executable, str(work / "child.py"), str(work / "args.json")], cwd=work,
                  env=env)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return report, dict(np.load(work / "out.npz"))


def test_loading_and_serving_need_neither_tfmtnas_nor_keras(child):
    report, _ = child
    assert report["imported_blocked"] == []


def test_signatures_and_named_inputs(child, tiny):
    report, _ = child
    assert report["signatures"] == ["predict_examples", "serving_default"]
    assert report["inputs"] == {"color": ["string", [None]], "item": ["string", [None]],
                                "price": ["float32", [None]], "age": ["float32", [None]]}
    assert report["outputs"] == ["click", "watch_time"]
    assert report["example_inputs"] == ["examples"]


def test_both_signatures_match_in_memory_model(child, tiny):
    _, out = child
    expected = tiny.model.predict_raw(tiny.heldout)
    for signature in ("serve", "examples"):
        for task in ("click", "watch_time"):
            got = out[f"{signature}/{task}"]
            assert got.shape == (64,)
            assert np.max(np.abs(got - expected[task])) <= 1e-5, (signature, task)
    assert np.all((out["serve/click"] > 0) & (out["serve/click"] < 1))  # probabilities


def test_unseen_category_goes_to_oov_bucket(child, tiny):
    _, out = child
    for task in ("click", "watch_time"):
        assert out[f"oov_purple/{task}"] == pytest.approx(out[f"oov_unk/{task}"], abs=0)
        # Held-out rows 0 ("purple") and 1 ("") are both out of vocabulary.
        assert out[f"serve/{task}"][0] != out[f"serve/{task}"][2]
    # Same as feeding the OOV id (0 + the feature's offset) to the model directly.
    pre = tiny.model.spec
    import tensorflow as tf

    from tfmtnas.features import FeaturePreprocessor

    raw = {k: v[:1] for k, v in tiny.heldout.items()}
    raw["color"] = np.array(["red"])
    x = FeaturePreprocessor(pre)(raw)
    ids = x["categorical"].numpy()
    ids[0, 0] = pre.offsets[0]  # the OOV id of "color"
    direct = tiny.model({"categorical": tf.constant(ids), "numeric": x["numeric"]})
    for task in ("click", "watch_time"):
        assert out[f"oov_purple/{task}"][0] == pytest.approx(float(direct[task][0]), abs=1e-6)


def test_empty_batch_gives_empty_outputs(child):
    _, out = child
    assert out["empty/click"].shape == (0,) and out["empty/watch_time"].shape == (0,)


def _error(report, case):
    err = report["errors"][case]
    assert err is not None, f"{case}: the loaded SavedModel accepted bad input"
    return err[1]


def test_missing_feature_is_named(child):
    report, _ = child
    assert "missing a required argument: 'age'" in _error(report, "missing_age")
    assert "unexpected keyword argument 'colour'" in _error(report, "unknown_input")


def test_wrong_rank_is_named(child):
    report, _ = child
    assert re.search(r"features of another rank:\] \[color\]", _error(report, "rank2_color"))
    assert re.search(r"features of another rank:\] \[price\]", _error(report, "rank0_price"))


def test_wrong_number_of_rows_is_named(child):
    report, _ = child
    message = _error(report, "rows_age")
    assert re.search(r"differs from that of color:\] \[age\] \[values per feature:\] "
                     r"\[64 64 64 63\]", message)


def test_wrong_dtype_is_rejected(child):
    # TensorFlow rejects a tensor of the wrong dtype before the graph runs, naming the flat
    # input position (inputs are ordered by name: age, color, item, price -> #3 is price);
    # a NumPy value fails when bound to the signature, which prints the offending argument.
    # tfmtnas' own entry points name the feature (test_client / test_saved_model).
    report, _ = child
    assert re.search(r"input #3\(zero-based\) was expected to be a float tensor but is a "
                     r"string tensor", _error(report, "dtype_price_tensor"))
    message = _error(report, "dtype_price_numpy")
    assert "could not convert string to float" in message and "'price': array(['x']" in message


def test_tf_example_errors_name_the_feature(child):
    report, _ = child
    assert "Key: color" in _error(report, "example_int_color")
    assert "Could not parse example input" in _error(report, "example_garbage")


def test_missing_or_non_finite_numeric_is_the_training_mean(child, tiny):
    """A tf.Example without "age", and age NaN or +-inf in either signature, predict as age
    equal to its training mean (finite outputs, same numbers in both signatures)."""
    report, _ = child
    mean_age = next(f.mean for f in tiny.spec.numeric if f.name == "age")
    expected = tiny.model.predict_raw({"color": np.array(["red"]), "item": np.array(["item3"]),
                                       "price": np.array([5.0], np.float32),
                                       "age": np.array([mean_age], np.float32)})
    assert set(report["missing_numeric"]) == {"example", "nan", "inf", "-inf", "example_nan",
                                              "example_inf", "example_-inf"}
    for case, outputs in report["missing_numeric"].items():
        for task in ("click", "watch_time"):
            assert np.isfinite(outputs[task][0]), case
            assert outputs[task][0] == pytest.approx(float(expected[task][0]), abs=1e-5), case


def test_tf_example_missing_categorical_is_oov(child):
    report, _ = child
    for values in report["example_missing_color"].values():
        assert values[0] == values[1]  # absent "color" == color "" (out of vocabulary)


@pytest.fixture(scope="module")
def saved_model_cli():
    cli = Path(sys.executable).parent / "saved_model_cli"
    if not cli.exists():
        pytest.skip("saved_model_cli is not installed next to this Python")
    return str(cli)


def test_saved_model_cli_show_lists_both_signatures(saved_model_cli, exported):
    text = _run([saved_model_cli, "show", "--dir", str(exported.path), "--all"]).stdout
    for signature in ("serving_default", "predict_examples"):
        assert f"signature_def['{signature}']" in text
    serving = text.split("signature_def['serving_default']")[1]
    for name in ("color", "item", "price", "age"):
        assert f"inputs['{name}'] tensor_info:" in serving
    assert "outputs['click'] tensor_info:" in serving
    assert "outputs['watch_time'] tensor_info:" in serving
    examples = text.split("signature_def['predict_examples']")[1].split("signature_def[")[0]
    assert "inputs['examples'] tensor_info:" in examples


def test_saved_model_cli_run_serving_default(saved_model_cli, exported, tiny, tmp_path):
    rows = {k: v[3:5] for k, v in tiny.heldout.items()}
    exprs = ";".join(
        f"{k}={json.dumps([str(x) for x in v])}" if tiny.spec.raw_dtype(k).name == "string"
        else f"{k}={[float(x) for x in v]}"
        for k, v in rows.items())
    _run([saved_model_cli, "run", "--dir", str(exported.path), "--tag_set", "serve",
          "--signature_def", "serving_default", "--input_exprs", exprs,
          "--outdir", str(tmp_path)])
    expected = tiny.model.predict_raw(rows)
    for task in ("click", "watch_time"):
        got = np.load(tmp_path / f"{task}.npy")
        assert np.max(np.abs(got - expected[task])) <= 1e-5
