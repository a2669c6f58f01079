"""Datasets as :class:`MultiTaskData`: real benchmarks, the MMoE synthetic set, your own CSV.

``load_dataset(name, ...)`` picks a loader by name:

- ``"census"``: UCI Census-Income (KDD), tasks income > 50K and never married
  (:func:`load_census`);
- ``"synthetic"``: the MMoE paper's two regression tasks of chosen correlation
  (:func:`make_synthetic`);
- ``"csv"``: your own delimited file(s) (:func:`load_csv_dataset`);
- ``"movielens"``: MovieLens 100K, tasks rating and liked, split by time
  (:func:`load_movielens`);
- ``"mnist"``: MNIST task sets on MNIST-5k, e.g. the Gumbel-matrix paper's four 10-way
  digit tasks on upright and rotated images (:func:`load_mnist`);
- ``"prepared"``: a folder written by ``tfmtnas-prepare``, streamed from disk instead of
  loaded (:func:`load_prepared`; ``data_dir`` is the folder).

Example:
    >>> data = load_dataset("synthetic", num_train=200, num_validation=20, num_test=20)
    >>> data.name, len(data.train)
    ('synthetic', 200)
"""

from __future__ import annotations

import os
from collections.abc import Callable

from tfmtnas.data.base import DataError, MultiTaskData, Split
from tfmtnas.data.census import load_census
from tfmtnas.data.csv import load_csv_dataset, read_csv
from tfmtnas.data.fetch import cache_dir, fetch_package_file
from tfmtnas.data.mnist import load_mnist
from tfmtnas.data.movielens import load_movielens
from tfmtnas.data.sources import DataSource, num_rows, split_dataset
from tfmtnas.data.stream import PreparedData, load_prepared
from tfmtnas.data.synthetic import make_synthetic, synthetic_params
from tfmtnas.errors import UserError


def _census(data_dir, seed, **kwargs):
    return load_census(data_dir=data_dir, seed=seed, **kwargs)


def _movielens(data_dir, seed, **kwargs):
    return load_movielens(data_dir=data_dir, seed=seed, **kwargs)


def _mnist(data_dir, seed, **kwargs):
    return load_mnist(data_dir=data_dir, seed=seed, **kwargs)


def _synthetic(data_dir, seed, **kwargs):
    if data_dir is not None:
        raise UserError(f"The synthetic dataset is generated, it takes no data_dir "
                        f"(got {data_dir!r}).")
    return make_synthetic(seed=seed, **kwargs)


def _csv(data_dir, seed, **kwargs):
    if data_dir is not None:
        raise UserError(f"The csv dataset takes train_path (and optionally test_path), "
                        f"not data_dir (got {data_dir!r}).")
    return load_csv_dataset(seed=seed, **kwargs)


def _prepared(data_dir, seed, **kwargs):
    if data_dir is None:
        raise UserError("The prepared dataset needs data_dir: the folder tfmtnas-prepare "
                        "wrote.")
    if kwargs:
        raise UserError(f"The prepared dataset takes no options, got {sorted(kwargs)}: its "
                        f"columns, tasks and splits were fixed by tfmtnas-prepare.")
    return load_prepared(data_dir)


# name -> loader(data_dir, seed, **kwargs). Add new datasets here.
_LOADERS: dict[str, Callable[..., DataSource]] = {
    "census": _census,
    "synthetic": _synthetic,
    "csv": _csv,
    "movielens": _movielens,
    "mnist": _mnist,
    "prepared": _prepared,
}


def dataset_names() -> list[str]:
    """Names :func:`load_dataset` accepts."""
    return sorted(_LOADERS)


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, seed: int = 0,
                 **kwargs) -> DataSource:
    """Load a dataset by name.

    Args:
        name: one of :func:`dataset_names` (``"census"``, ``"csv"``, ``"mnist"``,
            ``"movielens"``, ``"synthetic"``, ``"prepared"``).
        data_dir: folder of raw files for datasets that read files (census, movielens,
            mnist; None fetches them into the cache), or the prepared folder (prepared).
        seed: seed of every random split or generator. Default 0.
        **kwargs: passed to the loader, e.g. ``correlation=0.9`` for ``"synthetic"`` or
            ``train_path=..., label_columns=...`` for ``"csv"``.

    Raises:
        ValueError: unknown name.
    """
    try:
        loader = _LOADERS[name]
    except KeyError:
        raise UserError(f"Unknown dataset {name!r}; valid names: {dataset_names()}.") from None
    return loader(data_dir, seed, **kwargs)


__all__ = [
    "DataError",
    "DataSource",
    "MultiTaskData",
    "PreparedData",
    "Split",
    "cache_dir",
    "dataset_names",
    "fetch_package_file",
    "load_census",
    "load_csv_dataset",
    "load_mnist",
    "load_dataset",
    "load_movielens",
    "load_prepared",
    "make_synthetic",
    "num_rows",
    "read_csv",
    "split_dataset",
    "synthetic_params",
]
