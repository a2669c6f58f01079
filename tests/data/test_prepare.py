"""tfmtnas.data.prepare: values computed by hand, exact bad-row messages, reproducible shards."""

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tfmtnas.data import layout
from tfmtnas.data.base import DataError, MultiTaskData, Split
from tfmtnas.data.prepare import prepare, write_prepared
from tfmtnas.features import FeatureSpec, TaskSpec

SMALL = """user,color,price,click,buy
u1,red,1,1,0
u1,blue,2,0,
u2,red,3,1,1
u3,red,4,0,
u2,green,10,1,0
"""


def _write(path, text: str | bytes):
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def _all_train(tmp_path, text=SMALL, **kwargs):
    src = _write(tmp_path / "small.csv", text)
    options = dict(labels={"click": "binary", "buy": "binary"}, numeric=["price"],
                   validation_fraction=0.0, test_fraction=0.0, num_shards=2, progress=None)
    options.update(kwargs)
    out = tmp_path / "prepared"
    return prepare([src], out, **options), out


def _spec(out):
    doc = json.loads((out / layout.SPEC).read_text())
    return doc, FeatureSpec.from_dict(doc["features"]), [TaskSpec(**t) for t in doc["tasks"]]


def _rows(out, split):
    """Every record of ``split``, parsed, as a list of dicts (shard by shard)."""
    manifest = json.loads((out / layout.MANIFEST).read_text())
    _, spec, tasks = _spec(out)
    description = layout.record_description(spec, tasks)
    rows = []
    for shard in manifest["splits"][split]["shards"]:
        ds = tf.data.TFRecordDataset(str(out / shard["path"]), compression_type="GZIP")
        for record in ds:
            parsed = tf.io.parse_single_example(record, description)
            rows.append({k: (v.numpy().decode() if v.dtype == tf.string else float(v.numpy()))
                         for k, v in parsed.items()})
    return rows


def _shard_digests(out):
    manifest = json.loads((out / layout.MANIFEST).read_text())
    return {s["path"]: s["sha256"] for split in manifest["splits"].values()
            for s in split["shards"]}


def test_vocabularies_mean_and_std_match_a_hand_computation(tmp_path):
    manifest, out = _all_train(tmp_path, min_count=1)
    doc, spec, tasks = _spec(out)
    assert doc["format"] == layout.FORMAT
    cats = {f.name: f for f in spec.categorical}
    # counts: u1 2, u2 2, u3 1; red 3, blue 1, green 1 (ties broken by value)
    assert cats["user"].vocabulary == ("u1", "u2", "u3")
    assert cats["color"].vocabulary == ("red", "blue", "green")
    (price,) = spec.numeric
    # price 1, 2, 3, 4, 10: mean 4, squared deviations 9 + 4 + 1 + 0 + 36 = 50
    assert price.mean == pytest.approx(4.0, abs=1e-12)
    assert price.std == pytest.approx(math.sqrt(50 / 5), abs=1e-12)
    assert manifest["columns"]["price"]["min"] == 1 and manifest["columns"]["price"]["max"] == 10
    assert [t.name for t in tasks] == ["click", "buy"]
    labels = manifest["labels"]["train"]
    assert labels["click"] == {"rows_with_label": 5, "positives": 3}
    assert labels["buy"] == {"rows_with_label": 3, "positives": 1}
    assert manifest["splits"]["train"]["rows"] == 5 and manifest["rows"] == 5


def test_log_numeric_is_standardised_after_log1p_of_the_positive_part(tmp_path):
    text = "a,x,click\nq,-5,1\nq,0,0\nq,3,1\nq,e,0\n".replace("e,", f"{math.e - 1},")
    _, out = _all_train(tmp_path, text, labels={"click": "binary"}, numeric=["x"],
                        log_numeric=["x"])
    (x,) = _spec(out)[1].numeric
    values = np.log1p(np.maximum([-5.0, 0.0, 3.0, math.e - 1], 0.0))  # 0, 0, log 4, 1
    assert x.log and x.mean == pytest.approx(values.mean()) and x.std == pytest.approx(
        values.std())


