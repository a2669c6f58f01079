"""MTL-NAS as published (Gao et al., CVPR 2020): the NDDR learning-rate multiplier, the
annealed temperature, the column warm-up, the split redrawn each epoch and the inherited
child as the default."""

import numpy as np
import pytest
import tensorflow as tf

from tests.search.test_search_model import REGRESSION_TASKS, SPEC, pair_dataset
from tfmtnas import keras
from tfmtnas.data import make_synthetic
from tfmtnas.data.pipeline import half_members
from tfmtnas.data.sources import num_rows, search_pairs, split_dataset
from tfmtnas.models import make_optimizer
from tfmtnas.pipelines.searching import SearchConfig, child_mode
from tfmtnas.search.methods import _logistic_noise, make_method, search_space
from tfmtnas.search.model import SearchModel, scaled_optimizer
from tfmtnas.search.network import RoutingNetwork

TASKS = ["a", "b", "c"]


def mtlnas(**kwargs):
    return make_method("mtlnas", search_space("mtlnas", TASKS, num_layers=2, expert_units=(3,),
                                              edge_depth=1), seed=5, **kwargs)


# ---- the NDDR learning-rate multiplier --------------------------------------------------

def test_scaled_sgd_step_by_hand():
    fast = scaled_optimizer(keras.optimizers.SGD(0.01), 100.0)
    w = tf.Variable([1.0, 2.0])
    fast.apply_gradients([(tf.constant([0.5, -1.0]), w)])
    # w - (0.01 * 100) * g
    np.testing.assert_allclose(w.numpy(), [0.5, 3.0], rtol=1e-6)
    assert type(fast) is keras.optimizers.SGD


@pytest.mark.parametrize("name", ["adam", "lazy_adam"])
@pytest.mark.parametrize("sparse", [False, True])
def test_scaled_adam_update_is_the_multiple_of_the_base_update(name, sparse):
    base = make_optimizer(name, 1e-3)
    fast = scaled_optimizer(base, 100.0)
    assert type(fast) is type(base)
    start = np.array([[1.0, -2.0], [0.5, 0.25], [3.0, 1.0]], np.float32)
    w_base, w_fast = tf.Variable(start), tf.Variable(start)
    for step in range(3):
        grad = np.array([[0.3, -0.1], [2.0, 0.5], [-1.0, 0.7]], np.float32) * (step + 1)
        if sparse:
            g = tf.IndexedSlices(tf.constant(grad[[0, 2]]), tf.constant([0, 2]),
                                 tf.constant([3, 2]))
        else:
            g = tf.constant(grad)
        base.apply_gradients([(g, w_base)])
        fast.apply_gradients([(g, w_fast)])
    np.testing.assert_allclose(w_fast.numpy() - start, 100.0 * (w_base.numpy() - start),
                               rtol=1e-4, atol=1e-7)
    if sparse:
        np.testing.assert_array_equal(w_fast.numpy()[1], start[1])


def test_a_learning_rate_schedule_is_refused():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    with pytest.raises(ValueError, match="constant learning rate"):
        scaled_optimizer(keras.optimizers.SGD(schedule), 10.0)


def _one_sgd_step(multiplier: float) -> tuple[SearchModel, list[np.ndarray], list[np.ndarray]]:
    keras.utils.set_random_seed(3)
    space = search_space("mtlnas", [t.name for t in REGRESSION_TASKS], num_layers=2,
                         expert_units=(4,))
    method = make_method("mtlnas", space, seed=1, nddr_lr_multiplier=multiplier,
                         cross_init=0.1)
    model = SearchModel(SPEC, REGRESSION_TASKS, method,
                        arch_optimizer=keras.optimizers.SGD(0.0), embedding_dim=2,
                        tower_units=(4,))
    model.compile(keras.optimizers.SGD(0.01), jit_compile=False)
    fast = model.fast_variables()
    before = [v.numpy().copy() for v in model.trainable_variables]
    model.fit(pair_dataset(), epochs=1, verbose=0)
    deltas = [v.numpy() - b for v, b in zip(model.trainable_variables, before, strict=True)]
    fast_ids = {id(v) for v in fast}
    is_fast = [id(v) in fast_ids for v in model.trainable_variables]
    return model, deltas, is_fast


