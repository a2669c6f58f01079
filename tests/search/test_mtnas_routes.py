"""MTNAS route distributions: the paper's enumeration and the factorised form that grows
linearly in the candidates, checked against NumPy enumerations of every local route."""

import collections
import itertools
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tfmtnas import keras
from tfmtnas.features import FeatureSpec, NumericFeature, TaskSpec
from tfmtnas.search.derive import derive_child
from tfmtnas.search.methods import (
    MTNAS,
    factorised_log_prob,
    make_method,
    reinforce_surrogate,
    route_table,
    sample_factorised,
    search_space,
)
from tfmtnas.search.model import SearchModel
from tfmtnas.search.network import mixer_groups
from tfmtnas.search.spec import Expert, Layer, Mixer, RoutingSpec

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _space(num_experts: int, num_tasks: int = 2, num_layers: int = 2):
    return search_space("mtnas", [f"t{k}" for k in range(num_tasks)], num_layers=num_layers,
                        num_experts=num_experts, expert_units=(4,))


def _log_sigmoid(x):
    return -np.logaddexp(0.0, -np.asarray(x, np.float64))


def _reference_routes(phi: np.ndarray, psi: np.ndarray | None, candidates: np.ndarray):
    """NumPy: every route (subset of the candidates, query) of one consumer and its probability
    as a product of Bernoullis given a non-empty subset, times the query's softmax."""
    cand = np.flatnonzero(candidates)
    num_q = 1 if psi is None else len(psi)
    log_q = np.zeros(1) if psi is None else psi - np.logaddexp.reduce(psi)
    routes, probs = [], []
    non_empty = 1.0 - np.prod(1.0 - np.exp(_log_sigmoid(phi[cand])))
    for q in range(num_q):
        for bits in itertools.product((0, 1), repeat=len(cand)):
            if not any(bits):
                continue
            s = np.zeros(len(phi))
            s[cand] = bits
            log_b = np.sum(np.where(s[cand] > 0, _log_sigmoid(phi[cand]),
                                    _log_sigmoid(-phi[cand])))
            routes.append((tuple(s.astype(int)), q))
            probs.append(np.exp(log_b + log_q[q]) / non_empty)
    return routes, np.array(probs)


def _random_logits(method: MTNAS, seed: int, scale: float = 1.5) -> None:
    rng = np.random.default_rng(seed)
    for var in method.trainable_variables:
        var.assign(rng.normal(scale=scale, size=var.shape).astype(np.float32))


# ---- the factorised distribution -----------------------------------------------------------

def test_factorised_log_prob_is_bernoullis_given_non_empty_times_the_query():
    """Against a NumPy enumeration, with a consumer that has only some producers as candidates
    (those never switch on) and one with a single candidate (its subset is certain)."""
    rng = np.random.default_rng(0)
    phi = rng.normal(scale=1.5, size=[3, 4])
    psi = rng.normal(size=[3, 3])
    candidates = np.array([[1, 1, 1, 1], [1, 0, 1, 1], [0, 0, 1, 0]])
    for c in range(3):
        routes, probs = _reference_routes(phi[c], psi[c], candidates[c])
        np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-12)
        subsets = np.array([r[0] for r in routes], np.float32)
        queries = np.eye(3, dtype=np.float32)[[r[1] for r in routes]]
        # Evaluate every route for consumer c (the other rows get the same routes).
        rows = lambda a: tf.constant(np.repeat(a[:, None], 3, axis=1))  # noqa: E731
        log_p = factorised_log_prob(tf.constant(phi, tf.float32), candidates, rows(subsets),
                                    tf.constant(psi, tf.float32), rows(queries))[:, c]
        np.testing.assert_allclose(np.exp(log_p.numpy()), probs, rtol=1e-5)
    assert len(_reference_routes(phi[2], psi[2], candidates[2])[0]) == 3  # one subset, 3 queries


