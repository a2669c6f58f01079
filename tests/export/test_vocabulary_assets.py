"""Vocabulary files as SavedModel assets and model-dir files, not graph constants.

A model whose user and item vocabularies are files (the user file holds ``""`` as an empty
line, which TensorFlow's text-file reader refuses, so it takes the whole-file initialiser;
the item file takes ``TextFileInitializer``), next to an inline and a hashed feature, is
trained for a few steps, exported, and saved as a model dir. The checks: the export carries
the files under ``assets/`` and its graph does not hold the values; the metadata names the
asset; a fresh process (TensorFlow only, and the C API a model server uses) loads and
predicts with the original files moved away; a model dir moved elsewhere loads.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfmtnas import keras
from tfmtnas.export import (
    METADATA_FILE,
    SavedModelPredictor,
    client,
    export_saved_model,
    read_metadata,
)
from tfmtnas.export.saved_model import ExportMetadata
from tfmtnas.features import (
    CategoricalFeature,
    FeaturePreprocessor,
    FeatureSpec,
    NumericFeature,
    TaskSpec,
)
from tfmtnas.models import MultiTaskModel
from tfmtnas.pipelines.training import load_model, save_model

TASKS = (TaskSpec("click", "binary"), TaskSpec("watch_time", "regression"))
# Distinctive prefixes: if a value were a graph constant, its bytes would be in the graph.
USERS = [f"uid-{i:03d}" for i in range(30)]
USERS.insert(2, "")  # the empty string is a known user (line 3 of the file is empty)
ITEMS = [f"sku-{i:03d}" for i in range(40)]


def _columns(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "user": rng.choice(USERS + ["uid-new"], n),
        "item": rng.choice(ITEMS + ["sku-new"], n),
        "color": rng.choice(["red", "blue", "green"], n),
        "shop": np.array([f"shop{i}" for i in rng.integers(0, 20, n)]),
        "price": rng.lognormal(2.0, 1.0, n).astype("float32"),
    }


def _labels(cols: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    user = np.array([hash(u) % 7 for u in cols["user"]]) / 7.0  # per-user effect
    z = user + (cols["item"] < "sku-020") + rng.normal(0, 0.3, len(user))
    return {"click": (z > 1.0).astype("float32"),
            "watch_time": (np.log1p(cols["price"]) + z).astype("float32")}


def _write_lines(path: Path, values: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(v.encode() + b"\n" for v in values))


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    """A trained model with file vocabularies, its export and Keras' predictions."""
    root = tmp_path_factory.mktemp("vocabulary_assets")
    data_dir = root / "dataset"
    _write_lines(data_dir / "vocabularies" / "user.txt", USERS)
    _write_lines(data_dir / "vocabularies" / "item.txt", ITEMS)
    # As a prepared dataset's spec.json names them: relative to the dataset folder.
    stored = FeatureSpec(
        [CategoricalFeature("user", vocabulary_file="vocabularies/user.txt",
                            vocabulary_size=len(USERS)),
         CategoricalFeature("color", ("red", "blue", "green")),
         CategoricalFeature("item", vocabulary_file="vocabularies/item.txt",
                            vocabulary_size=len(ITEMS)),
         CategoricalFeature("shop", hash_bins=8)],
        [NumericFeature("price", 2.0, 1.0, log=True)])
    spec = stored.resolved(data_dir)
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = MultiTaskModel(spec, TASKS, sharing={"kind": "mmoe", "expert_units": [16],
                                                 "num_experts": 2}, tower_units=(8,))
    model.compile(keras.optimizers.Adam(2e-2), jit_compile=False)
    train = _columns(1024, seed=0)
    x = FeaturePreprocessor(spec)(train)
    ds = tf.data.Dataset.from_tensor_slices((x, _labels(train, 1))).batch(128)
    model.fit(ds, epochs=2, verbose=0)
    heldout = _columns(48, seed=5)
    for k in heldout:  # rows 0-7 equal but for the user (0-3) or the item (4-7)
        heldout[k][:8] = heldout[k][8]
    heldout["user"][:4] = ["", "uid-new", "uid-001", "uid-029"]  # known "", unseen, known
    heldout["item"][4:8] = ["sku-new", "", "sku-000", "sku-039"]  # unseen, "" unseen too
    path = export_saved_model(model, root / "saved_models", name="clicks")
    return types.SimpleNamespace(root=root, data_dir=data_dir, spec=spec, model=model,
                                 heldout=heldout, path=path,
                                 expected=model.predict_raw(heldout))