def test_min_count_sends_rare_values_out_of_vocabulary_and_the_manifest_counts_them(tmp_path):
    manifest, out = _all_train(tmp_path)  # default min_count=2
    cats = {f.name: f for f in _spec(out)[1].categorical}
    assert cats["user"].vocabulary == ("u1", "u2")
    assert cats["color"].vocabulary == ("red",)
    assert manifest["columns"]["color"] == {
        "kind": "vocabulary", "distinct": 3, "kept": 1, "min_count": 2,
        "max_vocabulary": None, "oov_rows": 2, "oov_share": 0.4}
    assert manifest["columns"]["user"]["oov_rows"] == 1


def test_max_vocabulary_and_per_column_options_keep_the_most_frequent(tmp_path):
    manifest, out = _all_train(tmp_path, min_count={"*": 1, "color": 2},
                               max_vocabulary={"user": 1})
    cats = {f.name: f for f in _spec(out)[1].categorical}
    assert cats["user"].vocabulary == ("u1",)  # u1 and u2 tie at 2: by value
    assert cats["color"].vocabulary == ("red",)
    assert manifest["columns"]["user"]["distinct"] == 3
    assert manifest["columns"]["user"]["kept"] == 1
    assert manifest["columns"]["user"]["oov_share"] == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="not vocabulary columns"):
        _all_train(tmp_path, max_vocabulary={"price": 1}, overwrite=True)


def test_large_vocabulary_goes_to_a_file_with_the_empty_value_as_an_empty_line(tmp_path):
    text = "user,color,price,click,buy\n" + "".join(
        f"{u},{c},1,0,\n" for u, c in [("a", ""), ("b", ""), ("a", ""), ("c", "x"),
                                       ("b", "x"), ("a", "")])
    manifest, out = _all_train(tmp_path, text, min_count=1, inline_vocabulary_max=2)
    cats = {f.name: f for f in _spec(out)[1].categorical}
    assert cats["user"].vocabulary_file == "vocabularies/user.txt"
    assert cats["user"].vocabulary_size == 3 and cats["user"].vocabulary is None
    assert (out / "vocabularies" / "user.txt").read_bytes() == b"a\nb\nc\n"
    assert cats["color"].vocabulary == ("", "x")  # two values stay inline
    assert manifest["columns"]["user"]["vocabulary_file"] == "vocabularies/user.txt"


def test_hashed_columns_record_bins_and_occupied_buckets(tmp_path):
    manifest, out = _all_train(tmp_path, hash_columns={"user": 7})
    cats = {f.name: f for f in _spec(out)[1].categorical}
    assert cats["user"].hash_bins == 7 and cats["user"].vocabulary is None
    buckets = tf.strings.to_hash_bucket_fast(["u1", "u2", "u3"], 7).numpy()
    assert manifest["columns"]["user"] == {"kind": "hashed", "bins": 7,
                                           "occupied_bins": len(set(buckets.tolist()))}


