"""The C API runner for the benchmarks' fresh processes, loaded without importing tfmtnas.

A serving measurement runs in a process that has TensorFlow and nothing of tfmtnas, TFRS or
Keras, as a model server would. ``tfmtnas/export/capi.py`` only needs TensorFlow, so it is
loaded by file path instead of through the package.

Example:
    >>> capi = load_capi()
    >>> session = capi.CApiSession("saved_models/mmoe/1")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def load_capi():
    """``tfmtnas.export.capi`` by file path: the package itself is not imported."""
    path = Path(__file__).resolve().parents[1] / "tfmtnas" / "export" / "capi.py"
    spec = importlib.util.spec_from_file_location("capi", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
