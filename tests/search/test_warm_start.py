"""MTL-NAS columns warm-started from a single-task model (Gao et al., CVPR 2020): what is
copied where, that the supernet then computes the single-task model, and the mismatches."""

import numpy as np
import pytest
import tensorflow as tf

from tests.layer_testing import randomize_weights
from tfmtnas.errors import UserError
from tfmtnas.features import CategoricalFeature, FeatureSpec, NumericFeature, TaskSpec
from tfmtnas.models import MultiTaskModel
from tfmtnas.search import Expert, Layer, Mixer, RoutingSpec
from tfmtnas.search.methods import make_method, search_space
from tfmtnas.search.model import SearchModel
from tfmtnas.search.warm_start import check_single_task, task_columns, warm_start_columns

SPEC = FeatureSpec((CategoricalFeature("c", vocabulary=("x", "y", "z")),
                    CategoricalFeature("h", hash_bins=5)),
                   (NumericFeature("n0"), NumericFeature("n1")))
TASKS = (TaskSpec("ctr", "binary"), TaskSpec("watch", "regression"),
         TaskSpec("digit", "multiclass:3"))
NAMES = [t.name for t in TASKS]


def single_task(units, tasks=TASKS, spec=SPEC, embedding_dim=3, tower_units=(4,),
                seed=1) -> MultiTaskModel:
    """A single-task model with every weight random (biases too, so a bias left behind
    shows)."""
    model = MultiTaskModel(spec, tasks, {"kind": "single_task", "expert_units": list(units)},
                           embedding_dim=embedding_dim, tower_units=tower_units)
    model(model.dummy_features())
    randomize_weights(model, seed=seed, scale=0.6)
    return model


def supernet(num_layers, expert_units, tasks=TASKS, embedding_dim=3, tower_units=(4,),
             method="mtlnas", **options) -> SearchModel:
    space = search_space(method, [t.name for t in tasks], num_layers, 2, expert_units)
    return SearchModel(SPEC, tasks, make_method(method, space, **options),
                       embedding_dim=embedding_dim, tower_units=tower_units)


def features(n=64, seed=0) -> dict[str, tf.Tensor]:
    rng = np.random.default_rng(seed)
    ids = np.stack([rng.integers(0, 4, n), 4 + rng.integers(0, 5, n)], axis=1)
    return {"categorical": tf.constant(ids, tf.int32),
            "numeric": tf.constant(rng.normal(size=(n, 2)), tf.float32)}


LAYOUTS = [(1, (6,)), (3, (5,)), (2, (4, 3))]  # (num_layers, expert_units) of the supernet


@pytest.mark.parametrize("num_layers, units", LAYOUTS)
def test_every_copied_variable_equals_the_single_task_models(num_layers, units):
    single = single_task(units * num_layers)
    model = supernet(num_layers, units)
    written = warm_start_columns(model, single)

    np.testing.assert_array_equal(model.embedding.table.numpy(),
                                  single.embedding.table.numpy())
    for ours, theirs in zip(model.towers.weights, single.towers.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    mlps = single.sharing.mlps
    for t, task in enumerate(NAMES):
        depth = 0
        for layer, bank in enumerate(model.sharing.banks):
            names = [e.name for e in model.sharing.spec.layers[layer].experts]
            row = names.index(f"d{layer}_{task}")  # task's own expert, by search_space's name
            for j in range(len(units)):
                np.testing.assert_array_equal(bank.kernels[j].numpy()[row],
                                              mlps.kernels[depth + j].numpy()[t])
                np.testing.assert_array_equal(bank.biases[j].numpy()[row],
                                              mlps.biases[depth + j].numpy()[t])
            depth += len(units)
    assert depth == len(mlps.kernels)
    # Nothing trainable is left behind but the search's own state: the NDDR fusions (at
    # their identity start) and the edge logits.
    left = {id(v) for v in model.trainable_variables} - {id(v) for v in written}
    own = {id(v) for v in model.sharing.nddr_variables() + model.method.trainable_variables}
    assert left == own
    for gates in model.sharing.group_gates:
        np.testing.assert_array_equal(gates.nddr_bn.moving_variance.numpy(),
                                      np.float32(1) - np.float32(gates.nddr_bn.epsilon))


@pytest.mark.parametrize("num_layers, units", LAYOUTS)
def test_warm_started_supernet_predicts_what_the_single_task_model_predicts(num_layers,
                                                                             units):
    # Inference mode, edges at their start (a = 0: off under the "eval" routes a > 0) and
    # NDDR fusions at their start: kernel = identity on the own feature, gamma 1, beta 0,
    # moving mean 0, moving variance 1 - eps (set by the warm start). Each fusion is then
    # (x @ I) / sqrt((1 - eps) + eps) with (1 - eps) + eps == 1.0 exactly in float32, so
    # the supernet runs the single-task model's ops on the same values (bit-identical on
    # CPU here); 1e-6 only allows for another summation order in the batched matmuls on
    # other devices. Without the moving variance set, the difference is about 5e-4
    # relative per fusion (next test) and this test fails.
    single = single_task(units * num_layers)
    model = supernet(num_layers, units)
    x = features()
    before = model(x)
    warm_start_columns(model, single)
    got, want = model(x), single(x)
    for task in NAMES:
        np.testing.assert_allclose(got[task].numpy(), want[task].numpy(), rtol=1e-6,
                                   atol=1e-7, err_msg=task)
        assert np.abs(before[task].numpy() - want[task].numpy()).max() > 1e-3


def test_edges_on_change_nothing_while_the_fusion_is_the_identity():
    # The cross-task halves of every NDDR kernel start at zero: turning every edge on
    # (a > 0) still gives the single-task predictions.
    single = single_task((5, 5))
    model = supernet(2, (5,))
    warm_start_columns(model, single)
    for a in model.method.edge_logits:
        a.assign(tf.fill(a.shape, 3.0))
    x = features()
    got, want = model(x), single(x)
    for task in NAMES:
        np.testing.assert_allclose(got[task].numpy(), want[task].numpy(), rtol=1e-6,
                                   atol=1e-7)


def test_fresh_batch_norm_scales_each_fusion_by_one_over_sqrt_one_plus_eps():
    # Why the warm start sets the moving variance: with Keras' fresh moving variance of 1,
    # the (one-stage) supernet's output fusion computes column(x) / sqrt(1 + eps).
    single = single_task((6,))
    model = supernet(1, (6,))
    warm_start_columns(model, single)
    bn = model.sharing.group_gates[0].nddr_bn
    bn.moving_variance.assign(tf.ones_like(bn.moving_variance))
    x = model.embedding(features())
    routes, _ = model.method.sample("eval", model.search_step)
    got = model.sharing(x, routes=routes, training=False)
    want = single.sharing(x)
    scale = 1 / np.sqrt(np.float32(1) + np.float32(bn.epsilon))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g.numpy(), scale * w.numpy(), rtol=1e-6, atol=1e-7)
        assert np.abs(g.numpy() - w.numpy()).max() > 1e-5


