"""Load and run an exported SavedModel through TensorFlow's C API, as a C++ model server does.

TF Serving answers a Predict request by loading the SavedModel once (the C++
``LoadSavedModel`` with the ``serve`` tag) and then calling ``Session::Run`` on the
signature's input and output tensors. The C API inside the ``tensorflow`` wheel exposes the
same two steps (``TF_LoadSessionFromSavedModel``, ``TF_SessionRun``), so :class:`CApiSession`

- checks that an export loads and answers in TensorFlow's C++ runtime, with no Python
  objects of tfmtnas, Keras or TFRS involved, and
- times what that runtime spends on one request, without the per-input cost of Python's
  ``ConcreteFunction`` call (about 15 us per input on the development machine), which a
  C++ server never pays. A server adds its own work on top: gRPC or REST, and turning
  request protos into tensors and back.

It imports only TensorFlow, NumPy and ctypes. Inputs are ``string`` or ``float32`` vectors,
as the tfmtnas signatures take them. It is a measuring and checking tool, not a server.

Example:
    >>> session = CApiSession("saved_models/mmoe/1")
    >>> session.set_inputs(to_columns(rows, spec))   # {feature: 1-D array}
    >>> session.run()["income"]                       # the signature's output
    >>> session.time_runs(1000)                       # seconds per TF_SessionRun call
    >>> session.close()
"""

from __future__ import annotations

import ctypes
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2

_TF_FLOAT, _TF_STRING = 1, 7
_TSTRING_BYTES = 24  # sizeof(TF_TString)


class _Buffer(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("length", ctypes.c_size_t),
                ("data_deallocator", ctypes.c_void_p)]


class _Output(ctypes.Structure):
    _fields_ = [("oper", ctypes.c_void_p), ("index", ctypes.c_int)]


def _libraries() -> tuple[ctypes.CDLL, ctypes.CDLL]:
    root = Path(tf.__file__).parent
    framework = ctypes.CDLL(str(root / "libtensorflow_framework.so.2"), ctypes.RTLD_GLOBAL)
    cc = ctypes.CDLL(str(root / "libtensorflow_cc.so.2"), ctypes.RTLD_GLOBAL)
    vp, sz, i64p = ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_int64)
    signatures = {
        framework: {"TF_NewStatus": ([], vp), "TF_DeleteStatus": ([vp], None),
                    "TF_GetCode": ([vp], ctypes.c_int), "TF_Message": ([vp], ctypes.c_char_p),
                    "TF_NewBuffer": ([], ctypes.POINTER(_Buffer)),
                    "TF_DeleteBuffer": ([ctypes.POINTER(_Buffer)], None),
                    "TF_AllocateTensor": ([ctypes.c_int, i64p, ctypes.c_int, sz], vp),
                    "TF_TensorData": ([vp], vp), "TF_TensorByteSize": ([vp], sz),
                    "TF_NumDims": ([vp], ctypes.c_int),
                    "TF_Dim": ([vp, ctypes.c_int], ctypes.c_int64),
                    "TF_DeleteTensor": ([vp], None)},
        cc: {"TF_NewGraph": ([], vp), "TF_DeleteGraph": ([vp], None),
             "TF_NewSessionOptions": ([], vp), "TF_DeleteSessionOptions": ([vp], None),
             "TF_SetConfig": ([vp, ctypes.c_char_p, sz, vp], None),
             "TF_LoadSessionFromSavedModel": (
                 [vp, vp, ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, vp,
                  ctypes.POINTER(_Buffer), vp], vp),
             "TF_GraphOperationByName": ([vp, ctypes.c_char_p], vp),
             "TF_SessionRun": ([vp, vp, ctypes.POINTER(_Output), ctypes.POINTER(vp),
                                ctypes.c_int, ctypes.POINTER(_Output), ctypes.POINTER(vp),
                                ctypes.c_int, vp, ctypes.c_int, vp, vp], None),
             "TF_CloseSession": ([vp, vp], None), "TF_DeleteSession": ([vp, vp], None),
             "TF_StringInit": ([vp], None),
             "TF_StringCopy": ([vp, ctypes.c_char_p, sz], None),
             "TF_StringDealloc": ([vp], None)},
    }
    for lib, fns in signatures.items():
        for name, (args, res) in fns.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, res
    return framework, cc