def _log(n: int, keys: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    lines = ["key,item,x,click"]
    for _ in range(n):
        lines.append(f"k{rng.integers(keys)},i{rng.integers(50)},{rng.normal():.4f},"
                     f"{int(rng.random() < 0.3)}")
    return "\n".join(lines) + "\n"


def test_split_by_key_is_consistent_sized_and_reproducible(tmp_path):
    src = _write(tmp_path / "log.csv", _log(4000, 2000))
    options = dict(labels={"click": "binary"}, numeric=["x"], key_column="key",
                   validation_fraction=0.2, test_fraction=0.3, num_shards=4, progress=None)
    manifest = prepare([src], tmp_path / "a", **options)
    split_of = {}
    for split in layout.SPLITS:
        for row in _rows(tmp_path / "a", split):
            assert split_of.setdefault(row["key"], split) == split  # same key, same split
    shares = {s: sum(v == s for v in split_of.values()) / len(split_of) for s in layout.SPLITS}
    assert shares["test"] == pytest.approx(0.3, abs=0.04)
    assert shares["validation"] == pytest.approx(0.2, abs=0.04)
    assert sum(manifest["splits"][s]["rows"] for s in layout.SPLITS) == 4000
    assert manifest["options"]["num_shards"] == {"train": 4, "validation": 2, "test": 2}
    # Another run with one worker thread: the same bytes.
    prepare([src], tmp_path / "b", workers=1, **options)
    assert _shard_digests(tmp_path / "a") == _shard_digests(tmp_path / "b")
    assert (tmp_path / "a" / layout.SPEC).read_bytes() == (tmp_path / "b" / layout.SPEC
                                                           ).read_bytes()
    # Other block sizes: the same rows per split and the same vocabularies (blocks decide
    # the shard of a row, and moments are summed per block: their last bits may differ).
    prepare([src], tmp_path / "c", chunk_bytes=997, **options)
    for split in layout.SPLITS:
        rows_a, rows_c = _rows(tmp_path / "a", split), _rows(tmp_path / "c", split)
        assert sorted(map(repr, rows_a)) == sorted(map(repr, rows_c))
    spec_a, spec_c = _spec(tmp_path / "a")[1], _spec(tmp_path / "c")[1]
    assert spec_a.categorical == spec_c.categorical
    assert spec_a.numeric[0].mean == pytest.approx(spec_c.numeric[0].mean, rel=1e-12)
    for shard, digest in _shard_digests(tmp_path / "a").items():
        assert hashlib.sha256((tmp_path / "a" / shard).read_bytes()).hexdigest() == digest


def test_shards_parse_back_to_the_exact_rows(tmp_path):
    long_value = "z" * 3000  # longer than the vectorised header table: Python encodes it
    text = ("user,color,price,click,score\r\n"
            "u1, red ,1.5,1,0.25\r\n"
            "\r\n"  # a blank line is no row
            f'u2,"blue, dark",-2e3,,7\r\n'
            f"u3,{long_value},0,0,\r\n"
            "u4,,3.25,1,-1\r\n")
    manifest, out = _all_train(tmp_path, text, labels={"click": "binary",
                                                       "score": "regression"}, min_count=1)
    rows = sorted(_rows(out, "train"), key=lambda r: r["user"])
    nan = float("nan")
    expected = [
        {"user": "u1", "color": "red", "price": 1.5, "click": 1.0, "score": 0.25},
        {"user": "u2", "color": "blue, dark", "price": -2000.0, "click": nan, "score": 7.0},
        {"user": "u3", "color": long_value, "price": 0.0, "click": 0.0, "score": nan},
        {"user": "u4", "color": "", "price": 3.25, "click": 1.0, "score": -1.0},
    ]
    assert len(rows) == len(expected)
    for got, want in zip(rows, expected):
        assert got.keys() == want.keys()
        for k, v in want.items():
            assert got[k] == v or (isinstance(v, float) and math.isnan(v)
                                   and math.isnan(got[k])), (k, got[k], v)
    assert manifest["labels"]["train"]["score"] == {"rows_with_label": 3,
                                                    "mean": pytest.approx(6.25 / 3)}
    # Rows are spread over the shards round-robin in file order.
    shards = manifest["splits"]["train"]["shards"]
    assert [s["rows"] for s in shards] == [2, 2]


BAD = """user,color,price,click
u1,red,1,1
u2,red,1,1,extra
u3,blue,abc,0
u4,blue,inf,1
u5,green,2,2
u6,green,,0
u7,red,1e39,1
u8,red,3,1
"""
BAD_MESSAGES = [
    "3: expected 4 fields, got 5",
    "4: column 'price' expects a number, got 'abc'",
    "5: column 'price' expects a finite number, got 'inf'",
    "6: binary label column 'click' expects 0, 1 or empty, got '2'",
    "7: column 'price' expects a number, got ''",
    "8: column 'price' expects a number within float32's range, got '1e39'",
]


def test_bad_rows_error_names_file_line_and_column(tmp_path):
    src = _write(tmp_path / "bad.csv", BAD)
    with pytest.raises(DataError) as err:
        prepare([src], tmp_path / "out", {"click": "binary"}, numeric=["price"], progress=None)
    assert str(err.value) == f"{src}:{BAD_MESSAGES[0]}"
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob("out.partial-*"))  # a failed run cleans up after itself
    without_first = BAD.replace("u2,red,1,1,extra\n", "u2,red,1,1\n")
    _write(src, without_first)
    with pytest.raises(DataError) as err:
        prepare([src], tmp_path / "out", {"click": "binary"}, numeric=["price"], progress=None)
    assert str(err.value) == f"{src}:{BAD_MESSAGES[1]}"


