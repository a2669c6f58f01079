"""SearchModel: the alternating weight / architecture train_step under XLA, and determinism."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from tfmtnas import keras
from tfmtnas.features import CategoricalFeature, FeatureSpec, NumericFeature, TaskSpec
from tfmtnas.search.methods import METHODS, make_method, search_space
from tfmtnas.search.model import SearchModel

SPEC = FeatureSpec((CategoricalFeature("c", vocabulary=("x", "y", "z")),),
                   (NumericFeature("n1"), NumericFeature("n2")))
TASKS = (TaskSpec("click"), TaskSpec("watch", kind="regression"))
REGRESSION_TASKS = (TaskSpec("click", kind="regression"), TaskSpec("watch", kind="regression"))


def _batch(rng, n=16, labels=True):
    features = {"categorical": rng.integers(0, 4, size=[n, 1]).astype(np.int32),
                "numeric": rng.normal(size=[n, 2]).astype(np.float32)}
    y = {"click": (rng.random(n) < 0.5).astype(np.float32),
         "watch": rng.normal(size=n).astype(np.float32)}
    if not labels:  # every label missing: the batch contributes no loss, hence no gradient
        y = {k: np.full_like(v, np.nan) for k, v in y.items()}
    return features, y


def pair_dataset(seed=0, val_labels=True) -> tf.data.Dataset:
    rng = np.random.default_rng(seed)
    return tf.data.Dataset.from_tensors((_batch(rng), _batch(rng, labels=val_labels)))


def search_model(method: str, tasks=TASKS, full_jit=False, arch_warmup_steps=0,
                 **method_kwargs) -> SearchModel:
    space = search_space(method, [t.name for t in tasks], num_layers=2, num_experts=2,
                         expert_units=(4,))
    model = SearchModel(SPEC, tasks, make_method(method, space, **method_kwargs),
                        arch_optimizer=keras.optimizers.Adam(0.05),
                        arch_warmup_steps=arch_warmup_steps, embedding_dim=2,
                        tower_units=(4,))
    model.compile(keras.optimizers.Adam(0.05), jit_compile=True, full_jit=full_jit)
    return model


def _values(variables):
    return [v.numpy().copy() for v in variables]


def _changed(before, variables) -> list[bool]:
    return [not np.array_equal(b, v.numpy()) for b, v in zip(before, variables, strict=True)]


def _xla_calls(model) -> tuple[list[str], dict]:
    """Functions called with ``_XlaMustCompile`` anywhere in the train function: in its graph
    or in the functions it calls (e.g. the loop body of several steps per call), and the
    function library by name."""
    (concrete,) = model.train_tf_function._list_all_concrete_functions()
    graph_def = concrete.graph.as_graph_def()
    library = {f.signature.name: f for f in graph_def.library.function}
    nodes = list(graph_def.node) + [n for f in library.values() for n in f.node_def]
    return [n.attr["f"].func.name for n in nodes
            if "PartitionedCall" in n.op and n.attr["_XlaMustCompile"].b], library


def assert_core_is_xla(model):
    """Default jit_compile: the routed supernet and towers run in a function XLA must compile,
    called from the train function; route sampling and both updates stay around it."""
    assert not model._jit_compile and model.core_jit
    compiled, _ = _xla_calls(model)
    assert any("routed_core" in name for name in compiled), compiled
    assert not any("train_step" in name or "step_function" in name for name in compiled)


def assert_train_step_is_xla(model):
    """full_jit: the train function calls train_step through a function XLA must compile."""
    assert model._jit_compile
    xla, library = _xla_calls(model)
    assert xla, list(library)
    step = library[xla[0]]
    assert step.attr["_XlaMustCompile"].b
    # Both optimizers update their variables inside the compiled step (Adam: one assign_sub
    # per variable), and the routes are sampled there too.
    ops = collections.Counter(node.op for node in step.node_def)
    updated = len(model.weight_variables()) + len(model.method.trainable_variables)
    assert ops["AssignSubVariableOp"] >= updated, ops
    assert any(op.startswith("Stateless") for op in ops), ops


@pytest.mark.parametrize("method", METHODS)
def test_weight_and_architecture_steps_update_only_their_variables(method):
    # One binary task with its AUC metric in one case; the AUC metric makes compiling slower.
    gumbel = method.startswith("gumbel")
    tasks = TASKS if gumbel else REGRESSION_TASKS
    # The whole step XLA-compiled (full_jit) for MTNAS, the numeric core only for the others.
    model = search_model(method, tasks, full_jit=method == "mtnas",
                         **({"joint": False} if gumbel else {}))
    assert not model.method.joint
    weights, arch = model.weight_variables(), model.method.trainable_variables
    fast = model.fast_variables()  # MTL-NAS's NDDR layers, their own (faster) optimizer
    assert bool(fast) == (method == "mtlnas")
    assert weights and arch
    assert not {id(v) for v in weights} & {id(v) for v in arch}
    assert not {id(v) for v in fast} & ({id(v) for v in weights} | {id(v) for v in arch})
    assert len(weights) + len(fast) + len(arch) == len(model.trainable_variables)
    weights = weights + fast
    data = pair_dataset()

    if gumbel:
        # Not joint: the architecture gradient comes from the validation batch only, so on a
        # fresh optimizer a validation batch without labels leaves the logits alone.
        w, a = _values(weights), _values(arch)
        model.fit(pair_dataset(seed=1, val_labels=False), epochs=1, verbose=0)
        assert any(_changed(w, weights))
        assert not any(_changed(a, arch))

    # Architecture optimizer frozen: only the weight step moves anything.
    model.arch_optimizer.learning_rate = 0.0
    w0, a0 = _values(weights), _values(arch)
    logs = model.fit(data, epochs=1, verbose=0).history
    assert np.isfinite(logs["loss"][0]) and np.isfinite(logs["arch_loss"][0])
    assert any(_changed(w0, weights))
    assert not any(_changed(a0, arch))

    # Weight optimizer frozen: only the architecture step moves anything.
    model.arch_optimizer.learning_rate = 0.05
    model.optimizer.learning_rate = 0.0
    if fast:
        model.fast_optimizer.learning_rate = 0.0
    w1, a1 = _values(weights), _values(arch)
    model.fit(data, epochs=1, verbose=0)
    assert not any(_changed(w1, weights))
    assert any(_changed(a1, arch))
    assert int(model.search_step.numpy()) == (3 if gumbel else 2)
    if method == "mtnas":
        assert_train_step_is_xla(model)
    else:
        assert_core_is_xla(model)


@pytest.mark.parametrize("method", METHODS)
def test_architecture_waits_for_the_warmup_steps(method):
    model = search_model(method, arch_warmup_steps=2)
    arch = model.method.trainable_variables
    weights = model.weight_variables()
    ds = pair_dataset()
    for step in range(3):
        arch_before, weights_before = _values(arch), _values(weights)
        model.fit(ds, epochs=1, verbose=0)
        assert any(_changed(weights_before, weights)), step
        assert any(_changed(arch_before, arch)) == (step == 2), step


def test_negative_warmup_is_refused():
    with pytest.raises(ValueError, match="arch_warmup_steps must be >= 0, got -1"):
        search_model("gumbel", arch_warmup_steps=-1)


@pytest.mark.parametrize("method", ["gumbel", "gumbel_experts"])
def test_joint_gumbel_takes_architecture_gradients_from_the_training_batch(method):
    model = search_model(method, REGRESSION_TASKS)  # joint is the Gumbel matrix's default
    assert model.method.joint
    weights, arch = model.weight_variables(), model.method.trainable_variables
    w0, a0 = _values(weights), _values(arch)
    # gumbel (streams): this seed's first draw selects nothing in layer 1 for both tasks, so
    # both streams are zero there and the towers' ReLUs (zero biases) pass no gradient back:
    # the router learns from the following steps (as the paper's zero stream would).
    model.fit(pair_dataset(val_labels=False).repeat(1 if method == "gumbel_experts" else 3),
              epochs=1, verbose=0)
    assert any(_changed(w0, weights))
    assert all(_changed(a0, arch))


def _search(method: str, seed: int, steps: int = 3):
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    # gumbel_experts starts undecided (its default leans on); gumbel does at p = 0.5.
    options = {"mtnas_factorised": {"routes": "factorised"},
               "gumbel_experts": {"init_logit": 0.0}, "mtlnas": {"init_logit": 0.0}}
    name = "mtnas" if method == "mtnas_factorised" else method
    model = search_model(name, REGRESSION_TASKS, **options.get(method, {}))
    model.fit(pair_dataset().repeat(steps), epochs=1, verbose=0)
    assert int(model.search_step.numpy()) == steps
    return model.method.derive().to_json(), _values(model.method.trainable_variables)


@pytest.mark.parametrize("method", [*METHODS, "mtnas_factorised"])
def test_same_seed_same_derived_spec(method):
    """The seed fixes the weights, the sampled routes and hence the architecture variables
    bit for bit, so the derived spec too; another seed gives other architecture values (the
    test would pass vacuously if nothing depended on the seed)."""
    spec_1, arch_1 = _search(method, seed=5)
    spec_2, arch_2 = _search(method, seed=5)
    assert spec_1 == spec_2
    for a, b in zip(arch_1, arch_2, strict=True):
        np.testing.assert_array_equal(a, b)
    _, arch_other = _search(method, seed=6)
    assert any(not np.array_equal(a, b) for a, b in zip(arch_1, arch_other, strict=True))


@pytest.mark.parametrize("method", METHODS)
def test_search_under_mixed_bfloat16(method):
    """The supernet computes in bfloat16, the architecture stays float32, and it learns."""
    reference = search_model(method)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed = search_model(method)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    mixed.set_weights(reference.get_weights())
    assert mixed.sharing.compute_dtype == "bfloat16"
    assert {v.dtype for v in mixed.method.weights} == {tf.float32}
    x, _ = _batch(np.random.default_rng(3))
    got, expected = mixed(x), reference(x)
    for task in ("click", "watch"):
        assert got[task].dtype == tf.float32
        # bfloat16 keeps 8 bits of mantissa: the same weights give the same outputs to ~1e-2.
        np.testing.assert_allclose(got[task].numpy(), expected[task].numpy(), atol=3e-2)
    arch_before = _values(mixed.method.trainable_variables)
    history = mixed.fit(pair_dataset().repeat(10), verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert any(_changed(arch_before, mixed.method.trainable_variables))
    assert not mixed.method.derive().searched


@pytest.mark.parametrize("halves", [False, True])
def test_an_epoch_advances_the_step_counters_once_per_batch(halves):
    """Keras ends an epoch of unknown length by calling the train step until the input runs
    out; that last call has no data but advanced the optimizers' and the search's step
    counters, so a search resumed after a kill drew its seeded routes one step off the
    uninterrupted run's. The search pairs report their length, so no such call is made."""
    from tfmtnas.data import make_synthetic
    from tfmtnas.data.sources import num_rows, search_pairs

    data = make_synthetic(num_train=100, num_validation=30, num_test=10, dim=3, seed=0)
    epoch = tf.Variable(0, dtype=tf.int64)
    pairs, rows = search_pairs(data, halves, batch_size=16, seed=0, epoch=epoch)
    assert rows == num_rows(data, "train", half=0 if halves else None)
    batches = -(-rows // 16)
    assert int(pairs.cardinality()) == batches == len(list(pairs))
    names = [t.name for t in data.tasks]
    model = SearchModel(data.spec, data.tasks,
                        make_method("gumbel", search_space("gumbel", names, 1, 2, (4,))),
                        embedding_dim=2, tower_units=(4,))
    model.compile(keras.optimizers.Adam(0.01), jit_compile=False)
    model.fit(pairs, epochs=2, verbose=0)
    assert [int(model.search_step), int(model.optimizer.iterations),
            int(model.arch_optimizer.iterations)] == [2 * batches] * 3
