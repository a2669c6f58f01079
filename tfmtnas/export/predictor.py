"""Batch predictions from an exported version folder, through its ``serving_default``.

Example:
    >>> predictor = SavedModelPredictor("saved_models/mmoe/1")
    >>> predictor.predict(data.test.features)["income"][:3]
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfmtnas.export.inputs import Columns, Rows, to_columns
from tfmtnas.export.metadata import read_metadata
from tfmtnas.export.saved_model import SERVING_SIGNATURE, load_signatures


class SavedModelPredictor:
    """Load an exported version folder with the ``serve`` tag; predict from raw columns.

    Args:
        saved_model_dir: a version folder written by
            :func:`~tfmtnas.export.export_saved_model`.
    """

    def __init__(self, saved_model_dir: str | os.PathLike):
        self.path = Path(saved_model_dir)
        self.metadata = read_metadata(self.path)
        self.spec = self.metadata.spec
        self.tasks = self.metadata.tasks
        self._loaded = load_signatures(self.path)
        self.signature = self._loaded.signatures[SERVING_SIGNATURE]

    def predict(self, data: Rows | Columns, batch_size: int = 4096,
                progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
        """``{task: float32 [n]}`` (``[n, K]`` for a multiclass task) for raw rows or
        columns, ``batch_size`` rows per call.

        ``progress(done, total)`` is called after each batch.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        cols = to_columns(data, self.spec)
        n = len(next(iter(cols.values())))
        outs: dict[str, list[np.ndarray]] = {t.name: [] for t in self.tasks}
        for start in range(0, n, batch_size):
            batch = {k: tf.constant(v[start:start + batch_size],
                                    dtype=self.spec.raw_dtype(k)) for k, v in cols.items()}
            pred = self.signature(**batch)
            for t in self.tasks:
                outs[t.name].append(pred[t.name].numpy())
            if progress is not None:
                progress(min(start + batch_size, n), n)
        return {t.name: np.concatenate(outs[t.name]) if outs[t.name]
                else np.zeros([0, *([t.num_classes] if t.kind == "multiclass" else [])],
                              np.float32)
                for t in self.tasks}
