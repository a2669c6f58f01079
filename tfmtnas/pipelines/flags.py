"""Every absl flag of the pipeline binaries, defined in one place.

Importing this module defines no flag. Each binary module calls its own
``define_<binary>_flags`` once, at import (``tfmtnas-train``: :func:`define_train_flags`,
...), and turns the parsed flags into library arguments with the ``*_config`` and
``*_options`` functions here; library modules never read flags. ``--flagfile`` works as in
any absl program.

Binaries give some flags the same name with other defaults and help (``--model_dir``,
``--seed``, ``--batch_size``, ``--overwrite``), so a process defines the flags of one
binary: importing a second binary module that shares a flag name with the first raises
absl's ``DuplicateFlagError``. Code both binaries need lives in library modules
(:mod:`tfmtnas.pipelines.exporting`, :mod:`tfmtnas.pipelines.evaluating`, ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from absl import flags

from tfmtnas.errors import UserError
from tfmtnas.models import OPTIMIZERS, SHARING_KINDS

DATASETS = ("census", "movielens", "mnist", "synthetic", "csv", "prepared")
FLAGS = flags.FLAGS


def _positive_ints(name: str, value: list[str]) -> bool:
    try:
        return all(int(v) > 0 for v in value)
    except ValueError:
        return False


def define_data_flags() -> None:
    """``--dataset`` and the dataset options (train, search, evaluate)."""
    flags.DEFINE_enum("dataset", "census", DATASETS, "Dataset to train on.")
    flags.DEFINE_string("data_dir", None,
                        "Directory with the dataset's original files (default: fetch and "
                        "cache); for --dataset=prepared, the folder tfmtnas-prepare wrote.")
    flags.DEFINE_float("synthetic_correlation", 0.5,
                       "Task correlation p of the synthetic dataset, in [-1, 1].")
    flags.DEFINE_integer("synthetic_examples", 10000, "Training examples of the synthetic data.")
    flags.DEFINE_string("csv_train", None, "CSV file with a header row (dataset=csv).")
    flags.DEFINE_string("csv_test", None, "Optional CSV test file (dataset=csv).")
    flags.DEFINE_list("csv_labels", [],
                      "Label columns as name:kind with kind binary (default), regression or "
                      "multiclass:K (class ids 0..K-1), e.g. click:binary,digit:multiclass:10 "
                      "(dataset=csv).")
    flags.DEFINE_list("csv_categorical", [], "Categorical columns (dataset=csv; default: "
                      "every column that is neither numeric nor a label).")
    flags.DEFINE_list("csv_numeric", [], "Numeric columns (dataset=csv).")
    flags.DEFINE_list("csv_hash", [], "Categorical columns to hash instead of looking up, as "
                      "name:bins (dataset=csv): for ids too many to keep a vocabulary of.")
    flags.DEFINE_integer("csv_min_count", 1, "Categorical values seen fewer times in the "
                         "training split go to the out-of-vocabulary id (dataset=csv).",
                         lower_bound=1)
    flags.DEFINE_enum("csv_nonfinite", "error", ("error", "impute"),
                      "Empty, nan, inf or float32-overflowing numeric feature cells "
                      "(dataset=csv): error names file, line and field; impute uses the "
                      "training mean and logs the counts per column.")
    flags.DEFINE_integer("csv_max_vocabulary", None, "Keep at most this many most frequent "
                         "values per categorical column (dataset=csv).", lower_bound=1)


def define_model_flags(expert_units: Sequence[str] = ("64",)) -> None:
    """The model's shape (train, search).

    Args:
        expert_units: default of ``--expert_units``.
    """
    flags.DEFINE_enum("model", "mmoe", SHARING_KINDS, "Sharing structure.")
    flags.DEFINE_list("expert_units", list(expert_units), "Hidden sizes of each expert / bottom.")
    flags.DEFINE_integer("num_experts", 4, "Experts of MMoE.", lower_bound=1)
    flags.DEFINE_integer("num_task_experts", 1, "Task experts per task (CGC/PLE).", lower_bound=1)
    flags.DEFINE_integer("num_shared_experts", 2, "Shared experts (CGC/PLE).", lower_bound=1)
    flags.DEFINE_integer("num_levels", 2, "Extraction levels of PLE.", lower_bound=1)
    flags.DEFINE_list("tower_units", ["32"], "Hidden sizes of each task tower.")
    flags.DEFINE_integer("embedding_dim", 8, "Embedding width.", lower_bound=1)
    flags.register_validator("expert_units", lambda v: _positive_ints("expert_units", v),
                             "--expert_units must be a comma-separated list of positive integers")
    flags.register_validator("tower_units", lambda v: not v or _positive_ints("tower_units", v),
                             "--tower_units must be a comma-separated list of positive integers")


def define_training_flags(model_dir_required: bool = False) -> None:
    """Optimisation, seed and output dir (train, search).

    Args:
        model_dir_required: whether ``--model_dir`` must be given.
    """
    flags.DEFINE_integer("epochs", 4, "Training epochs.", lower_bound=1)
    flags.DEFINE_integer("batch_size", 1024, "Batch size.", lower_bound=1)
    flags.DEFINE_float("learning_rate", 2e-3, "Adam learning rate.", lower_bound=0.0)
    flags.DEFINE_enum("optimizer", "lazy_adam", OPTIMIZERS,
                      "Weight optimizer. lazy_adam: Adam that updates only the embedding rows "
                      "a batch touched (cost O(batch), not O(vocabulary)); adam: tf-keras Adam, "
                      "every row every step.")
    flags.DEFINE_integer("seed", 0, "Random seed (data split, initialisation, shuffling).")
    flags.DEFINE_bool("jit_compile", True, "XLA-compile the training step.")
    flags.DEFINE_string("model_dir", None, "Where to write config, weights and metrics.",
                        required=model_dir_required)


def define_strategy_flags() -> None:
    """``--strategy`` (train, search)."""
    from tfmtnas.distribute import STRATEGIES

    flags.DEFINE_enum("strategy", "default", STRATEGIES,
                      "tf.distribute strategy. default: one device; mirrored: every local "
                      "device; multi_worker: every worker in TF_CONFIG runs this command; "
                      "parameter_server: the chief in TF_CONFIG runs this command, workers "
                      "and parameter servers run `tfmtnas-server`.")


def define_search_method_flags() -> None:
    """The search method and the child's training (search)."""
    from tfmtnas.pipelines.searching import CHILD_MODES
    from tfmtnas.search.methods import METHODS

    flags.DEFINE_enum("method", "gumbel", METHODS, "Search method.")
    flags.DEFINE_string("spec", None, "JSON routing spec to search instead of the method's "
                        "default space (its masks set to null are searched); for gumbel a "
                        "stream spec (allocations set to null are searched).")
    flags.DEFINE_integer("num_layers", 2, "Expert layers of the search space.", lower_bound=1)
    flags.DEFINE_float("arch_learning_rate", None, "Learning rate of the architecture "
                       "optimizer (default: 5e-3 for gumbel, the reference's router rate; 0.05 "
                       "for the others).", lower_bound=0.0)
    flags.DEFINE_enum("child", None, CHILD_MODES,
                      "inherit: evaluate the child with the supernet's weights; finetune: "
                      "inherit then train; retrain: train from scratch. Default: inherit for "
                      "mtlnas (the paper's, no retraining), finetune for the others.")
    flags.DEFINE_integer("child_epochs", 2, "Training epochs of the child (finetune/retrain).",
                         lower_bound=0)
    flags.DEFINE_float("budget", None, "Gumbel: target fraction of active connections.")
    flags.DEFINE_float("entropy_weight", 10.0, "MTL-NAS: weight of the min-entropy regulariser.")
    flags.DEFINE_float("nddr_lr_multiplier", 100.0, "MTL-NAS: learning rate of the NDDR fusion "
                       "layers as a multiple of --learning_rate (the paper's 100).",
                       lower_bound=0.0)
    flags.DEFINE_integer("column_warmup_epochs", 0, "MTL-NAS: epochs in which each task's "
                         "column trains alone (cross-task edges off) before the edges are "
                         "searched.", lower_bound=0)
    flags.DEFINE_integer("edge_depth", 3, "MTL-NAS: the fusion after stage i may read the "
                         "other tasks' stages i-edge_depth+1..i (the paper's 3: i-2..i).",
                         lower_bound=1)
    flags.DEFINE_string("warm_start_dir", None, "MTL-NAS: model dir of a finished "
                        "`tfmtnas-train --model=single_task` run on the same data; its "
                        "embedding, each task's MLP (split into the task's column, "
                        "--num_layers experts of --expert_units) and towers start the "
                        "supernet, as the paper starts from single-task networks. Not "
                        "reapplied when the search resumes.")
    flags.DEFINE_float("cost_weight", 0.0, "Gumbel and MTNAS: price of the fraction of experts "
                       "the child computes (loss penalty / reward cost).", lower_bound=0.0)
    flags.DEFINE_integer("log_every", 20, "Steps between TensorBoard architecture logs.",
                         lower_bound=1)


