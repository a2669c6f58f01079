"""The Pareto front against hand-computed sets; objectives, select rules, the table, the plot."""

import math

import pytest

from tfmtnas.errors import UserError
from tfmtnas.features import TaskSpec
from tfmtnas.tuning.objective import (
    Goal,
    SelectRule,
    metric_names,
    quality_metrics,
    trial_metrics,
)
from tfmtnas.tuning.pareto import dominates, front_table, pareto_front
from tfmtnas.tuning.plots import plot_front

GOALS = [Goal("a_auc", "max"), Goal("b_auc", "max"), Goal("flops", "min")]
#            a_auc  b_auc  flops
POINTS = [
    (0.90, 0.80, 100),   # 0 front: cheapest of the good ones
    (0.92, 0.81, 200),   # 1 front: better on both tasks, dearer
    (0.89, 0.79, 150),   # 2 dominated by 0 (worse everywhere)
    (0.95, 0.70, 300),   # 3 front: best on a
    (0.90, 0.80, 100),   # 4 front: equal to 0, neither dominates the other
    (0.80, 0.85, 400),   # 5 front: best on b
    (0.92, 0.81, 250),   # 6 dominated by 1 (same AUCs, more FLOPs)
    (0.99, 0.99, math.nan),  # 7 no FLOPs: left out
    (0.70, 0.60, 90),    # 8 front: the cheapest of all
    (0.95, 0.70, 301),   # 9 dominated by 3
]


def _points():
    return [dict(zip(("a_auc", "b_auc", "flops"), p)) for p in POINTS]


def test_front_is_the_hand_computed_set():
    assert pareto_front(_points(), GOALS) == [0, 1, 3, 4, 5, 8]


def test_front_by_brute_force_definition():
    """Independently: i is on the front iff no j is >= on all goals and > on one."""
    points = _points()
    expected = []
    for i, p in enumerate(points):
        if any(math.isnan(v) for v in p.values()):
            continue
        beaten = any(
            q["a_auc"] >= p["a_auc"] and q["b_auc"] >= p["b_auc"] and q["flops"] <= p["flops"]
            and (q["a_auc"] > p["a_auc"] or q["b_auc"] > p["b_auc"] or q["flops"] < p["flops"])
            for j, q in enumerate(points) if j != i and not math.isnan(q["flops"]))
        if not beaten:
            expected.append(i)
    assert pareto_front(points, GOALS) == expected


def test_dominance_follows_each_direction():
    lo, hi = {"flops": 1.0, "rmse": 0.5}, {"flops": 2.0, "rmse": 0.5}
    goals = [Goal("flops", "min"), Goal("rmse", "min")]
    assert dominates(lo, hi, goals) and not dominates(hi, lo, goals)
    assert not dominates(lo, lo, goals)
    # With FLOPs maximised instead, the order flips.
    assert dominates(hi, lo, [Goal("flops", "max"), Goal("rmse", "min")])


def test_metrics_means_and_directions():
    m = trial_metrics({"a_auc": 0.75, "a_loss": 0.5, "b_rmse": 2.0, "b_loss": 4.0},
                      {"flops": 10, "latency_ms": None})
    assert m["mean_auc"] == 0.75 and m["mean_rmse"] == 2.0 and m["mean_loss"] == 2.25
    assert "latency_ms" not in m and m["flops"] == 10.0
    tasks = [TaskSpec("a", "binary"), TaskSpec("b", "regression")]
    assert metric_names(tasks)[:6] == ["a_auc", "a_loss", "b_rmse", "b_loss", "mean_auc",
                                       "mean_rmse"]
    assert Goal.parse("b_rmse") == Goal("b_rmse", "min")
    assert Goal.parse("max:flops") == Goal("flops", "max")
    assert Goal.parse("mean_auc").direction == "max"
    with pytest.raises(UserError, match="max:|min:"):
        Goal.parse("up:mean_auc")
    with pytest.raises(UserError, match="unknown metric 'auc_mean'"):
        Goal.parse("auc_mean").check(metric_names(tasks), "--objective")


def test_multiclass_metrics_means_directions_and_quality():
    tasks = [TaskSpec("a", "binary"), TaskSpec("d", "multiclass:10"),
             TaskSpec("e", "multiclass:3")]
    assert metric_names(tasks)[:9] == ["a_auc", "a_loss", "d_accuracy", "d_top5_accuracy",
                                       "d_loss", "e_accuracy", "e_loss", "mean_auc",
                                       "mean_accuracy"]
    assert quality_metrics(tasks) == ["a_auc", "d_accuracy", "e_accuracy"]
    m = trial_metrics({"a_auc": 0.5, "d_accuracy": 0.5, "d_top5_accuracy": 0.9,
                       "e_accuracy": 0.7}, {})
    assert m["mean_accuracy"] == pytest.approx(0.6)  # top-1 only: (0.5 + 0.7) / 2
    assert Goal.parse("d_accuracy").direction == "max"
    assert Goal.parse("d_top5_accuracy").direction == "max"
    assert Goal.parse("mean_accuracy").direction == "max"


def test_select_rule_best_under_constraints():
    points = _points()
    for p in points:
        p["mean_auc"] = (p["a_auc"] + p["b_auc"]) / 2
    # Best mean AUC overall is point 7 (0.99, no FLOPs: a FLOPs bound cannot hold for it).
    assert SelectRule.parse("mean_auc").choose(points) == 7
    # Under 250 FLOPs: points 0,1,2,4,6,8 qualify; 1 and 6 tie at 0.865, the earlier wins.
    assert SelectRule.parse("mean_auc,flops<=250").choose(points) == 1
    # Cheapest with a >= 0.9: points 0 and 4 tie at 100 FLOPs.
    assert SelectRule.parse("flops,a_auc>=0.9").choose(points) == 0
    assert SelectRule.parse("mean_auc,flops<=10").choose(points) is None
    # Constraints only: the goal is the default (the study's objective).
    rule = SelectRule.parse("flops<=150", default=Goal("b_auc", "max"))
    assert rule.goal == Goal("b_auc", "max") and rule.choose(points) == 0
    assert str(SelectRule.parse("mean_auc, flops <= 140000")) == "max:mean_auc,flops<=140000"
    with pytest.raises(UserError, match="one metric"):
        SelectRule.parse("mean_auc,flops")
    with pytest.raises(UserError, match="not a number"):
        SelectRule.parse("flops<=lots")


def test_table_and_plot(tmp_path):
    rows = [{"trial": "3", "architecture": "ple", "a_auc": 0.91234, "flops": 177320.0,
             "params": 52.0, "latency_ms": math.nan}]
    assert front_table(rows, ["trial", "architecture", "a_auc", "flops", "params",
                              "latency_ms"]).splitlines() == [
        "| trial | architecture | a_auc | flops | params | latency_ms |",
        "|---|---|---|---|---|---|",
        "| 3 | ple | 0.9123 | 177,320 | 52 | - |"]
    records = [{"trial_id": str(i), "architecture": ["mmoe", "ple"][i % 2], "metrics": p}
               for i, p in enumerate(_points()) if not math.isnan(p["flops"])]
    path = plot_front(records, ["0", "1", "3"], ["a_auc", "b_auc"], "flops",
                      tmp_path / "front.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
