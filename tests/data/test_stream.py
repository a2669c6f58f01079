"""Streaming input from prepared folders: same batches and loss as in memory, sharding, halves.

The prepared folders here are written by a small reference writer in this file (plain
``tf.train.Example`` protos), independent of ``tfmtnas-prepare``, so the reader is checked
against the layout contract itself.
"""

import dataclasses
import json

import numpy as np
import pytest
import tensorflow as tf

from tfmtnas.data import DataError, layout, load_dataset, load_prepared, num_rows, split_dataset
from tfmtnas.data.csv import load_csv_dataset
from tfmtnas.data.pipeline import make_dataset
from tfmtnas.models import MultiTaskModel
from tfmtnas.pipelines.evaluating import evaluate_source, evaluate_split, model_predict_fn


def _example(split, i, spec, tasks) -> bytes:
    feature = {}
    for f in spec.categorical:
        feature[f.name] = tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[str(split.features[f.name][i]).encode()]))
    for f in spec.numeric:
        feature[f.name] = tf.train.Feature(float_list=tf.train.FloatList(
            value=[float(split.features[f.name][i])]))
    for t in tasks:
        feature[t.name] = tf.train.Feature(float_list=tf.train.FloatList(
            value=[float(split.labels[t.name][i])]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_reference(data, path, shards=1):
    """Write ``data`` as a prepared folder: rows dealt to shards in blocks of 7."""
    path.mkdir()
    splits = {}
    for name, split in data.splits().items():
        n = shards if name == "train" else 1
        files = [layout.shard_path(name, k, n) for k in range(n)]
        (path / name).mkdir()
        rows = [0] * n
        writers = [tf.io.TFRecordWriter(str(path / f), layout.COMPRESSION) for f in files]
        for i in range(len(split)):
            k = (i // 7) % n
            writers[k].write(_example(split, i, data.spec, data.tasks))
            rows[k] += 1
        for w in writers:
            w.close()
        splits[name] = {"rows": len(split), "shards": [
            {"path": f, "rows": r} for f, r in zip(files, rows)]}
    (path / layout.SPEC).write_text(json.dumps(
        {"format": layout.FORMAT, "features": data.spec.to_dict(),
         "tasks": [dataclasses.asdict(t) for t in data.tasks]}))
    (path / layout.MANIFEST).write_text(json.dumps({"format": layout.FORMAT,
                                                    "splits": splits}))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    n = 300
    lines = ["shop,price,colour,click,buy"]
    for i in range(n):
        click = int(rng.random() < 0.4)
        buy = "" if i % 5 == 0 else str(int(click and rng.random() < 0.5))
        lines.append(f"s{rng.integers(0, 12)},{rng.gamma(2.0):.3f},"
                     f"{rng.choice(['red', 'blue', 'green'])},{click},{buy}")
    csv = tmp_path_factory.mktemp("csv") / "log.csv"
    csv.write_text("\n".join(lines) + "\n")
    return load_csv_dataset(csv, label_columns={"click": "binary", "buy": "binary"},
                            numeric=["price"], log_numeric=["price"])


def _batches(ds):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in ds]


def _assert_same_batches(got, want):
    assert len(got) == len(want)
    for (gf, gl), (wf, wl) in zip(got, want):
        np.testing.assert_array_equal(gf["categorical"], wf["categorical"])
        np.testing.assert_allclose(gf["numeric"], wf["numeric"], atol=1e-6)
        for k in wl:
            np.testing.assert_array_equal(gl[k], wl[k])  # NaN (missing) in the same places


def test_stream_gives_the_in_memory_batches_and_loss(data, tmp_path):
    prepared = load_prepared(write_reference(data, tmp_path / "p"))
    assert prepared.tasks == data.tasks and num_rows(prepared, "train") == len(data.train)
    for split in ("train", "validation", "test"):
        got = _batches(split_dataset(prepared, split, 32))
        want = _batches(make_dataset(data.splits()[split], data.spec, 32))
        _assert_same_batches(got, want)
    assert np.isnan(_batches(split_dataset(prepared, "train", 1000))[0][1]["buy"]).sum() > 0
    model = MultiTaskModel(data.spec, data.tasks, sharing={"kind": "mmoe",
                                                          "expert_units": [8]})
    model.compile("adam", jit_compile=False)
    streamed = model.evaluate(split_dataset(prepared, "test", 16), return_dict=True, verbose=0)
    in_memory = model.evaluate(make_dataset(data.test, data.spec, 16), return_dict=True,
                               verbose=0)
    for key in ("click_loss", "buy_loss", "click_auc", "buy_auc"):
        assert streamed[key] == pytest.approx(in_memory[key], rel=1e-6), key
    # The evaluate binary's path: chunks streamed from disk = the split in memory (same
    # prediction batches, so that float rounding, and with it AUC ties, are the same too).
    predict = model_predict_fn(model)
    from_disk = evaluate_source(predict, prepared, "test", model.spec, model.tasks,
                                batch_size=7, chunk_rows=7)
    in_mem = evaluate_split(predict, data.test, model.spec, model.tasks, batch_size=7)
    assert from_disk["examples"] == len(data.test)
    assert from_disk["labelled"] == in_mem["labelled"]
    for key, value in in_mem["metrics"].items():
        assert from_disk["metrics"][key] == pytest.approx(value, rel=1e-6)


def test_shuffled_stream_is_a_seeded_permutation_of_the_split(data, tmp_path):
    prepared = load_prepared(write_reference(data, tmp_path / "p", shards=3))
    runs = [_batches(split_dataset(prepared, "train", 50, shuffle=True, seed=3))
            for _ in range(2)]
    _assert_same_batches(runs[0], runs[1])  # same seed, same order
    rows = np.concatenate([f["numeric"][:, 0] for f, _ in runs[0]])
    want = np.concatenate([f["numeric"][:, 0] for f, _ in
                           _batches(make_dataset(data.train, data.spec, 50))])
    # Vectorised log1p may round the last bit differently in another batch position.
    np.testing.assert_allclose(np.sort(rows), np.sort(want), atol=1e-6)
    assert not np.allclose(rows, want)  # and actually shuffled


def _keys(ds):
    """Each row's normalised price, rounded (the last bit may differ by batch position)."""
    return sorted(round(float(x), 5) for f, _ in _batches(ds) for x in f["numeric"][:, 0])


@pytest.mark.parametrize("shards", [1, 3])
def test_input_pipelines_and_halves_partition_the_rows(data, tmp_path, shards):
    prepared = load_prepared(write_reference(data, tmp_path / "p", shards=shards))
    everything = _keys(split_dataset(prepared, "train", 64))
    parts = [_keys(split_dataset(prepared, "train", 64, input_context=tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=k, num_replicas_in_sync=2)))
        for k in range(2)]
    assert sorted(parts[0] + parts[1]) == everything
    assert len(parts[0]) > 0 and len(parts[1]) > 0
    halves = [_keys(split_dataset(prepared, "train", 64, half=k)) for k in (0, 1)]
    assert sorted(halves[0] + halves[1]) == everything
    assert [len(h) for h in halves] == [num_rows(prepared, "train", half=k) for k in (0, 1)]
    # Each half reports its number of batches, which is what it yields.
    for k in (0, 1):
        ds = split_dataset(prepared, "train", 64, half=k)
        assert int(ds.cardinality()) == len(list(ds)) == -(-len(halves[k]) // 64)


def test_incomplete_or_missing_folders_are_one_line_errors(data, tmp_path):
    with pytest.raises(DataError, match="no such prepared dataset folder"):
        load_prepared(tmp_path / "absent")
    folder = write_reference(data, tmp_path / "p")
    (folder / layout.MANIFEST).unlink()
    with pytest.raises(DataError, match="manifest.json is missing.*tfmtnas-prepare again"):
        load_dataset("prepared", data_dir=folder)
    with pytest.raises(ValueError, match="needs data_dir"):
        load_dataset("prepared")