@pytest.mark.parametrize("python_path", [False, True])
def test_bad_rows_skip_counts_them_with_their_messages(tmp_path, python_path):
    # A quoted cell sends the block through the csv module: the same verdicts.
    text = BAD.replace("u1,red,", 'u1,"red",') if python_path else BAD
    src = _write(tmp_path / "bad.csv", text)
    manifest = prepare([src], tmp_path / "out", {"click": "binary"}, numeric=["price"],
                       bad_rows="skip", validation_fraction=0, test_fraction=0, min_count=1,
                       progress=None)
    assert manifest["skipped_rows"] == 6 and manifest["rows"] == 8
    assert manifest["skipped"] == [f"{src}:{m}" for m in BAD_MESSAGES]
    assert sorted(r["user"] for r in _rows(tmp_path / "out", "train")) == ["u1", "u8"]


def test_encoding_and_quoting_errors(tmp_path):
    src = _write(tmp_path / "enc.csv", b"user,color,click\nu1,red,1\nu2,r\xffd,0\n"
                                       b'u3,"re"d,1\nu4,"ok",0\nu5,a\rb,1\n')
    manifest = prepare([src], tmp_path / "out", {"click": "binary"}, bad_rows="skip",
                       validation_fraction=0, test_fraction=0, progress=None)
    assert manifest["skipped"] == [
        f"{src}:3: column 'color' is not valid UTF-8 (invalid start byte at byte 4)",
        f"{src}:4: malformed quoting: ',' expected after '\"'",
        f"{src}:6: column 'color' holds a carriage return, which a vocabulary line "
        f"cannot: 'a\\rb'",
    ]


def test_empty_file_and_header_only_fail_in_one_line(tmp_path):
    empty = _write(tmp_path / "empty.csv", "")
    with pytest.raises(DataError, match=r"^.*empty\.csv: empty file, expected a header row\.$"):
        prepare([empty], tmp_path / "out", {"click": "binary"}, progress=None)
    header = _write(tmp_path / "header.csv", "user,click\n")
    with pytest.raises(DataError, match=r"header\.csv: no data rows after the header\.$"):
        prepare([header], tmp_path / "out", {"click": "binary"}, progress=None)
    with pytest.raises(DataError, match=r"no label column\(s\) \['buy'\]"):
        prepare([header], tmp_path / "out", {"buy": "binary"}, progress=None)


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    _, out = _all_train(tmp_path)
    with pytest.raises(DataError, match="already there; pass overwrite"):
        _all_train(tmp_path)
    manifest, _ = _all_train(tmp_path, min_count=1, overwrite=True)
    assert manifest["options"]["min_count"] == {"user": 1, "color": 1}
    assert not list(tmp_path.glob("prepared.*"))  # no partial or old folder left


def test_gzipped_inputs_and_globs_and_progress(tmp_path):
    import gzip

    text = _log(3000, 300)
    lines = text.splitlines(keepends=True)
    header, body = lines[0], lines[1:]
    for k in range(2):
        with gzip.open(tmp_path / f"part{k}.csv.gz", "wt") as f:
            f.write(header + "".join(body[k::2]))
    seen = []
    manifest = prepare([str(tmp_path / "part*.csv.gz")], tmp_path / "out", {"click": "binary"},
                       numeric=["x"], key_column="key", progress=seen.append,
                       progress_seconds=0, chunk_bytes=4096)
    assert manifest["rows"] == 3000 and len(manifest["inputs"]) == 2
    assert len(seen) > 3 and seen[-1].done and seen[-1].rows == 3000
    assert seen[-1].bytes_read == seen[-1].total_bytes == sum(
        i["bytes"] for i in manifest["inputs"])
    assert [p.rows for p in seen] == sorted(p.rows for p in seen)


