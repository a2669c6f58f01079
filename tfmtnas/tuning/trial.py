"""One trial: train a zoo model or run a search method, then measure what it costs.

A trial is a model dir of ``tfmtnas-train`` (a zoo architecture, through
:func:`tfmtnas.pipelines.training.train_and_evaluate`) or of ``tfmtnas-search`` (a search
method, through :func:`tfmtnas.pipelines.searching.run_search`; its derived child is the
trial's model), written into ``<trial dir>/run``. Both keep per-epoch checkpoints
(:mod:`tfmtnas.pipelines.resume`), so a trial killed half way continues from its last
finished epoch when the study reruns it, and a Hyperband trial continues the trial it was
promoted from (:func:`continue_from`).

The trial's outcome is ``record.json`` in the trial dir (:func:`run_trial`): its settings,
validation and test metrics per task, FLOPs, parameters and the exported model's batch-1
latency, with the process id and wall-clock times of the run that produced it.

Example:
    >>> settings = SearchSpace.default().settings({"architecture": "mmoe"})
    >>> record = run_trial(settings, TrialOptions(epochs=2), data, Path("study/trial_0"))
    >>> record["metrics"]["mean_auc"], record["metrics"]["flops"]   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tfmtnas.fsutil import atomic_write, fault_point
from tfmtnas.pipelines.resume import CHECKPOINTS, FINGERPRINT_FILE
from tfmtnas.pipelines.searching import SearchConfig, run_search
from tfmtnas.pipelines.training import TrainConfig, finite_json, train_and_evaluate
from tfmtnas.search.methods import METHODS
from tfmtnas.tuning.cost import input_width, serving_latency_ms, tower_flops, zoo_sharing_flops
from tfmtnas.tuning.objective import trial_metrics

RECORD_FILE = "record.json"
RUN_DIR = "run"


@dataclasses.dataclass(frozen=True)
class TrialOptions:
    """The settings every trial of a study shares (the search space holds the rest).

    Args:
        dataset, data_dir, dataset_options: the data, as for ``tfmtnas-train``.
        epochs: training epochs (a search trial: search epochs); Hyperband sets its own.
        batch_size, optimizer, seed, jit_compile: as for ``tfmtnas-train``.
        strategy: ``tf.distribute`` strategy of every trial.
        child, child_epochs, arch_learning_rate: search trials, as for ``tfmtnas-search``.
        latency_calls: timed batch-1 calls of the latency measurement (0: not measured).

    Example:
        >>> TrialOptions(epochs=2, batch_size=256).epochs
        2
    """

    dataset: str = "census"
    data_dir: str | None = None
    dataset_options: dict = dataclasses.field(default_factory=dict)
    epochs: int = 4
    batch_size: int = 1024
    optimizer: str = "lazy_adam"
    seed: int = 0
    jit_compile: bool = True
    strategy: str = "default"
    child: str = "finetune"
    child_epochs: int = 2
    arch_learning_rate: float | None = None  # None: each method's (tfmtnas-search's default)
    latency_calls: int = 200


def _sizes(settings: Mapping[str, Any]) -> dict:
    return {"expert_units": (int(settings["expert_units"]),),
            "num_experts": int(settings["num_experts"]),
            "num_task_experts": int(settings["num_task_experts"]),
            "num_shared_experts": int(settings["num_shared_experts"]),
            "num_levels": int(settings["num_levels"])}


def trial_config(settings: Mapping[str, Any], options: TrialOptions, model_dir: Path,
                 epochs: int | None = None):
    """The ``TrainConfig`` (zoo architecture) or ``SearchConfig`` (search method) of a trial.

    Args:
        settings: every dimension's value (:meth:`SearchSpace.settings`).
        options: the study's shared settings.
        model_dir: the trial's run dir.
        epochs: overrides ``options.epochs`` (Hyperband's ``tuner/epochs``).
    """
    architecture = settings["architecture"]
    common = dict(dataset=options.dataset, data_dir=options.data_dir,
                  dataset_options=dict(options.dataset_options),
                  tower_units=(int(settings["tower_units"]),),
                  embedding_dim=int(settings["embedding_dim"]),
                  epochs=int(epochs or options.epochs), batch_size=options.batch_size,
                  learning_rate=float(settings["learning_rate"]), optimizer=options.optimizer,
                  seed=options.seed, jit_compile=options.jit_compile, model_dir=str(model_dir))
    if architecture not in METHODS:
        return TrainConfig(model=architecture, strategy=options.strategy,
                           **_sizes(settings), **common)
    method_options: dict[str, float] = {}
    if architecture == "mtlnas":
        method_options["entropy_weight"] = float(settings["entropy_weight"])
    if architecture in ("gumbel", "gumbel_experts") and float(settings["budget"]) < 1.0:
        method_options["budget"] = float(settings["budget"])
    if (architecture in ("mtnas", "gumbel", "gumbel_experts")
            and float(settings["cost_weight"]) > 0):
        method_options["cost_weight"] = float(settings["cost_weight"])
    return SearchConfig(method=architecture, strategy=options.strategy,
                        num_layers=int(settings["num_layers"]),
                        num_experts=int(settings["num_experts"]),
                        expert_units=(int(settings["expert_units"]),),
                        arch_learning_rate=options.arch_learning_rate,
                        method_options=method_options, child=options.child,
                        child_epochs=options.child_epochs, **common)


def continue_from(previous_trial_dir: Path, trial_dir: Path) -> bool:
    """Start a trial from another trial's last checkpoint (Hyperband's promotions).

    Copies the previous trial's checkpoints and fingerprint into this trial's run dir, so
    training (or searching) resumes where the previous trial stopped and trains on to this
    trial's epochs. Does nothing if this trial already has checkpoints of its own (it is
    being rerun after a kill) or the previous one has none.

    Returns:
        Whether anything was copied.
    """
    source, target = previous_trial_dir / RUN_DIR, trial_dir / RUN_DIR
    if (target / CHECKPOINTS).is_dir() or not (source / CHECKPOINTS).is_dir():
        return False
    staged = trial_dir / f".{RUN_DIR}-{os.getpid()}"
    shutil.rmtree(staged, ignore_errors=True)
    staged.mkdir(parents=True)
    shutil.copytree(source / CHECKPOINTS, staged / CHECKPOINTS)
    shutil.copy2(source / FINGERPRINT_FILE, staged / FINGERPRINT_FILE)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staged, target)
    return True


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="milliseconds")


def read_record(trial_dir: Path) -> dict | None:
    """The trial's ``record.json``, or None if it has none (yet)."""
    path = Path(trial_dir) / RECORD_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    # finite_json wrote NaN (a task without validation positives, no latency) as null.
    record["metrics"] = {k: float("nan") if v is None else v
                         for k, v in record["metrics"].items()}
    return record


