"""Search, derive and evaluate: the library function behind ``tfmtnas-search``.

A run writes into its model dir: ``config.json`` (resolved configuration),
``checkpoints/`` (every epoch: a re-run with the same model dir resumes from the last one,
see :mod:`tfmtnas.pipelines.resume`),
``tensorboard/`` (losses and architecture probabilities over steps), ``derived_spec.json``,
``allocation.png``, ``derived_graph.png``, ``child/`` (the derived child, loadable with
:func:`tfmtnas.pipelines.training.load_model` and exportable) and ``metrics.json``.

Example:
    >>> result = run_search(SearchConfig(method="gumbel", epochs=3, model_dir="runs/gumbel"))
    >>> result.child_metrics["income_auc"]
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import tensorflow as tf

from tfmtnas import keras
from tfmtnas.data import DataError, DataSource, split_dataset
from tfmtnas.data.sources import search_pairs
from tfmtnas.distribute import (
    is_parameter_server,
    split_global_batches,
)
from tfmtnas.errors import MissingFileError, UserError
from tfmtnas.fsutil import FAULT_ENV, atomic_write
from tfmtnas.models import make_optimizer
from tfmtnas.pipelines.resume import (
    CHECKPOINTS,
    FINGERPRINT_FILE,
    EpochCheckpoints,
    NextEpoch,
    data_fingerprint,
)
from tfmtnas.pipelines.training import (
    FaultPoints,
    StopOnNonFiniteLoss,
    TrainConfig,
    _fetched,
    finite_json,
    load_model,
    save_model,
    start_run,
    task_metrics,
)
from tfmtnas.search import RoutingSpec, StreamSpec, forward_flops, plots, preset
from tfmtnas.search.derive import derive_child
from tfmtnas.search.methods import make_method, search_space
from tfmtnas.search.model import SearchModel
from tfmtnas.search.streams import spec_from_json
from tfmtnas.search.warm_start import check_single_task, warm_start_columns

CHILD_MODES = ("inherit", "finetune", "retrain")
# The child each method uses unless told: MTL-NAS evaluates its searched network as it is,
# without retraining (Gao et al., CVPR 2020); the others fine-tune theirs.
DEFAULT_CHILD = {"mtlnas": "inherit"}
ARCH_OPTIMIZERS = {"adam": "Adam", "sgd": "SGD"}
# The architecture learning rate each method uses unless told: the published Gumbel matrix's
# router learns at 2e-3 to 6e-3 in the reference (5e-3 on MNIST, where it shares the weights'
# rate); the others at 0.05.
DEFAULT_ARCH_LEARNING_RATE = {"gumbel": 5e-3}


@dataclasses.dataclass
class SearchConfig:
    """Everything one search run needs; written as ``config.json`` into the model dir."""

    dataset: str = "census"
    data_dir: str | None = None
    dataset_options: dict = dataclasses.field(default_factory=dict)
    method: str = "gumbel"
    spec_file: str | None = None
    num_layers: int = 2
    num_experts: int = 4
    # Two layers of 32-unit experts: the derived child costs fewer FLOPs than the 64-unit MMoE.
    expert_units: tuple[int, ...] = (32,)
    tower_units: tuple[int, ...] = (32,)
    embedding_dim: int = 8
    epochs: int = 4
    batch_size: int = 1024
    learning_rate: float = 2e-3
    optimizer: str = "lazy_adam"
    # None: the method's default (DEFAULT_ARCH_LEARNING_RATE, else 0.05), set on construction.
    arch_learning_rate: float | None = None
    # Optimizer of the architecture variables: "adam" or "sgd" (plain gradient descent).
    arch_optimizer: str = "adam"
    method_options: dict = dataclasses.field(default_factory=dict)
    # Epochs of weight training before the architecture starts to move.
    arch_warmup_epochs: int = 0
    # inherit, finetune or retrain; None: the method's default (DEFAULT_CHILD).
    child: str | None = None
    child_epochs: int = 2
    # MTL-NAS: epochs in which each task's column trains alone (every cross-task edge off)
    # before the edges are searched, the in-run stand-in for the paper's single-task starts.
    column_warmup_epochs: int = 0
    # MTL-NAS: the mixer after stage i reads the other tasks' stages i - edge_depth + 1 .. i.
    edge_depth: int = 3
    # MTL-NAS: the model dir of a finished ``tfmtnas-train --model=single_task`` run whose
    # embedding, per-task MLPs and towers start the supernet (the paper's start); see
    # warm_start_from_dir. A resumed run restores its checkpoint instead.
    warm_start_dir: str | None = None
    seed: int = 0
    jit_compile: bool = True
    model_dir: str | None = None
    log_every: int = 20
    # default, mirrored, multi_worker or parameter_server (see tfmtnas.distribute).
    strategy: str = "default"

    def __post_init__(self):
        if self.arch_learning_rate is None:
            self.arch_learning_rate = DEFAULT_ARCH_LEARNING_RATE.get(self.method, 0.05)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class SearchResult:
    """What a search gives; on a worker other than the chief, no child and no cost."""

    search_model: SearchModel
    child: keras.Model | None
    derived: RoutingSpec | StreamSpec
    child_metrics: dict[str, float]
    supernet_metrics: dict[str, float]
    cost: dict[str, float]
    search_seconds: float
    search_epoch_seconds: list[float]
    child_validation_metrics: dict[str, float] = dataclasses.field(default_factory=dict)


class _EpochTimer(keras.callbacks.Callback):
    """The seconds each epoch took."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


