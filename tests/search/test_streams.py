"""Per-task streams and the published Gumbel matrix: NumPy references, hand computations,
the derived child against the supernet, determinism."""

import numpy as np
import pytest
import tensorflow as tf

from tests.search.test_search_model import SPEC, TASKS, _batch, pair_dataset
from tfmtnas import keras
from tfmtnas.search.derive import derive_child
from tfmtnas.search.model import SearchModel
from tfmtnas.search.spec import SpecError
from tfmtnas.search.streams import (
    GumbelStreams,
    StreamNetwork,
    StreamSpec,
    _gumbel_difference,
    allocation_overlap,
    plan_layers,
    stream_flops,
    stream_space,
)

# Three tasks, three layers of four components (two-layer MLPs in the middle): rows with one,
# several and no component, shared and private components, an unused component.
ALLOC = [np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0]]),
         np.array([[1, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]]),
         np.array([[0, 1, 1, 0], [1, 1, 0, 0], [0, 1, 0, 1]])]
UNITS = [(5,), (6, 4), (3,)]


def _spec(tasks=("a", "b", "c")):
    layers = [stream_space(tasks, 1, 4, u).layers[0] for u in UNITS]
    renamed = [type(ly)(ly.units, tuple(f"l{i}_c{c}" for c in range(4)))
               for i, ly in enumerate(layers)]
    return StreamSpec(tuple(tasks), tuple(renamed))


def _numpy_streams(net: StreamNetwork, x: np.ndarray, allocations) -> list[np.ndarray]:
    """The paper's recursion in NumPy: s_t <- mean over A[t, c] = 1 of f_c(s_t), 0 if none."""
    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    streams = [x] * allocations[0].shape[0]
    for bank, a in zip(net.banks, allocations):
        kernels = [k.numpy() for k in bank.kernels]
        biases = [b.numpy() for b in bank.biases]
        new = []
        for t, s in enumerate(streams):
            outs = []
            for c in np.flatnonzero(a[t]):
                h = s
                for k, b in zip(kernels, biases):
                    h = relu(h @ k[c] + b[c])
                outs.append(h)
            new.append(np.mean(outs, 0) if outs else np.zeros((len(x), kernels[-1].shape[-1])))
        streams = new
    return streams


def _randomise(net):
    rng = np.random.default_rng(5)
    for w in net.weights:
        w.assign(rng.normal(scale=0.7, size=w.shape).astype(np.float32))


def test_supernet_streams_equal_numpy_reference():
    net = StreamNetwork(_spec())
    x = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    net(x, routes=[{"mask": tf.constant(a, tf.float32)} for a in ALLOC])
    _randomise(net)
    got = net(x, routes=[{"mask": tf.constant(a, tf.float32)} for a in ALLOC])
    want = _numpy_streams(net, x, ALLOC)
    assert np.abs(want[0]).max() > 0.1 and np.abs(want[1]).max() > 0.1
    # Task c selects nothing in layer 1: its stream is zero there, so its last layer sees
    # the same input for every example.
    np.testing.assert_array_equal(np.ptp(want[2], axis=0), 0.0)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-5, atol=1e-5)


def test_fixed_child_computes_the_same_with_fewer_components():
    fixed = _spec().with_allocations(ALLOC)
    full = StreamNetwork(fixed, prune_fixed=False)
    x = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    full(x)
    _randomise(full)
    child = StreamNetwork(fixed)
    child(x)
    # Component l*_c3 of layers 0 and 1 (no task uses it) is pruned.
    assert [ly.components for ly in child.spec.layers] == [
        ("l0_c0", "l0_c1", "l0_c2"), ("l1_c0", "l1_c2"), ("l2_c0", "l2_c1", "l2_c2", "l2_c3")]
    for bank, ly, pbank, pl in zip(child.banks, child.spec.layers, full.banks, full.spec.layers):
        rows = [pl.components.index(c) for c in ly.components]
        bank.set_weights([w[rows] for w in pbank.get_weights()])
    want = _numpy_streams(full, x, ALLOC)
    for g, w in zip(child(x), want):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-5, atol=1e-5)
    # Pairs: layer 0 reads one input: c0, c1 (a and b, one stream), c2 (c). Layer 1: the
    # stream of a and b runs c0 once for both and c2 for a; c's selects nothing. Layer 2:
    # three distinct streams, two components each.
    assert [len(p.pair_component) for p in child.plans] == [3, 2, 6]
    assert child.component_evaluations() == 11
    assert full.component_evaluations() == 4 + 3 * (4 + 4)