def test_nddr_update_is_the_multiplier_times_the_base_update():
    model, fast_deltas, is_fast = _one_sgd_step(100.0)
    base_model, base_deltas, _ = _one_sgd_step(1.0)
    # Multiplier 1: one optimizer for every weight; 100: the NDDR kernels, batch-norm
    # scales and offsets have their own.
    assert base_model.fast_optimizer is None and not base_model.fast_variables()
    names = sorted(v.name.split("/")[-1] for v, f in zip(model.trainable_variables, is_fast)
                   if f)
    # Two fusion groups (layer 1 and the outputs): a kernel, a batch-norm scale and offset each.
    assert names == ["beta:0", "beta:0", "g0_nddr:0", "g1_nddr:0", "gamma:0", "gamma:0"]
    assert float(model.fast_optimizer.learning_rate) == pytest.approx(1.0)
    for fast, got, base in zip(is_fast, fast_deltas, base_deltas, strict=True):
        if fast:  # one SGD step from the same weights and gradients: 100x the step
            # (The base step is read back as a difference of O(1) float32 weights: good to
            # ~1e-7, so 100x of it to ~1e-5; the steps compared are 1e-3 to 0.4.)
            assert np.max(np.abs(got)) > 1e-3
            np.testing.assert_allclose(got, 100.0 * base, rtol=1e-3, atol=2e-5)
        else:
            np.testing.assert_allclose(got, base, rtol=1e-5, atol=1e-9)


def test_fast_weights_are_the_nddr_layers_only_for_mtlnas():
    for method in ("gumbel", "mtnas"):
        space = search_space(method, ["a", "b"], num_layers=2, num_experts=2, expert_units=(4,))
        assert make_method(method, space).fast_lr_multiplier == 1.0
    assert mtlnas().fast_lr_multiplier == 100.0
    assert mtlnas(nddr_lr_multiplier=7.0).get_config()["nddr_lr_multiplier"] == 7.0
    with pytest.raises(ValueError, match="nddr_lr_multiplier"):
        mtlnas(nddr_lr_multiplier=0.0)


# ---- temperature annealing -----------------------------------------------------------------

def test_temperature_schedule_by_hand():
    # (1 - t / 100)^2 from 1: 1, 0.81, 0.25, 0.01, then the 1e-3 floor.
    method = mtlnas(temperature_steps=100)
    got = [float(method.annealed_temperature(tf.constant(s, tf.int64)))
           for s in (0, 10, 50, 90, 100, 150)]
    np.testing.assert_allclose(got, [1.0, 0.81, 0.25, 0.01, 1e-3, 1e-3], rtol=1e-5)
    # 2 (1 - t / 4): linear from 2.
    method = mtlnas(temperature=2.0, temperature_steps=4, temperature_power=1.0)
    got = [float(method.annealed_temperature(s)) for s in range(5)]
    np.testing.assert_allclose(got, [2.0, 1.5, 1.0, 0.5, 1e-3], rtol=1e-5)
    # No annealing: constant.
    assert float(mtlnas(temperature=0.7).annealed_temperature(10**6)) == pytest.approx(0.7)
    for bad in ({"temperature_steps": -1}, {"temperature_steps": 2.5},
                {"temperature_power": 0.0}, {"temperature": 0.0}):
        with pytest.raises(ValueError):
            mtlnas(**bad)


def test_weight_gates_use_the_annealed_temperature():
    method = mtlnas(temperature_steps=10)
    logits = [np.array([[0.0, 0.4, -0.3], [1.2, 0.0, -2.0], [0.1, 0.7, 0.0]]),
              np.array([[0.0, -0.5, 0.9], [0.2, 0.0, 0.3], [-1.0, 1.5, 0.0]])]
    for var, value in zip(method.edge_logits, logits, strict=True):
        var.assign(value)
    own = np.eye(3, dtype=bool)
    for step, tau in ((0, 1.0), (5, 0.25), (9, 0.01)):
        routes, _ = method.sample("weight", tf.constant(step, tf.int64))
        for i, (route, a) in enumerate(zip(routes, logits, strict=True)):
            noise = _logistic_noise([3, 3], method.noise_seed("weight", tf.constant(step), i))
            expected = 1.0 / (1.0 + np.exp(-(a + noise.numpy()) / tau))
            np.testing.assert_allclose(route["mask"].numpy(), np.where(own, 1.0, expected),
                                       rtol=1e-4, atol=1e-6)


# ---- column warm-up ------------------------------------------------------------------------

