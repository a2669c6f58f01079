"""Per-task metrics of a trained or exported model on one split: the library behind
``tfmtnas-evaluate``.

Binary tasks get the exact ROC AUC (ties count one half), regression tasks the RMSE,
multiclass tasks the accuracy and the top-k accuracy (``TaskSpec.top_k``), each over the
examples that have that task's label (NaN = missing).

Example:
    >>> predict = SavedModelPredictor("saved_models/mmoe/1").predict
    >>> evaluate_split(predict, data.test, data.tasks)["metrics"]
    {'income_auc': 0.94..., 'marital_auc': 0.98...}
    >>> source = load_source(model_dir="runs/mmoe")
    >>> evaluate_model(source, {"name": "census", "data_dir": None, "options": {},
    ...                         "seed": 0, "from": "flags"}, "validation")["metrics"]
    {'income_auc': 0.94..., 'marital_auc': 0.98...}
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfmtnas.data import DataError, DataSource, PreparedData, Split, load_dataset
from tfmtnas.errors import MissingFileError, UserError
from tfmtnas.features import FeaturePreprocessor, FeatureSpec, TaskSpec

Predict = Callable[..., Mapping[str, np.ndarray]]


def binary_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Exact ROC AUC: P(score of a positive > score of a negative), ties counted 1/2.

    Labels >= 0.5 are positives. None if a class is absent (AUC undefined).
    """
    labels = np.asarray(labels, dtype=np.float64) >= 0.5
    scores = np.asarray(scores, dtype=np.float64)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)  # average 1-based ranks
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def rmse(labels: np.ndarray, predictions: np.ndarray) -> float | None:
    """Root mean squared error; None for no examples."""
    labels = np.asarray(labels, dtype=np.float64)
    if len(labels) == 0:
        return None
    return float(np.sqrt(np.mean((np.asarray(predictions, np.float64) - labels) ** 2)))


def top_k_accuracy(labels: np.ndarray, probabilities: np.ndarray, k: int = 1) -> float | None:
    """Share of examples whose class id is among the ``k`` highest of its row.

    A class tied with the k-th highest counts as in the top k (what
    ``tf.math.in_top_k``, behind Keras' top-k accuracy, does). None for no examples.

    Args:
        labels: class ids ``[n]`` (floats holding integers are fine).
        probabilities: scores ``[n, K]`` (probabilities or logits).
        k: how many of the highest scores count.

    Example:
        >>> top_k_accuracy(np.array([0, 2]), np.array([[0.5, 0.3, 0.2], [0.5, 0.3, 0.2]]), 2)
        0.5
    """
    labels = np.asarray(labels).astype(np.int64)
    scores = np.asarray(probabilities, dtype=np.float64)
    if len(labels) == 0:
        return None
    own = scores[np.arange(len(labels)), labels]
    higher = (scores > own[:, None]).sum(axis=1)
    return float(np.mean(higher < k))


def task_metrics(predictions: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
                 tasks: Sequence[TaskSpec]) -> tuple[dict[str, float | None], dict[str, int]]:
    """``({metric: value}, {task: labelled examples})``, metrics named as
    ``TaskSpec.metric_names``: ``<task>_auc``, ``<task>_rmse``, ``<task>_accuracy`` and
    ``<task>_top<k>_accuracy``.

    A multiclass task's predictions are ``[n, K]`` class probabilities, its labels class ids.
    """
    metrics, counts = {}, {}
    for task in tasks:
        y = np.asarray(labels[task.name], dtype=np.float64)
        keep = ~np.isnan(y)
        p = np.asarray(predictions[task.name])[keep]
        counts[task.name] = int(keep.sum())
        if task.kind == "binary":
            metrics[f"{task.name}_auc"] = binary_auc(y[keep], p)
        elif task.kind == "regression":
            metrics[f"{task.name}_rmse"] = rmse(y[keep], p)
        else:
            names = task.metric_names
            metrics[names[0]] = top_k_accuracy(y[keep], p, 1)
            if task.top_k is not None:
                metrics[names[1]] = top_k_accuracy(y[keep], p, task.top_k)
    return metrics, counts