class _ArchitectureLog(keras.callbacks.Callback):
    """TensorBoard scalars: architecture probabilities and losses every ``every`` steps."""

    def __init__(self, writer, method, step: tf.Variable, every: int):
        super().__init__()
        self.writer, self.method, self.step, self.every = writer, method, step, every
        # Under ParameterServerStrategy the logs are RemoteValues, fetched when written.
        self._supports_tf_logs = True

    def on_train_begin(self, logs=None):
        self._logged = int(self.step.numpy())

    def on_train_batch_end(self, batch, logs=None):
        # Once per execution of steps_per_execution steps: write when the steps it ran
        # reach a multiple of ``every``.
        step = int(self.step.numpy())
        last, self._logged = getattr(self, "_logged", step - 1), step
        if step // self.every <= last // self.every:
            return
        with self.writer.as_default(step=step):
            for name, value in plots.allocation_scalars(self.method).items():
                tf.summary.scalar(name, value)
            for name, value in (_fetched(logs) or {}).items():
                tf.summary.scalar(f"train/{name}", float(_fetched(value)))
        self.writer.flush()


def child_mode(cfg: SearchConfig) -> str:
    """``cfg.child``, or the method's default (inherit for MTL-NAS, finetune for the others)."""
    return cfg.child if cfg.child is not None else DEFAULT_CHILD.get(cfg.method, "finetune")


def arch_optimizer(cfg: SearchConfig) -> keras.optimizers.Optimizer:
    """The architecture optimizer ``cfg`` names, at ``cfg.arch_learning_rate``."""
    return getattr(keras.optimizers, ARCH_OPTIMIZERS[cfg.arch_optimizer])(cfg.arch_learning_rate)


def _space(cfg: SearchConfig, data: DataSource) -> RoutingSpec | StreamSpec:
    tasks = [t.name for t in data.tasks]
    if cfg.spec_file is None:
        return search_space(cfg.method, tasks, cfg.num_layers, cfg.num_experts, cfg.expert_units,
                            edge_depth=cfg.edge_depth)
    path = Path(cfg.spec_file)
    if not path.is_file():
        raise DataError(f"Spec file {path} does not exist.")
    try:
        spec = spec_from_json(path.read_text())
    except (ValueError, KeyError, TypeError) as err:  # the spec's own checks: bad input here
        raise DataError(f"Spec file {path}: {err}") from None
    if isinstance(spec, StreamSpec) != (cfg.method == "gumbel"):
        raise DataError(f"Spec file {path} is a {type(spec).__name__}; --method={cfg.method} "
                        f"searches a {'StreamSpec' if cfg.method == 'gumbel' else 'RoutingSpec'}"
                        f" (task x component allocations for gumbel, a routing graph for the "
                        f"others).")
    if list(spec.tasks) != tasks:
        raise DataError(f"Spec file {path} names tasks {list(spec.tasks)}, the dataset has "
                        f"{tasks}.")
    if not spec.searched:
        raise DataError(f"Spec file {path} is fixed (every mask set): nothing to search.")
    return spec