def test_column_warmup_switches_the_cross_edges_off_and_freezes_the_architecture():
    method = mtlnas(column_warmup=3)
    own = np.eye(3, dtype=bool)
    _, aux = method.sample("arch", tf.constant(0))
    for step in range(5):
        routes, _ = method.sample("weight", tf.constant(step, tf.int64))
        for route in routes:
            mask = route["mask"].numpy()
            assert np.all(mask[own] == 1.0)
            if step < 3:  # each column alone: a single-task network per task
                np.testing.assert_array_equal(mask[~own], 0.0)
            else:
                assert np.all(mask[~own] > 0)
        objective = float(method.arch_objective(tf.constant(0.7), aux,
                                                tf.constant(step, tf.int64)))
        full = 0.7 + 10.0 * float(method.entropy(aux))
        assert objective == (0.0 if step < 3 else pytest.approx(full, rel=1e-6))
    assert method.get_config()["column_warmup"] == 3


# ---- the split, redrawn each epoch -----------------------------------------------------------

def test_half_members_by_hand():
    for seed, epoch in ((0, 0), (3, 1), (3, 2)):
        first = half_members(9, 0, seed, epoch).numpy()
        second = half_members(9, 1, seed, epoch).numpy()
        assert first.sum() == 4 and second.sum() == 5
        np.testing.assert_array_equal(first, ~second)
        # Same (seed, epoch): same halves.
        np.testing.assert_array_equal(first, half_members(9, 0, seed, epoch).numpy())
    draws = {tuple(half_members(9, 0, 3, e).numpy()) for e in range(6)}
    assert len(draws) > 1


def _targets(ds) -> list[float]:
    return [float(v) for _, y in ds for v in y["y1"].numpy()]


def test_in_memory_halves_are_redrawn_each_epoch_and_repeat_with_the_seed():
    data = make_synthetic(num_train=60, num_validation=10, num_test=10, dim=3, seed=1)
    everything = sorted(float(v) for v in data.train.labels["y1"])

    def run(seed: int) -> list[tuple[list[float], list[float]]]:
        epoch = tf.Variable(0, dtype=tf.int64)
        pairs, rows = search_pairs(data, True, batch_size=8, seed=seed, epoch=epoch)
        assert rows == num_rows(data, "train", half=0) == 30
        halves = []
        for e in range(3):
            epoch.assign(e)
            weights = _targets(split_dataset(data, "train", 8, shuffle=True, seed=seed,
                                             half=0, half_seed=seed, epoch=epoch))
            arch = _targets(split_dataset(data, "train", 8, shuffle=True, seed=seed + 1,
                                          half=1, half_seed=seed, epoch=epoch))
            # The pairs the search reads hold the same weight half.
            paired = [float(v) for (_, y), _ in pairs for v in y["y1"].numpy()]
            assert paired == weights
            halves.append((weights, arch))
        return halves

    first = run(seed=0)
    for weights, arch in first:
        assert len(weights) == 30 and len(arch) == 30
        assert sorted(weights + arch) == everything  # complementary halves
    # Different halves in different epochs.
    assert len({tuple(sorted(w)) for w, _ in first}) == 3
    # Same seed: the same sequence of halves (and orders), as a resumed run reads them.
    assert run(seed=0) == first
    assert run(seed=1) != first


# ---- the child ----------------------------------------------------------------------------

def test_the_inherited_child_is_the_default_for_mtlnas_only():
    assert child_mode(SearchConfig(method="mtlnas")) == "inherit"
    assert child_mode(SearchConfig(method="gumbel")) == "finetune"
    assert child_mode(SearchConfig(method="mtnas")) == "finetune"
    assert child_mode(SearchConfig(method="mtlnas", child="retrain")) == "retrain"


# ---- depth-limited edges ---------------------------------------------------------------------

def test_depth_limited_candidates_by_hand():
    space = search_space("mtlnas", TASKS, num_layers=3, expert_units=(3,), edge_depth=2)
    # After stage i, task t reads its own stage i, then the other tasks' stages i and i - 1.
    assert [m.candidates for m in space.layers[1].mixers] == [
        ("d0_a", "d0_b", "d0_c"), ("d0_b", "d0_a", "d0_c"), ("d0_c", "d0_a", "d0_b")]
    assert [m.candidates for m in space.layers[2].mixers] == [
        ("d1_a", "d1_b", "d1_c", "d0_b", "d0_c"), ("d1_b", "d1_a", "d1_c", "d0_a", "d0_c"),
        ("d1_c", "d1_a", "d1_b", "d0_a", "d0_b")]
    assert [m.candidates for m in space.outputs] == [
        ("d2_a", "d2_b", "d2_c", "d1_b", "d1_c"), ("d2_b", "d2_a", "d2_c", "d1_a", "d1_c"),
        ("d2_c", "d2_a", "d2_b", "d1_a", "d1_b")]
    # The reference's depth (3, the default): stages i-2..i.
    default = search_space("mtlnas", ["a", "b"], num_layers=4, expert_units=(3,))
    assert default.outputs[0].candidates == ("d3_a", "d3_b", "d2_b", "d1_b")
    assert search_space("mtlnas", ["a", "b"], num_layers=4, edge_depth=1).outputs[0].candidates \
        == ("d3_a", "d3_b")
    # Edges per group: 2 tasks x 1 other task x the stages within reach.
    method = make_method("mtlnas", default)
    assert [int(np.sum(g.candidates)) - g.shape[0] for g in method.groups] == [2, 4, 6, 6]
    assert method.groups[-1].producers == ["d3_a", "d3_b", "d2_a", "d2_b", "d1_a", "d1_b"]
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="edge_depth"):
            search_space("mtlnas", ["a", "b"], edge_depth=bad)


