"""ExpertUsage: the experts a route computes, exact for 0/1 masks, expected for probabilities;
and the cost terms the Gumbel matrix and MTNAS build on it."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tfmtnas.search.analysis import task_reach
from tfmtnas.search.methods import make_method, search_space
from tfmtnas.search.spec import Layer, RoutingSpec
from tfmtnas.search.usage import ExpertUsage

TASKS = ["a", "b"]


def _fixed(space: RoutingSpec, masks: list[np.ndarray]) -> RoutingSpec:
    """``space`` with every mixer's mask set from the group masks (producer order)."""
    layers, outputs = list(space.layers), None
    for (p, mixers), mask in zip(space.mixer_layers(), masks, strict=True):
        names = [e.name for e in space.layers[p].experts]
        fixed = tuple(dataclasses.replace(m, mask=tuple(int(mask[i, names.index(c)])
                                                        for c in m.candidates))
                      for i, m in enumerate(mixers))
        if p + 1 < len(space.layers):
            ly = layers[p + 1]
            layers[p + 1] = Layer(ly.units, ly.experts, fixed)
        else:
            outputs = fixed
    return RoutingSpec(space.tasks, tuple(layers), outputs)


@pytest.mark.parametrize("method", ["gumbel_experts", "mtnas"])
def test_hard_masks_count_the_experts_that_reach_a_task(method):
    space = search_space(method, TASKS, num_layers=3, num_experts=3, expert_units=(2,))
    usage = ExpertUsage(space)
    rng = np.random.default_rng(0)
    for _ in range(30):
        masks = [(rng.random(shape) < 0.35).astype(np.float32)
                 for shape in [(3, 3), (3, 3), (2, 3)]]
        for m in masks:  # a spec's mixer reads at least one candidate
            m[m.sum(1) == 0, rng.integers(3)] = 1
        reach = task_reach(_fixed(space, masks))  # prune + graph walk: the reference
        expected = sum(1 for tasks in reach.values() if tasks) / 9
        assert float(usage([tf.constant(m) for m in masks])) == pytest.approx(expected)


def test_probabilities_give_the_expected_usage():
    """Exact for two layers: Monte Carlo over independent Bernoulli entries agrees."""
    space = search_space("gumbel_experts", TASKS, num_layers=2, num_experts=3, expert_units=(2,))
    usage = ExpertUsage(space)
    rng = np.random.default_rng(1)
    probs = [rng.random((3, 3)).astype(np.float32), rng.random((2, 3)).astype(np.float32)]
    expected = float(usage([tf.constant(p) for p in probs]))
    # Hand computation: top layer, then the layer below through the experts that are used.
    top = 1 - np.prod(1 - probs[1], axis=0)
    below = 1 - np.prod(1 - probs[0] * top[:, None], axis=0)
    assert expected == pytest.approx((top.sum() + below.sum()) / 6, rel=1e-6)
    draws = [(rng.random((20000, *p.shape)) < p).astype(np.float32) for p in probs]
    top_mc = 1 - np.prod(1 - draws[1], axis=1)
    below_mc = 1 - np.prod(1 - draws[0] * top_mc[:, :, None], axis=1)
    mc = (top_mc.sum(1) + below_mc.sum(1)).mean() / 6
    assert expected == pytest.approx(mc, abs=0.01)


def test_gumbel_cost_penalty_is_the_expected_usage():
    space = search_space("gumbel_experts", TASKS, num_layers=1, num_experts=3, expert_units=(2,))
    method = make_method("gumbel_experts", space, cost_weight=0.7)
    logits = np.array([[2.0, -1.0, 0.0], [-3.0, 1.0, 0.5]], np.float32)
    method.logits[0].assign(logits)
    p = 1 / (1 + np.exp(-logits))
    expected = (1 - np.prod(1 - p, axis=0)).sum() / 3
    with tf.GradientTape() as tape:
        _, aux = method.sample("weight", tf.constant(3))
        penalty = method.weight_penalty(aux, tf.constant(3))
    assert float(penalty) == pytest.approx(0.7 * expected, rel=1e-5)
    grad = tape.gradient(penalty, method.logits[0]).numpy()
    assert (grad > 0).all()  # paying for usage pushes every entry towards off
    # d/dphi_ce of 0.7/3 * (1 - prod_c (1 - p_ce)) = 0.7/3 * p_ce (1 - p_ce) prod_{c' != c}
    other = np.prod(1 - p, axis=0, keepdims=True) / (1 - p)
    np.testing.assert_allclose(grad, 0.7 / 3 * p * (1 - p) * other, rtol=1e-4)
    plain = make_method("gumbel_experts", space)
    _, plain_aux = plain.sample("weight", 0)
    assert "usage" not in plain_aux  # unpriced: no usage ops in the step
    assert float(plain.weight_penalty(plain_aux, 0)) == 0.0


def test_mtnas_reward_pays_for_the_sampled_route():
    space = search_space("mtnas", TASKS, num_layers=1, num_experts=3, expert_units=(2,))
    method = make_method("mtnas", space, cost_weight=0.5, search_queries=False,
                         baseline_decay=0.0)
    routes, aux = method.sample("weight", tf.constant(0))
    mask = routes[0]["mask"].numpy()
    assert float(aux["usage"]) == pytest.approx(mask.max(0).sum() / 3)
    method.baseline.assign(-1.0)
    method.baseline_ready.assign(1.0)
    surrogate = method.arch_objective(tf.constant(0.2), aux, tf.constant(0))
    reward = -(0.2 + 0.5 * float(aux["usage"]))
    assert float(surrogate) == pytest.approx(-(reward + 1.0) * float(tf.reduce_sum(
        aux["log_prob"])), rel=1e-5)
    assert float(method.baseline) == pytest.approx(reward)  # decay 0: the last reward


@pytest.mark.parametrize("method", ["gumbel_experts", "mtnas"])
def test_negative_cost_weight_is_rejected(method):
    with pytest.raises(ValueError, match="cost_weight must be >= 0, got -1"):
        make_method(method, search_space(method, TASKS), cost_weight=-1)