@pytest.fixture
def originals_moved(vocab):
    """The dataset folder (the original vocabulary files) renamed for one test."""
    away = vocab.root / "dataset-moved"
    vocab.data_dir.rename(away)
    try:
        yield
    finally:
        away.rename(vocab.data_dir)


def test_export_carries_the_files_as_assets_not_as_graph_constants(vocab):
    assets = vocab.path / "assets"
    assert sorted(p.name for p in assets.iterdir()) == ["item.txt", "user.txt"]
    for name in ("user", "item"):
        assert (assets / f"{name}.txt").read_bytes() == (
            vocab.data_dir / "vocabularies" / f"{name}.txt").read_bytes()
    graph = (vocab.path / "saved_model.pb").read_bytes()
    assert b"uid-0" not in graph and b"sku-0" not in graph
    assert b"blue" in graph  # the inline vocabulary is a constant, as before


def test_metadata_names_the_asset_and_reads_back_resolved(vocab):
    raw = json.loads((vocab.path / METADATA_FILE).read_text())
    by_name = {f["name"]: f for f in raw["feature_spec"]["categorical"]}
    assert by_name["user"] == {"name": "user", "vocabulary": None, "hash_bins": None,
                               "vocabulary_file": "assets/user.txt",
                               "vocabulary_size": len(USERS)}
    assert by_name["item"]["vocabulary_file"] == "assets/item.txt"
    assert "uid-0" not in (vocab.path / METADATA_FILE).read_text()
    meta = read_metadata(vocab.path)
    assert meta.spec.vocabulary_files == {"user": str(vocab.path / "assets" / "user.txt"),
                                          "item": str(vocab.path / "assets" / "item.txt")}
    # Same features as the model's spec, only the files are the export's copies.
    assert meta.spec == dataclasses.replace(vocab.spec, categorical=tuple(
        dataclasses.replace(f, vocabulary_file=meta.spec.vocabulary_files[f.name])
        if f.vocabulary_file else f for f in vocab.spec.categorical))
    assert meta.spec.categorical[0].read_vocabulary() == tuple(USERS)
    again = ExportMetadata.from_dict(raw)
    assert again.spec.resolved(vocab.path) == meta.spec


def test_client_helpers_read_the_first_value_from_the_file(vocab, originals_moved):
    spec = read_metadata(vocab.path).spec
    row = client.sample_row(spec)
    assert row["user"] == "uid-000" and row["item"] == "sku-000" and row["color"] == "red"
    assert '"user": "uid-000"' in client.curl_request(vocab.path, "clicks")
    examples = client.to_tf_examples(vocab.heldout, spec)
    assert len(examples) == 48
    assert SavedModelPredictor(vocab.path).predict(vocab.heldout)["click"] == pytest.approx(
        vocab.expected["click"], abs=1e-5)


CHILD = r'''
import base64, importlib.util, json, sys
import numpy as np
import tensorflow as tf

args = json.load(open(sys.argv[1]))
loaded = tf.saved_model.load(args["path"], tags=["serve"])
feats = {k: tf.constant(v, dtype=args["dtypes"][k]) for k, v in args["columns"].items()}
out = {f"serve/{k}": v.numpy() for k, v in loaded.signatures["serving_default"](
    **feats).items()}
examples = tf.constant([base64.b64decode(e) for e in args["examples_b64"]])
out.update({f"examples/{k}": v.numpy() for k, v in loaded.signatures["predict_examples"](
    examples=examples).items()})
# The C++ loader a model server uses (TF_LoadSessionFromSavedModel) reads the asset too.
spec = importlib.util.spec_from_file_location("capi", args["capi"])
capi = importlib.util.module_from_spec(spec)
spec.loader.exec_module(capi)
with capi.CApiSession(args["path"]) as session:
    session.set_inputs({k: np.array(v, dtype=object if args["dtypes"][k] == "string"
                                    else np.float32) for k, v in args["columns"].items()})
    out.update({f"capi/{k}": v for k, v in session.run().items()})
np.savez(args["out"], **out)
'''


