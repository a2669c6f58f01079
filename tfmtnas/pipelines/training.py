"""Train and evaluate one multi-task model: the library function behind ``tfmtnas-train``.

Example:
    >>> cfg = TrainConfig(dataset="census", model="mmoe", epochs=2, model_dir="runs/mmoe")
    >>> result = train_and_evaluate(cfg)
    >>> result.test_metrics["income_auc"]
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import tensorflow as tf
from absl import logging

import tfmtnas.search  # noqa: F401  (registers RoutingNetwork: load_model rebuilds children)
from tfmtnas import keras
from tfmtnas.data import DataSource, load_dataset, num_rows, split_dataset
from tfmtnas.errors import DivergedError, MissingFileError, UserError
from tfmtnas.features import FeatureSpec
from tfmtnas.fsutil import FAULT_ENV, atomic_write, fault_point, replace_dir, restore_aside
from tfmtnas.models import MultiTaskModel, make_optimizer
from tfmtnas.pipelines.resume import CHECKPOINTS, EpochCheckpoints, NextEpoch, check_resume


@dataclasses.dataclass
class TrainConfig:
    """Everything one training run needs; written as ``config.json`` into the model dir."""

    dataset: str = "census"
    data_dir: str | None = None
    model: str = "mmoe"
    expert_units: tuple[int, ...] = (64,)
    num_experts: int = 4
    num_task_experts: int = 1
    num_shared_experts: int = 2
    num_levels: int = 2
    tower_units: tuple[int, ...] = (32,)
    embedding_dim: int = 8
    epochs: int = 4
    batch_size: int = 1024
    learning_rate: float = 2e-3
    optimizer: str = "lazy_adam"
    seed: int = 0
    jit_compile: bool = True
    model_dir: str | None = None
    dataset_options: dict = dataclasses.field(default_factory=dict)
    strategy: str = "default"

    def sharing(self) -> dict:
        return {"kind": self.model, "expert_units": list(self.expert_units),
                "num_experts": self.num_experts, "num_task_experts": self.num_task_experts,
                "num_shared_experts": self.num_shared_experts, "num_levels": self.num_levels}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class TrainResult:
    model: MultiTaskModel
    test_metrics: dict[str, float]
    validation_metrics: dict[str, float]
    seconds: float


def build_model(data: DataSource, cfg: TrainConfig) -> MultiTaskModel:
    """A compiled model for ``data`` as ``cfg`` describes."""
    model = MultiTaskModel(data.spec, data.tasks, sharing=cfg.sharing(),
                           embedding_dim=cfg.embedding_dim, tower_units=cfg.tower_units)
    model.compile(make_optimizer(cfg.optimizer, cfg.learning_rate), jit_compile=cfg.jit_compile)
    return model


def task_metrics(metrics: Mapping[str, float], data: DataSource) -> dict[str, float]:
    """Only the per-task quality metrics (``TaskSpec.metric_names``) and losses, as floats."""
    keys = [k for t in data.tasks for k in [*t.metric_names, f"{t.name}_loss"]]
    return {k: float(metrics[k]) for k in keys if k in metrics}


def _progress_verbosity() -> int:
    return 1 if sys.stderr.isatty() else 2


def finite_json(value) -> str:
    """``value`` as JSON text with every NaN or infinite float written as ``null``.

    Python's ``json`` writes ``NaN`` and ``Infinity``, which are not JSON: other readers
    (``jq``, browsers, most languages) refuse such a file.

    Args:
        value: dicts, lists and scalars.

    Example:
        >>> finite_json({"auc": float("nan"), "loss": 0.5})
        '{\n "auc": null,\n "loss": 0.5\n}'
    """

    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(value), indent=1, allow_nan=False)


def check_finite_config(config: Mapping) -> None:
    """Raise :class:`~tfmtnas.errors.UserError` naming a NaN or infinite number in ``config``.

    Args:
        config: a resolved configuration (``TrainConfig.to_dict()``).

    Example:
        >>> check_finite_config({"learning_rate": float("inf")})  # doctest: +SKIP
        UserError: learning_rate is inf: give a finite number (--learning_rate).
    """

    def walk(prefix, v):
        if isinstance(v, float) and not math.isfinite(v):
            raise UserError(f"{prefix} is {v}: give a finite number (--{prefix.split('.')[0]}).")
        if isinstance(v, dict):
            for k, x in v.items():
                walk(f"{prefix}.{k}" if prefix else k, x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(prefix, x)

    walk("", dict(config))


class FaultPoints(keras.callbacks.Callback):
    """Kill points for the kill tests: ``<name>_batch_<epoch>_<batch>`` after a step and
    ``<name>_epoch_<epoch>`` after an epoch (and its backup), see
    :func:`tfmtnas.fsutil.fault_point`. Added only when ``$TFMTNAS_FAULT_POINT`` is set.

    Example:
        >>> FaultPoints("train")  # dies after epoch 2 if TFMTNAS_FAULT_POINT=train_epoch_2
    """

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self._epoch = 0
        self._first = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self._first = batch

    def on_train_batch_end(self, batch, logs=None):
        # One call per execution of steps_per_execution steps: every batch it ran.
        for b in range(min(self._first, batch), batch + 1):
            fault_point(f"{self.name}_batch_{self._epoch}_{b}")

    def on_epoch_end(self, epoch, logs=None):
        fault_point(f"{self.name}_epoch_{epoch}")


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stop training with :class:`~tfmtnas.errors.DivergedError` once a loss is NaN or inf.

    The losses Keras logs are running means over the epoch, so a single non-finite batch
    keeps them non-finite: checking every ``every`` steps and at each epoch's end (before
    any later callback saves a backup) catches every one. Checking reads the loss back from
    the device, hence not every step.

    Args:
        every: steps between checks within an epoch. Default 50.

    Example:
        >>> model.fit(data, epochs=3, callbacks=[StopOnNonFiniteLoss()])  # doctest: +SKIP
    """

    def __init__(self, every: int = 50):
        super().__init__()
        self.every = every
        # Under ParameterServerStrategy batch logs are RemoteValues (fetched when checked).
        self._supports_tf_logs = True
        self._epoch = 0
        self._first = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def _check(self, logs, step: str) -> None:
        logs = _fetched(logs) or {}
        for key in sorted(logs, key=lambda k: k != "loss"):  # the total loss first
            if key == "loss" or key.endswith("_loss"):
                number = float(_fetched(logs[key]))
                if not math.isfinite(number):
                    raise DivergedError(
                        f"Training diverged: {key} became {number} in epoch {self._epoch + 1}"
                        f"{step}; nothing of this epoch was saved. Lower --learning_rate, or "
                        f"look for extreme values in the data.")

    def on_train_batch_begin(self, batch, logs=None):
        self._first = batch

    def on_train_batch_end(self, batch, logs=None):
        # Keras calls this once per execution of steps_per_execution steps: check when the
        # steps it ran reach a multiple of ``every``.
        if (batch + 1) // self.every > min(self._first, batch) // self.every:
            self._check(logs, f", step {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs, "")


def _fetched(value):
    """A ``RemoteValue``'s value (ParameterServerStrategy); anything else as it is."""
    return value.fetch() if hasattr(value, "fetch") else value


@dataclasses.dataclass
class Run:
    """What :func:`start_run` set up: the strategy, whether this process writes, the data,
    the progress verbosity and the model dir."""

    strategy: tf.distribute.Strategy
    chief: bool
    data: DataSource
    verbose: int
    model_dir: Path | None


def start_run(cfg, data: DataSource | None, verbose: int | None) -> Run:
    """The start every run shares (training, search): check ``cfg``, make its strategy,
    seed, load the data, and in the model dir refuse another run's state (see
    :func:`~tfmtnas.pipelines.resume.check_resume`) and write ``config.json``.

    Args:
        cfg: a config with ``to_dict``, ``strategy``, ``seed``, ``dataset``, ``data_dir``,
            ``dataset_options`` and ``model_dir`` (:class:`TrainConfig`, ``SearchConfig``).
        data: the loaded data, or None to load ``cfg.dataset``.
        verbose: Keras verbosity, or None for a progress bar on a terminal, else a line
            per epoch.

    Example:
        >>> run = start_run(TrainConfig(dataset="synthetic"), None, 0)  # doctest: +SKIP
        >>> run.chief, run.model_dir
        (True, None)
    """
    from tfmtnas.distribute import is_chief, make_strategy

    check_finite_config(cfg.to_dict())
    # First: MultiWorkerMirroredStrategy must configure collectives before any op runs.
    strategy = make_strategy(cfg.strategy)
    chief = is_chief(strategy)
    keras.utils.set_random_seed(cfg.seed)
    if data is None:
        data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, seed=cfg.seed,
                            **cfg.dataset_options)
    model_dir = Path(cfg.model_dir) if cfg.model_dir else None
    if model_dir is not None:
        check_resume(model_dir, CHECKPOINTS, cfg.to_dict(), data, write=chief)
        if chief:
            atomic_write(model_dir / "config.json", finite_json(cfg.to_dict()))
    return Run(strategy, chief, data,
               _progress_verbosity() if verbose is None else verbose, model_dir)


