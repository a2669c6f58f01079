"""A child derived with inherited weights computes what the supernet computes under its final
(``"eval"``) routes, for every search method."""

import numpy as np
import pytest
import tensorflow as tf

from tests.search.test_search_model import REGRESSION_TASKS, SPEC, TASKS, _batch, pair_dataset
from tfmtnas import keras
from tfmtnas.search.derive import derive_child
from tfmtnas.search.methods import METHODS, make_method, search_space
from tfmtnas.search.model import SearchModel

# float32 through two expert layers, gates and towers: the child's einsums run over fewer
# producers (pruned experts, dropped candidates) in another summation order, and a masked
# softmax gives a dropped producer weight exp(-1e9) = 0 where the child has no term, so the
# sums agree to a few ulps of O(1) activations, not necessarily bit for bit (seen: 0 for
# the Gumbel matrix and MTL-NAS, 6e-8 for MTNAS). 1e-5 is ~100 ulps at 1.0, far below any
# difference a wrong route or a misplaced weight makes (> 1e-2 in the fresh-child test).
ATOL = 1e-5


def _trained_supernet(method: str, tasks, **options) -> SearchModel:
    keras.utils.set_random_seed(4)
    names = [t.name for t in tasks]
    space = search_space(method, names, num_layers=2, num_experts=4, expert_units=(6,))
    if method == "mtlnas":
        options.setdefault("cross_init", 0.1)
    model = SearchModel(SPEC, tasks, make_method(method, space, **options),
                        arch_optimizer=keras.optimizers.Adam(0.05), embedding_dim=3,
                        tower_units=(8,))
    model.compile(keras.optimizers.Adam(0.01), jit_compile=False)
    # A few steps move every weight (and MTL-NAS's fusion batch-norm statistics) off its start.
    model.fit(pair_dataset(seed=2).repeat(4), epochs=1, verbose=0)
    # Architecture values that make mixed decisions: some candidates off, rows with nothing
    # above 0.5 (gumbel_experts: the most probable entry is kept; gumbel, the streams: the
    # task's stream is zero there), queries other than the input.
    rng = np.random.default_rng(7)
    for var in model.method.trainable_variables:
        var.assign(rng.normal(scale=2.0, size=var.shape).astype(np.float32))
    if method == "gumbel":
        # A stream whose task selects nothing is zero, and the output then does not depend
        # on the input (the NumPy test of tests/search/test_streams.py covers that case):
        # switch on the most probable component of such rows.
        for var in model.method.trainable_variables:
            v = var.numpy()
            z = v[..., 0] - v[..., 1]
            for t in np.flatnonzero((z < 0).all(-1)):
                v[t, np.argmax(z[t]), 0] = v[t, np.argmax(z[t]), 1] + 1.0
            var.assign(v)
    return model


def _experts(network) -> int:
    """Experts (routing graph) or components (streams, the published Gumbel matrix)."""
    return sum(len(getattr(ly, "experts", None) or getattr(ly, "components", ()))
               for ly in network.spec.layers)


def _eval_routes(model: SearchModel) -> list[dict]:
    routes, _ = model.method.sample("eval", model.search_step)
    return [{k: v.numpy() for k, v in r.items()} for r in routes]


CASES = [(m, {}) for m in METHODS] + [("mtnas", {"routes": "factorised"})]


@pytest.mark.parametrize("method, options", CASES, ids=[
    m + "".join(f"-{v}" for v in o.values()) for m, o in CASES])
def test_inherited_child_reproduces_the_supernet_under_eval_routes(method, options):
    tasks = TASKS if method.startswith("gumbel") else REGRESSION_TASKS
    supernet = _trained_supernet(method, tasks, **options)
    routes = _eval_routes(supernet)
    # The eval routes are the derived decisions: hard 0/1 masks equal to final_masks.
    for route, final in zip(routes, supernet.method.final_masks(), strict=True):
        np.testing.assert_array_equal(route["mask"], final)
    child = derive_child(supernet, inherit=True)
    assert not child.sharing.spec.searched
    supernet_experts, child_experts = _experts(supernet.sharing), _experts(child.sharing)
    # These architecture values drop experts for the shared-expert spaces (MTL-NAS's columns
    # all reach their own tasks, so nothing can be pruned there).
    assert child_experts < supernet_experts or method == "mtlnas"
    x, _ = _batch(np.random.default_rng(11), n=64)
    expected, got = supernet(x), child(x)
    for task in tasks:
        assert np.ptp(expected[task.name].numpy()) > 1e-3  # the outputs depend on the input
        np.testing.assert_allclose(got[task.name].numpy(), expected[task.name].numpy(),
                                   rtol=0, atol=ATOL, err_msg=task.name)
    # The supernet's eval outputs are those of its final routes passed explicitly.
    fixed = supernet.towers(list(supernet.sharing(supernet.embedding(x), routes=[
        {k: tf.constant(v) for k, v in r.items()} for r in routes])))
    np.testing.assert_allclose(fixed.numpy(), supernet.logits(x).numpy(), rtol=0, atol=0)
    if method == "mtlnas":
        # Not the supernet of the architecture step: its gates are sigmoid(a), not a > 0,
        # so the hard child differs from the relaxed supernet (what the entropy term shrinks).
        relaxed = supernet.logits(x, mode="arch").numpy()
        assert np.max(np.abs(relaxed - fixed.numpy())) > 1e-3


def test_a_fresh_child_does_not_reproduce_the_supernet():
    """inherit=False starts from fresh weights: the comparison above is not vacuous."""
    supernet = _trained_supernet("mtnas", REGRESSION_TASKS)
    child = derive_child(supernet, inherit=False)
    x, _ = _batch(np.random.default_rng(11), n=64)
    assert np.max(np.abs(child(x)["watch"].numpy() - supernet(x)["watch"].numpy())) > 1e-2