def model_predict_fn(model) -> Predict:
    """A ``predict(columns, batch_size, progress)`` for an in-memory tfmtnas model."""
    spec: FeatureSpec = model.spec
    pre = FeaturePreprocessor(spec)

    def predict(columns, batch_size: int = 4096, progress=None):
        from tfmtnas.export.inputs import to_columns

        cols = to_columns(columns, spec)
        n = len(next(iter(cols.values())))
        outs: dict[str, list[np.ndarray]] = {t.name: [] for t in model.tasks}
        for start in range(0, n, batch_size):
            batch = {k: tf.constant(v[start:start + batch_size], dtype=spec.raw_dtype(k))
                     for k, v in cols.items()}
            pred = model(pre(batch), training=False)
            for t in model.tasks:
                shape = [-1, t.num_classes] if t.kind == "multiclass" else [-1]
                outs[t.name].append(np.reshape(pred[t.name].numpy(), shape))
            if progress is not None:
                progress(min(start + batch_size, n), n)
        return {k: np.concatenate(v) for k, v in outs.items()}

    return predict


class Progress:
    """``done/total rows`` on stderr: one updating line on a terminal, else a few lines."""

    def __init__(self, label: str, stream=None):
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self._next_fraction = 0.25

    def __call__(self, done: int, total: int) -> None:
        fraction = done / max(total, 1)
        rate = done / max(time.perf_counter() - self.start, 1e-9)
        line = f"{self.label}: {done}/{total} rows ({fraction:.0%}, {rate:,.0f} rows/s)"
        if self.tty:
            self.stream.write("\r" + line + ("\n" if done >= total else ""))
        elif fraction >= self._next_fraction or done >= total:
            self.stream.write(line + "\n")
            while self._next_fraction <= fraction:
                self._next_fraction += 0.25
        self.stream.flush()


def evaluate_split(predict: Predict, split: Split, spec: FeatureSpec,
                   tasks: Sequence[TaskSpec], batch_size: int = 4096,
                   progress: Callable[[int, int], None] | None = None) -> dict:
    """Predict an in-memory ``split`` and compute each task's metric.

    Raises:
        DataError: the split lacks a feature the model takes or a task's labels.
    """
    return evaluate_chunks(predict, [(split.features, split.labels)], len(split), spec, tasks,
                           batch_size, progress)


def evaluate_source(predict: Predict, data: DataSource, split: str, spec: FeatureSpec,
                    tasks: Sequence[TaskSpec], batch_size: int = 4096,
                    progress: Callable[[int, int], None] | None = None,
                    chunk_rows: int = 65536) -> dict:
    """Like :func:`evaluate_split` for a split of in-memory or prepared (streamed) data.

    A prepared split is read ``chunk_rows`` raw rows at a time; only the predictions and
    labels (a few bytes per row) are kept for the exact AUC.
    """
    if isinstance(data, PreparedData):
        return evaluate_chunks(predict, data.raw_batches(split, chunk_rows),
                               data.num_rows(split), spec, tasks, batch_size, progress)
    return evaluate_split(predict, data.splits()[split], spec, tasks, batch_size, progress)