KILLED = textwrap.dedent("""
    import sys, time
    from tfmtnas.data.prepare import prepare

    calls = []

    def slow(progress):
        calls.append(progress)
        if len(calls) == 3:
            print("PAUSED", flush=True)
            time.sleep(120)

    prepare([sys.argv[1]], sys.argv[2], {"click": "binary"}, numeric=["x"],
            key_column="key", progress=slow, progress_seconds=0, chunk_bytes=20000)
""")


def test_a_killed_prepare_leaves_nothing_complete_and_a_rerun_matches(tmp_path):
    src = _write(tmp_path / "log.csv", _log(8000, 1000))
    out = tmp_path / "out"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(src), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env)
    try:
        assert proc.stdout.readline().strip() == "PAUSED"
        partial = list(tmp_path.glob("out.partial-*"))
        assert len(partial) == 1 and list((partial[0] / "train").glob("part-*"))
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not out.exists()
    assert not (partial[0] / layout.MANIFEST).exists()  # nothing that looks complete

    options = dict(labels={"click": "binary"}, numeric=["x"], key_column="key",
                   progress=None)
    prepare([src], out, **options)
    assert not partial[0].exists()  # the stale folder of the killed run is gone
    prepare([src], tmp_path / "fresh", **options)
    assert _shard_digests(out) == _shard_digests(tmp_path / "fresh")
    assert (out / layout.SPEC).read_bytes() == (tmp_path / "fresh" / layout.SPEC).read_bytes()


def test_write_prepared_round_trips_an_in_memory_dataset(tmp_path):
    def split(colors, xs, clicks):
        return Split({"color": np.array(colors, dtype=object), "x": np.array(xs)},
                     {"click": np.array(clicks, np.float32)})

    train = split(["red", "blue", "red"], [1.0, 2.5, -3.0], [1, 0, np.nan])
    spec = FeatureSpec.fit(train.features, categorical=["color"], numeric=["x"])
    data = MultiTaskData("tiny", train, split(["green"], [4.0], [1]), split(["red"], [0.5], [0]),
                         spec, (TaskSpec("click"),))
    manifest = write_prepared(data, tmp_path / "tiny", num_shards=2)
    doc, spec_back, tasks = _spec(tmp_path / "tiny")
    assert spec_back == spec and tasks == [TaskSpec("click")]
    assert {s: manifest["splits"][s]["rows"] for s in layout.SPLITS} == {
        "train": 3, "validation": 1, "test": 1}
    rows = _rows(tmp_path / "tiny", "train")
    # round-robin over two shards: rows 0 and 2 in shard 0, row 1 in shard 1
    assert [r["color"] for r in rows] == ["red", "red", "blue"]
    assert [r["x"] for r in rows] == [1.0, -3.0, 2.5]
    assert rows[0]["click"] == 1.0 and math.isnan(rows[1]["click"])
    assert _rows(tmp_path / "tiny", "validation") == [{"color": "green", "x": 4.0,
                                                       "click": 1.0}]
    assert manifest["labels"]["train"]["click"] == {"rows_with_label": 2, "positives": 1}


MULTICLASS = """user,price,digit,click
u1,1,2,1
u2,2,,0
u3,3,0,1
u4,4,9,0
u5,5,2.0,1
"""