def train_and_evaluate(cfg: TrainConfig, data: DataSource | None = None,
                       verbose: int | None = None) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.dataset``, evaluate on validation and test, save outputs.

    With ``cfg.model_dir`` set, writes ``config.json`` (resolved configuration),
    ``model.json`` (the model's config), the weights (``weights/``) and ``metrics.json``, and
    keeps per-epoch checkpoints (``checkpoints/``, see :mod:`tfmtnas.pipelines.resume`) so a
    killed run resumes where it stopped and a finished one can train on for more epochs.

    Under ``cfg.strategy`` (see :mod:`tfmtnas.distribute`) the model and optimizer are
    created in the strategy's scope and only the chief writes into the model dir. Under
    ``multi_worker`` every worker trains on its share of each global batch (the steps of
    one device on those batches) and evaluates; under ``parameter_server`` the chief
    evaluates a single-device copy of the model reloaded from what it saved.
    """
    from tfmtnas.distribute import (
        is_parameter_server,
        sharded_variables,
        split_global_batches,
        uses_dataset_creator,
    )

    run = start_run(cfg, data, verbose)
    strategy, chief, data, verbose, model_dir = (run.strategy, run.chief, run.data, run.verbose,
                                                 run.model_dir)
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="data_epoch")
    fit_options = {}
    if uses_dataset_creator(strategy):
        # Each parameter-server worker reads its own part of the data, repeated, for a fixed
        # number of steps per epoch.
        fit_options["steps_per_epoch"] = max(1, num_rows(data, "train") // cfg.batch_size)
        train = keras.utils.experimental.DatasetCreator(
            lambda context: split_dataset(data, "train", cfg.batch_size, shuffle=True,
                                          seed=cfg.seed, repeat=True, input_context=context))
        if verbose == 1 and is_parameter_server(strategy):
            verbose = 2  # Keras refuses a progress bar there
    else:
        # The shuffle order of epoch k is a function of (seed, k): a run resumed at epoch k
        # reads what the uninterrupted run read, and so ends with the same weights. Under
        # multi_worker each worker takes its share of every global batch.
        train = split_global_batches(split_dataset(data, "train", cfg.batch_size, shuffle=True,
                                                   seed=cfg.seed, epoch=epoch))
    validation = split_global_batches(split_dataset(data, "validation", 8192))
    test = split_global_batches(split_dataset(data, "test", 8192))
    model_cfg = cfg
    if cfg.jit_compile and is_parameter_server(strategy):
        # XLA refuses variables on another device, and every variable lives on a server.
        logging.warning("--jit_compile is off under --strategy=parameter_server: XLA cannot "
                        "read variables that live on the parameter servers.")
        model_cfg = dataclasses.replace(cfg, jit_compile=False)
    callbacks, initial_epoch = [StopOnNonFiniteLoss()], 0
    with strategy.scope():
        model = build_model(data, model_cfg)
        if model_dir is not None:
            # A killed run resumes from its last finished epoch when re-run with the same
            # model dir (and refuses to under other settings: check_resume above).
            resume = EpochCheckpoints(model_dir / CHECKPOINTS, epoch, chief=chief, model=model)
            initial_epoch = resume.restore()
            callbacks.append(resume)
        else:
            # No checkpoints to advance it: the epoch still moves on, so each epoch reads its
            # own order.
            callbacks.append(NextEpoch(epoch))
    if os.environ.get(FAULT_ENV):
        callbacks.append(FaultPoints("train"))
    start = time.perf_counter()
    if initial_epoch < cfg.epochs:
        model.fit(train, epochs=cfg.epochs, initial_epoch=initial_epoch, verbose=verbose,
                  callbacks=callbacks, **fit_options)
    seconds = time.perf_counter() - start
    if is_parameter_server(strategy):
        # Only the chief runs this (workers and servers run tfmtnas.pipelines.server): it
        # evaluates a single-device copy of the model it saved.
        save_dir = model_dir or Path(tempfile.mkdtemp(prefix="tfmtnas-train-"))
        try:
            save_model(model, save_dir)
            single = load_model(save_dir)
            single.compile(jit_compile=False)
            val = task_metrics(single.evaluate(validation, return_dict=True, verbose=0), data)
            tst = task_metrics(single.evaluate(test, return_dict=True, verbose=0), data)
        finally:
            if model_dir is None:
                shutil.rmtree(save_dir, ignore_errors=True)
    else:
        # Under multi_worker every worker evaluates (the evaluation is distributed) and
        # saves, as saving reads variables some collective ops sum: the others into
        # temporary folders they remove.
        val = task_metrics(model.evaluate(validation, return_dict=True, verbose=0), data)
        tst = task_metrics(model.evaluate(test, return_dict=True, verbose=0), data)
        if model_dir is not None:
            save_dir = model_dir if chief else Path(tempfile.mkdtemp(prefix="tfmtnas-train-"))
            try:
                save_model(model, save_dir)
            finally:
                if not chief:
                    shutil.rmtree(save_dir, ignore_errors=True)
    if model_dir is not None and chief:
        out = {"validation": val, "test": tst, "train_seconds": seconds}
        if cfg.strategy != "default":
            out.update(strategy=cfg.strategy, replicas=strategy.num_replicas_in_sync)
            shards = sharded_variables(model)
            if shards:
                out["sharded_variables"] = shards
        atomic_write(model_dir / "metrics.json", finite_json(out))
    return TrainResult(model, tst, val, seconds)


def save_model(model: MultiTaskModel, model_dir: Path) -> None:
    """Write ``model.json`` and the weights so :func:`load_model` can rebuild the model.

    Vocabulary files are copied into ``<model_dir>/vocabularies/`` and ``model.json`` names
    them relative to ``model_dir``, so the folder still loads after it moved.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    config = {**model.get_config(), "spec": model.spec.copy_vocabularies(model_dir).to_dict()}
    # The weights first, into a fresh folder renamed into place, then the file naming them:
    # a kill at any point leaves either the old model or the new one, never a mix.
    staged = model_dir / f".weights-{uuid.uuid4().hex[:8]}"
    try:
        model.save_weights(str(staged / "weights"))
        replace_dir(staged, model_dir / "weights")
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    atomic_write(model_dir / "model.json", finite_json(config))


def load_model(model_dir: str | Path) -> MultiTaskModel:
    """Rebuild a model saved by :func:`save_model` (weights restored)."""
    model_dir = Path(model_dir)
    cfg_path = model_dir / "model.json"
    if not cfg_path.exists():
        raise MissingFileError(f"No trained model in {model_dir}: {cfg_path.name} is missing.")
    restore_aside(model_dir / "weights")  # a save killed between two renames
    config = json.loads(cfg_path.read_text())
    config["spec"] = FeatureSpec.from_dict(config["spec"]).resolved(model_dir)
    model = MultiTaskModel.from_config(config)
    model(model.dummy_features())
    model.load_weights(str(model_dir / "weights" / "weights")).expect_partial()
    return model
