"""The Pareto front of a study: the trials no other trial beats on every metric at once.

Trial ``a`` dominates ``b`` when ``a`` is at least as good on every front metric and
strictly better on one (each metric with its direction, :class:`~tfmtnas.tuning.objective.Goal`).
The front is the set of non-dominated trials: with the default metrics, each task's
validation quality and FLOPs per example, it is every trade-off between the tasks and
serving cost worth looking at. Trials with a missing (NaN) front metric are left out.
Trials with equal metrics do not dominate one another, so both stay.

Example:
    >>> goals = [Goal("a_auc", "max"), Goal("flops", "min")]
    >>> points = [{"a_auc": 0.9, "flops": 10}, {"a_auc": 0.8, "flops": 20},
    ...           {"a_auc": 0.95, "flops": 30}]
    >>> pareto_front(points, goals)
    [0, 2]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from tfmtnas.tuning.objective import Goal


def dominates(a: Mapping[str, float], b: Mapping[str, float], goals: Sequence[Goal]) -> bool:
    """Whether ``a`` is at least as good as ``b`` on every goal and better on one.

    Example:
        >>> g = [Goal("x", "max"), Goal("y", "min")]
        >>> dominates({"x": 2, "y": 1}, {"x": 1, "y": 1}, g), dominates({"x": 1, "y": 1},
        ...                                                             {"x": 1, "y": 1}, g)
        (True, False)
    """
    strictly = False
    for goal in goals:
        va, vb = goal.value(a), goal.value(b)
        if goal.better(vb, va):
            return False
        if goal.better(va, vb):
            strictly = True
    return strictly


def pareto_front(points: Sequence[Mapping[str, float]], goals: Sequence[Goal]) -> list[int]:
    """Indices (ascending) of the points no other point dominates, NaN points excluded."""
    valid = [i for i, p in enumerate(points)
             if all(not math.isnan(g.value(p)) for g in goals)]
    return [i for i in valid
            if not any(dominates(points[j], points[i], goals) for j in valid if j != i)]


def _cell(value) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 1000 or (abs(value) >= 10 and value == int(value)):
            return f"{value:,.0f}"
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def front_table(rows: Sequence[Mapping], columns: Sequence[str]) -> str:
    """A Markdown table of ``rows`` (dicts) with ``columns`` (missing cells ``-``).

    Example:
        >>> print(front_table([{"trial": "0", "flops": 1234.0}], ["trial", "flops"]))
        | trial | flops |
        |---|---|
        | 0 | 1,234 |
    """
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c, float("nan"))) for c in columns)
                     + " |")
    return "\n".join(lines)


__all__ = ["dominates", "front_table", "pareto_front"]
