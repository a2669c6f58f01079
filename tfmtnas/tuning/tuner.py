"""keras-tuner's oracles driving tfmtnas trials, through a ``Tuner`` that runs its own trials.

keras-tuner (O'Malley et al., https://keras.io/keras_tuner/) splits a study into an
**oracle**, which proposes hyperparameter values and keeps the study's state
(``oracle.json`` and one ``trial_<id>/trial.json`` per trial in the project dir), and a
**tuner**, which runs each trial and reports its objective. With Keras 3 installed, the
built-in ``Tuner.run_trial`` refuses tf-keras models (its ``_try_build`` checks the model's
class), so :class:`StudyTuner` overrides ``run_trial``: a trial is a tfmtnas training or
search run (:func:`tfmtnas.tuning.trial.run_trial`), and the oracle only sees the scalar
objective. Oracle state, the project dir and resuming are keras-tuner's own:

- **Resume.** Constructed on an existing project dir, keras-tuner reloads the oracle and
  its trials; a trial that was running when the process died is queued again under the
  same id and hyperparameters, and continues from its own last epoch checkpoint (its run
  dir is resumable, :mod:`tfmtnas.pipelines.resume`). Finished trials are never rerun.
  :func:`repair_after_kill` closes the two windows in which keras-tuner's own files
  disagree after a kill (see there).
- **Oracles** (:func:`make_oracle`): ``random`` (``RandomSearchOracle``), ``bayesian``
  (``BayesianOptimizationOracle``: a Gaussian process with an upper-confidence-bound
  acquisition; needs scikit-learn and scipy), ``hyperband`` (``HyperbandOracle``, Li et
  al., JMLR 2018: successive halving over ``tuner/epochs``; a promoted trial continues the
  checkpoint of the trial it came from).
- **Budget.** ``max_trials`` counts every trial of the study (across reruns);
  ``time_budget`` is the seconds this process may spend: no trial starts after it.

Example:
    >>> oracle = make_oracle("random", Goal("mean_auc", "max"), 10, space.hyperparameters())
    >>> tuner = StudyTuner(oracle, space, TrialOptions(epochs=2), data, "runs/study/tuner")
    >>> tuner.search(verbose=0)
"""

from __future__ import annotations

import contextlib
import gc
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import keras_tuner
from tensorflow.python.framework import ops as tf_ops

from tfmtnas import keras
from tfmtnas.errors import DivergedError, UserError
from tfmtnas.fsutil import fault_point
from tfmtnas.tuning.objective import Goal
from tfmtnas.tuning.space import SearchSpace
from tfmtnas.tuning.trial import RUN_DIR, TrialOptions, continue_from, read_record, run_trial

ORACLES = ("random", "bayesian", "hyperband")
TUNER_ID = "tuner0"
_Status = keras_tuner.engine.trial.TrialStatus