def test_factorised_samples_follow_the_probabilities():
    """40k exact draws (tiled logits, one seed): every route's frequency within 4.5 standard
    errors of its probability, and nothing off the candidates or empty."""
    rng = np.random.default_rng(1)
    phi = rng.normal(scale=1.5, size=[2, 3]).astype(np.float32)
    phi[1] = [-3.0, -2.5, -4.0]  # all unlikely: the conditioning on non-empty matters
    psi = rng.normal(size=[2, 3]).astype(np.float32)
    candidates = np.array([[1, 1, 1], [1, 1, 1]])
    n = 40_000
    subset, query = sample_factorised(tf.constant(np.tile(phi, [n, 1])),
                                      np.tile(candidates, [n, 1]), tf.constant([3, 4]),
                                      tf.constant(np.tile(psi, [n, 1])))
    subset = subset.numpy().reshape(n, 2, 3).astype(int)
    query = query.numpy().reshape(n, 2, 3).argmax(-1)
    assert np.all(subset.sum(-1) >= 1)
    for c in range(2):
        routes, probs = _reference_routes(phi[c], psi[c], candidates[c])
        counts = collections.Counter(zip(map(tuple, subset[:, c]), query[:, c]))
        assert sum(counts[r] for r in routes) == n  # every draw is one of the routes
        freq = np.array([counts[r] for r in routes]) / n
        np.testing.assert_array_less(np.abs(freq - probs), 4.5 * np.sqrt(probs * (1 - probs) / n)
                                     + 1e-9)


