"""The three search methods: REINFORCE estimator, Gumbel matrix, MTL-NAS edges, MTNAS routes."""

import itertools

import numpy as np
import pytest
import tensorflow as tf
from layer_testing import assert_outputs_close

from tfmtnas import keras
from tfmtnas.search import RoutingNetwork, RoutingSpec, forward_flops
from tfmtnas.search.methods import (
    METHODS,
    MTLNAS,
    MTNAS,
    GumbelMatrix,
    make_method,
    reinforce_surrogate,
    route_table,
    search_space,
)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def _masks(routes):
    return [r["mask"].numpy() for r in routes]


# ---- REINFORCE -----------------------------------------------------------------------------

THETA = np.array([0.5, -1.0, 0.2, 1.3, 0.0], np.float32)
REWARD = np.array([1.0, 3.0, -2.0, 0.5, 2.0], np.float32) + 4.0  # an offset a baseline removes


def _estimates(baseline: float, draws):
    """Mean over draws of grad(reinforce_surrogate), and the per-draw gradient variance."""
    theta = tf.Variable(THETA)
    rewards = tf.gather(REWARD, draws)
    with tf.GradientTape() as tape:
        logp = tf.nn.log_softmax(theta)
        surrogates = tf.vectorized_map(
            lambda d: reinforce_surrogate(tf.gather(logp, d[0])[None], d[1],
                                          tf.constant(baseline)), (draws, rewards))
        mean_loss = tf.reduce_mean(surrogates)
    mean = tape.gradient(mean_loss, theta).numpy()
    # Every draw of route k has the same gradient, so the variance is a sum over routes.
    freq = np.bincount(draws.numpy(), minlength=len(THETA)) / len(draws)
    per_route = []
    for k in range(len(THETA)):
        with tf.GradientTape() as tape:
            surrogate = reinforce_surrogate(tf.nn.log_softmax(theta)[k:k + 1], REWARD[k],
                                            tf.constant(baseline))
        per_route.append(tape.gradient(surrogate, theta).numpy())
    per_route = np.array(per_route)
    np.testing.assert_allclose(freq @ per_route, mean, atol=1e-3)  # float32 mean of 200k
    variance = float(freq @ ((per_route - mean) ** 2).sum(-1))
    return mean, variance


def test_reinforce_mean_is_the_exact_gradient():
    p = np.exp(THETA) / np.exp(THETA).sum()
    expected_reward = p @ REWARD
    exact = p * (REWARD - expected_reward)  # d E[r] / d theta
    draws = tf.random.categorical(THETA[None], 200_000, seed=7, dtype=tf.int32)[0]
    plain_mean, plain_var = _estimates(0.0, draws)
    base_mean, base_var = _estimates(float(expected_reward), draws)
    # The surrogate is a loss: its gradient estimates -grad E[r].
    scale = np.abs(REWARD).max()
    np.testing.assert_allclose(-plain_mean, exact, atol=0.01 * scale)
    np.testing.assert_allclose(-base_mean, exact, atol=0.01 * np.abs(REWARD - expected_reward
                                                                       ).max())
    np.testing.assert_allclose(base_mean, plain_mean, atol=0.01 * scale)
    assert base_var < 0.5 * plain_var


def test_reinforce_passes_no_gradient_to_reward_or_baseline():
    logp = tf.Variable([-0.5, -1.2])
    reward, baseline = tf.Variable(2.0), tf.Variable(0.5)
    with tf.GradientTape(persistent=True) as tape:
        loss = reinforce_surrogate(logp, reward, baseline)
    np.testing.assert_allclose(loss.numpy(), -(2.0 - 0.5) * (-1.7), rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(loss, logp), [-1.5, -1.5])
    assert tape.gradient(loss, reward) is None and tape.gradient(loss, baseline) is None


def test_mtnas_moving_average_baseline():
    method = make_method("mtnas", search_space("mtnas", ["a"], num_layers=1, num_experts=2),
                         baseline_decay=0.75)
    _, aux = method.sample("arch", tf.constant(0))
    # The first reward only initialises the baseline: advantage 0.
    first = method.arch_objective(tf.constant(2.0), aux, tf.constant(0))
    assert float(first) == 0.0 and float(method.baseline) == -2.0
    second = method.arch_objective(tf.constant(1.0), aux, tf.constant(1))
    logp = float(tf.reduce_sum(aux["log_prob"]))
    np.testing.assert_allclose(float(second), -(-1.0 - -2.0) * logp, rtol=1e-6)
    np.testing.assert_allclose(float(method.baseline), 0.75 * -2.0 + 0.25 * -1.0)