def warm_start_from_dir(model: SearchModel, warm_start_dir: str | os.PathLike,
                        data: DataSource,
                        strategy: tf.distribute.Strategy | None = None) -> list[tf.Variable]:
    """Start ``model``'s MTL-NAS columns from a finished single-task run (Gao et al., CVPR
    2020: the backbones start from trained single-task networks).

    ``warm_start_dir`` must be the model dir of a finished ``tfmtnas-train
    --model=single_task`` run (``config.json``, ``model.json``, ``weights/`` and
    ``metrics.json``) with the search's tasks, features and sizes
    (:func:`~tfmtnas.search.warm_start.check_single_task`), trained on the data the search
    reads: the data digest in its ``fingerprint.json`` must equal this data's, so its
    columns saw no validation or test row of the search. Then
    :func:`~tfmtnas.search.warm_start.warm_start_columns` copies its embedding, per-task
    MLPs and towers into the supernet.

    Args:
        model: a freshly built MTL-NAS :class:`~tfmtnas.search.model.SearchModel`.
        warm_start_dir: the single-task run's model dir.
        data: the search's data.
        strategy: the strategy ``model``'s variables were made under (default: the current
            one); the single-task model is loaded outside it.

    Returns:
        The supernet variables written.

    Raises:
        UserError: one line naming what is wrong with the folder (missing, not a finished
            single-task run, other tasks, features, sizes or data) and what to do.

    Example:
        >>> warm_start_from_dir(search_model, "runs/single", data)  # doctest: +SKIP
    """
    path = Path(warm_start_dir)
    wanted = "give the model dir of a finished tfmtnas-train --model=single_task run"
    if not path.is_dir():
        raise MissingFileError(f"--warm_start_dir {path} "
                               f"{'is a file' if path.exists() else 'does not exist'}: "
                               f"{wanted}.")
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        raise UserError(f"--warm_start_dir {path} has no readable config.json, so it is not "
                        f"a tfmtnas-train model dir: {wanted}.") from None
    if "model" not in config:
        kind = "a tfmtnas-search run" if "method" in config else "no tfmtnas-train run"
        raise UserError(f"--warm_start_dir {path} holds {kind}: {wanted}.")
    if config["model"] != "single_task":
        raise UserError(f"--warm_start_dir {path} holds a --model={config['model']} run, not "
                        f"one MLP per task: train one with tfmtnas-train --model=single_task "
                        f"on the search's data.")
    missing = [n for n in ("model.json", "weights", "metrics.json") if not (path / n).exists()]
    if missing:
        raise UserError(f"--warm_start_dir {path} holds an unfinished run (no "
                        f"{', '.join(missing)}): rerun its tfmtnas-train command to finish "
                        f"it.")
    single = load_model(path)
    check_single_task(model, single)
    try:
        recorded = json.loads((path / FINGERPRINT_FILE).read_text()).get("data")
    except (OSError, ValueError):
        recorded = None
    if recorded != data_fingerprint(data):
        raise UserError(f"--warm_start_dir {path} was trained on other data than this search "
                        f"reads (the data digest of its {FINGERPRINT_FILE} differs): train "
                        f"it with the search's --dataset, --data_dir, dataset flags and "
                        f"--seed, so its columns see the search's training split only.")
    with (strategy or tf.distribute.get_strategy()).scope():
        return warm_start_columns(model, single)


