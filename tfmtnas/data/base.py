"""Containers shared by every dataset loader."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from tfmtnas.errors import DataError
from tfmtnas.features import FeatureSpec, TaskSpec

__all__ = ["FLOAT32_MAX", "DataError", "MultiTaskData", "Split"]

# The largest finite float32: finite float64 values beyond it overflow to inf when a model
# (or a prepared record) holds them as float32.
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclasses.dataclass
class Split:
    """One split of a dataset: raw feature columns and float32 label columns (NaN = missing).

    Args:
        features: raw columns by name (strings for categorical, floats for numeric).
        labels: one float32 array per task; NaN marks a missing label.
    """

    features: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.features.values())))

    def take(self, index: np.ndarray | slice) -> Split:
        """Rows ``index`` of every column."""
        return Split({k: v[index] for k, v in self.features.items()},
                     {k: v[index] for k, v in self.labels.items()})


@dataclasses.dataclass
class MultiTaskData:
    """A multi-task dataset: train/validation/test splits, the fitted feature spec, the tasks."""

    name: str
    train: Split
    validation: Split
    test: Split
    spec: FeatureSpec
    tasks: tuple[TaskSpec, ...]

    def splits(self) -> Mapping[str, Split]:
        return {"train": self.train, "validation": self.validation, "test": self.test}