def evaluate_chunks(predict: Predict, chunks: Iterable[tuple[Mapping, Mapping]], total: int,
                    spec: FeatureSpec, tasks: Sequence[TaskSpec], batch_size: int = 4096,
                    progress: Callable[[int, int], None] | None = None) -> dict:
    """Predict ``(raw features, labels)`` chunks of one split and compute each task's metric.

    Args:
        predict: ``predict(columns, batch_size, progress)`` of a model or SavedModel.
        chunks: raw feature columns and label columns, chunk by chunk.
        total: rows in all chunks (for progress).
        spec, tasks: what the model takes and predicts.
        batch_size: rows per prediction call.
        progress: ``progress(done, total)``.

    Raises:
        DataError: the data lacks a feature the model takes or a task's labels.
    """
    predictions: dict[str, list[np.ndarray]] = {t.name: [] for t in tasks}
    labels: dict[str, list[np.ndarray]] = {t.name: [] for t in tasks}
    done = 0
    for features, chunk_labels in chunks:
        missing = [n for n in spec.names if n not in features]
        if missing:
            raise DataError(f"The model takes features {missing} that the dataset does not "
                            f"have; evaluate on the dataset the model was trained on.")
        no_labels = [t.name for t in tasks if t.name not in chunk_labels]
        if no_labels:
            raise DataError(f"The dataset has no labels for tasks {no_labels} (it has "
                            f"{sorted(chunk_labels)}).")
        offset = done
        step = None if progress is None else (lambda d, _t, o=offset: progress(o + d, total))
        out = predict({n: features[n] for n in spec.names}, batch_size=batch_size,
                      progress=step)
        for t in tasks:
            predictions[t.name].append(np.asarray(out[t.name]))
            labels[t.name].append(np.asarray(chunk_labels[t.name]))
        done += len(np.asarray(chunk_labels[tasks[0].name]))
    joined = {k: np.concatenate(v) for k, v in predictions.items()}
    metrics, counts = task_metrics(joined, {k: np.concatenate(v) for k, v in labels.items()},
                                   tasks)
    return {"examples": done, "labelled": counts, "metrics": metrics}


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """A model to evaluate: an exported SavedModel or a trained model dir.

    Attributes:
        label: the folder, as reported in the metrics.
        predict: ``predict(columns, batch_size, progress)``.
        spec: the raw features the model takes.
        tasks: what it predicts.
        record: the training run's resolved config (empty if unknown).
    """

    label: str
    predict: Predict
    spec: FeatureSpec
    tasks: Sequence[TaskSpec]
    record: Mapping


def load_source(saved_model: str | None = None, model_dir: str | None = None) -> ModelSource:
    """Load exactly one of an exported ``saved_model`` version folder and a ``model_dir``.

    A SavedModel predicts through its ``serving_default`` signature, as TF Serving would; a
    model dir may be a search dir (its derived ``child/`` is loaded).

    Raises:
        UserError: neither or both given.
        MissingFileError: the folder does not exist or holds no model.
    """
    if bool(saved_model) == bool(model_dir):
        raise UserError("Give exactly one of --saved_model (an exported version folder) and "
                        "--model_dir (a trained model dir).")
    if saved_model:
        from tfmtnas.export import SavedModelPredictor

        path = Path(saved_model)
        if not path.exists():
            raise MissingFileError(f"--saved_model {path} does not exist.")
        predictor = SavedModelPredictor(path)
        record = predictor.metadata.extra.get("train_config") or {}
        return ModelSource(str(path), predictor.predict, predictor.spec, predictor.tasks,
                           record)
    from tfmtnas.pipelines.exporting import resolve_model_dir, training_record
    from tfmtnas.pipelines.training import load_model

    folder = resolve_model_dir(model_dir)
    model = load_model(folder)
    return ModelSource(str(folder), model_predict_fn(model), model.spec, model.tasks,
                       training_record(folder))


def evaluate_model(source: ModelSource, dataset: Mapping, split: str, batch_size: int = 4096,
                   progress: Callable[[int, int], None] | None = None) -> dict:
    """Load the dataset, evaluate ``source`` on its ``split``; the metrics report.

    Args:
        source: from :func:`load_source`.
        dataset: ``name``, ``data_dir``, ``options`` (for :func:`tfmtnas.data.load_dataset`),
            ``seed`` (of the split) and ``from`` (where these came from, reported).
        split: ``train``, ``validation`` or ``test``.
        batch_size: rows per prediction call.
        progress: ``progress(done, total)``.

    Returns:
        ``model``, ``dataset``, ``split``, ``seed``, ``dataset_from`` and the
        :func:`evaluate_chunks` result (``examples``, ``labelled``, ``metrics``).
    """
    data = load_dataset(dataset["name"], data_dir=dataset["data_dir"], seed=dataset["seed"],
                        **dataset["options"])
    result = evaluate_source(source.predict, data, split, source.spec, source.tasks,
                             batch_size=batch_size, progress=progress)
    return {"model": source.label, "dataset": dataset["name"], "split": split,
            "seed": dataset["seed"], "dataset_from": dataset["from"], **result}