def test_factorised_is_the_enumeration_with_log_linear_logits():
    """Both forms give the same route probabilities, marginals, most probable route, derived
    spec and eval routes when the enumeration's logits are theta = table @ (phi, psi)."""
    space = _space(3)
    factorised = make_method("mtnas", space, routes="factorised", seed=1)
    enumerated = make_method("mtnas", space, routes="enumerated", seed=1)
    assert (factorised.routes, enumerated.routes) == ("factorised", "enumerated")
    _random_logits(factorised, 2)
    for g_i, (g, table) in enumerate(zip(factorised.groups, enumerated.tables, strict=True)):
        e = g.shape[1]
        psi = factorised.query_logits[g_i]
        w_q = np.zeros([g.shape[0], 1]) if psi is None else psi.numpy()
        theta = factorised.subset_logits[g_i].numpy() @ table[:, :e].T + w_q @ table[:, e:].T
        enumerated.thetas[g_i].assign(theta)
    for got, want in zip(factorised.route_probabilities(), enumerated.route_probabilities(),
                         strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-5)
    for got, want in zip(factorised.probabilities(), enumerated.probabilities(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4)
    assert factorised.derive() == enumerated.derive()
    f_routes, _ = factorised.sample("eval", tf.constant(0))
    e_routes, _ = enumerated.sample("eval", tf.constant(0))
    for a, b in zip(f_routes, e_routes, strict=True):
        np.testing.assert_array_equal(a["mask"], b["mask"])
        np.testing.assert_array_equal(a["query"], b["query"])
    # At the start both are uniform over the routes.
    fresh = make_method("mtnas", space, routes="factorised")
    for p, table in zip(fresh.route_probabilities(), enumerated.tables, strict=True):
        np.testing.assert_allclose(p, 1.0 / len(table), rtol=1e-5)


def test_factorised_mode_is_the_most_probable_route():
    method = make_method("mtnas", _space(4), routes="factorised")
    _random_logits(method, 3)
    method.subset_logits[1].assign(tf.fill([2, 4], -1.0) - tf.range(4.0))  # none > 0
    routes, _ = method.sample("eval", tf.constant(0))
    for g, p, route in zip(method.groups, method.route_probabilities(), routes, strict=True):
        table = route_table(g.shape[1], 1 + g.num_query_mixers)
        best = table[np.argmax(p, -1)]
        np.testing.assert_array_equal(route["mask"], best[:, :g.shape[1]])
        np.testing.assert_array_equal(route["query"], best[:, g.shape[1]:])
    np.testing.assert_array_equal(routes[1]["mask"], [[1, 0, 0, 0]] * 2)


def test_expected_reinforce_gradient_is_the_enumerations_pulled_back():
    """The true statement: the factorised form is the enumeration at theta = T w (T: the route
    table, w = (phi, psi)), so its exact expected REINFORCE gradient is T^T times the
    enumeration's at that theta (chain rule), not the enumeration's own gradient (a
    different parameter vector). Exact expectation over every route, against NumPy; then
    the mean of sampled estimates converges to it."""
    g = mixer_groups(_space(3, num_layers=1))[0]  # outputs over 3 experts, 1 query option
    rng = np.random.default_rng(4)
    phi = tf.Variable(rng.normal(size=[2, 3]).astype(np.float32))
    table = route_table(3, 1)[:, :3]  # [7, 3]; one query option: no psi
    reward = rng.normal(size=[2, len(table)]) + 5.0  # per consumer, per route; an offset
    baseline = 4.0
    # NumPy: the enumeration's exact gradient of E[r] at theta = phi @ T^T, pulled back.
    theta = phi.numpy().astype(np.float64) @ table.T
    p = np.exp(theta - np.logaddexp.reduce(theta, -1, keepdims=True))
    grad_theta = p * (reward - (p * reward).sum(-1, keepdims=True))
    expected = grad_theta @ table  # d E[r] / d phi
    # TF: sum over routes of P(route) * grad of the REINFORCE surrogate of that route.
    rows = tf.constant(np.repeat(table[:, None], 2, axis=1))
    with tf.GradientTape() as tape:
        log_p = factorised_log_prob(phi, g.candidates, rows)  # [7, 2]
        weights = tf.stop_gradient(tf.exp(log_p))
        loss = tf.add_n([weights[r, c] * reinforce_surrogate(log_p[r, c:c + 1],
                                                             float(reward[c, r]), baseline)
                         for r in range(len(table)) for c in range(2)])
    np.testing.assert_allclose(-tape.gradient(loss, phi).numpy(), expected, rtol=1e-5,
                               atol=1e-6)
    # Monte Carlo: 20k sampled routes per consumer, mean estimate within 5 % of the scale.
    n = 20_000
    subset, _ = sample_factorised(tf.tile(phi, [n, 1]), np.tile(g.candidates, [n, 1]),
                                  tf.constant([7, 8]))
    index = {tuple(r): i for i, r in enumerate(table.astype(int))}
    drawn = [index[tuple(s)] for s in subset.numpy().astype(int)]
    r_drawn = reward[np.tile([0, 1], n), drawn].astype(np.float32)
    with tf.GradientTape() as tape:
        log_p = factorised_log_prob(tf.tile(phi, [n, 1]), np.tile(g.candidates, [n, 1]), subset)
        loss = tf.reduce_sum(-(r_drawn - baseline) * log_p) / n
    np.testing.assert_allclose(-tape.gradient(loss, phi).numpy(), expected,
                               atol=0.05 * np.abs(reward - baseline).max())


# ---- the method -------------------------------------------------------------------------------

def _arch_params(method) -> int:
    return sum(v.shape.num_elements() for v in method.trainable_variables)


@pytest.mark.parametrize("experts", [4, 8, 16])
def test_factorised_architecture_grows_linearly_per_block(experts):
    """E + Q logits per block: E subset logits, and Q = 1 + E query logits where a gate may
    query a mixer below (none where the input is the only option)."""
    tasks = 8
    method = make_method("mtnas", _space(experts, tasks), routes="factorised")
    hidden = experts * experts  # layer-1 blocks: E blocks x E candidates, no query choice
    outputs = tasks * (experts + 1 + experts)  # task blocks: E candidates + (1 + E) queries
    assert _arch_params(method) == hidden + outputs
    assert [v.shape.as_list() for v in method.trainable_variables] == [
        [experts, experts], [tasks, experts], [tasks, 1 + experts]]
    if experts <= 8:
        enumerated = make_method("mtnas", _space(experts, tasks), routes="enumerated")
        routes = 2 ** experts - 1
        assert _arch_params(enumerated) == experts * routes + tasks * routes * (1 + experts)


def test_routes_option():
    assert make_method("mtnas", _space(8)).routes == "enumerated"  # auto: the paper's
    assert make_method("mtnas", _space(9)).routes == "factorised"
    method = make_method("mtnas", _space(16))
    assert method.routes == "factorised" and method.get_config()["routes"] == "factorised"
    restored = MTNAS.from_config(method.get_config())
    assert restored.routes == "factorised" and restored.spec == method.spec
    with pytest.raises(ValueError, match="routes must be one of auto, enumerated, factorised, "
                                         "got 'exact'"):
        make_method("mtnas", _space(2), routes="exact")
    with pytest.raises(ValueError, match="E = 13 candidates is more than 12"):
        make_method("mtnas", _space(13), routes="enumerated")
    with pytest.raises(ValueError, match="more than 12"):
        method.route_probabilities()


def test_factorised_sampling_under_xla_is_fixed_by_seed_and_step():
    method = make_method("mtnas", _space(16), routes="factorised", seed=5)
    _random_logits(method, 6, scale=0.5)
    sample = tf.function(lambda step: method.sample("weight", step), jit_compile=True)
    (first, aux), (again, _) = sample(tf.constant(3)), sample(tf.constant(3))
    later, _ = sample(tf.constant(4))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a["mask"], b["mask"])
        np.testing.assert_array_equal(a["query"], b["query"])
        assert np.all(a["mask"].numpy().sum(-1) >= 1)
    assert any(not np.array_equal(a["mask"], b["mask"]) for a, b in zip(first, later))
    # The log-probability of the sampled routes is the factorised one of those routes.
    expected = [factorised_log_prob(phi, g.candidates, r["mask"], psi,
                                    r["query"] if psi is not None else tf.ones([g.shape[0], 1]))
                for g, phi, psi, r in zip(method.groups, method.subset_logits,
                                          method.query_logits, first)]
    np.testing.assert_allclose(aux["log_prob"], tf.concat(expected, 0), rtol=1e-5)


