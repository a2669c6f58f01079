"""Feature specs and the preprocessing layer: values checked by hand."""

import json

import numpy as np
import pytest
import tensorflow as tf

from tfmtnas.errors import UserError
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


# ----------------------------------------------------------------- vocabulary files
def _write(path, text: str | bytes):
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return str(path)


def _file_twin(spec: FeatureSpec, folder) -> FeatureSpec:
    """``spec`` with every inline vocabulary written to ``folder/<name>.txt`` instead."""
    cats = []
    for f in spec.categorical:
        if f.vocabulary is not None:
            path = _write(folder / f"{f.name}.txt", "".join(v + "\n" for v in f.vocabulary))
            f = CategoricalFeature(f.name, vocabulary_file=path,
                                   vocabulary_size=len(f.vocabulary))
        cats.append(f)
    return FeatureSpec(cats, spec.numeric)


def test_file_vocabulary_ids_equal_inline_vocabulary_ids(tmp_path):
    """Same ids from a file as from the inline vocabulary, "" and unknown values included.

    "user" holds "" (an empty line: read whole, TensorFlow's text-file reader refuses
    empty lines), "item" does not (TextFileInitializer); hashed and inline features around
    them shift the offsets.
    """
    inline = FeatureSpec(
        [CategoricalFeature("h", hash_bins=5), CategoricalFeature("user", ("u1", "", "u2")),
         CategoricalFeature("item", ("i1", "i2", "i3", "i4")),
         CategoricalFeature("color", ("red", "blue"))], [NumericFeature("x")])
    files = _file_twin(inline, tmp_path)
    assert files.categorical[1].vocabulary_file and files.categorical[2].vocabulary_file
    values = ["u1", "", "u2", "i1", "i4", "red", "unknown", " ", "u1 ", "\r"]
    raw = {name: tf.constant(values) for name in ("h", "user", "item", "color")}
    raw["x"] = tf.zeros([len(values)])
    got = FeaturePreprocessor(files)(raw)["categorical"].numpy()
    np.testing.assert_array_equal(got, FeaturePreprocessor(inline)(raw)["categorical"])
    # By hand: user ids start at 5 (5 hash buckets), item at 9, color at 14; 0 = unknown.
    assert got[:, 1].tolist() == [6, 7, 8, 5, 5, 5, 5, 5, 5, 5]
    assert got[:, 2].tolist() == [9, 9, 9, 10, 13, 9, 9, 9, 9, 9]
    assert got[:, 3].tolist() == [14, 14, 14, 14, 14, 15, 14, 14, 14, 14]


def test_vocabulary_file_line_ends_and_empty_first_or_last_line(tmp_path):
    cases = {"crlf.txt": (b"a\r\n\r\nb\r\n", ("a", "", "b")),
             "first.txt": (b"\na\nb", ("", "a", "b")),  # no final line end
             "last.txt": (b"a\nb\n\n", ("a", "b", "")),
             "plain.txt": (b"a\r\nb\nc", ("a", "b", "c"))}
    for name, (content, expected) in cases.items():
        feature = CategoricalFeature("c", vocabulary_file=_write(tmp_path / name, content),
                                     vocabulary_size=3)
        assert feature.read_vocabulary() == expected, name
        ids = FeaturePreprocessor(FeatureSpec([feature]))(
            {"c": tf.constant(["a", "b", "", "c", "a\r"])})["categorical"].numpy().ravel()
        assert ids.tolist() == [expected.index(v) + 1 if v in expected else 0
                                for v in ("a", "b", "", "c", "a\r")], name


@pytest.mark.parametrize("content, size, match", [
    ("a\nb\n", 3, r"^Categorical feature 'user': vocabulary file .*v\.txt has 2 lines, but "
     r"vocabulary_size is 3\.$"),
    ("a\nb\nc\nd\n", 3, "has 4 lines, but vocabulary_size is 3"),
    ("a\nb\na\n", 3, r"^Categorical feature 'user': vocabulary file .*v\.txt repeats 'a' on "
     r"lines 1 and 3; each value must appear once\.$"),
    ("a\n\n\n", 3, "repeats '' on lines 2 and 3"),
    ("a\r\nb\na\n", 3, "repeats 'a' on lines 1 and 3"),
])
def test_bad_vocabulary_files_are_named(tmp_path, content, size, match):
    path = _write(tmp_path / "v.txt", content)
    spec = FeatureSpec([CategoricalFeature("user", vocabulary_file=path, vocabulary_size=size)])
    with pytest.raises(ValueError, match=match):
        FeaturePreprocessor(spec)


def test_missing_vocabulary_file_is_one_line_naming_feature_and_path(tmp_path):
    path = str(tmp_path / "nope" / "user.txt")
    spec = FeatureSpec([CategoricalFeature("user", vocabulary_file=path, vocabulary_size=3)])
    with pytest.raises(FileNotFoundError) as err:
        FeaturePreprocessor(spec)
    assert str(err.value) == f"Categorical feature 'user': vocabulary file {path} not found."