def test_full_sharing_child_runs_each_component_once():
    spec = stream_space(["a", "b", "c"], 2, 3, (4,))
    child = StreamNetwork(spec.with_allocations([np.ones((3, 3))] * 2))
    child(tf.ones([2, 5]))
    assert child.component_evaluations() == 6  # one stream for all tasks
    plans = plan_layers(spec.with_allocations([np.eye(3)] * 2))
    assert [len(p.pair_component) for p in plans] == [3, 3]  # no sharing: one per task


def randomised_probabilities(method: GumbelStreams, seed: int) -> list[np.ndarray]:
    """Set every allocation logit pair to random values; each layer's p(on) by NumPy."""
    rng = np.random.default_rng(seed)
    for v in method.trainable_variables:
        v.assign(rng.normal(size=v.shape).astype(np.float32))
    return [1 / (1 + np.exp(-(v.numpy()[..., 0] - v.numpy()[..., 1])))
            for v in method.trainable_variables]


def test_budget_penalty_is_per_task_relu_of_expected_fraction():
    spec = stream_space(["a", "b"], 2, 3, (4,))
    method = GumbelStreams(spec, budget=0.4, budget_weight=2.0, seed=0)
    p = randomised_probabilities(method, seed=2)
    _, aux = method.sample("weight", tf.constant(3))
    usage = (p[0].sum(1) + p[1].sum(1)) / 6.0  # expected components per task / N = 6
    want = 2.0 * np.maximum(usage - 0.4, 0.0).sum()
    assert want > 0
    np.testing.assert_allclose(method.task_usage(aux).numpy(), usage, rtol=1e-6)
    np.testing.assert_allclose(float(method.weight_penalty(aux, 0)), want, rtol=1e-6)
    np.testing.assert_allclose(float(method.arch_objective(tf.constant(1.5), aux, 0)),
                               1.5 + want, rtol=1e-6)
    assert float(GumbelStreams(spec, seed=0).weight_penalty(aux, 0)) == 0.0  # no budget


