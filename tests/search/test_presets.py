"""Each preset spec computes what the dedicated layer computes, given the same weights.

The hand-designed models are therefore sub-graphs of the routing space: the routing network
of ``preset(kind, ...)`` has the same weights (shapes and count) as the dedicated layer, and
after copying them the outputs agree. The dedicated layers here are built by hand; the
table both come from (``BASELINES``, read by ``preset`` and ``build_sharing``) must build
the same layers from the same sizes.
"""

import numpy as np
import pytest
from layer_testing import assert_outputs_close, randomize_weights

from tfmtnas.layers import CGC, PLE, CrossStitch, MMoE, SharedBottom, SingleTask
from tfmtnas.models import SHARING_KINDS, build_sharing
from tfmtnas.search import RoutingNetwork, preset
from tfmtnas.search.spec import BASELINES

RNG = np.random.default_rng(11)
X = RNG.normal(size=[5, 7]).astype(np.float32)
TASKS = ["a", "b", "c"]


def _copy_bank(dst, src):
    for d, s in zip(dst.kernels + dst.biases, src.kernels + src.biases, strict=True):
        d.assign(s)


def _copy_softmax(net, group, key, gate):
    """A softmax ExpertGate's kernel [C, D, E] and bias [C, E] into one mixer group."""
    getattr(net.group_gates[group], key).assign(gate.kernel)
    net.group_gates[group].bias.assign(gate.bias)


def copy_single_task(net, layer):
    _copy_bank(net.banks[0], layer.mlps)


def copy_mmoe(net, layer):
    _copy_bank(net.banks[0], layer.experts)
    _copy_softmax(net, 0, "kernel_input", layer.gate)


def copy_cgc(net, layer):
    # Both order experts task 0's, task 1's, ..., then shared; gates tasks then shared.
    _copy_bank(net.banks[0], layer.experts)
    _copy_softmax(net, 0, "kernel_input", layer.gate)


def copy_ple(net, layer):
    for i, level in enumerate(layer.levels):
        _copy_bank(net.banks[i], level.experts)
    # Level 0's gates (task gates and the shared gate) query the input; the gates of the
    # later levels query the mixer that feeds the same owner's experts, i.e. the previous
    # level's output for that task (or the shared output).
    _copy_softmax(net, 0, "kernel_input", layer.levels[0].gate)
    for i, level in enumerate(layer.levels[1:], start=1):
        assert net.group_gates[i].kernel_input is None
        _copy_softmax(net, i, "kernel_mixer", level.gate)


def copy_cross_stitch(net, layer):
    for bank, column in zip(net.banks, layer.columns, strict=True):
        _copy_bank(bank, column)
    # One unit after every layer; the last one mixes what the task outputs read.
    assert len(layer.stitches) == len(net.group_gates)
    for i, stitch in enumerate(layer.stitches):
        net.group_gates[i].static_weights.assign(stitch.static_weights)


CASES = {
    "single_task": (lambda t: SingleTask(t, [6, 4]), dict(expert_units=(6, 4)),
                    copy_single_task),
    "shared_bottom": (lambda t: SharedBottom(t, [6, 4]), dict(expert_units=(6, 4)),
                      copy_single_task),
    "mmoe": (lambda t: MMoE(t, 3, [8]), dict(expert_units=(8,), num_experts=3), copy_mmoe),
    "cgc": (lambda t: CGC(t, 2, 1, [6, 4]),
            dict(expert_units=(6, 4), num_task_experts=2, num_shared_experts=1), copy_cgc),
    "ple": (lambda t: PLE(t, 3, 2, 1, [5]),
            dict(expert_units=(5,), num_levels=3, num_task_experts=2, num_shared_experts=1),
            copy_ple),
    "cross_stitch": (lambda t: CrossStitch(t, [8, 6, 4], alpha_self=0.8),
                     dict(expert_units=(8, 6, 4), alpha_self=0.8), copy_cross_stitch),
}


@pytest.mark.parametrize("num_tasks", [1, 3])
@pytest.mark.parametrize("kind", list(CASES))
def test_preset_reproduces_dedicated_layer(kind, num_tasks):
    make_layer, sizes, copy = CASES[kind]
    layer = make_layer(num_tasks)
    layer(X)
    net = RoutingNetwork(preset(kind, TASKS[:num_tasks], **sizes))
    net(X)
    # Structurally the same model: the same number of weights, in the same shapes.
    assert net.count_params() == layer.count_params()
    assert sorted(w.shape.as_list() for w in net.weights) == sorted(
        w.shape.as_list() for w in layer.weights)
    # Initial values that both take from the spec / constructor (static units) agree.
    if kind == "cross_stitch":
        for i, stitch in enumerate(layer.stitches):
            np.testing.assert_allclose(net.group_gates[i].static_weights, stitch.static_weights)
    randomize_weights(layer, seed=3, scale=0.8)
    copy(net, layer)
    assert_outputs_close(net(X), layer(X))


def test_every_baseline_has_a_case():
    assert list(CASES) == list(BASELINES) == list(SHARING_KINDS)


@pytest.mark.parametrize("num_tasks", [1, 3])
@pytest.mark.parametrize("kind", list(CASES))
def test_the_table_builds_the_dedicated_layer(kind, num_tasks):
    make_layer, sizes, _ = CASES[kind]
    expected = {**make_layer(num_tasks).get_config(), "name": "sharing"}
    assert build_sharing(kind, num_tasks, **sizes).get_config() == expected