def _atomic_plot(plot, what, path: Path) -> None:
    """Draw ``plot(what, tmp)`` into a temporary sibling of ``path``, then rename it."""
    tmp = path.with_name(f".{path.stem}-{os.getpid()}.tmp{path.suffix}")
    try:
        plot(what, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def run_search(cfg: SearchConfig, data: DataSource | None = None,
               verbose: int | None = None) -> SearchResult:
    """Search ``cfg.method`` on ``cfg.dataset``, derive the child, evaluate both."""
    cfg = dataclasses.replace(cfg, child=child_mode(cfg))
    if cfg.column_warmup_epochs and cfg.method != "mtlnas":
        raise UserError(f"column_warmup_epochs applies to --method=mtlnas, not {cfg.method}.")
    if cfg.warm_start_dir and cfg.method != "mtlnas":
        raise UserError(f"--warm_start_dir applies to --method=mtlnas (columns started from "
                        f"single-task models), not --method={cfg.method}.")
    if cfg.child not in CHILD_MODES:
        raise UserError(f"child must be one of {CHILD_MODES}, got {cfg.child!r}.")
    if cfg.arch_optimizer not in ARCH_OPTIMIZERS:
        raise UserError(f"arch_optimizer must be one of {tuple(ARCH_OPTIMIZERS)}, got "
                        f"{cfg.arch_optimizer!r}.")
    if cfg.strategy == "parameter_server" and not cfg.model_dir:
        raise UserError("A search under --strategy=parameter_server needs --model_dir: the "
                        "chief reads the searched supernet back from its checkpoint.")
    run = start_run(cfg, data, verbose)
    strategy, chief, data, verbose, model_dir = (run.strategy, run.chief, run.data, run.verbose,
                                                 run.model_dir)
    space = _space(cfg, data)

    # MTL-NAS trains weights and edges on two halves of the training split. The data order
    # of epoch k is a function of (seed, k): ``epoch`` holds k when the epoch's iterator is
    # made (restored on resume, advanced at each epoch's end).
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    halves = cfg.method == "mtlnas"
    paired, weight_rows = search_pairs(data, halves, cfg.batch_size, cfg.seed, epoch=epoch)
    # Under a strategy every worker reads the same global batches and Keras hands each
    # replica its share of each one: the steps are those of one device on the same batches.
    paired = split_global_batches(paired)
    steps_per_epoch = -(-weight_rows // cfg.batch_size)
    timer, initial_epoch, fit_options = _EpochTimer(), 0, {}
    callbacks = [StopOnNonFiniteLoss(), timer]
    jit_compile = cfg.jit_compile
    if is_parameter_server(strategy):
        # Each asynchronous worker reads its own share of the pairs, endlessly; an epoch is a
        # fixed number of steps. XLA cannot read variables on the parameter servers.
        steps_per_epoch = max(1, weight_rows // cfg.batch_size)
        fit_options["steps_per_epoch"] = steps_per_epoch
        paired = keras.utils.experimental.DatasetCreator(
            lambda context: search_pairs(data, halves, cfg.batch_size, cfg.seed,
                                         input_context=context, repeat=True)[0])
        jit_compile = False
        verbose = 2 if verbose == 1 else verbose  # Keras refuses a progress bar there

    options = dict(cfg.method_options)
    if cfg.method == "mtlnas":
        # As published: the weight step's temperature anneals over the whole search.
        options.setdefault("temperature_steps", cfg.epochs * steps_per_epoch)
        options.setdefault("column_warmup", cfg.column_warmup_epochs * steps_per_epoch)

    def build() -> SearchModel:
        built = SearchModel(data.spec, data.tasks, make_method(cfg.method, space, **options),
                            arch_optimizer=arch_optimizer(cfg),
                            arch_warmup_steps=cfg.arch_warmup_epochs * steps_per_epoch,
                            embedding_dim=cfg.embedding_dim, tower_units=cfg.tower_units)
        built.compile(make_optimizer(cfg.optimizer, cfg.learning_rate),
                      jit_compile=jit_compile)
        return built

    with strategy.scope():
        model = build()
        method = model.method
        if model_dir is not None:
            fast = {} if model.fast_optimizer is None else {
                "fast_optimizer": model.fast_optimizer}
            resume = EpochCheckpoints(model_dir / CHECKPOINTS, epoch, chief=chief, model=model,
                                      optimizer=model.optimizer,
                                      arch_optimizer=model.arch_optimizer, **fast)
            initial_epoch = resume.restore()
            callbacks.append(resume)
        else:
            # No checkpoints to advance it: the epoch still moves on, so each epoch reads its
            # own order (and MTL-NAS its own halves).
            callbacks.append(NextEpoch(epoch))

    if cfg.warm_start_dir and not initial_epoch:
        # Only a fresh run: a resumed one has restored the weights its checkpoint holds,
        # warm start included.
        warm_start_from_dir(model, cfg.warm_start_dir, data, strategy)
        print(f"Warm start: embedding, columns and towers from {cfg.warm_start_dir}.",
              flush=True)
    if initial_epoch:
        print(f"Resuming the search at epoch {initial_epoch + 1} of {cfg.epochs}.", flush=True)
    if model_dir is not None and chief:
        writer = tf.summary.create_file_writer(str(model_dir / "tensorboard"))
        # Before the checkpoint callback: the run's logs are written before it is saved.
        callbacks.insert(2, _ArchitectureLog(writer, method, model.search_step, cfg.log_every))
    if os.environ.get(FAULT_ENV):
        callbacks.append(FaultPoints("search"))  # kill points for the kill tests

    start = time.perf_counter()
    if initial_epoch < cfg.epochs:
        model.fit(paired, epochs=cfg.epochs, initial_epoch=initial_epoch, callbacks=callbacks,
                  verbose=verbose, **fit_options)
    search_seconds = time.perf_counter() - start
    if is_parameter_server(strategy):
        # The chief goes on with a one-device copy of the supernet, read back from the
        # checkpoint of the last epoch (its variables live on the parameter servers).
        keras.utils.set_random_seed(cfg.seed)
        model = build()
        method = model.method
        tf.train.Checkpoint(model=model).restore(
            tf.train.latest_checkpoint(str(model_dir / CHECKPOINTS))).expect_partial()

    test = split_global_batches(split_dataset(data, "test", 8192))
    # Every worker takes part (the evaluation is distributed) and derives the same spec;
    # the child's phase and every output are the chief's.
    supernet_metrics = task_metrics(model.evaluate(test, return_dict=True, verbose=0), data)
    derived = method.derive()
    # Reading the supernet's batch-norm statistics is a collective op under a multi-worker
    # strategy: every worker builds the child, only the chief goes on with it.
    child = derive_child(model, inherit=cfg.child != "retrain")
    if not chief:
        return SearchResult(model, None, derived, {}, supernet_metrics, {}, search_seconds,
                            timer.seconds)
    child.compile(make_optimizer(cfg.optimizer, cfg.learning_rate), jit_compile=cfg.jit_compile)
    if cfg.child != "inherit" and cfg.child_epochs > 0:
        train = split_dataset(data, "train", cfg.batch_size, shuffle=True, seed=cfg.seed)
        child.fit(train, epochs=cfg.child_epochs, verbose=verbose,
                  callbacks=[StopOnNonFiniteLoss()])
    child_metrics = task_metrics(child.evaluate(test, return_dict=True, verbose=0), data)
    validation = split_dataset(data, "validation", 8192)
    child_validation = task_metrics(child.evaluate(validation, return_dict=True, verbose=0),
                                    data)

    input_dim = len(data.spec.categorical) * cfg.embedding_dim + len(data.spec.numeric)
    # The MMoE baseline of tfmtnas-train's defaults, for "no more FLOPs than MMoE".
    mmoe = preset("mmoe", space.tasks, TrainConfig.expert_units,
                  num_experts=TrainConfig.num_experts)
    cost = {"child_flops": forward_flops(derived, input_dim),
            "supernet_flops": forward_flops(space, input_dim),
            "mmoe_flops": forward_flops(mmoe, input_dim),
            "child_sharing_params": child.sharing.count_params(),
            "supernet_sharing_params": model.sharing.count_params()}
    if model_dir is not None:
        atomic_write(model_dir / "derived_spec.json", derived.to_json())
        _atomic_plot(plots.plot_allocation, method, model_dir / "allocation.png")
        _atomic_plot(plots.plot_graph, derived, model_dir / "derived_graph.png")
        save_model(child, model_dir / "child")
        atomic_write(model_dir / "metrics.json", finite_json(
            {"child_test": child_metrics, "child_validation": child_validation,
             "supernet_test": supernet_metrics, "cost": cost,
             "search_seconds": search_seconds, "search_epoch_seconds": timer.seconds}))
    return SearchResult(model, child, derived, child_metrics, supernet_metrics, cost,
                        search_seconds, timer.seconds, child_validation)