def run_trial(settings: Mapping[str, Any], options: TrialOptions, data, trial_dir: Path,
              trial_id: str = "", epochs: int | None = None) -> dict:
    """Train (or search), evaluate and cost one trial; write and return its record.

    Args:
        settings: every dimension's value (:meth:`SearchSpace.settings`).
        options: the study's shared settings.
        data: the loaded dataset (in memory or prepared).
        trial_dir: the trial's folder (keras-tuner's ``trial_<id>``).
        trial_id: keras-tuner's trial id, recorded.
        epochs: overrides ``options.epochs``.

    Returns:
        The record: ``trial_id``, ``architecture``, ``settings``, ``epochs``, ``validation``,
        ``test`` (per-task metrics), ``cost`` (``flops``, ``sharing_flops``, ``params``,
        ``sharing_params``, ``latency_ms``, ``train_seconds``), ``metrics`` (the flat
        namespace of :func:`~tfmtnas.tuning.objective.trial_metrics`), ``started``,
        ``finished``, ``seconds``, ``pid``.
    """
    trial_dir = Path(trial_dir)
    started, start = _now(), time.perf_counter()
    cfg = trial_config(settings, options, trial_dir / RUN_DIR, epochs)
    tasks = [t.name for t in data.tasks]
    in_dim = input_width(data.spec, cfg.embedding_dim)
    width = cfg.expert_units[-1]
    if isinstance(cfg, SearchConfig):
        result = run_search(cfg, data=data, verbose=0)
        model, validation, test = result.child, result.child_validation_metrics, \
            result.child_metrics
        sharing_flops, seconds = int(result.cost["child_flops"]), result.search_seconds
    else:
        result = train_and_evaluate(cfg, data=data, verbose=0)
        model, validation, test = result.model, result.validation_metrics, result.test_metrics
        sharing_flops = zoo_sharing_flops(cfg.model, tasks, _sizes(settings), in_dim)
        seconds = result.seconds
    fault_point(f"tune_trial_{trial_id}_trained")
    latency = (serving_latency_ms(model, options.latency_calls, work_dir=trial_dir)
               if options.latency_calls > 0 and validation else None)
    cost = {"flops": sharing_flops + tower_flops(width, cfg.tower_units,
                                                [t.width for t in data.tasks]),
            "sharing_flops": sharing_flops, "params": int(model.count_params()),
            "sharing_params": int(model.sharing.count_params()), "latency_ms": latency,
            "train_seconds": float(seconds)}
    record = {"trial_id": trial_id, "architecture": settings["architecture"],
              "settings": dict(settings), "epochs": cfg.epochs, "validation": validation,
              "test": test, "cost": cost, "metrics": trial_metrics(validation, cost),
              "started": started, "finished": _now(),
              "seconds": time.perf_counter() - start, "pid": os.getpid()}
    atomic_write(trial_dir / RECORD_FILE, finite_json(record))
    return record


__all__ = ["RECORD_FILE", "RUN_DIR", "TrialOptions", "continue_from", "read_record",
           "run_trial", "trial_config"]