def define_train_flags() -> None:
    """Flags of ``tfmtnas-train``."""
    define_data_flags()
    define_model_flags()
    define_training_flags()
    define_strategy_flags()


def define_search_flags() -> None:
    """Flags of ``tfmtnas-search``: ``--model_dir`` is required, experts are narrower."""
    define_data_flags()
    define_model_flags(expert_units=("32",))
    define_training_flags(model_dir_required=True)
    define_strategy_flags()
    define_search_method_flags()


def define_evaluate_flags() -> None:
    """Flags of ``tfmtnas-evaluate``."""
    define_data_flags()
    flags.DEFINE_string("model_dir", None,
                        "Trained model dir to evaluate (instead of --saved_model).")
    flags.DEFINE_string("saved_model", None,
                        "Exported SavedModel version folder (<root>/<name>/<version>) to "
                        "evaluate through its serving_default signature.")
    flags.DEFINE_enum("split", "test", ("train", "validation", "test"), "Split to evaluate.")
    flags.DEFINE_string("output", None, "Also write the metrics JSON to this file.")
    flags.DEFINE_integer("batch_size", 4096, "Rows per prediction call.", lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Seed of the dataset split (default: the one the model "
                         "was trained with, if recorded).")


def define_export_flags() -> None:
    """Flags of ``tfmtnas-export``."""
    flags.DEFINE_string("model_dir", None,
                        "Trained model dir to export (tfmtnas-train's --model_dir; for a "
                        "tfmtnas-search dir, its derived child/ is exported).")
    flags.DEFINE_string("export_root", "saved_models",
                        "TF Serving base folder: the model goes to <export_root>/<name>/<version>.")
    flags.DEFINE_string("name", None, "Model name under --export_root (default: the model "
                        "dir's folder name).")
    flags.DEFINE_integer("version", None, "Integer version (default: the next free one).",
                         lower_bound=0)
    flags.DEFINE_bool("overwrite", False, "Replace --version if it already exists.")
    flags.DEFINE_bool("warmup_requests", False,
                      "Also write TF Serving warm-up requests (needs tensorflow-serving-api).")
    flags.DEFINE_bool("serving_jit_compile", False,
                      "XLA-compile the model core of the serving graph (faster at small "
                      "batches; TF Serving on CPU then needs --xla_cpu_compilation_enabled).")


def define_prepare_flags() -> None:
    """Flags of ``tfmtnas-prepare``."""
    flags.DEFINE_list("input", [], "CSV/TSV files or glob patterns (plain or .gz), each "
                      "starting with the same header row.")
    flags.DEFINE_string("output_dir", None, "The prepared dataset folder to create.")
    flags.DEFINE_list("labels", [], "Label columns as name:kind, kind binary (default), "
                      "regression or multiclass:K (class ids 0..K-1), e.g. digit:multiclass:10.")
    flags.DEFINE_list("categorical", [], "Categorical columns (default: every column that is "
                      "neither numeric nor a label).")
    flags.DEFINE_list("numeric", [], "Numeric columns (a finite number in every row).")
    flags.DEFINE_list("log_numeric", [], "Numeric columns normalised after log1p(max(x, 0)).")
    flags.DEFINE_list("hash_columns", [], "Categorical columns to hash instead of counting a "
                      "vocabulary, as name:bins.")
    flags.DEFINE_string("key_column", None, "Column whose hash decides each row's split "
                        "(default: the whole line).")
    flags.DEFINE_float("validation_fraction", 0.1, "Share of keys in the validation split.",
                       lower_bound=0.0, upper_bound=1.0)
    flags.DEFINE_float("test_fraction", 0.1, "Share of keys in the test split.",
                       lower_bound=0.0, upper_bound=1.0)
    flags.DEFINE_list("min_count", ["2"], "Values seen fewer times in the training split go "
                      "to the out-of-vocabulary id: n for every column and/or name:n per "
                      "column.")
    flags.DEFINE_list("max_vocabulary", [], "Keep at most this many values per vocabulary "
                      "(the rarest go to out-of-vocabulary): n for every column and/or "
                      "name:n per column. Default: no limit.")
    flags.DEFINE_integer("inline_vocabulary_max", 10000, "Larger vocabularies go to "
                         "vocabularies/<column>.txt instead of the spec.", lower_bound=0)
    flags.DEFINE_integer("num_shards", 8, "Train shard files (validation and test get "
                         "proportionally fewer, at least one).", lower_bound=1)
    flags.DEFINE_enum("bad_rows", "error", ("error", "skip"), "A bad row fails with its file, "
                      "line and column (error) or is skipped and counted (skip).")
    flags.DEFINE_string("sep", None, "Field separator (default: tab for .tsv files, else "
                        "comma); 'tab' or '\\t' for a tab.")
    flags.DEFINE_integer("compression_level", 3, "Gzip level of the shards (1 fast .. 9 "
                         "small).", lower_bound=0, upper_bound=9)
    flags.DEFINE_float("progress_seconds", 5.0, "Seconds between progress lines.",
                       lower_bound=0.0)
    flags.DEFINE_bool("overwrite", False, "Replace an existing prepared folder.")


def define_demo_flags() -> None:
    """Flags of ``tfmtnas-demo``."""
    flags.DEFINE_integer("seed", 0, "Random seed.")
    flags.DEFINE_string("data_dir", None,
                        "Directory with the UCI files (default: fetch and cache).")
    flags.DEFINE_list("baselines", ["mmoe", "ple", "shared_bottom"],
                      "Hand-designed models to train.")
    flags.DEFINE_string("method", "mtnas",
                        "Search method (mtnas, gumbel, mtlnas; empty: none).")
    flags.DEFINE_string("model_dir", "runs/demo", "Where each model's outputs go.")
    flags.DEFINE_string("export_root", "saved_models", "Where the best model is exported for "
                        "TF Serving (<export_root>/<name>/<version>).")


def _task_kinds(items: list[str]) -> dict[str, str]:
    """``name[:kind]`` items (kind binary by default) -> ``{name: kind}``; the kind may hold
    a colon itself (``digit:multiclass:10`` -> ``{"digit": "multiclass:10"}``)."""
    kinds = {}
    for item in items:
        name, _, kind = item.partition(":")
        kinds[name] = kind or "binary"
    return kinds


def _hash_bins(flag: str, items: list[str]) -> dict[str, int]:
    """``name:bins`` items of ``--flag`` -> ``{name: bins}``; a one-line error otherwise."""
    bins_by_name = {}
    for item in items:
        name, _, bins = item.rpartition(":")
        if not name or not bins.isdigit() or int(bins) < 1:
            raise UserError(f"--{flag} wants name:bins with bins a positive integer, "
                            f"got {item!r}.")
        bins_by_name[name] = int(bins)
    return bins_by_name


def dataset_options() -> dict:
    """Dataset-specific keyword arguments for :func:`tfmtnas.data.load_dataset`."""
    if FLAGS.dataset == "synthetic":
        return {"correlation": FLAGS.synthetic_correlation,
                "num_train": FLAGS.synthetic_examples}
    if FLAGS.dataset == "csv":
        return {"train_path": FLAGS.csv_train, "test_path": FLAGS.csv_test,
                "label_columns": _task_kinds(FLAGS.csv_labels),
                "categorical": FLAGS.csv_categorical or None,
                "numeric": FLAGS.csv_numeric, "hashed": _hash_bins("csv_hash", FLAGS.csv_hash),
                "min_count": FLAGS.csv_min_count, "max_vocabulary": FLAGS.csv_max_vocabulary,
                "nonfinite": FLAGS.csv_nonfinite}
    return {}


def _explicit(name: str) -> bool:
    return name in FLAGS and not FLAGS[name].using_default_value


def evaluate_dataset(record: Mapping) -> dict:
    """What ``tfmtnas-evaluate`` evaluates on: explicit flags, else the training record.

    Args:
        record: the training run's resolved config (``dataset``, ``data_dir``,
            ``dataset_options``, ``seed``), possibly empty.

    Returns:
        ``name``, ``data_dir``, ``options``, ``seed`` and ``from`` (``"training record"`` or
        ``"flags"``), as :func:`tfmtnas.pipelines.evaluating.evaluate_model` takes them.

    Raises:
        UserError: an option of the recorded dataset is given without ``--dataset``.
    """
    use_record = bool(record.get("dataset")) and not _explicit("dataset")
    if use_record:
        specific = sorted(n for n in FLAGS if n.startswith(f"{record['dataset']}_")
                          and _explicit(n))
        if specific:
            raise UserError(f"--{specific[0]} needs --dataset={record['dataset']} as well "
                            f"(without --dataset the recorded dataset options are used).")
        resolved = {"name": record["dataset"],
                    "data_dir": FLAGS.data_dir if _explicit("data_dir")
                    else record.get("data_dir"),
                    "options": dict(record.get("dataset_options") or {})}
    else:
        resolved = {"name": FLAGS.dataset, "data_dir": FLAGS.data_dir,
                    "options": dataset_options()}
    same_data = record.get("dataset") == resolved["name"]
    resolved["seed"] = (FLAGS.seed if _explicit("seed") or not same_data
                        else int(record.get("seed", FLAGS.seed)))
    resolved["from"] = "training record" if use_record else "flags"
    return resolved


def train_config():
    """The resolved :class:`~tfmtnas.pipelines.training.TrainConfig` from the flags."""
    from tfmtnas.pipelines.training import TrainConfig

    return TrainConfig(
        dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, model=FLAGS.model,
        expert_units=tuple(int(u) for u in FLAGS.expert_units), num_experts=FLAGS.num_experts,
        num_task_experts=FLAGS.num_task_experts, num_shared_experts=FLAGS.num_shared_experts,
        num_levels=FLAGS.num_levels, tower_units=tuple(int(u) for u in FLAGS.tower_units),
        embedding_dim=FLAGS.embedding_dim, epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
        learning_rate=FLAGS.learning_rate, optimizer=FLAGS.optimizer, seed=FLAGS.seed,
        jit_compile=FLAGS.jit_compile, model_dir=FLAGS.model_dir,
        dataset_options=dataset_options(),
        strategy=FLAGS.strategy if "strategy" in FLAGS else "default")


def search_config():
    """The resolved :class:`~tfmtnas.pipelines.searching.SearchConfig` from the flags."""
    from tfmtnas.pipelines.searching import SearchConfig

    options = {}
    if FLAGS.method == "gumbel" and FLAGS.budget is not None:
        options["budget"] = FLAGS.budget
    if FLAGS.method == "mtlnas":
        options["entropy_weight"] = FLAGS.entropy_weight
        if FLAGS.nddr_lr_multiplier <= 0:
            raise UserError(f"--nddr_lr_multiplier must be > 0, got {FLAGS.nddr_lr_multiplier}.")
        options["nddr_lr_multiplier"] = FLAGS.nddr_lr_multiplier
    elif FLAGS.column_warmup_epochs:
        raise UserError("--column_warmup_epochs applies to --method=mtlnas.")
    if FLAGS.cost_weight:
        if FLAGS.method == "mtlnas":
            raise UserError("--cost_weight applies to --method=gumbel or mtnas, not mtlnas "
                            "(whose sharing edges add cost rather than save it).")
        options["cost_weight"] = FLAGS.cost_weight
    return SearchConfig(
        dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, dataset_options=dataset_options(),
        method=FLAGS.method, spec_file=FLAGS.spec, num_layers=FLAGS.num_layers,
        num_experts=FLAGS.num_experts, expert_units=tuple(int(u) for u in FLAGS.expert_units),
        tower_units=tuple(int(u) for u in FLAGS.tower_units), embedding_dim=FLAGS.embedding_dim,
        epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
        optimizer=FLAGS.optimizer, arch_learning_rate=FLAGS.arch_learning_rate,
        method_options=options, child=FLAGS.child,
        child_epochs=FLAGS.child_epochs, column_warmup_epochs=FLAGS.column_warmup_epochs,
        edge_depth=FLAGS.edge_depth, warm_start_dir=FLAGS.warm_start_dir,
        seed=FLAGS.seed, jit_compile=FLAGS.jit_compile,
        model_dir=FLAGS.model_dir, log_every=FLAGS.log_every, strategy=FLAGS.strategy)


def _name_values(flag: str, items: list[str]) -> int | dict[str, int] | None:
    """``["3", "user:5"]`` -> ``{"*": 3, "user": 5}``; ``["3"]`` -> 3; ``[]`` -> None."""
    out: dict[str, int] = {}
    for item in items:
        name, _, value = item.rpartition(":")
        if not value.isdigit():
            raise UserError(f"--{flag} wants n or name:n with n a non-negative integer, "
                            f"got {item!r}.")
        out[name or "*"] = int(value)
    if set(out) == {"*"}:
        return out["*"]
    return out or None


def prepare_options() -> dict:
    """Keyword arguments of :func:`tfmtnas.data.prepare.prepare` from the flags."""
    if not FLAGS.input:
        raise UserError("--input is required: the CSV/TSV files (or globs) to prepare.")
    if not FLAGS.output_dir:
        raise UserError("--output_dir is required: the prepared folder to create.")
    if not FLAGS.labels:
        raise UserError("--labels is required, e.g. --labels=click:binary,buy:binary.")
    labels = _task_kinds(FLAGS.labels)
    hashed = _hash_bins("hash_columns", FLAGS.hash_columns)
    sep = FLAGS.sep
    if sep in ("tab", "\\t"):
        sep = "\t"
    min_count = _name_values("min_count", FLAGS.min_count)
    return {
        "inputs": FLAGS.input, "output_dir": FLAGS.output_dir, "labels": labels,
        "categorical": FLAGS.categorical or None, "numeric": FLAGS.numeric,
        "log_numeric": FLAGS.log_numeric, "hash_columns": hashed,
        "key_column": FLAGS.key_column or None,
        "validation_fraction": FLAGS.validation_fraction,
        "test_fraction": FLAGS.test_fraction,
        "min_count": 2 if min_count is None else min_count,
        "max_vocabulary": _name_values("max_vocabulary", FLAGS.max_vocabulary),
        "inline_vocabulary_max": FLAGS.inline_vocabulary_max, "num_shards": FLAGS.num_shards,
        "bad_rows": FLAGS.bad_rows, "sep": sep, "compression_level": FLAGS.compression_level,
        "overwrite": FLAGS.overwrite, "progress_seconds": FLAGS.progress_seconds,
    }


def define_tune_flags() -> None:
    """Flags of ``tfmtnas-tune``: the data, the study, the search space and each trial."""
    from tfmtnas.pipelines.searching import CHILD_MODES
    from tfmtnas.tuning.tuner import ORACLES

    define_data_flags()
    define_strategy_flags()
    flags.DEFINE_string("model_dir", None, "The study's folder: keras-tuner's project "
                        "(tuner/), every trial's model, the Pareto front and the selection. "
                        "Rerun the same command to resume a killed study.", required=True)
    flags.DEFINE_enum("oracle", "random", ORACLES, "keras-tuner oracle proposing the trials: "
                      "random search, Bayesian optimisation (needs scikit-learn and scipy) "
                      "or Hyperband (trains promising trials for more epochs).")
    flags.DEFINE_integer("max_trials", 20, "Trials in the whole study, across reruns (with "
                         "--oracle=hyperband, 0 lets its schedule decide).", lower_bound=0)
    flags.DEFINE_string("time_budget", None, "Start no trial after this much time in this run, "
                        "e.g. 3600, 90m, 2h (a running trial finishes).")
    flags.DEFINE_string("objective", "mean_auc", "The oracle's scalar objective, "
                        "[max:|min:]metric: mean_auc (default), <task>_auc, mean_rmse, "
                        "mean_accuracy (multiclass tasks), mean_loss, flops, latency_ms, ... "
                        "(AUCs and accuracies are maximised, the rest minimised).")
    flags.DEFINE_string("select", "", "Which trial to export: metric[,metric<=x][,metric>=x], "
                        "e.g. 'mean_auc,flops<=140000' (quoted in a shell; default: the best "
                        "--objective).")
    flags.DEFINE_list("pareto", [], "Metrics of the Pareto front (default: each task's "
                      "validation AUC, RMSE or accuracy, and flops).")
    flags.DEFINE_string("space", None, "JSON file narrowing the search space: {name: value, "
                        "list of values, or {\"min\": a, \"max\": b}}.")
    flags.DEFINE_multi_string("hp", [], "Narrow one dimension of the space, name=value (JSON "
                              "or a word; a|b for a choice), e.g. --hp=architecture=mmoe|ple "
                              "--hp=embedding_dim=8. Applied after --space.")
    flags.DEFINE_integer("epochs", 4, "Training epochs of each trial (search epochs for a "
                         "search method; Hyperband's largest).", lower_bound=1)
    flags.DEFINE_integer("batch_size", 1024, "Batch size.", lower_bound=1)
    flags.DEFINE_enum("optimizer", "lazy_adam", OPTIMIZERS, "Weight optimizer of each trial.")
    flags.DEFINE_integer("seed", 0, "Random seed of the data split, every trial and the "
                         "oracle.")
    flags.DEFINE_bool("jit_compile", True, "XLA-compile each trial's training step.")
    flags.DEFINE_enum("child", "finetune", CHILD_MODES, "Search-method trials: inherit, "
                      "finetune or retrain the derived child (as tfmtnas-search).")
    flags.DEFINE_integer("child_epochs", 2, "Search-method trials: child training epochs.",
                         lower_bound=0)
    flags.DEFINE_float("arch_learning_rate", None, "Search-method trials: architecture "
                       "learning rate (default: each method's, as tfmtnas-search).",
                       lower_bound=0.0)
    flags.DEFINE_integer("latency_calls", 200, "Timed batch-1 calls of each trial's exported "
                         "model through TensorFlow's C API (0: latency not measured).",
                         lower_bound=0)
    flags.DEFINE_integer("hyperband_factor", 3, "Hyperband's halving factor.", lower_bound=2)
    flags.DEFINE_integer("initial_points", None, "Bayesian optimisation: random trials "
                         "before the Gaussian process proposes (default max(3, "
                         "max_trials // 3)).", lower_bound=1)
    flags.DEFINE_bool("export", True, "Export the selected trial's model for TF Serving.")
    flags.DEFINE_string("export_root", "saved_models", "TF Serving base folder: the selected "
                        "model goes to <export_root>/<export_name>/<version>.")
    flags.DEFINE_string("export_name", None, "Model name under --export_root (default: the "
                        "study dir's folder name).")


def _seconds(text: str | None) -> float | None:
    """``"90"``, ``"90s"``, ``"30m"``, ``"2h"`` -> seconds; None stays None."""
    if text is None or not text.strip():
        return None
    text = text.strip().lower()
    scale = {"s": 1, "m": 60, "h": 3600}.get(text[-1])
    try:
        value = float(text[:-1] if scale else text) * (scale or 1)
    except ValueError:
        raise UserError(f"--time_budget wants seconds or a number with s, m or h, got "
                        f"{text!r}.") from None
    if not value > 0:
        raise UserError(f"--time_budget must be > 0, got {text!r}.")
    return value


def tune_config():
    """The resolved :class:`~tfmtnas.tuning.study.TuneConfig` from the flags."""
    from tfmtnas.tuning.space import load_space_file, parse_assignments
    from tfmtnas.tuning.study import TuneConfig

    space = load_space_file(FLAGS.space) if FLAGS.space else {}
    space.update(parse_assignments(FLAGS.hp))
    max_trials = FLAGS.max_trials
    if max_trials == 0:
        if FLAGS.oracle != "hyperband":
            raise UserError(f"--max_trials=0 (no limit) needs --oracle=hyperband, got "
                            f"--oracle={FLAGS.oracle}.")
        max_trials = None
    return TuneConfig(
        dataset=FLAGS.dataset, data_dir=FLAGS.data_dir, dataset_options=dataset_options(),
        space=space, oracle=FLAGS.oracle, max_trials=max_trials,
        time_budget=_seconds(FLAGS.time_budget), objective=FLAGS.objective,
        select=FLAGS.select, pareto=tuple(FLAGS.pareto), epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size, optimizer=FLAGS.optimizer, seed=FLAGS.seed,
        jit_compile=FLAGS.jit_compile, strategy=FLAGS.strategy, child=FLAGS.child,
        child_epochs=FLAGS.child_epochs, arch_learning_rate=FLAGS.arch_learning_rate,
        latency_calls=FLAGS.latency_calls, hyperband_factor=FLAGS.hyperband_factor,
        initial_points=FLAGS.initial_points, model_dir=FLAGS.model_dir, export=FLAGS.export,
        export_root=FLAGS.export_root, export_name=FLAGS.export_name)
