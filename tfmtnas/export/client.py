"""TF Serving requests from raw rows: gRPC ``PredictRequest`` protos and REST JSON bodies.

Needs ``tensorflow-serving-api`` (``pip install 'tfmtnas[serving]'``) for the gRPC protos;
the REST helpers need only the standard library and NumPy.

Rows are a list of dicts (``[{"age": 39.0, "education": "Bachelors"}, ...]``) or a dict of
columns (``{"age": [39.0, 50.0], "education": [...]}``). Given the model's
:class:`~tfmtnas.features.FeatureSpec` (``read_metadata(path).spec``), values are checked
and sent with the signature's dtypes: categorical values as strings, numeric as float32.

Example (gRPC)::

    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel("localhost:8500"))
    request = predict_request(rows, "mmoe", spec)
    scores = parse_predict_response(stub.Predict(request, timeout=5.0))

Example (REST)::

    curl -d "$(python -c '...print(rest_instances_body(rows, spec))')" \\
        -X POST http://localhost:8501/v1/models/mmoe:predict
"""

from __future__ import annotations

import base64
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfmtnas.export.inputs import Columns, Rows, to_columns
from tfmtnas.export.metadata import read_metadata
from tfmtnas.export.signatures import EXAMPLES_INPUT, EXAMPLES_SIGNATURE, SERVING_SIGNATURE
from tfmtnas.features import FeatureSpec

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"


def _serving_apis():
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("The gRPC helpers need tensorflow-serving-api: pip install "
                          "'tensorflow-serving-api==<your TensorFlow version>' (or the "
                          "tfmtnas 'serving' extra).") from err
    return predict_pb2, prediction_log_pb2


def _new_request(model_name: str, signature_name: str, version: int | None):
    predict_pb2, _ = _serving_apis()
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    return request


def predict_request(data: Rows | Columns, model_name: str, spec: FeatureSpec | None = None,
                    signature_name: str = SERVING_SIGNATURE, version: int | None = None):
    """A gRPC ``PredictRequest`` for ``serving_default``: one tensor ``[n]`` per feature.

    Args:
        data: raw rows or columns.
        model_name: the name TF Serving serves the model under.
        spec: the model's feature spec; recommended (checks names and dtypes). Without it,
            string values are sent as strings and numbers as float32.
        signature_name: default ``"serving_default"``.
        version: a specific version; default the one the server picks (latest).
    """
    cols = to_columns(data, spec)
    request = _new_request(model_name, signature_name, version)
    for name, values in cols.items():
        dtype = tf.string if values.dtype == object else tf.float32
        request.inputs[name].CopyFrom(
            tf.make_tensor_proto(values.tolist() if dtype == tf.string else values,
                                 dtype=dtype, shape=[len(values)]))
    return request


def to_tf_examples(data: Rows | Columns, spec: FeatureSpec) -> list[bytes]:
    """Serialized ``tf.Example`` protos, one per row, as ``predict_examples`` parses them."""
    cols = to_columns(data, spec)
    n = len(next(iter(cols.values())))
    categorical = {f.name for f in spec.categorical}
    out = []
    for i in range(n):
        feature = {}
        for name, values in cols.items():
            if name in categorical:
                feature[name] = tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[values[i].encode("utf-8")]))
            else:
                feature[name] = tf.train.Feature(
                    float_list=tf.train.FloatList(value=[float(values[i])]))
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        out.append(example.SerializeToString())
    return out


def examples_request(data: Rows | Columns, model_name: str, spec: FeatureSpec,
                     version: int | None = None):
    """A gRPC ``PredictRequest`` for ``predict_examples``: serialized ``tf.Example`` strings."""
    request = _new_request(model_name, EXAMPLES_SIGNATURE, version)
    examples = to_tf_examples(data, spec)
    request.inputs[EXAMPLES_INPUT].CopyFrom(
        tf.make_tensor_proto(examples, dtype=tf.string, shape=[len(examples)]))
    return request


def parse_predict_response(response) -> dict[str, np.ndarray]:
    """``{output name: array}`` from a ``PredictResponse`` (or any proto with ``outputs``)."""
    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