def test_multiclass_labels_round_trip_through_a_prepared_dataset(tmp_path):
    from tfmtnas.data.stream import load_prepared

    src = _write(tmp_path / "digits.csv", MULTICLASS)
    manifest = prepare([src], tmp_path / "out", {"digit": "multiclass:10", "click": "binary"},
                       numeric=["price"], validation_fraction=0.0, test_fraction=0.0,
                       num_shards=1, min_count=1, progress=None)
    assert manifest["options"]["labels"] == {"digit": "multiclass:10", "click": "binary"}
    assert manifest["labels"]["train"]["digit"] == {"rows_with_label": 4}
    digit = TaskSpec("digit", "multiclass:10")
    assert _spec(tmp_path / "out")[2] == [digit, TaskSpec("click")]
    data = load_prepared(tmp_path / "out")
    assert data.tasks == (digit, TaskSpec("click"))
    _, labels = next(data.raw_batches("train", 100))
    rows = {r["user"]: r["digit"] for r in _rows(tmp_path / "out", "train")}
    assert {u: (None if math.isnan(v) else v) for u, v in rows.items()} == {
        "u1": 2.0, "u2": None, "u3": 0.0, "u4": 9.0, "u5": 2.0}
    np.testing.assert_array_equal(np.sort(labels["digit"][~np.isnan(labels["digit"])]),
                                  [0.0, 2.0, 2.0, 9.0])
    # The streamed batches train a model with the multiclass task (one step).
    from tfmtnas import keras
    from tfmtnas.models import MultiTaskModel

    model = MultiTaskModel(data.spec, data.tasks, {"kind": "shared_bottom",
                                                   "expert_units": [4]}, tower_units=())
    model.compile(keras.optimizers.Adam(1e-2), jit_compile=False)
    logs = model.fit(data.dataset("train", 8), epochs=1, verbose=0).history
    assert np.isfinite(logs["digit_loss"][0]) and "digit_top5_accuracy" in logs


@pytest.mark.parametrize("python_path", [False, True])
@pytest.mark.parametrize("bad", ["10", "2.5", "-1", "two"])
def test_bad_multiclass_label_names_file_line_and_column(tmp_path, bad, python_path):
    text = MULTICLASS.replace("u4,4,9,0", f"u4,4,{bad},0")
    if python_path:  # a quoted cell sends the block through the csv module
        text = text.replace("u1,", '"u1",')
    src = _write(tmp_path / "digits.csv", text)
    with pytest.raises(DataError) as err:
        prepare([src], tmp_path / "out", {"digit": "multiclass:10", "click": "binary"},
                numeric=["price"], progress=None)
    assert str(err.value) == (f"{src}:5: multiclass label column 'digit' expects a class id "
                              f"0..9 (an integer) or empty, got {bad!r}")


def _run_binary(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "tfmtnas.pipelines.prepare", *args],
                          capture_output=True, text=True, timeout=300, env=env)


def _binary(capsys, **flag_values):
    """Run tfmtnas-prepare's main in this process; (exit code, stdout, stderr)."""
    from absl.testing import flagsaver

    from tests.pipelines.conftest import binary_module

    code = 0
    with binary_module("tfmtnas.pipelines.prepare") as prepare_bin, \
            flagsaver.flagsaver(**flag_values):
        try:
            prepare_bin.main(["tfmtnas-prepare"])
        except SystemExit as exit_info:
            code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_binary_end_to_end_and_its_one_line_errors(tmp_path, capsys):
    src = _write(tmp_path / "small.csv", SMALL)
    out = tmp_path / "out"
    flag_values = dict(input=[str(src)], output_dir=str(out), labels=["click:binary", "buy"],
                       numeric=["price"], min_count=["1", "color:2"], validation_fraction=0.0,
                       test_fraction=0.0, num_shards=1)
    code, stdout, stderr = _binary(capsys, **flag_values)
    assert code == 0, stderr
    assert json.loads(stdout)["rows"] == {"train": 5, "validation": 0, "test": 0}
    assert "tfmtnas-prepare: 5 rows (0 skipped)" in stderr  # progress lines
    cats = {f.name: f for f in _spec(out)[1].categorical}
    assert cats["user"].vocabulary == ("u1", "u2", "u3")
    assert cats["color"].vocabulary == ("red",)
    code, _, stderr = _binary(capsys, **flag_values)
    assert code == 2 and stderr.strip() == (
        f"tfmtnas-prepare: error: {out}: a prepared dataset is already there; pass "
        f"overwrite (--overwrite) to replace it.")
    code, _, stderr = _binary(capsys, **dict(flag_values, labels=["click:oops"],
                                             output_dir=str(tmp_path / "x")))
    assert code == 2 and stderr.strip().startswith(
        "tfmtnas-prepare: error: Task 'click': kind must be one of")
    code, _, stderr = _binary(capsys, **dict(flag_values, hash_columns=["user"]))
    assert code == 2 and stderr.strip() == ("tfmtnas-prepare: error: --hash_columns wants "
                                            "name:bins with bins a positive integer, got "
                                            "'user'.")
    # A real process: one line on stderr, exit status 2, no traceback.
    bad = _write(tmp_path / "bad.csv", BAD)
    done = _run_binary(f"--input={bad}", f"--output_dir={tmp_path / 'bad'}",
                       "--labels=click", "--numeric=price")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"tfmtnas-prepare: error: {bad}:{BAD_MESSAGES[0]}")