def make_oracle(name: str, goal: Goal, max_trials: int | None, hyperparameters,
                seed: int = 0, max_epochs: int = 4, hyperband_factor: int = 3,
                initial_points: int | None = None):
    """The keras-tuner oracle ``name`` over ``hyperparameters``, optimising ``goal``.

    Args:
        name: ``random``, ``bayesian`` or ``hyperband``.
        goal: the scalar objective.
        max_trials: trials in all (None: Hyperband's schedule decides).
        hyperparameters: the space (:meth:`SearchSpace.hyperparameters`); no other entries
            are allowed.
        seed: the oracle's seed is ``seed + 1`` (keras-tuner draws a random seed for 0).
        max_epochs: Hyperband's largest ``tuner/epochs``.
        hyperband_factor: Hyperband's halving factor (>= 2).
        initial_points: random trials before the Gaussian process proposes (bayesian;
            default ``max(3, max_trials // 3)``; keras-tuner's own default, 3 per
            dimension, would exceed a 30-trial study of the full space).

    Raises:
        UserError: an unknown name, or ``bayesian`` without scikit-learn and scipy.
    """
    common = dict(objective=goal.keras_tuner_objective(), hyperparameters=hyperparameters,
                  allow_new_entries=False, tune_new_entries=False, seed=int(seed) + 1)
    if name == "random":
        return keras_tuner.oracles.RandomSearchOracle(max_trials=max_trials, **common)
    if name == "bayesian":
        try:
            import scipy  # noqa: F401
            import sklearn  # noqa: F401
        except ImportError:
            raise UserError("--oracle=bayesian needs scikit-learn and scipy: pip install "
                            "'keras-tuner[bayesian]'.") from None
        if initial_points is None:
            initial_points = max(3, (max_trials or 0) // 3)
        return keras_tuner.oracles.BayesianOptimizationOracle(
            max_trials=max_trials, num_initial_points=initial_points, **common)
    if name == "hyperband":
        oracle = keras_tuner.oracles.HyperbandOracle(max_epochs=max_epochs,
                                                     factor=hyperband_factor, **common)
        oracle.max_trials = max_trials  # HyperbandOracle takes none; create_trial honours it
        return oracle
    raise UserError(f"Unknown oracle {name!r}; choose one of {', '.join(ORACLES)}.")


def repair_after_kill(oracle, project_dir: Path) -> dict[str, list[str]]:
    """Make a reloaded oracle agree with its trial files after a kill; return what changed.

    keras-tuner writes a trial's ``trial.json`` and then ``oracle.json``, so a kill between
    the two leaves them disagreeing:

    - in ``end_trial``: the trial's file says ``COMPLETED`` (scored) while ``oracle.json``
      still lists it as running, and keras-tuner would queue it again. It is finished: it
      is taken off the queue and recorded as ended.
    - in ``create_trial``: a trial file exists that ``oracle.json`` never heard of. Nothing
      of it ran; it is removed, and its id is given to the next trial.

    Args:
        oracle: the oracle, as keras-tuner reloaded it.
        project_dir: keras-tuner's project dir.

    Returns:
        ``{"finished": [...], "removed": [...]}`` trial ids.
    """
    queued = set(oracle._retry_queue) | {t.trial_id for t in oracle.ongoing_trials.values()}
    finished, removed = [], []
    for trial_id, trial in list(oracle.trials.items()):
        ended = trial.status in (_Status.COMPLETED, _Status.FAILED)
        if ended and trial_id in oracle._retry_queue:
            oracle._retry_queue.remove(trial_id)
            if trial_id not in oracle.end_order:
                oracle.end_order.append(trial_id)
            finished.append(trial_id)
        elif (not ended and trial_id not in queued and trial_id not in oracle.start_order):
            del oracle.trials[trial_id]
            shutil.rmtree(project_dir / f"trial_{trial_id}", ignore_errors=True)
            removed.append(trial_id)
    if finished or removed:
        oracle.save()
    return {"finished": finished, "removed": removed}


@contextlib.contextmanager
def released_trial_graphs():
    """Forget, when a trial ends, the gradient functions TensorFlow registered during it.

    Each traced training step registers a gradient function for tf-keras' gradient
    all-reduce (``optimizer.apply_gradients`` -> ``ReplicaContext.all_reduce``, a
    ``tf.custom_gradient`` in graph mode) under a new ``CustomGradient-<n>`` name in
    TensorFlow's process-wide gradient registry, and never removes it. The entry's closure
    holds the traced graph, so every trial's ``train_function`` would stay in memory: about
    8 MB per search-method trial on tiny data (measured with ``benchmarks/tune_memory.py``).
    A finished trial's graphs are never differentiated again, so the entries added during
    the trial are removed afterwards. The registry is TensorFlow-internal; without it this
    does nothing.

    Example:
        >>> with released_trial_graphs():
        ...     record = run_trial(settings, options, data, trial_dir)  # doctest: +SKIP
    """
    registry = getattr(getattr(tf_ops, "_gradient_registry", None), "_registry", None)
    before = set(registry) if isinstance(registry, dict) else None
    try:
        yield
    finally:
        if before is not None:
            for name in set(registry) - before:
                if name.startswith("CustomGradient-"):
                    del registry[name]


def _short(settings: dict, space: SearchSpace) -> str:
    """The settings a trial of its architecture reads and the space varies, as k=v."""
    parts = []
    for d in space.dimensions[1:]:
        if d.applies(settings["architecture"]) and d.kind != "fixed":
            value = settings[d.name]
            parts.append(f"{d.name}={value:.3g}" if isinstance(value, float)
                         else f"{d.name}={value}")
    return " ".join(parts)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class StopStudy(keras_tuner.errors.FatalError):
    """A trial raised an error that is not the trial's fault (bad input, a bug): keras-tuner
    stops the search, and :attr:`error` is re-raised to the caller."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


class StudyTuner(keras_tuner.Tuner):
    """Runs tfmtnas trials for a keras-tuner oracle; prints one line per trial start and end.

    Args:
        oracle: from :func:`make_oracle`.
        space: the study's :class:`~tfmtnas.tuning.space.SearchSpace`.
        options: the settings every trial shares.
        data: the loaded dataset.
        project_dir: keras-tuner's project dir (reloaded if it exists).
        goal: the objective the oracle optimises (reported for each trial).
        time_budget: seconds this process may start trials for (None: no limit).
        progress: where progress lines go (default ``print``).

    Example:
        >>> tuner = StudyTuner(oracle, space, options, data, Path("runs/s/tuner"),
        ...                    Goal("mean_auc", "max"))
        >>> tuner.search(verbose=0)
        >>> tuner.oracle.get_best_trials(1)[0].score
    """

    def __init__(self, oracle, space: SearchSpace, options: TrialOptions, data,
                 project_dir: Path, goal: Goal, time_budget: float | None = None,
                 progress: Callable[[str], None] | None = None):
        project_dir = Path(project_dir)
        super().__init__(oracle=oracle, directory=str(project_dir.parent),
                         project_name=project_dir.name, tuner_id=TUNER_ID)
        self.space, self.options, self.data, self.goal = space, options, data, goal
        self.time_budget = time_budget
        self.progress = progress or (lambda line: print(line, flush=True))
        self.repaired = repair_after_kill(self.oracle, project_dir)
        self.trial_seconds: list[float] = []
        self.stopped_by_budget = False
        self._start = time.monotonic()
        self._trial_start = 0.0

    # -- keras-tuner hooks ------------------------------------------------------------
    def pre_create_trial(self):
        """Stop starting trials once the time budget is spent."""
        if self.time_budget is None or not self.oracle.trials:
            return
        if time.monotonic() - self._start >= self.time_budget:
            self.stopped_by_budget = True
            self.oracle.max_trials = len(self.oracle.trials)  # create_trial now stops

    def on_trial_begin(self, trial):
        self._trial_start = time.monotonic()
        settings = self.space.settings(trial.hyperparameters.values)
        epochs = trial.hyperparameters.values.get("tuner/epochs")
        total = self.oracle.max_trials or "?"
        resumed = (" (rerun after an interruption)"
                   if (Path(self.get_trial_dir(trial.trial_id)) / RUN_DIR).exists() else "")
        self.progress(f"[tune] trial {trial.trial_id} ({len(self.oracle.trials)}/{total}) "
                      f"{settings['architecture']} {_short(settings, self.space)}"
                      + (f" epochs={epochs}" if epochs else "") + resumed)

    def run_trial(self, trial, *args, **kwargs) -> dict[str, float]:
        """Run (or, if it already finished before a kill, read back) one trial; report the
        objective to the oracle."""
        values = trial.hyperparameters.values
        settings = self.space.settings(values)
        trial_dir = Path(self.get_trial_dir(trial.trial_id))
        epochs = values.get("tuner/epochs")
        record = read_record(trial_dir)
        wanted_epochs = int(epochs or self.options.epochs)
        if record is None or record["settings"] != settings or record["epochs"] != wanted_epochs:
            if values.get("tuner/trial_id") is not None:
                previous = Path(self.get_trial_dir(values["tuner/trial_id"]))
                continue_from(previous, trial_dir)
            try:
                with released_trial_graphs():
                    record = run_trial(settings, self.options, self.data, trial_dir,
                                       trial_id=trial.trial_id, epochs=epochs)
            except DivergedError as err:  # the trial's settings are at fault: next trial
                raise keras_tuner.errors.FailedTrialError(str(err)) from err
            except Exception as err:  # bad input or a bug: stop the study, keep the error
                raise StopStudy(err) from err
            finally:
                keras.backend.clear_session()
                gc.collect()
        fault_point(f"tune_trial_{trial.trial_id}_recorded")
        return {self.goal.name: self.goal.value(record["metrics"])}

    def on_trial_end(self, trial):
        super().on_trial_end(trial)  # the oracle ends and scores the trial, saves state
        seconds = time.monotonic() - self._trial_start
        self.trial_seconds.append(seconds)
        record = read_record(Path(self.get_trial_dir(trial.trial_id)))
        if trial.status != _Status.COMPLETED or record is None:
            reason = (trial.message or "").strip().splitlines()
            self.progress(f"[tune] trial {trial.trial_id} {trial.status} after "
                          f"{_duration(seconds)}: {reason[-1] if reason else ''}")
            return
        m = record["metrics"]
        shown = [f"{k} {m[k]:.4f}" for k in m
                 if k.endswith(("_auc", "_rmse", "_accuracy")) and not k.startswith("mean_")]
        cost = (f"flops {m['flops']:,.0f}, params {m['params']:,.0f}"
                + ("" if math.isnan(m.get("latency_ms", math.nan))
                   else f", latency {m['latency_ms']:.3f} ms"))
        best = self.oracle.get_best_trials(1)
        best_text = (f"best {best[0].score:.4f} (trial {best[0].trial_id})"
                     if best and best[0].score is not None else "")
        done = len(self.oracle.end_order)
        left = (self.oracle.max_trials - len(self.oracle.trials)
                if self.oracle.max_trials else None)
        eta = ""
        if left:
            mean = sum(self.trial_seconds) / len(self.trial_seconds)
            eta = f", about {_duration(left * mean)} left"
        self.progress(f"[tune] trial {trial.trial_id} done in {_duration(seconds)}: "
                      f"{', '.join(shown)}; {cost}; {self.goal.name} {trial.score:.4f}, "
                      f"{best_text}; {done} finished, "
                      f"{_duration(time.monotonic() - self._start)} elapsed{eta}")

    # -- models -------------------------------------------------------------------------
    def load_model(self, trial):
        """The trained model of ``trial`` (a search trial: its derived child), rebuilt from
        its run dir; ``get_best_models`` returns these."""
        from tfmtnas.pipelines.exporting import resolve_model_dir
        from tfmtnas.pipelines.training import load_model

        return load_model(resolve_model_dir(Path(self.get_trial_dir(trial.trial_id)) / RUN_DIR))

    def save_model(self, trial_id, model, step=0):
        """Nothing to do: each trial's run dir already holds its model."""


def run_dir(project_dir: Path, trial_id: str) -> Path:
    """The model dir (``tfmtnas-train`` or ``tfmtnas-search`` layout) of one trial."""
    return Path(project_dir) / f"trial_{trial_id}" / RUN_DIR


def trial_ids(project_dir: Path) -> list[str]:
    """Ids of the trials in a project dir, in creation order."""
    ids = [p.name[len("trial_"):] for p in Path(project_dir).glob("trial_*")
           if (p / "trial.json").is_file()]
    return sorted(ids, key=int)


__all__ = ["ORACLES", "StopStudy", "StudyTuner", "make_oracle", "repair_after_kill",
           "run_dir", "trial_ids"]