def _json_value(value):
    if isinstance(value, str):
        return value
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"JSON cannot carry the number {value}; TF Serving's REST API "
                         f"rejects it too. Use gRPC for non-finite values.")
    return value


def rest_instances_body(data: Rows | Columns, spec: FeatureSpec | None = None,
                        signature_name: str = SERVING_SIGNATURE) -> str:
    """REST ``:predict`` body in row form: ``{"signature_name", "instances": [{...}, ...]}``."""
    cols = to_columns(data, spec)
    n = len(next(iter(cols.values())))
    instances = [{name: _json_value(values[i]) for name, values in cols.items()}
                 for i in range(n)]
    return json.dumps({"signature_name": signature_name, "instances": instances})


def rest_inputs_body(data: Rows | Columns, spec: FeatureSpec | None = None,
                     signature_name: str = SERVING_SIGNATURE) -> str:
    """REST ``:predict`` body in columnar form: ``{"signature_name", "inputs": {f: [...]}}``."""
    cols = to_columns(data, spec)
    inputs = {name: [_json_value(v) for v in values] for name, values in cols.items()}
    return json.dumps({"signature_name": signature_name, "inputs": inputs})


def rest_examples_body(data: Rows | Columns, spec: FeatureSpec) -> str:
    """REST body for ``predict_examples``: base64 ``tf.Example`` strings (``{"b64": ...}``)."""
    encoded = [{"b64": base64.b64encode(e).decode("ascii")} for e in to_tf_examples(data, spec)]
    return json.dumps({"signature_name": EXAMPLES_SIGNATURE,
                       "inputs": {EXAMPLES_INPUT: encoded}})


def rest_predict_url(model_name: str, host: str = "localhost", port: int = 8501,
                     version: int | None = None) -> str:
    """TF Serving's REST predict URL for ``model_name`` (and a version, if given)."""
    path = f"/v1/models/{model_name}" + (f"/versions/{int(version)}" if version is not None
                                         else "")
    return f"http://{host}:{port}{path}:predict"


def sample_row(spec: FeatureSpec) -> dict[str, object]:
    """A plausible raw row for documentation: the most frequent category, the mean number.

    A vocabulary file gives its first line (read from the file, which must exist: a spec
    from :func:`~tfmtnas.export.read_metadata` names the export's own copy).
    """
    row: dict[str, object] = {}
    for f in spec.categorical:
        first = f.read_vocabulary(1) if f.hash_bins is None else ()
        row[f.name] = first[0] if first else "some_value"
    for f in spec.numeric:
        value = math.expm1(f.mean) if f.log else f.mean
        row[f.name] = round(float(value), 4)
    return row


def curl_request(saved_model_dir: str | os.PathLike, model_name: str) -> str:
    """A ``curl`` command for TF Serving's REST API with one plausible row of the export."""
    spec = read_metadata(saved_model_dir).spec
    body = rest_instances_body([sample_row(spec)], spec)
    return f"curl -X POST {rest_predict_url(model_name)} \\\n  -d '{body}'"


def write_warmup_requests(saved_model_dir: str | os.PathLike, data: Rows | Columns,
                          model_name: str, spec: FeatureSpec,
                          signatures: Sequence[str] = (SERVING_SIGNATURE,
                                                       EXAMPLES_SIGNATURE)) -> Path:
    """Write ``assets.extra/tf_serving_warmup_requests``: TF Serving replays these requests
    when it loads the version, before it serves traffic, so the first real request does not
    pay for graph warm-up. Call it on a folder that is not yet published (e.g. from
    ``export_saved_model``'s ``warmup_rows``), not on a version a server already watches.
    """
    _, prediction_log_pb2 = _serving_apis()
    path = Path(saved_model_dir) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    builders: Mapping = {SERVING_SIGNATURE: lambda: predict_request(data, model_name, spec),
                         EXAMPLES_SIGNATURE: lambda: examples_request(data, model_name, spec)}
    unknown = [s for s in signatures if s not in builders]
    if unknown:
        raise ValueError(f"No warm-up request for signatures {unknown}; "
                         f"known: {sorted(builders)}.")
    with tf.io.TFRecordWriter(str(path)) as writer:
        for name in signatures:
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=builders[name]()))
            writer.write(log.SerializeToString())
    return path