def test_sampling_is_straight_through_gumbel_with_the_reference_schedule():
    spec = stream_space(["a", "b"], 1, 3, (4,))
    method = GumbelStreams(spec, seed=9)
    (logits,) = method.trainable_variables
    # The reference initialises (log p, log(1 - p)) with p = 0.5.
    np.testing.assert_allclose(logits.numpy(), np.log(0.5))
    logits.assign(np.stack([np.array([[0.3, -1.0, 2.0], [0.0, 0.1, -0.2]]),
                            np.zeros((2, 3))], -1).astype(np.float32))
    z = logits.numpy()[..., 0]
    for step, tau in ((0, 50.0), (99, 5.0), (20_000, 0.5)):
        assert float(method.temperature(step)) == pytest.approx(tau)
        noise = _gumbel_difference((2, 3), method.noise_seed("weight", tf.constant(step), 0))
        soft = 1 / (1 + np.exp(-(z + noise.numpy()) / tau))
        with tf.GradientTape() as tape:
            (route,), aux = method.sample("weight", tf.constant(step))
            weights = tf.constant([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
            total = tf.reduce_sum(route["mask"] * weights)
        np.testing.assert_array_equal(route["mask"].numpy(), (soft > 0.5).astype(np.float32))
        grad = tape.gradient(total, logits).numpy()
        # d/d log p of the soft on-value, and the opposite for log(1 - p).
        ds = soft * (1 - soft) / tau * weights.numpy()
        np.testing.assert_allclose(grad[..., 0], ds, rtol=1e-4, atol=1e-9)
        np.testing.assert_allclose(grad[..., 1], -ds, rtol=1e-4, atol=1e-9)
    (route,), _ = method.sample("eval", tf.constant(0))
    np.testing.assert_array_equal(route["mask"].numpy(), [[1, 0, 1], [1, 1, 0]])  # p >= 0.5


def test_spec_json_round_trip_validation_and_overlap():
    spec = _spec().with_allocations(ALLOC)
    assert StreamSpec.from_json(spec.to_json()) == spec
    assert StreamSpec.from_dict(_spec().to_dict()).searched
    with pytest.raises(SpecError, match="allocation must be 0/1 with one row per task"):
        stream_space(["a"], 1, 2).with_allocations([[[1, 2]]])
    with pytest.raises(SpecError, match="unique task names"):
        stream_space(["a", "a"], 1, 2)
    with pytest.raises(SpecError, match="Malformed stream spec"):
        StreamSpec.from_dict({"tasks": ["a"]})
    overlap = allocation_overlap(ALLOC)
    # a and b: shared 2 + 1 + 1 of 2 + 2 + 3 used by either.
    assert overlap[0, 1] == pytest.approx(4 / 7)
    # b and c: shared 0 + 0 + 1 of 3 + 1 + 3.
    assert overlap[1, 2] == pytest.approx(1 / 7)
    np.testing.assert_array_equal(np.diag(overlap), 1.0)


STREAM_TASKS = TASKS


def _search(seed: int, steps: int = 6, **options) -> SearchModel:
    keras.utils.set_random_seed(seed)
    space = stream_space([t.name for t in STREAM_TASKS], 2, 3, (6,))
    model = SearchModel(SPEC, STREAM_TASKS, GumbelStreams(space, **options),
                        arch_optimizer=keras.optimizers.Adam(0.05), embedding_dim=3,
                        tower_units=(5,))
    model.compile(keras.optimizers.Adam(0.01), jit_compile=True)
    model.fit(pair_dataset(seed=seed).repeat(steps), epochs=1, verbose=0)
    return model


def test_search_trains_router_and_weights_jointly_under_xla():
    model = _search(0, budget=0.2)
    before = [v.numpy().copy() for v in model.method.trainable_variables]
    model.fit(pair_dataset(seed=1).repeat(3), epochs=1, verbose=0)
    assert all(not np.array_equal(b, v.numpy())
               for b, v in zip(before, model.method.trainable_variables))
    assert int(model.search_step.numpy()) == 9


def test_same_seed_same_derived_spec():
    first, second = _search(3, steps=8).method, _search(3, steps=8).method
    assert first.derive() == second.derive()
    for a, b in zip(first.trainable_variables, second.trainable_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        assert not np.allclose(a.numpy(), np.log(0.5))  # the router moved
    # The draws are a function of the method's seed (which set_random_seed fixes).
    space = stream_space(["a", "b", "c"], 2, 4, (3,))
    draws = {}
    for seed in (3, 3, 4):
        keras.utils.set_random_seed(seed)
        routes, _ = GumbelStreams(space).sample("weight", tf.constant(1))
        draws.setdefault(seed, []).append(np.stack([r["mask"].numpy() for r in routes]))
    np.testing.assert_array_equal(draws[3][0], draws[3][1])
    assert not np.array_equal(draws[3][0], draws[4][0])


def test_inherited_child_equals_supernet_under_final_allocation():
    model = _search(2)
    # Mixed decisions: shared, private and unused components.
    on = [np.array([[1, 1, 0], [0, 1, 1]]), np.array([[1, 0, 0], [1, 1, 0]])]
    for v, a in zip(model.method.trainable_variables, on):
        v.assign(np.stack([np.where(a > 0, 1.5, -1.5), np.zeros_like(a)], -1).astype(np.float32))
    for final, a in zip(model.method.final_masks(), on):
        np.testing.assert_array_equal(final, a)
    child = derive_child(model, inherit=True)
    assert not child.sharing.spec.searched
    assert child.sharing.spec.layers[0].allocation is not None
    x, _ = _batch(np.random.default_rng(11), n=32)
    expected, got = model(x), child(x)
    for task in STREAM_TASKS:
        assert np.ptp(expected[task.name].numpy()) > 1e-3
        np.testing.assert_allclose(got[task.name].numpy(), expected[task.name].numpy(),
                                   rtol=0, atol=1e-5, err_msg=task.name)
    # A child built from its config (as a saved model is loaded) computes the same.
    clone = StreamNetwork.from_config(child.sharing.get_config())
    clone(child.embedding(x))
    clone.set_weights(child.sharing.get_weights())
    for a, b in zip(clone(child.embedding(x)), child.sharing(child.embedding(x))):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_flops_count_pairs_and_the_cost_term_counts_kept_components():
    spec = stream_space(["a", "b"], 2, 3, (4,))
    # Supernet, input 5: layer 0 runs 3 components once (2*5*4 each), layer 1 each of 3 on
    # both streams (2*4*4); averaging 2 per output value of each of T*C (task, component).
    want = 3 * 40 + 6 * 32 + 2 * (2 * 3 * 4) * 2
    assert stream_flops(spec, 5) == want
    fixed = spec.with_allocations([[[1, 1, 0], [1, 1, 0]], [[1, 0, 0], [0, 1, 0]]])
    # Child: layer 0 one stream, 2 pairs; layer 1 two pairs on that stream.
    assert stream_flops(fixed, 5) == 2 * 40 + 2 * 32 + 2 * 4 * (2 + 2)
    method = GumbelStreams(spec, cost_weight=0.5, seed=0)
    p = randomised_probabilities(method, seed=4)
    _, aux = method.sample("eval", tf.constant(0))
    kept = sum((1 - np.prod(1 - q, 0)).sum() for q in p) / 6.0  # component kept by any task
    np.testing.assert_allclose(float(method.weight_penalty(aux, 0)), 0.5 * kept, rtol=1e-6)


def test_spec_from_json_reads_either_kind():
    from tfmtnas.search.spec import preset
    from tfmtnas.search.streams import spec_from_json

    streams = _spec().with_allocations(ALLOC)
    assert spec_from_json(streams.to_json()) == streams
    mmoe = preset("mmoe", ["a", "b"], expert_units=(4,), num_experts=2)
    assert spec_from_json(mmoe.to_json()) == mmoe
    with pytest.raises(SpecError, match="not valid JSON"):
        spec_from_json("{")


def test_sharing_analysis_of_a_stream_spec():
    from tfmtnas.search.analysis import layer_shares, shared_capacity, task_reach

    fixed = _spec().with_allocations(ALLOC)
    reach = task_reach(fixed)
    assert reach["l0_c0"] == {"a", "b"} and reach["l0_c2"] == {"c"} and "l0_c3" not in reach
    # Used per layer: 3, 2, 4 components; shared by two or more: c0, c1 | c0 | c1.
    assert layer_shares(fixed) == [(3, 2 / 3), (2, 1 / 2), (4, 1 / 4)]
    # Capacity, input 3: layer 0 (3*5+5 = 20 each), layer 1 (5*6+6 + 6*4+4 = 64), layer 2
    # (4*3+3 = 15): shared 2*20 + 64 + 15 of 3*20 + 2*64 + 4*15.
    assert shared_capacity(fixed, 3) == pytest.approx((40 + 64 + 15) / (60 + 128 + 60))
