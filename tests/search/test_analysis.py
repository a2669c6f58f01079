"""Capacity analysis of routing graphs, checked by hand on presets and a pruned route."""

import dataclasses

import pytest

from tfmtnas.search import preset
from tfmtnas.search.analysis import expert_sizes, layer_shares, shared_capacity, task_reach


def test_reach_of_presets():
    reach = task_reach(preset("cgc", ["a", "b"], (4,), num_task_experts=1,
                              num_shared_experts=1))
    assert reach == {"l0_a_0": {"a"}, "l0_b_1": {"b"}, "l0_shared_2": {"a", "b"}}
    assert task_reach(preset("single_task", ["a", "b"], (4,))) == {"e0": {"a"}, "e1": {"b"}}


@pytest.mark.parametrize("kind, expected", [
    ("single_task", 0.0), ("shared_bottom", 1.0), ("mmoe", 1.0),
    ("cgc", 2 / 4),  # 1 task expert each + 2 shared experts, all the same size
])
def test_shared_capacity_of_presets(kind, expected):
    spec = preset(kind, ["a", "b"], (8,), num_experts=3, num_task_experts=1,
                  num_shared_experts=2)
    assert shared_capacity(spec, 5) == pytest.approx(expected)


def test_sizes_weight_the_share_and_pruned_experts_do_not_count():
    spec = preset("mmoe", ["a", "b"], (8, 4), num_experts=3)
    assert expert_sizes(spec, 5) == {f"e{i}": 5 * 8 + 8 + 8 * 4 + 4 for i in range(3)}
    # a reads e0, e1; b reads e1 only; e2 is read by nobody and is pruned.
    outs = (dataclasses.replace(spec.outputs[0], mask=(1, 1, 0)),
            dataclasses.replace(spec.outputs[1], mask=(0, 1, 0)))
    sparse = dataclasses.replace(spec, outputs=outs)
    assert task_reach(sparse) == {"e0": {"a"}, "e1": {"a", "b"}}
    assert shared_capacity(sparse, 5) == pytest.approx(0.5)


def test_layer_shares_count_used_experts_per_layer():
    ple = preset("ple", ["a", "b"], (4,), num_task_experts=1, num_shared_experts=2)
    # Level 0: every expert feeds the upper shared experts' gate, so all 4 reach both tasks;
    # level 1: a's and b's own experts serve one task, the 2 shared experts both.
    assert layer_shares(ple) == [(4, 1.0), (4, 0.5)]
    spec = preset("mmoe", ["a", "b"], (8,), num_experts=3)
    outs = (dataclasses.replace(spec.outputs[0], mask=(1, 1, 0)),
            dataclasses.replace(spec.outputs[1], mask=(0, 1, 0)))
    assert layer_shares(dataclasses.replace(spec, outputs=outs)) == [(2, 0.5)]