def test_mtnas_normalized_advantage():
    method = make_method("mtnas", search_space("mtnas", ["a"], num_layers=1, num_experts=2),
                         baseline_decay=0.75, normalize_advantage=True)
    assert method.get_config()["normalize_advantage"]
    _, aux = method.sample("arch", tf.constant(0))
    logp = float(tf.reduce_sum(aux["log_prob"]))
    # First reward: baseline and variance start, advantage 0.
    assert float(method.arch_objective(tf.constant(2.0), aux, tf.constant(0))) == 0.0
    assert float(method.advantage_var) == 0.0
    # Reward -1 against baseline -2: advantage 1, variance 1.
    second = method.arch_objective(tf.constant(1.0), aux, tf.constant(1))
    np.testing.assert_allclose(float(second), -1.0 * logp, rtol=1e-5)
    np.testing.assert_allclose(float(method.advantage_var), 1.0)
    # Reward -3 against baseline -1.75: advantage -1.25, variance 0.75 + 0.25 * 1.5625.
    third = method.arch_objective(tf.constant(3.0), aux, tf.constant(2))
    var = 0.75 * 1.0 + 0.25 * 1.25 ** 2
    np.testing.assert_allclose(float(method.advantage_var), var, rtol=1e-6)
    np.testing.assert_allclose(float(third), 1.25 / np.sqrt(var) * logp, rtol=1e-5)
    # Scaling every loss leaves the normalised surrogates unchanged.
    scaled = make_method("mtnas", method.spec, baseline_decay=0.75, normalize_advantage=True)
    got = [float(scaled.arch_objective(tf.constant(10.0 * v), aux, tf.constant(i)))
           for i, v in enumerate((2.0, 1.0, 3.0))]
    np.testing.assert_allclose(got, [0.0, float(second), float(third)], rtol=1e-4)


# ---- Gumbel matrix -------------------------------------------------------------------------

def gumbel(**kwargs) -> GumbelMatrix:
    return make_method("gumbel_experts", search_space("gumbel_experts", ["a", "b"], num_layers=2,
                                                      num_experts=3, expert_units=(4,)), **kwargs)


def test_gumbel_temperature_schedule():
    t = GumbelMatrix.temperature
    assert float(t(tf.constant(0))) == 50.0
    assert float(t(tf.constant(99, tf.int64))) == 5.0
    assert float(t(tf.constant(1_000_000))) == 0.5
    assert float(t(tf.constant(399))) == pytest.approx(2.5)
    assert float(t(tf.constant(9_999))) == 0.5  # 50 / sqrt(10_000)
    assert float(t(tf.constant(10_000))) == 0.5  # 50 / sqrt(10_001) < 0.5


def test_gumbel_straight_through():
    method = gumbel()
    coeffs = [tf.random.normal(g.shape, seed=i) for i, g in enumerate(method.groups)]
    for step in (0, 3, 50, 10_000):
        with tf.GradientTape() as tape:
            routes, _ = method.sample("weight", tf.constant(step))
            loss = tf.add_n([tf.reduce_sum(r["mask"] * c) for r, c in zip(routes, coeffs)])
        values = np.concatenate([m.ravel() for m in _masks(routes)])
        assert set(values.tolist()) <= {0.0, 1.0}, values
        for grad in tape.gradient(loss, method.logits):
            assert grad is not None and np.all(np.asarray(grad) != 0)


def test_gumbel_samples_are_bernoulli_of_sigmoid_logits():
    method = gumbel()
    logits = np.array([[3.0, 0.0, -3.0], [1.0, -1.0, 0.5]], np.float32)
    method.logits[1].assign(logits)
    sample = tf.function(lambda step: method.sample("weight", step)[0][1]["mask"])
    draws = np.mean([sample(tf.constant(s)).numpy() for s in range(400)], 0)
    np.testing.assert_allclose(draws, _sigmoid(logits), atol=0.1)