class CApiSession:
    """One SavedModel signature loaded and run through the TensorFlow C API.

    Args:
        path: a SavedModel folder (``saved_models/<name>/<version>``).
        signature: the signature to run. Default ``"serving_default"``.
        inter_op_threads: threads running independent ops in parallel; ``0`` (default) lets
            TensorFlow choose (one per core). TF Serving's ``--tensorflow_inter_op_parallelism``.
        intra_op_threads: threads inside one op; ``0`` (default) lets TensorFlow choose.
            TF Serving's ``--tensorflow_intra_op_parallelism``.
    """

    def __init__(self, path: str | Path, signature: str = "serving_default",
                 inter_op_threads: int = 0, intra_op_threads: int = 0):
        if inter_op_threads < 0 or intra_op_threads < 0:
            raise ValueError(f"Thread counts must be >= 0, got inter_op_threads="
                             f"{inter_op_threads}, intra_op_threads={intra_op_threads}.")
        self._fw, self._cc = _libraries()
        self._status = self._fw.TF_NewStatus()
        self._graph = self._cc.TF_NewGraph()
        options = self._cc.TF_NewSessionOptions()
        config = config_pb2.ConfigProto(inter_op_parallelism_threads=inter_op_threads,
                                        intra_op_parallelism_threads=intra_op_threads)
        raw = config.SerializeToString()
        self._cc.TF_SetConfig(options, raw, len(raw), self._status)
        meta = self._fw.TF_NewBuffer()
        tags = (ctypes.c_char_p * 1)(b"serve")
        self._session = self._cc.TF_LoadSessionFromSavedModel(
            options, None, str(path).encode(), tags, 1, self._graph, meta, self._status)
        self._cc.TF_DeleteSessionOptions(options)
        self._tensors: list[tuple[int, int]] = []  # (tensor, number of strings to free)
        if self._fw.TF_GetCode(self._status) != 0:
            message = self._fw.TF_Message(self._status).decode()
            self._fw.TF_DeleteBuffer(meta)
            self._cc.TF_DeleteGraph(self._graph)
            self._fw.TF_DeleteStatus(self._status)
            self._session = None
            raise RuntimeError(f"TensorFlow C API could not load the SavedModel {path}: "
                               f"{message}")
        proto = meta_graph_pb2.MetaGraphDef.FromString(
            ctypes.string_at(meta.contents.data, meta.contents.length))
        self._fw.TF_DeleteBuffer(meta)
        if signature not in proto.signature_def:
            self.close()
            raise KeyError(f"{path} has no signature {signature!r}; it has "
                           f"{sorted(proto.signature_def)}.")
        sig = proto.signature_def[signature]
        self.input_names = sorted(sig.inputs)
        self.output_names = sorted(sig.outputs)
        self._input_dtypes = {n: sig.inputs[n].dtype for n in self.input_names}
        self._inputs = (_Output * len(self.input_names))(
            *[self._output(sig.inputs[n].name) for n in self.input_names])
        self._outputs = (_Output * len(self.output_names))(
            *[self._output(sig.outputs[n].name) for n in self.output_names])
        self._values = (ctypes.c_void_p * len(self.input_names))()
        self._results = (ctypes.c_void_p * len(self.output_names))()

    def _check(self, what: str) -> None:
        if self._fw.TF_GetCode(self._status) != 0:
            raise RuntimeError(f"TensorFlow C API, {what}: "
                               f"{self._fw.TF_Message(self._status).decode()}")

    def _output(self, tensor_name: str) -> _Output:
        op, _, index = tensor_name.partition(":")
        oper = self._cc.TF_GraphOperationByName(self._graph, op.encode())
        if not oper:
            raise KeyError(f"No operation {op!r} in the loaded graph.")
        return _Output(oper, int(index or 0))

    def _tensor(self, name: str, values: np.ndarray) -> tuple[int, int]:
        values = np.asarray(values)
        if values.ndim != 1:
            raise ValueError(f"Input {name!r}: expected a vector of shape [batch], got shape "
                             f"{values.shape}.")
        dims = (ctypes.c_int64 * 1)(len(values))
        if self._input_dtypes[name] == tf.string.as_datatype_enum:
            t = self._fw.TF_AllocateTensor(_TF_STRING, dims, 1, _TSTRING_BYTES * len(values))
            base = self._fw.TF_TensorData(t)
            for i, v in enumerate(values):
                raw = v if isinstance(v, bytes) else str(v).encode()
                self._cc.TF_StringInit(base + i * _TSTRING_BYTES)
                self._cc.TF_StringCopy(base + i * _TSTRING_BYTES, raw, len(raw))
            return t, len(values)
        if self._input_dtypes[name] != tf.float32.as_datatype_enum:
            raise TypeError(f"Input {name!r}: only string and float32 inputs are supported.")
        data = np.ascontiguousarray(values, dtype=np.float32)
        t = self._fw.TF_AllocateTensor(_TF_FLOAT, dims, 1, data.nbytes)
        ctypes.memmove(self._fw.TF_TensorData(t), data.ctypes.data, data.nbytes)
        return t, 0

    def set_inputs(self, features: dict[str, np.ndarray]) -> None:
        """Build the input tensors once (a server receives them already built)."""
        missing = [n for n in self.input_names if n not in features]
        if missing:
            raise KeyError(f"Missing inputs {missing}; the signature takes {self.input_names}.")
        extra = sorted(set(features) - set(self.input_names))
        if extra:  # as a model server refuses an input alias the signature lacks
            raise KeyError(f"Unknown inputs {extra}; the signature takes {self.input_names}.")
        self._free_inputs()
        try:  # a bad value frees the tensors built before it
            for n in self.input_names:
                self._tensors.append(self._tensor(n, features[n]))
        except BaseException:
            self._free_inputs()
            raise
        for i, (t, _) in enumerate(self._tensors):
            self._values[i] = t

    def _free_inputs(self) -> None:
        for t, strings in self._tensors:
            base = self._fw.TF_TensorData(t)
            for i in range(strings):
                self._cc.TF_StringDealloc(base + i * _TSTRING_BYTES)
            self._fw.TF_DeleteTensor(t)
        self._tensors = []

    def _run_once(self) -> None:
        if not self._tensors:
            raise RuntimeError("No inputs: call set_inputs(...) before running.")
        self._cc.TF_SessionRun(self._session, None, self._inputs, self._values,
                               len(self.input_names), self._outputs, self._results,
                               len(self.output_names), None, 0, None, self._status)

    def _release_results(self) -> None:
        for i in range(len(self.output_names)):
            self._fw.TF_DeleteTensor(self._results[i])

    def run(self) -> dict[str, np.ndarray]:
        """Run the signature on the current inputs; float32 outputs by name, each of the
        shape the signature returned (``[batch]``, or ``[batch, K]`` for a multiclass task)."""
        self._run_once()
        self._check("TF_SessionRun")
        out = {}
        for i, name in enumerate(self.output_names):
            t = self._results[i]
            size = self._fw.TF_TensorByteSize(t)
            shape = [self._fw.TF_Dim(t, d) for d in range(self._fw.TF_NumDims(t))]
            out[name] = np.frombuffer(ctypes.string_at(self._fw.TF_TensorData(t), size),
                                      np.float32).reshape(shape).copy()
        self._release_results()
        return out

    def time_runs(self, calls: int) -> list[float]:
        """Seconds of each of ``calls`` ``TF_SessionRun`` calls on the current inputs."""
        times = []
        for _ in range(calls):
            t = time.perf_counter()
            self._run_once()
            times.append(time.perf_counter() - t)
            self._check("TF_SessionRun")
            self._release_results()
        return times

    def __enter__(self) -> CApiSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Free the inputs, the session and the graph (safe to call twice)."""
        if self._session is None:
            return
        self._free_inputs()
        self._cc.TF_CloseSession(self._session, self._status)
        self._cc.TF_DeleteSession(self._session, self._status)
        self._cc.TF_DeleteGraph(self._graph)
        self._fw.TF_DeleteStatus(self._status)
        self._session = None