def test_file_rewritten_at_the_same_path_is_read_again(tmp_path):
    """Tables are not shared by path: TextFileInitializer's own shared name would be."""
    path = _write(tmp_path / "v.txt", "a\nb\n")
    spec = FeatureSpec([CategoricalFeature("c", vocabulary_file=path, vocabulary_size=2)])
    first = FeaturePreprocessor(spec)
    _write(tmp_path / "v.txt", "b\na\n")
    second = FeaturePreprocessor(spec)
    raw = {"c": tf.constant(["a", "b"])}
    assert first(raw)["categorical"].numpy().ravel().tolist() == [1, 2]
    assert second(raw)["categorical"].numpy().ravel().tolist() == [2, 1]


def test_empty_vocabulary_file_puts_everything_out_of_vocabulary(tmp_path):
    spec = FeatureSpec([CategoricalFeature("c", vocabulary_file=_write(tmp_path / "v.txt", ""),
                                           vocabulary_size=0), CategoricalFeature("h", ("x",))])
    ids = FeaturePreprocessor(spec)({"c": tf.constant(["", "a"]), "h": tf.constant(["x", "x"])})
    assert ids["categorical"].numpy().tolist() == [[0, 2], [0, 2]]


def test_resolved_and_copied_vocabularies(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "dataset"
    (data / "vocabularies").mkdir(parents=True)
    _write(data / "vocabularies" / "user.txt", "u1\n\nu2\n")
    elsewhere = _write(tmp_path / "items.txt", "i1\n")
    stored = FeatureSpec([
        CategoricalFeature("user", vocabulary_file="vocabularies/user.txt", vocabulary_size=3),
        CategoricalFeature("item/id", vocabulary_file=elsewhere, vocabulary_size=1),
        CategoricalFeature("color", ("red",))])
    spec = stored.resolved(data)
    assert spec.vocabulary_files == {"user": str(data / "vocabularies" / "user.txt"),
                                     "item/id": elsewhere}  # absolute paths are kept
    assert spec.categorical[2] == stored.categorical[2]
    model_dir = tmp_path / "run"
    saved = spec.copy_vocabularies(model_dir)
    assert saved.vocabulary_files == {"user": "vocabularies/user.txt",
                                      "item/id": "vocabularies/item_id.txt"}
    assert (model_dir / "vocabularies" / "user.txt").read_bytes() == b"u1\n\nu2\n"
    assert (model_dir / "vocabularies" / "item_id.txt").read_bytes() == b"i1\n"
    assert sorted(p.name for p in (model_dir / "vocabularies").iterdir()) == [
        "item_id.txt", "user.txt"]  # no temporary leftovers
    text = saved.to_json()
    assert "u1" not in text and "vocabularies/user.txt" in text
    back = FeatureSpec.from_json(text).resolved(model_dir)
    assert back.categorical[0].read_vocabulary() == ("u1", "", "u2")
    # Copying files already in place keeps them.
    assert back.copy_vocabularies(model_dir) == saved
    assert (model_dir / "vocabularies" / "user.txt").read_bytes() == b"u1\n\nu2\n"
    assert stored.resolved(data).copy_vocabularies(model_dir, folder="v2").vocabulary_files[
        "user"] == "v2/user.txt"
    inline = FeatureSpec([CategoricalFeature("color", ("red",))])
    assert inline.copy_vocabularies(tmp_path / "x") is inline
    assert not (tmp_path / "x").exists()
    with pytest.raises(FileNotFoundError, match="'user': vocabulary file vocabularies/user"):
        stored.copy_vocabularies(model_dir)  # unresolved: relative to the working directory


def test_multiclass_task_spec_text_form_defaults_and_round_trip():
    task = TaskSpec("digit", "multiclass:10")
    assert (task.kind, task.num_classes, task.top_k, task.width) == ("multiclass", 10, 5, 10)
    assert task.kind_text == "multiclass:10"
    assert task.metric_names == ["digit_accuracy", "digit_top5_accuracy"]
    assert TaskSpec(**task.to_dict()) == task
    assert TaskSpec("digit", "multiclass", num_classes=10) == task
    three = TaskSpec("d", "multiclass:3")
    assert three.top_k is None and three.metric_names == ["d_accuracy"]
    assert TaskSpec("d", "multiclass:3", top_k=2).metric_names == ["d_accuracy",
                                                                    "d_top2_accuracy"]
    # The other kinds keep their JSON form.
    assert TaskSpec("click").to_dict() == {"name": "click", "kind": "binary", "weight": 1.0}
    assert TaskSpec("click").width == 1 and TaskSpec("w", "regression").kind_text == "regression"


@pytest.mark.parametrize("kwargs, match", [
    ({"kind": "multiclass"}, "needs num_classes >= 2"),
    ({"kind": "multiclass:1"}, "needs num_classes >= 2"),
    ({"kind": "multiclass:ten"}, "multiclass:K with K the number of classes"),
    ({"kind": "multiclass:4", "num_classes": 5}, "disagree"),
    ({"kind": "multiclass:4", "top_k": 4}, r"top_k must be an integer in \[1, 4\)"),
    ({"kind": "binary", "num_classes": 3}, "for multiclass tasks"),
    ({"kind": "ranking"}, "binary, regression or multiclass:K"),
])
def test_bad_task_specs_are_one_line_user_errors(kwargs, match):
    with pytest.raises(UserError, match=match) as err:
        TaskSpec("t", **kwargs)
    assert "\n" not in str(err.value)