def _numeric_batch(rng, tasks, n=32):
    x = {"numeric": rng.normal(size=[n, 4]).astype(np.float32)}
    return x, {t.name: rng.normal(size=n).astype(np.float32) for t in tasks}


def test_16_experts_8_tasks_build_and_search():
    tasks = tuple(TaskSpec(f"t{k}", kind="regression") for k in range(8))
    spec = FeatureSpec((), tuple(NumericFeature(f"n{i}") for i in range(4)))
    space = search_space("mtnas", [t.name for t in tasks], num_layers=2, num_experts=16,
                         expert_units=(4,))
    model = SearchModel(spec, tasks, make_method("mtnas", space, seed=0),
                        arch_optimizer=keras.optimizers.Adam(0.05), embedding_dim=2,
                        tower_units=(2,))
    model.compile(keras.optimizers.Adam(0.01), jit_compile=True)
    assert model.method.routes == "factorised"
    assert _arch_params(model.method) == 16 * 16 + 8 * 33
    rng = np.random.default_rng(0)
    pairs = tf.data.Dataset.from_tensors((_numeric_batch(rng, tasks),
                                          _numeric_batch(rng, tasks))).repeat(3)
    before = [v.numpy().copy() for v in model.method.trainable_variables]
    history = model.fit(pairs, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and np.isfinite(history["arch_loss"][0])
    assert int(model.search_step.numpy()) == 3
    assert all(not np.array_equal(b, v.numpy())
               for b, v in zip(before, model.method.trainable_variables, strict=True))
    derived = model.method.derive()
    assert not derived.searched
    child = derive_child(model)
    x, _ = _numeric_batch(np.random.default_rng(1), tasks)
    got, expected = child(x), model(x)
    for t in tasks:
        np.testing.assert_allclose(got[t.name], expected[t.name], atol=1e-5)


# ---- checkpoints of the enumerated form --------------------------------------------------------

def test_enumerated_checkpoints_written_before_the_factorised_form_load():
    """``fixtures/mtnas_checkpoint`` was written by the code before the factorised form (see
    ``fixtures/make_mtnas_checkpoint.py``); the default (auto: enumerated at 3 experts)
    restores every value of it and computes the recorded outputs and derived spec."""
    import importlib.util

    maker = importlib.util.spec_from_file_location("make_mtnas_checkpoint",
                                                   FIXTURES / "make_mtnas_checkpoint.py")
    make = importlib.util.module_from_spec(maker)
    maker.loader.exec_module(make)
    expected = np.load(FIXTURES / "mtnas_expected.npz")
    model = make.make_model()
    assert model.method.routes == "enumerated"
    # Create the optimizers' slots the checkpoint holds, then restore everything.
    model.fit(tf.data.Dataset.from_tensors((make.batch(1), make.batch(2))), epochs=1, verbose=0)
    status = tf.train.Checkpoint(model=model).read(str(FIXTURES / "mtnas_checkpoint" / "ckpt"))
    status.assert_existing_objects_matched()
    status.assert_consumed()
    assert [v.name for v in model.method.variables] == list(expected["arch_names"])
    for i, v in enumerate(model.method.variables):
        np.testing.assert_array_equal(v.numpy(), expected[f"arch_{i}"])
    outputs = model({"numeric": expected["x"]})
    for t in make.TASKS:
        np.testing.assert_allclose(outputs[t.name], expected[f"out_{t.name}"], atol=1e-6)
    assert model.method.derive().to_json() == str(expected["derived"])


def test_only_searched_rows_are_drawn():
    """A fixed mixer in a searched group keeps its mask and query; only searched rows add
    log-probabilities (both forms)."""
    experts = tuple(Expert(f"e{i}") for i in range(3))
    names = tuple(e.name for e in experts)
    spec = RoutingSpec(("a", "b"), (Layer((4,), experts),),
                       (Mixer("a", names, None, "softmax"), Mixer("b", names, (1, 0, 1),
                                                                  "softmax")))
    for form in ("enumerated", "factorised"):
        method = make_method("mtnas", spec, routes=form)
        routes, aux = method.sample("weight", tf.constant(2))
        assert aux["log_prob"].shape == [1]
        np.testing.assert_array_equal(routes[0]["mask"][1], [1, 0, 1])
        np.testing.assert_allclose(aux["log_prob"], [np.log(1 / 7)], rtol=1e-5)
