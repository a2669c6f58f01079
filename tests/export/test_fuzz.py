"""Fuzz an exported model with bad requests: a prediction or a clean error, never a crash.

A child process (so that a crash in TensorFlow's C++ code would show as a dead process, not
a dead test runner) loads the export and sends generated requests through the Python
signatures and through :class:`~tfmtnas.export.capi.CApiSession`: wrong dtypes and ranks,
ragged and empty batches, missing and extra features, huge and non-UTF-8 strings, NaN and
inf numbers, garbage bytes as ``tf.Example``. It counts the answers, checks every prediction
is finite, and checks a valid request answers the same after the fuzz as before.
"""

from __future__ import annotations

import json
import subprocess
import sys

FUZZ = r'''
import json, sys
import numpy as np
import tensorflow as tf
from tfmtnas.export.capi import CApiSession

path, per_channel, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = np.random.default_rng(seed)
loaded = tf.saved_model.load(path, tags=["serve"])
serve, by_example = loaded.signatures["serving_default"], loaded.signatures["predict_examples"]
STRINGS, NUMBERS = ["color", "item"], ["age", "price"]
valid = {"color": np.array([b"red", b"blue"]), "item": np.array([b"item3", b"item9"]),
         "age": np.array([30.0, 50.0], np.float32), "price": np.array([5.0, 1.0], np.float32)}


def example(values):
    feature = {}
    for k, v in values.items():
        if isinstance(v, bytes):
            feature[k] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
        elif isinstance(v, float):
            feature[k] = tf.train.Feature(float_list=tf.train.FloatList(value=[v]))
        else:
            feature[k] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def weird_string():
    kind = rng.integers(5)
    if kind == 0:
        return bytes(rng.integers(0, 256, rng.integers(1, 40)).astype(np.uint8))  # not UTF-8
    if kind == 1:
        return b"x" * int(rng.choice([10_000, 1_000_000]))                      # huge
    if kind == 2:
        return b""
    if kind == 3:
        return "\u00e9\u4e2d\U0001f600".encode()
    return b"red"


def weird_number():
    return float(rng.choice([np.nan, np.inf, -np.inf, 3e38, -3e38, 1e-45, 0.0, 42.0]))


def bad_columns():
    """One generated request as {name: value} (numpy or Python objects), mostly invalid."""
    n = int(rng.choice([0, 1, 2, 7]))
    cols = {k: np.array([weird_string() for _ in range(n)], dtype=object) for k in STRINGS}
    cols.update({k: np.array([weird_number() for _ in range(n)], np.float32) for k in NUMBERS})
    mutation = int(rng.integers(9))
    name = str(rng.choice(STRINGS + NUMBERS))
    if mutation == 0:
        cols.pop(name)                                               # missing feature
    elif mutation == 1:
        cols["colour"] = cols.get("color", np.array([b"x"] * n))     # extra feature
    elif mutation == 2:
        cols[name] = np.reshape(cols[name], (1, -1)) if n else np.zeros((0, 1))  # rank 2
    elif mutation == 3:
        cols[name] = cols[name][0] if n else np.float32(1.0)         # rank 0
    elif mutation == 4:
        cols[name] = [[1.0], [2.0, 3.0]]                             # ragged
    elif mutation == 5:
        cols[name] = (np.array(["abc"] * n) if name in NUMBERS       # wrong dtype
                      else np.arange(n, dtype=np.float32))
    elif mutation == 6:
        cols[name] = np.concatenate([cols[name], cols[name][:1]]) if n else cols[name][:0]
    # 7, 8: values only (NaN/inf numbers, odd strings), valid structure
    return cols


def bad_examples():
    kind = int(rng.integers(5))
    n = int(rng.choice([0, 1, 3]))
    if kind == 0:
        return [bytes(rng.integers(0, 256, rng.integers(0, 64)).astype(np.uint8))
                for _ in range(max(n, 1))]                           # garbage bytes
    rows = []
    for _ in range(n):
        values = {"color": weird_string(), "item": weird_string(), "age": weird_number(),
                  "price": weird_number()}
        if kind == 1:
            values.pop(str(rng.choice(list(values))))                # missing feature
        elif kind == 2:
            values["age"] = b"forty"                                 # wrong type
        elif kind == 3:
            values["extra"] = 1                                      # extra feature
        rows.append(example(values))
    return rows


counts = {"sent": {}, "predicted": {}, "clean_errors": {}, "non_finite_predictions": 0}


def record(channel, call):
    counts["sent"][channel] = counts["sent"].get(channel, 0) + 1
    try:
        out = call()
    except Exception:  # a clean error: the caller gets an exception, the process lives
        counts["clean_errors"][channel] = counts["clean_errors"].get(channel, 0) + 1
        return
    counts["predicted"][channel] = counts["predicted"].get(channel, 0) + 1
    for v in out.values():
        v = v.numpy() if hasattr(v, "numpy") else v
        if not np.all(np.isfinite(v)):
            counts["non_finite_predictions"] += 1


def python_serving(cols):
    kwargs = {}
    for k, v in cols.items():
        kwargs[k] = v if isinstance(v, list) else tf.constant(
            v.tolist() if v.dtype == object else v)
    return serve(**kwargs)


with CApiSession(path) as session, CApiSession(path, "predict_examples") as by_capi:
    session.set_inputs(valid)
    before = session.run()
    before_py = {k: v.numpy() for k, v in serve(**{k: tf.constant(v) for k, v in
                                                   valid.items()}).items()}

    def capi(cols):
        session.set_inputs(cols)
        return session.run()

    def capi_examples(rows):
        by_capi.set_inputs({"examples": np.array(rows, dtype=object)})
        return by_capi.run()

    for _ in range(per_channel):
        cols = bad_columns()
        record("python/serving_default", lambda: python_serving(cols))
        record("c_api/serving_default", lambda: capi(cols))
    for _ in range(per_channel // 2):
        rows = bad_examples()
        record("python/predict_examples",
               lambda: by_example(examples=tf.constant(rows, dtype=tf.string)))
        record("c_api/predict_examples", lambda: capi_examples(rows))
    session.set_inputs(valid)
    after = session.run()
    after_py = {k: v.numpy() for k, v in serve(**{k: tf.constant(v) for k, v in
                                                  valid.items()}).items()}
counts["same_after"] = all(np.array_equal(before[k], after[k]) for k in before) and all(
    np.array_equal(before_py[k], after_py[k]) for k in before_py)
print(json.dumps(counts))
'''


def _fuzz(path, per_channel: int, seed: int) -> dict:
    done = subprocess.run([sys.executable, "-c", FUZZ, str(path), str(per_channel), str(seed)],
                          capture_output=True, text=True, errors="replace", timeout=900)
    # A crash in TensorFlow's native code kills the child: a negative return code.
    assert done.returncode == 0, f"fuzzed process died ({done.returncode}):\n" \
                                 f"{done.stderr[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def _check(counts: dict, per_channel: int) -> None:
    sent = counts["sent"]
    assert sent["python/serving_default"] == sent["c_api/serving_default"] == per_channel
    assert sum(sent.values()) >= 2 * per_channel
    for channel in sent:  # both kinds of answer occur on every channel
        assert counts["predicted"].get(channel, 0) > 0, channel
        assert counts["clean_errors"].get(channel, 0) > 0, channel
    assert counts["non_finite_predictions"] == 0
    assert counts["same_after"]


def test_thousands_of_fuzzed_requests_get_a_prediction_or_a_clean_error(exported):
    """3,000 requests (1,000 per raw-feature channel, 500 per tf.Example channel): about 5 s."""
    counts = _fuzz(exported.path, per_channel=1000, seed=1)
    _check(counts, 1000)