def test_a_skip_edge_fuses_the_earlier_stage():
    """Two tasks, two stages, depth 2: task a's output reads d1_a, d1_b and d0_b. With the
    NDDR kernels at identity (own) and 0.5 identity (cross), the fusion is own + 0.5 * the
    gated others, then batch norm at its initial statistics (a scale)."""
    space = search_space("mtlnas", ["a", "b"], num_layers=2, expert_units=(3,), edge_depth=2)
    method = make_method("mtlnas", space, cross_init=0.5)
    net = RoutingNetwork(space, **method.network_options())
    x = np.random.default_rng(0).normal(size=[5, 4]).astype(np.float32)
    net(x)
    # Layer 1: a <- d0_a + 0.5 d0_b, b <- d0_b (its edge off). Outputs: a <- d1_a + d0_b
    # (its d1_b edge off), b <- d1_b + d1_a + d0_a.
    producers = net.groups[1].producers
    assert producers == ["d1_a", "d1_b", "d0_a", "d0_b"]
    layer1 = np.array([[1.0, 1.0], [0.0, 1.0]], np.float32)  # producers d0_a, d0_b
    outputs = np.array([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]], np.float32)
    out = net(x, routes=[{"mask": tf.constant(layer1)}, {"mask": tf.constant(outputs)}])
    scale = 1.0 / np.sqrt(1.0 + 1e-3)
    d0 = net.banks[0](x).numpy()
    mixed1 = np.stack([d0[:, 0] + 0.5 * d0[:, 1], d0[:, 1]], 1) * scale
    d1 = net.banks[1](mixed1).numpy()
    expected = [(d1[:, 0] + 0.5 * d0[:, 1]) * scale,
                (d1[:, 1] + 0.5 * (d1[:, 0] + d0[:, 0])) * scale]
    for got, want in zip(out, expected, strict=True):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    # The derived spec keeps the skip edge and builds a child that reads it.
    for var, value in zip(method.edge_logits, (layer1 * 2 - 1, outputs * 2 - 1), strict=True):
        var.assign(value)
    derived = method.derive()
    assert [(m.candidates, m.mask) for m in derived.outputs] == [
        (("d1_a", "d1_b", "d0_b"), (1, 0, 1)), (("d1_b", "d1_a", "d0_a"), (1, 1, 1))]
    assert RoutingNetwork(derived).groups[-1].producer_layers == [1, 0]


def test_a_search_without_a_model_dir_still_moves_to_each_epochs_halves():
    from tfmtnas.pipelines.resume import NextEpoch

    data = make_synthetic(num_train=40, num_validation=10, num_test=10, dim=3, seed=1)
    epoch = tf.Variable(0, dtype=tf.int64)
    pairs, _ = search_pairs(data, True, batch_size=64, seed=0, epoch=epoch)
    seen = []

    def record(weights, arch):
        tf.py_function(lambda y: seen.append(sorted(y.numpy().tolist())), [weights[1]["y1"]], [])
        return weights, arch

    names = [t.name for t in data.tasks]
    model = SearchModel(data.spec, data.tasks, make_method(
        "mtlnas", search_space("mtlnas", names, 1, expert_units=(4,))), embedding_dim=2,
        tower_units=(4,))
    model.compile(keras.optimizers.Adam(0.01), jit_compile=False)
    model.fit(pairs.map(record), epochs=3, verbose=0, callbacks=[NextEpoch(epoch)])
    assert int(epoch.numpy()) == 3 and len(seen) == 3
    assert len({tuple(s) for s in seen}) == 3  # one half of 20 rows per epoch, each different
