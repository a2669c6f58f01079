"""Tune the architecture and its sizes with keras-tuner's oracles: ``tfmtnas-tune``'s library.

- :mod:`~tfmtnas.tuning.space`: the search space (zoo models and search methods, their
  sizes and rates) and its narrowing by JSON or flags;
- :mod:`~tfmtnas.tuning.trial`: one trial, a training or search run with its costs;
- :mod:`~tfmtnas.tuning.cost`: FLOPs, parameters, batch-1 serving latency;
- :mod:`~tfmtnas.tuning.objective`: metric names, the scalar objective, the ``--select`` rule;
- :mod:`~tfmtnas.tuning.pareto` and :mod:`~tfmtnas.tuning.plots`: the Pareto front;
- :mod:`~tfmtnas.tuning.tuner`: keras-tuner's oracles and the ``Tuner`` that runs trials;
- :mod:`~tfmtnas.tuning.study`: a whole study (:func:`run_tuning`).

Example:
    >>> from tfmtnas.tuning import TuneConfig, run_tuning
    >>> result = run_tuning(TuneConfig(dataset="census", oracle="bayesian", max_trials=30,
    ...                                space={"architecture": ["mmoe", "ple", "mtnas"]},
    ...                                model_dir="runs/census_tune"))
    >>> result.front, result.export_path   # doctest: +SKIP
"""

from tfmtnas.tuning.objective import Goal, SelectRule, trial_metrics
from tfmtnas.tuning.pareto import dominates, pareto_front
from tfmtnas.tuning.space import ARCHITECTURES, Dimension, SearchSpace, build_space
from tfmtnas.tuning.study import TuneConfig, TuneResult, run_tuning
from tfmtnas.tuning.tuner import StudyTuner, make_oracle

__all__ = ["ARCHITECTURES", "Dimension", "Goal", "SearchSpace", "SelectRule", "StudyTuner",
           "TuneConfig", "TuneResult", "build_space", "dominates", "make_oracle",
           "pareto_front", "run_tuning", "trial_metrics"]