def test_prepared_matches_the_in_memory_csv_loader(tmp_path):
    from tfmtnas.data import load_csv_dataset
    from tfmtnas.data.stream import load_prepared

    src = _write(tmp_path / "log.csv", _log(3000, 400, seed=1))
    options = dict(numeric=["x"], validation_fraction=0, test_fraction=0, min_count=3,
                   max_vocabulary=100)
    prepare([src], tmp_path / "out", {"click": "binary"}, hash_columns={"item": 16},
            progress=None, **options)
    data = load_csv_dataset(src, label_columns={"click": "binary"}, hashed={"item": 16},
                            **options)
    spec = _spec(tmp_path / "out")[1]
    assert spec.categorical == data.spec.categorical
    assert len(spec.categorical[0].vocabulary) == 100
    (x,), (x_memory,) = spec.numeric, data.spec.numeric
    assert x.mean == pytest.approx(x_memory.mean, rel=1e-9)
    assert x.std == pytest.approx(x_memory.std, rel=1e-9)
    # The streaming reader sees the same raw rows (as a multiset) as the in-memory split.
    prepared = load_prepared(tmp_path / "out")
    seen = []
    for features, labels in prepared.raw_batches("train", 1024):
        seen += zip([v.decode() for v in features["key"]], features["x"].tolist(),
                    labels["click"].tolist())
    memory = zip(data.train.features["key"].tolist(),
                 data.train.features["x"].astype(np.float32).tolist(),
                 data.train.labels["click"].tolist())
    assert sorted(seen) == sorted(memory)


def test_tsv_files_are_split_on_tabs(tmp_path):
    src = _write(tmp_path / "log.tsv", "city\tprice\tclick\nnew york\t1.5\t1\nnew york\t2\t0\n")
    manifest = prepare([src], tmp_path / "out", {"click": "binary"}, numeric=["price"],
                       validation_fraction=0, test_fraction=0, progress=None)
    assert manifest["options"]["sep"] == "\t"
    assert _spec(tmp_path / "out")[1].categorical[0].vocabulary == ("new york",)
    assert sorted(r["price"] for r in _rows(tmp_path / "out", "train")) == [1.5, 2.0]


def test_record_framing_matches_tensorflows_writer(tmp_path):
    from tfmtnas.data.prepare import _crc32c, _frame

    words = np.frombuffer(b"123456789" + b"\0" * 3, "<u4").reshape(1, 3)
    assert _crc32c(words, np.array([9])).tolist() == [0xE3069283]  # the CRC-32C check value
    rng = np.random.default_rng(0)
    records = [rng.bytes(n) for n in [0, 1, 3, 4, 5, 63, 64, 65, 127, 128, 129, 300, 1000]]
    path = str(tmp_path / "plain.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record)
    framed = _frame(tf.constant(np.array(records, dtype=object))).numpy()
    assert b"".join(framed) == open(path, "rb").read()