def test_task_columns_follow_own_candidates_down_a_spec():
    assert task_columns(search_space("mtlnas", ["a", "b"], 3, edge_depth=2)) == {
        "a": ["d0_a", "d1_a", "d2_a"], "b": ["d0_b", "d1_b", "d2_b"]}
    # Experts listed in another order, one extra expert: columns by name, not position.
    layers = (Layer((4,), (Expert("p"), Expert("q"), Expert("extra"))),
              Layer((4,), (Expert("r", "in_b"), Expert("s", "in_a")),
                    (Mixer("in_a", ("q", "p", "extra"), None, "nddr"),
                     Mixer("in_b", ("p", "q"), None, "nddr"))))
    spec = RoutingSpec(("a", "b"), layers, (Mixer("a", ("s", "r"), None, "nddr"),
                                            Mixer("b", ("r", "s"), None, "nddr")))
    assert task_columns(spec) == {"a": ["q", "s"], "b": ["p", "r"]}


def test_a_spec_without_a_column_per_task_is_refused():
    layers = (Layer((4,), (Expert("p"), Expert("q"))),)
    spec = RoutingSpec(("a", "b"), layers, (Mixer("a", ("p", "q"), None, "nddr"),
                                            Mixer("b", ("p", "q"), None, "nddr")))
    with pytest.raises(UserError, match="task 'b''s own expert 'p' is task 'a''s too"):
        task_columns(spec)


@pytest.mark.parametrize("change, needle", [
    ({"units": (8,)}, r"MLPs have units \(8,\), task 'ctr''s column in the supernet \(4,\) "
                      r"\+ \(4,\): search with --num_layers=1 --expert_units=8 "),
    ({"units": (4, 3, 4, 3)}, "search with --num_layers=2 --expert_units=4,3 "),
    ({"embedding_dim": 5}, "has embedding_dim 5, the search 3: search with --embedding_dim=5"),
    ({"tower_units": (4, 2)}, r"has tower_units \(4, 2\), the search \(4,\): search with "
                              r"--tower_units=4,2"),
    ({"tasks": TASKS[:2]}, r"has tasks \[ctr \(binary\), watch \(regression\)\], the search "
                           r"\[ctr \(binary\), watch \(regression\), digit \(multiclass:3\)\]"),
    ({"tasks": (TASKS[0], TaskSpec("watch", "binary"), TASKS[2])}, r"watch \(binary\)"),
    ({"spec": FeatureSpec(SPEC.categorical, (NumericFeature("n0"),))},
     r"has numeric features \['n0'\], the search \['n0', 'n1'\]"),
    ({"spec": FeatureSpec((SPEC.categorical[0], CategoricalFeature("h", hash_bins=9)),
                          SPEC.numeric)}, "embedding has 13 rows, the search's 9"),
])
def test_mismatches_are_one_line_user_errors(change, needle):
    model = supernet(2, (4,))
    kwargs = {"units": (4, 4), **change}
    single = single_task(kwargs.pop("units"), **kwargs)
    before = [v.numpy() for v in model.weights]
    with pytest.raises(UserError, match=needle) as err:
        warm_start_columns(model, single)
    assert "\n" not in str(err.value)
    for v, value in zip(model.weights, before, strict=True):  # nothing written
        np.testing.assert_array_equal(v.numpy(), value)


def test_other_sharing_and_other_methods_are_refused():
    mmoe = MultiTaskModel(SPEC, TASKS, {"kind": "mmoe", "expert_units": [4]},
                          embedding_dim=3, tower_units=(4,))
    mmoe(mmoe.dummy_features())
    with pytest.raises(UserError, match="sharing layer is MMoE: train one with tfmtnas-train "
                                        "--model=single_task"):
        check_single_task(supernet(1, (4,)), mmoe)
    with pytest.raises(UserError, match="applies to MTL-NAS, not MTNAS"):
        check_single_task(supernet(1, (4,), method="mtnas"), single_task((4,)))