def test_fresh_process_predicts_from_the_assets_with_the_originals_gone(vocab, tmp_path,
                                                                        originals_moved):
    assert not (vocab.data_dir / "vocabularies" / "user.txt").exists()
    cols = {k: v.tolist() for k, v in vocab.heldout.items()}
    args = {"path": str(vocab.path), "columns": cols,
            "dtypes": {n: vocab.spec.raw_dtype(n).name for n in vocab.spec.names},
            "examples_b64": [base64.b64encode(e).decode()
                             for e in client.to_tf_examples(vocab.heldout, vocab.spec)],
            "capi": str(Path(client.__file__).parent / "capi.py"),
            "out": str(tmp_path / "out.npz")}
    (tmp_path / "args.json").write_text(json.dumps(args))
    (tmp_path / "child.py").write_text(CHILD)
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    done = subprocess.run([sys.executable, str(tmp_path / "child.py"),
                           str(tmp_path / "args.json")], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = dict(np.load(tmp_path / "out.npz"))
    for way in ("serve", "examples", "capi"):
        for task in ("click", "watch_time"):
            np.testing.assert_allclose(out[f"{way}/{task}"], vocab.expected[task], rtol=0,
                                       atol=1e-5, err_msg=f"{way}/{task}")
    # The ids matter: the known user "" is not the out-of-vocabulary user; the item "",
    # unknown, is.
    click = out["serve/click"]
    assert len({round(float(c), 6) for c in click[:4]}) == 4
    assert click[4] == click[5] and len({round(float(c), 6) for c in click[5:8]}) == 3


def test_model_dir_stores_the_files_and_loads_after_a_move(vocab, tmp_path):
    run = tmp_path / "run"
    save_model(vocab.model, run)
    text = (run / "model.json").read_text()
    cats = {f["name"]: f for f in json.loads(text)["spec"]["categorical"]}
    assert cats["user"]["vocabulary_file"] == "vocabularies/user.txt"
    assert cats["item"]["vocabulary_file"] == "vocabularies/item.txt"
    assert cats["user"]["vocabulary"] is None and "uid-0" not in text
    assert (run / "vocabularies" / "user.txt").read_bytes() == (
        vocab.data_dir / "vocabularies" / "user.txt").read_bytes()
    moved = tmp_path / "elsewhere" / "run"
    shutil.move(str(run), str(moved))
    vocab.data_dir.rename(vocab.root / "dataset-moved")
    try:
        loaded = load_model(moved)
        assert loaded.spec.vocabulary_files["user"] == str(moved / "vocabularies" / "user.txt")
        got = loaded.predict_raw(vocab.heldout)
        # Saving the loaded model back into its own folder keeps its files.
        save_model(loaded, moved)
        assert (moved / "vocabularies" / "user.txt").read_bytes().count(b"\n") == len(USERS)
    finally:
        (vocab.root / "dataset-moved").rename(vocab.data_dir)
    for task in ("click", "watch_time"):
        np.testing.assert_allclose(got[task], vocab.expected[task], rtol=0, atol=1e-6)


def test_empty_vocabulary_file_is_exported_too(tmp_path):
    empty = tmp_path / "none.txt"
    empty.write_bytes(b"")
    spec = FeatureSpec([CategoricalFeature("tag", vocabulary_file=str(empty),
                                           vocabulary_size=0)], [NumericFeature("x")])
    model = MultiTaskModel(spec, TASKS[:1], sharing={"kind": "shared_bottom",
                                                     "expert_units": [4]}, tower_units=(2,))
    model(model.dummy_features())
    path = export_saved_model(model, tmp_path / "saved_models", name="m")
    assert (path / "assets" / "none.txt").read_bytes() == b""
    meta = read_metadata(path)
    assert meta.spec.vocabulary_files == {"tag": str(path / "assets" / "none.txt")}
    got = SavedModelPredictor(path).predict({"tag": ["a", ""], "x": [1.0, 1.0]})["click"]
    assert got[0] == got[1]  # everything is out of vocabulary