def test_gumbel_eval_and_derive():
    method = gumbel()
    method.logits[0].assign([[2.0, -1.0, 0.5], [-1.0, -0.2, -3.0], [0.1, 0.2, 0.3]])
    method.logits[1].assign([[-4.0, -5.0, -0.5], [1.0, 1.0, -1.0]])
    expected = [np.array([[1, 0, 1], [0, 1, 0], [1, 1, 1]]),
                np.array([[0, 0, 1], [1, 1, 0]])]  # rows with none on keep their argmax
    routes, _ = method.sample("eval", tf.constant(5))
    for got, want in zip(_masks(routes), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(method.final_masks(), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    derived = method.derive()
    assert not derived.searched
    assert [m.mask for m in derived.layers[1].mixers] == [(1, 0, 1), (0, 1, 0), (1, 1, 1)]
    assert [m.mask for m in derived.outputs] == [(0, 0, 1), (1, 1, 0)]
    assert RoutingSpec.from_json(derived.to_json()) == derived


def test_gumbel_budget_penalty():
    method = gumbel(budget=0.3, budget_weight=2.0)
    values = [np.array([[2.0, -1.0, 0.5], [-1.0, -0.2, -3.0], [0.1, 0.2, 0.3]]),
              np.array([[-4.0, -5.0, -0.5], [1.0, 1.0, -1.0]])]
    for var, v in zip(method.logits, values, strict=True):
        var.assign(v)
    mean_p = np.mean(np.concatenate([_sigmoid(v).ravel() for v in values]))
    _, aux = method.sample("weight", tf.constant(0))
    np.testing.assert_allclose(aux["p_on"].numpy(), np.concatenate(
        [_sigmoid(v).ravel() for v in values]), rtol=1e-6)
    penalty = method.weight_penalty(aux, tf.constant(0))
    np.testing.assert_allclose(float(penalty), 2.0 * (mean_p - 0.3), rtol=1e-5)
    np.testing.assert_allclose(float(method.arch_objective(tf.constant(1.0), aux, 0)),
                               1.0 + 2.0 * (mean_p - 0.3), rtol=1e-5)
    assert float(gumbel(budget=0.95).weight_penalty(aux, 0)) == 0.0
    assert float(gumbel().weight_penalty(aux, 0)) == 0.0


# ---- MTL-NAS -------------------------------------------------------------------------------

TASKS3 = ["a", "b", "c"]
EDGE_LOGITS = [np.array([[-1.0, 2.0, -0.5], [0.3, -2.0, 1.5], [-0.1, 0.2, 3.0]]),
               np.array([[4.0, -0.7, 0.6], [-0.3, 0.0, -1.1], [0.8, 2.2, -0.4]])]


def mtlnas(**kwargs) -> MTLNAS:
    # edge_depth=1: every mixer reads the layer below only (3 x 3 edge logits per group).
    method = make_method("mtlnas", search_space("mtlnas", TASKS3, num_layers=2,
                                                expert_units=(3,), edge_depth=1), **kwargs)
    for var, v in zip(method.edge_logits, EDGE_LOGITS, strict=True):
        var.assign(v)
    return method


def test_mtlnas_own_edge_is_the_tasks_own_expert():
    method = mtlnas()
    # Task k's mixer lists its own expert first; that is producer k.
    assert [m.candidates[0] for m in method.spec.outputs] == ["d1_a", "d1_b", "d1_c"]
    for own in method._own:
        np.testing.assert_array_equal(own, np.eye(3))


def test_mtlnas_gates_per_mode():
    method = mtlnas()
    own = np.eye(3, dtype=bool)
    arch = _masks(method.sample("arch", tf.constant(0))[0])
    evals = _masks(method.sample("eval", tf.constant(0))[0])
    for a, got_arch, got_eval in zip(EDGE_LOGITS, arch, evals, strict=True):
        np.testing.assert_allclose(got_arch, np.where(own, 1.0, _sigmoid(a)), rtol=1e-6)
        np.testing.assert_array_equal(got_eval, np.where(own, 1.0, a > 0))
    for step in range(5):
        for got in _masks(method.sample("weight", tf.constant(step))[0]):
            assert np.all(got[own] == 1.0)
            assert np.all((got[~own] > 0) & (got[~own] < 1))


def test_mtlnas_entropy_regulariser():
    method = mtlnas(entropy_weight=10.0)
    _, aux = method.sample("arch", tf.constant(0))
    p = np.concatenate([_sigmoid(a)[~np.eye(3, dtype=bool)] for a in EDGE_LOGITS])
    entropy = np.mean(-p * np.log(p) - (1 - p) * np.log(1 - p))
    np.testing.assert_allclose(np.sort(aux["edge_p"].numpy()), np.sort(p), rtol=1e-6)
    np.testing.assert_allclose(float(method.entropy(aux)), entropy, rtol=1e-5)
    np.testing.assert_allclose(float(method.arch_objective(tf.constant(0.7), aux, 0)),
                               0.7 + 10.0 * entropy, rtol=1e-5)


def test_mtlnas_entropy_warmup_ramps_the_regulariser():
    method = mtlnas(entropy_weight=10.0, entropy_warmup=100)
    _, aux = method.sample("arch", tf.constant(0))
    entropy = float(method.entropy(aux))
    for step, weight in ((0, 0.0), (25, 2.5), (50, 5.0), (100, 10.0), (5000, 10.0)):
        got = float(method.arch_objective(tf.constant(0.7), aux, tf.constant(step, tf.int64)))
        np.testing.assert_allclose(got, 0.7 + weight * entropy, rtol=1e-5)
    assert method.get_config()["entropy_warmup"] == 100
    # No warm-up: the full weight from step 0.
    np.testing.assert_allclose(float(mtlnas().arch_objective(tf.constant(0.7), aux, 0)),
                               0.7 + 10.0 * entropy, rtol=1e-5)
    for bad in (-1, 2.5):
        with pytest.raises(ValueError, match="entropy_warmup"):
            mtlnas(entropy_warmup=bad)


def _edge_gradients(cross_init: float) -> list[np.ndarray]:
    space = search_space("mtlnas", ["a", "b"], num_layers=2, expert_units=(3,), edge_depth=1)
    method = make_method("mtlnas", space, cross_init=cross_init)
    assert method.get_config()["cross_init"] == cross_init
    net = RoutingNetwork(space, **method.network_options())
    x = tf.constant(np.random.default_rng(0).normal(size=[8, 5]), tf.float32)
    with tf.GradientTape() as tape:
        out = net(x, routes=method.sample("arch", tf.constant(0))[0], training=True)
        loss = tf.add_n([tf.reduce_sum(tf.sin(o)) for o in out])
    return [g.numpy() for g in tape.gradient(loss, method.edge_logits)]


def test_mtlnas_cross_init():
    # Zero cross-task NDDR weights (the default): every edge's gradient is exactly zero.
    for grad in _edge_gradients(0.0):
        np.testing.assert_array_equal(grad, 0.0)
    # A small diagonal on the cross-task candidates gives every cross edge a gradient.
    for grad in _edge_gradients(0.1):
        off = ~np.eye(2, dtype=bool)
        assert np.all(grad[off] != 0.0), grad
        np.testing.assert_array_equal(grad[~off], 0.0)  # own edges are not searched
    assert make_method("mtlnas", search_space("mtlnas", ["a", "b"])).network_options() == {}


def test_mtlnas_derive_keeps_positive_edges():
    derived = mtlnas().derive()
    assert not derived.searched
    # Candidates are (own, then the other tasks in order); own is kept even with a < 0.
    assert [(m.candidates, m.mask) for m in derived.layers[1].mixers] == [
        (("d0_a", "d0_b", "d0_c"), (1, 1, 0)),
        (("d0_b", "d0_a", "d0_c"), (1, 1, 1)),
        (("d0_c", "d0_a", "d0_b"), (1, 0, 1))]
    assert [m.mask for m in derived.outputs] == [(1, 0, 1), (1, 0, 0), (1, 1, 1)]


def test_mtlnas_network_starts_as_independent_columns():
    method = mtlnas(init_logit=0.0)
    for var in method.edge_logits:
        var.assign(tf.zeros_like(var))  # a = 0: no cross edge in eval
    net = RoutingNetwork(method.spec)
    x = np.random.default_rng(0).normal(size=[4, 5]).astype(np.float32)
    out = net(x, routes=method.sample("eval", tf.constant(0))[0])
    scale = 1.0 / np.sqrt(1.0 + 1e-3)  # batch norm at its initial moving statistics
    hidden = net.banks[1](net.banks[0](x) * scale)
    assert_outputs_close(out, [hidden[:, t] * scale for t in range(3)])


# ---- MTNAS ---------------------------------------------------------------------------------

@pytest.mark.parametrize("experts, queries", list(itertools.product([1, 2, 3, 4], [1, 3])))
def test_route_table(experts, queries):
    table = route_table(experts, queries)
    assert table.shape == ((2 ** experts - 1) * queries, experts + queries)
    assert len({tuple(r) for r in table}) == len(table)
    assert np.all(table[:, :experts].sum(1) >= 1)
    assert np.all(table[:, experts:].sum(1) == 1)


def mtnas(**kwargs) -> MTNAS:
    return make_method("mtnas", search_space("mtnas", ["a", "b"], num_layers=2, num_experts=3,
                                             expert_units=(4,)), **kwargs)


def test_mtnas_route_distributions():
    method = mtnas()
    assert [t.shape.as_list() for t in method.thetas] == [[3, 7], [2, 28]]
    assert [t.shape.as_list() for t in mtnas(search_queries=False).thetas] == [[3, 7], [2, 7]]
    routes, aux = method.sample("weight", tf.constant(4))
    assert aux["log_prob"].shape == [5]
    np.testing.assert_allclose(aux["log_prob"].numpy(),
                               3 * [np.log(1 / 7.0)] + 2 * [np.log(1 / 28.0)], rtol=1e-5)
    for route in routes:
        assert np.all(route["mask"].numpy().sum(1) >= 1)
        assert np.all(route["query"].numpy().sum(1) == 1)


def test_mtnas_derive_picks_the_most_probable_route():
    method = mtnas()
    # Layer-1 mixers: one query option; subsets in itertools.product order without (0,0,0).
    subsets = [s for s in itertools.product((0, 1), repeat=3) if any(s)]
    theta0 = np.zeros([3, 7], np.float32)
    for row, subset in enumerate([(0, 0, 1), (1, 0, 0), (1, 1, 1)]):
        theta0[row, subsets.index(subset)] = 2.0
    # Outputs: task a reads (1, 1, 0) queried by mixer l1_in1 (option 2), task b (0, 1, 0)
    # queried by the input (option 0).
    theta1 = np.full([2, 28], -0.5, np.float32)
    theta1[0, 2 * 7 + subsets.index((1, 1, 0))] = 1.0
    theta1[1, 0 * 7 + subsets.index((0, 1, 0))] = 1.0
    method.thetas[0].assign(theta0)
    method.thetas[1].assign(theta1)

    derived = method.derive()
    assert [m.mask for m in derived.layers[1].mixers] == [(0, 0, 1), (1, 0, 0), (1, 1, 1)]
    assert [m.query for m in derived.layers[1].mixers] == ["input"] * 3
    assert [(m.mask, m.query) for m in derived.outputs] == [((1, 1, 0), "l1_in1"),
                                                            ((0, 1, 0), "input")]
    routes, _ = method.sample("eval", tf.constant(0))
    np.testing.assert_array_equal(routes[1]["mask"], [[1, 1, 0], [0, 1, 0]])
    np.testing.assert_array_equal(routes[1]["query"], [[0, 0, 1, 0], [1, 0, 0, 0]])
    # The child computes only what the tasks reach: l1_e2 (via l1_in2) and l0_e1 are gone.
    child = RoutingNetwork(derived)
    assert [[e.name for e in ly.experts] for ly in child.spec.layers] == [
        ["l0_e0", "l0_e2"], ["l1_e0", "l1_e1"]]
    assert forward_flops(derived, 10) < forward_flops(method.spec, 10)
    assert RoutingSpec.from_json(derived.to_json()) == derived


def test_unknown_method():
    with pytest.raises(ValueError, match="Unknown search method 'darts'"):
        make_method("darts", search_space("gumbel", ["a"]))
    with pytest.raises(ValueError, match="Unknown search method 'darts'"):
        search_space("darts", ["a"])


# ---- all methods ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", METHODS)
def test_sampling_under_xla_is_fixed_by_seed_and_step(name):
    """XLA ignores the seeds of stateful random ops; the methods' noise must not depend on them."""
    def fresh():
        keras.utils.set_random_seed(3)
        method = make_method(name, search_space(name, ["a", "b"], num_layers=2, num_experts=3,
                                                expert_units=(4,)))
        sample = tf.function(lambda step: method.sample("weight", step)[0], jit_compile=True)
        return method, sample

    first, sample_1 = fresh()
    second, sample_2 = fresh()
    assert first.seed == second.seed
    assert make_method(name, first.spec, seed=11).get_config()["seed"] == 11
    step = tf.constant(7, tf.int64)
    for a, b in zip(sample_1(step), sample_2(step), strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    for a, b in zip(sample_1(step), sample_1(step), strict=True):
        np.testing.assert_array_equal(a["mask"], b["mask"])
    later = sample_1(tf.constant(8, tf.int64))
    assert any(not np.array_equal(a["mask"], b["mask"])
               for a, b in zip(sample_1(step), later, strict=True))
