"""Train and evaluate one multi-task model: the library function behind ``tfmtnas-train``.

Example:
    >>> cfg = TrainConfig(dataset="census", model="mmoe", epochs=2, model_dir="runs/mmoe")
    >>> result = train_and_evaluate(cfg)
    >>> result.test_metrics["income_auc"]
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from tfmtnas import keras
from tfmtnas.data import DataSource, load_dataset, split_dataset
from tfmtnas.errors import MissingFileError
from tfmtnas.features import FeatureSpec
from tfmtnas.models import MultiTaskModel, make_optimizer


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
    """Only the per-task quality metrics and losses, as floats."""
    keys = [f"{t.name}_{s}" for t in data.tasks for s in ("auc", "rmse", "loss")]
    return {k: float(metrics[k]) for k in keys if k in metrics}


def _progress_verbosity() -> int:
    return 1 if sys.stderr.isatty() else 2


def train_and_evaluate(cfg: TrainConfig, data: DataSource | None = None,
                       verbose: int | None = None) -> TrainResult:
    """Train ``cfg.model`` on ``cfg.dataset``, evaluate on validation and test, save outputs.

    With ``cfg.model_dir`` set, writes ``config.json`` (resolved configuration),
    ``model.json`` (the model's config), the weights (``weights/``) and ``metrics.json``, and
    keeps a per-epoch backup while training so a killed run resumes where it stopped.
    """
    keras.utils.set_random_seed(cfg.seed)
    if data is None:
        data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, seed=cfg.seed,
                            **cfg.dataset_options)
    verbose = _progress_verbosity() if verbose is None else verbose
    model_dir = Path(cfg.model_dir) if cfg.model_dir else None
    if model_dir is not None:
        model_dir.mkdir(parents=True, exist_ok=True)
        (model_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    train = split_dataset(data, "train", cfg.batch_size, shuffle=True, seed=cfg.seed)
    validation = split_dataset(data, "validation", 8192)
    test = split_dataset(data, "test", 8192)
    model = build_model(data, cfg)
    # A killed run resumes from its last finished epoch when re-run with the same model dir.
    callbacks = ([keras.callbacks.BackupAndRestore(str(model_dir / "backup"))]
                 if model_dir is not None else [])
    start = time.perf_counter()
    model.fit(train, epochs=cfg.epochs, verbose=verbose, callbacks=callbacks)
    seconds = time.perf_counter() - start
    val = task_metrics(model.evaluate(validation, return_dict=True, verbose=0), data)
    tst = task_metrics(model.evaluate(test, return_dict=True, verbose=0), data)
    if model_dir is not None:
        save_model(model, model_dir)
        out = {"validation": val, "test": tst, "train_seconds": seconds}
        _atomic_write(model_dir / "metrics.json", json.dumps(out, indent=1))
    return TrainResult(model, tst, val, seconds)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_model(model: MultiTaskModel, model_dir: Path) -> None:
    """Write ``model.json`` and the weights so :func:`load_model` can rebuild the model.

    Vocabulary files are copied into ``<model_dir>/vocabularies/`` and ``model.json`` names
    them relative to ``model_dir``, so the folder still loads after it moved.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    config = {**model.get_config(), "spec": model.spec.copy_vocabularies(model_dir).to_dict()}
    _atomic_write(model_dir / "model.json", json.dumps(config, indent=1))
    model.save_weights(str(model_dir / "weights" / "weights"))


def load_model(model_dir: str | Path) -> MultiTaskModel:
    """Rebuild a model saved by :func:`save_model` (weights restored)."""
    model_dir = Path(model_dir)
    cfg_path = model_dir / "model.json"
    if not cfg_path.exists():
        raise MissingFileError(f"No trained model in {model_dir}: {cfg_path.name} is missing.")
    config = json.loads(cfg_path.read_text())
    config["spec"] = FeatureSpec.from_dict(config["spec"]).resolved(model_dir)
    model = MultiTaskModel.from_config(config)
    model(model.dummy_features())
    model.load_weights(str(model_dir / "weights" / "weights")).expect_partial()
    return model
