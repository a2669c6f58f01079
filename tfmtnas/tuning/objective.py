"""What a trial is judged by: metric names, the oracle's scalar objective, the ``--select`` rule.

A trial record (:mod:`tfmtnas.tuning.trial`) keeps its per-task validation metrics and its
costs; :func:`trial_metrics` flattens them into one namespace:

- ``<task>_auc`` (binary tasks), ``<task>_rmse`` (regression tasks), ``<task>_accuracy``
  and ``<task>_top<k>_accuracy`` (multiclass tasks), ``<task>_loss``: validation metrics of
  the trial's model (a search trial: its derived child);
- ``mean_auc``, ``mean_rmse``, ``mean_accuracy`` (top-1), ``mean_loss``: their means over
  the tasks that have them;
- ``flops`` (multiply-adds x 2 per example through the sharing network and the towers),
  ``sharing_flops``, ``params``, ``sharing_params``, ``latency_ms`` (batch-1 p50 of the
  exported model through TensorFlow's C API), ``train_seconds``.

AUCs and accuracies are maximised, everything else minimised, unless a name is prefixed ``max:`` or
``min:``. keras-tuner's oracles optimise one number (``keras_tuner.Objective``); several
objectives there are summed, which is why the multi-objective view is the Pareto front
(:mod:`tfmtnas.tuning.pareto`) and the final choice is a rule (:class:`SelectRule`).

Example:
    >>> metrics = trial_metrics({"income_auc": 0.75, "marital_auc": 0.25}, {"flops": 1000})
    >>> Goal.parse("mean_auc").value(metrics)
    0.5
    >>> rule = SelectRule.parse("mean_auc,flops<=2000")
    >>> rule.allows(metrics)
    True
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence

from tfmtnas.errors import UserError

COST_METRICS = ("flops", "sharing_flops", "params", "sharing_params", "latency_ms",
                "train_seconds")
TASK_SUFFIXES = ("auc", "rmse", "accuracy", "loss")
_TOP_K = re.compile(r"_top\d+_accuracy$")
DIRECTIONS = ("max", "min")


def metric_direction(name: str) -> str:
    """``"max"`` for AUCs and accuracies, ``"min"`` for every other metric.

    Example:
        >>> metric_direction("income_auc"), metric_direction("latency_ms")
        ('max', 'min')
        >>> metric_direction("digit_top5_accuracy")
        'max'
    """
    return "max" if name in ("auc", "accuracy") or name.endswith(("_auc", "_accuracy")) \
        else "min"


def trial_metrics(validation: Mapping[str, float], cost: Mapping[str, float]
                  ) -> dict[str, float]:
    """The flat metric namespace of one trial: validation metrics, their means, costs.

    Args:
        validation: per-task validation metrics (``<task>_auc``, ``_rmse``, ``_loss``).
        cost: ``flops``, ``params``, ``latency_ms``, ... (missing ones are left out).

    Example:
        >>> m = trial_metrics({"a_auc": 0.75, "a_loss": 0.5, "b_auc": 0.25, "b_loss": 1.5},
        ...                   {"flops": 10})
        >>> m["mean_auc"], m["mean_loss"], m["flops"]
        (0.5, 1.0, 10.0)
    """
    out = {k: _number(v) for k, v in validation.items()}
    for suffix in TASK_SUFFIXES:
        values = [v for k, v in out.items() if k.endswith(f"_{suffix}")
                  and not k.startswith("mean_") and not _TOP_K.search(k)]
        if values:
            out[f"mean_{suffix}"] = float(sum(values) / len(values))
    out.update({k: _number(v) for k, v in cost.items() if v is not None})
    return out


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def metric_names(tasks: Sequence) -> list[str]:
    """Every metric name a trial of ``tasks`` (``TaskSpec`` s) records.

    Example:
        >>> from tfmtnas.features import TaskSpec
        >>> metric_names([TaskSpec("click", "binary")])[:3]
        ['click_auc', 'click_loss', 'mean_auc']
        >>> metric_names([TaskSpec("digit", "multiclass:10")])[:4]
        ['digit_accuracy', 'digit_top5_accuracy', 'digit_loss', 'mean_accuracy']
    """
    names: list[str] = []
    for t in tasks:
        names += [*t.metric_names, f"{t.name}_loss"]
    for kind, mean in (("binary", "mean_auc"), ("regression", "mean_rmse"),
                       ("multiclass", "mean_accuracy")):
        if any(t.kind == kind for t in tasks):
            names.append(mean)
    return names + ["mean_loss", *COST_METRICS]


def quality_metrics(tasks: Sequence) -> list[str]:
    """Each task's quality metric: ``<task>_auc`` (binary), ``<task>_rmse`` (regression)
    or ``<task>_accuracy`` (multiclass)."""
    return [t.metric_names[0] for t in tasks]


@dataclasses.dataclass(frozen=True)
class Goal:
    """A metric and the direction it is optimised in.

    Args:
        name: a metric name of :func:`trial_metrics`.
        direction: ``"max"`` or ``"min"``.

    Example:
        >>> Goal.parse("min:mean_auc")
        Goal(name='mean_auc', direction='min')
        >>> str(Goal.parse("flops"))
        'min:flops'
    """

    name: str
    direction: str

    @classmethod
    def parse(cls, text: str) -> Goal:
        """``"[max:|min:]name"``; without a prefix the direction is :func:`metric_direction`.

        Raises:
            UserError: an empty name or an unknown prefix.
        """
        text = text.strip()
        prefix, sep, name = text.partition(":")
        if not sep:
            prefix, name = "", text
        if sep and prefix not in DIRECTIONS:
            raise UserError(f"A metric is [max:|min:]name, got {text!r}.")
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name or ""):
            raise UserError(f"A metric is [max:|min:]name, got {text!r}.")
        return cls(name, prefix or metric_direction(name))

    def __str__(self) -> str:
        return f"{self.direction}:{self.name}"

    def check(self, known: Sequence[str], what: str) -> None:
        """Raise :class:`UserError` unless ``self.name`` is among ``known``."""
        if self.name not in known:
            raise UserError(f"{what}: unknown metric {self.name!r}; this dataset's trials "
                            f"record {', '.join(known)}.")

    def value(self, metrics: Mapping[str, float]) -> float:
        """The metric's value in ``metrics`` (NaN if missing)."""
        return float(metrics.get(self.name, float("nan")))

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b`` (NaN is never better)."""
        if math.isnan(a):
            return False
        if math.isnan(b):
            return True
        return a > b if self.direction == "max" else a < b

    def keras_tuner_objective(self):
        """The same goal as a ``keras_tuner.Objective``."""
        import keras_tuner

        return keras_tuner.Objective(self.name, direction=self.direction)


_CONSTRAINT = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(<=|>=)\s*(\S+)\s*$")


@dataclasses.dataclass(frozen=True)
class Constraint:
    """``metric <= bound`` or ``metric >= bound``.

    Example:
        >>> Constraint.parse("flops<=140000").holds({"flops": 139888.0})
        True
    """

    name: str
    op: str
    bound: float

    @classmethod
    def parse(cls, text: str) -> Constraint:
        match = _CONSTRAINT.match(text)
        if not match:
            raise UserError(f"A --select constraint is metric<=number or metric>=number, got "
                            f"{text!r}.")
        name, op, number = match.groups()
        try:
            bound = float(number)
        except ValueError:
            raise UserError(f"--select constraint {text!r}: {number!r} is not a number.") from None
        return cls(name, op, bound)

    def holds(self, metrics: Mapping[str, float]) -> bool:
        value = float(metrics.get(self.name, float("nan")))
        if math.isnan(value):
            return False
        return value <= self.bound if self.op == "<=" else value >= self.bound

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.bound:g}"


@dataclasses.dataclass(frozen=True)
class SelectRule:
    """Which finished trial to export: the best by ``goal`` among those meeting every
    constraint, e.g. the best mean validation AUC under a FLOPs budget.

    The text form is ``goal[,constraint...]``: ``mean_auc,flops<=140000``,
    ``min:latency_ms,income_auc>=0.94``. Ties keep the earlier trial.

    Example:
        >>> rule = SelectRule.parse("mean_auc,flops<=100")
        >>> records = [{"mean_auc": 0.9, "flops": 50.0}, {"mean_auc": 0.95, "flops": 500.0}]
        >>> rule.choose(records)
        0
    """

    goal: Goal
    constraints: tuple[Constraint, ...] = ()

    @classmethod
    def parse(cls, text: str, default: Goal | None = None) -> SelectRule:
        """Parse the ``--select`` text; an empty text (or one of constraints only) takes
        ``default`` (the study's objective) as the goal.

        Raises:
            UserError: malformed text, or no goal and no default.
        """
        parts = [p.strip() for p in (text or "").split(",") if p.strip()]
        constraints = tuple(Constraint.parse(p) for p in parts if _CONSTRAINT.match(p))
        goals = [p for p in parts if not _CONSTRAINT.match(p)]
        if len(goals) > 1:
            raise UserError(f"--select names one metric to optimise and constraints "
                            f"(metric<=number), got {text!r}.")
        if goals:
            goal = Goal.parse(goals[0])
        elif default is not None:
            goal = default
        else:
            raise UserError(f"--select needs a metric to optimise, got {text!r}.")
        return cls(goal, constraints)

    def check(self, known: Sequence[str]) -> None:
        """Raise :class:`UserError` for a metric name no trial records."""
        self.goal.check(known, "--select")
        for c in self.constraints:
            Goal(c.name, "min").check(known, "--select")

    def allows(self, metrics: Mapping[str, float]) -> bool:
        """Whether ``metrics`` meets every constraint."""
        return all(c.holds(metrics) for c in self.constraints)

    def choose(self, candidates: Sequence[Mapping[str, float]]) -> int | None:
        """Index of the chosen metrics in ``candidates``, or None if none qualifies."""
        best = None
        for i, metrics in enumerate(candidates):
            if not self.allows(metrics) or math.isnan(self.goal.value(metrics)):
                continue
            if best is None or self.goal.better(self.goal.value(metrics),
                                                self.goal.value(candidates[best])):
                best = i
        return best

    def __str__(self) -> str:
        return ",".join([str(self.goal), *(str(c) for c in self.constraints)])


__all__ = ["COST_METRICS", "Constraint", "Goal", "SelectRule", "metric_direction",
           "metric_names", "quality_metrics", "trial_metrics"]
