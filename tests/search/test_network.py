"""RoutingNetwork values against a NumPy forward pass; route multipliers; pruning."""

import numpy as np
import pytest
import tensorflow as tf
from layer_testing import assert_outputs_close, np_expert_bank, np_softmax, randomize_weights

from tfmtnas.search import (
    Expert,
    Layer,
    Mixer,
    RoutingNetwork,
    RoutingSpec,
    forward_flops,
    mixer_groups,
)

RNG = np.random.default_rng(5)
B, D = 4, 5
X = RNG.normal(size=[B, D]).astype(np.float32)
BN_EPS = 1e-3  # keras BatchNormalization default


def hand_spec() -> RoutingSpec:
    """Two layers using every gate kind; softmax gates query the input and a mixer."""
    a = ("a0", "a1", "a2")
    b = ("b0", "b1", "b2", "b3")
    return RoutingSpec(
        ("t0", "t1", "t2", "t3"),
        (Layer((6,), tuple(Expert(n) for n in a)),
         Layer((5,), tuple(Expert(n, m) for n, m in zip(b, ("mA", "mB", "mC", "mD"))),
               (Mixer("mA", a, (1, 0, 1), "mean"),
                Mixer("mB", a, (1, 1, 0), "static", static_init=(0.7, -0.4, 0.25)),
                Mixer("mC", a, (0, 1, 1), "softmax"),
                Mixer("mD", ("a2", "a0", "a1"), (1, 1, 0), "nddr")))),
        (Mixer("t0", b, (1, 1, 0, 1), "softmax", query="mD"),
         Mixer("t1", b[1:], (1, 1, 1), "softmax"),
         Mixer("t2", ("b3", "b0"), (1, 1), "nddr"),
         Mixer("t3", b[:3], (1, 0, 1), "static")))


def built_network(spec, seed=0, **kwargs) -> RoutingNetwork:
    net = RoutingNetwork(spec, **kwargs)
    net(X)
    randomize_weights(net, seed=seed, scale=0.7)
    for gates in net.group_gates:
        if gates.nddr_bn is not None:
            var = gates.nddr_bn.moving_variance
            var.assign(tf.abs(var) + 0.5)
    return net


def spec_masks(spec) -> list[np.ndarray]:
    return [g.fixed_mask for g in mixer_groups(spec)]


def _row(gates, kind, c):
    return list(getattr(gates, kind)).index(c)


def np_mix(net, g_i, x, producers, below, mask, training=False):
    """One mixer group, mixer by mixer: [B, E, H] producers -> [B, C, H]."""
    g, v = net.groups[g_i], net.group_gates[g_i]
    out = []
    for c, gate in enumerate(g.gates):
        m = mask[c] * g.candidates[c]
        if gate == "mean":
            w = np.broadcast_to(m / m.sum(), [len(x), len(m)])
        elif gate == "static":
            w = np.broadcast_to(m * v.static_weights.numpy()[_row(v, "static", c)],
                                [len(x), len(m)])
        elif gate == "softmax":
            pos = _row(v, "softmax", c)
            if g.query[c] < 0:
                logits = x @ v.kernel_input.numpy()[list(v.input_rows).index(pos)]
            else:
                logits = (below[:, g.query[c]]
                          @ v.kernel_mixer.numpy()[list(v.mixer_rows).index(pos)])
            logits = logits + v.bias.numpy()[pos]
            p = np.where(g.candidates[c] > 0, np_softmax(np.where(g.candidates[c] > 0, logits,
                                                                  -np.inf)), 0.0) * m
            w = p / p.sum(-1, keepdims=True)
        else:  # nddr: concat of the gated candidates, dense (no bias), batch norm
            n = _row(v, "nddr", c)
            kernel = v.nddr_weights.numpy()[n]  # [E, H, H], indexed by producer
            fused = sum(m[e] * producers[:, e] @ kernel[e] for e in range(len(m)))
            bn = v.nddr_bn
            h = fused.shape[-1]
            sl = slice(n * h, (n + 1) * h)
            if training:
                mean, var = fused.mean(0), fused.var(0)
            else:
                mean, var = bn.moving_mean.numpy()[sl], bn.moving_variance.numpy()[sl]
            out.append((fused - mean) / np.sqrt(var + BN_EPS) * bn.gamma.numpy()[sl]
                       + bn.beta.numpy()[sl])
            continue
        out.append(np.einsum("be,beh->bh", w, producers))
    return np.stack(out, axis=1)


def np_forward(net, x, masks, training=False):
    """NumPy forward of a built network with per-group [C, E] multipliers ``masks``."""
    x = x.astype(np.float64)
    spec = net.spec
    bank = net.banks[0]
    producers = np_expert_bank(x, [k.numpy() for k in bank.kernels],
                               [b.numpy() for b in bank.biases])
    below = None
    for g_i, g in enumerate(net.groups):
        mixed = np_mix(net, g_i, x, producers, below, masks[g_i], training)
        if g_i + 1 == len(net.groups):
            return [mixed[:, t] for t in range(len(spec.tasks))]
        layer = spec.layers[g.producer_layer + 1]
        inputs = mixed[:, [g.names.index(e.input) for e in layer.experts]]
        bank = net.banks[g.producer_layer + 1]
        producers = np_expert_bank(inputs, [k.numpy() for k in bank.kernels],
                                   [b.numpy() for b in bank.biases])
        below = mixed


@pytest.mark.parametrize("training", [False, True])
def test_hand_spec_matches_numpy(training):
    spec = hand_spec()
    net = built_network(spec, prune_fixed=False)
    assert [g.gates for g in net.groups] == [["mean", "static", "softmax", "nddr"],
                                             ["softmax", "softmax", "nddr", "static"]]
    expected = np_forward(net, X, spec_masks(spec), training=training)
    assert_outputs_close(net(X, training=training), expected)


def test_hand_spec_pruned_build_matches_numpy():
    # Nothing is unreachable here, but pruning drops the masked-out candidates.
    spec = hand_spec()
    net = built_network(spec)
    assert net.spec != spec
    assert all(set(m.mask) == {1} for m in net.spec.all_mixers())
    assert_outputs_close(net(X), np_forward(net, X, spec_masks(net.spec)))


def test_nddr_starts_as_identity_on_its_first_candidate():
    spec = hand_spec()
    net = RoutingNetwork(spec, prune_fixed=False)
    net(X)
    for g, v in zip(net.groups, net.group_gates, strict=True):
        kernel = v.nddr_weights.numpy()
        for n, c in enumerate(v.nddr):
            for e in range(g.shape[1]):
                expected = np.eye(kernel.shape[-1]) if e == g.first[c] else 0.0
                np.testing.assert_array_equal(kernel[n, e], expected)
    # mD's first candidate is a2 (producer 2), t2's is b3 (producer 3).
    assert [g.first[c] for g, c in zip(net.groups, (3, 2), strict=True)] == [2, 3]


def test_route_multipliers():
    spec = hand_spec()
    net = built_network(spec, prune_fixed=False)
    masks = [m.copy() for m in spec_masks(spec)]
    masks[0][2, 1] = 0  # mC now reads a2 only
    masks[0][0, 0] = 0  # mA averages a2 only
    masks[1][3, 0] = 0  # t3 no longer reads b0
    routes = [{"mask": tf.constant(m, tf.float32)} for m in masks]
    out = net(X, routes=routes)
    assert_outputs_close(out, np_forward(net, X, masks))
    assert not np.allclose(out[3], net(X)[3])
    # A zero entry removes that expert: t3 no longer depends on expert b0 at all.
    with tf.GradientTape() as tape:
        t3 = net(X, routes=routes)[3]
    grads = tape.gradient(t3, net.banks[1].kernels)
    assert np.all(grads[0].numpy()[0] == 0) and np.any(grads[0].numpy()[2] != 0)
    # Multipliers outside the candidates are ignored (the candidate matrix gates them).
    ones = [{"mask": tf.ones(g.shape)} for g in net.groups]
    full = [g.candidates for g in net.groups]
    assert_outputs_close(net(X, routes=ones), np_forward(net, X, full))


def test_batched_relaxed_route_multipliers():
    spec = hand_spec()
    net = built_network(spec, prune_fixed=False)
    rng = np.random.default_rng(1)
    masks = [rng.uniform(0.1, 1.0, size=[B, *g.shape]).astype(np.float32) for g in net.groups]
    out = net(X, routes=[{"mask": tf.constant(m)} for m in masks])
    for b in range(B):
        expected = np_forward(net, X[b:b + 1], [m[b] for m in masks])
        assert_outputs_close([o[b:b + 1] for o in out], expected)


def prune_spec(all_on: bool = False) -> RoutingSpec:
    """a2, m2 and b2 reach no task unless ``all_on``."""
    a, b = ("a0", "a1", "a2"), ("b0", "b1", "b2")
    mask = (lambda *m: (1,) * len(m)) if all_on else (lambda *m: m)
    return RoutingSpec(
        ("t0", "t1"),
        (Layer((6,), tuple(Expert(n) for n in a)),
         Layer((4,), tuple(Expert(n, m) for n, m in zip(b, ("m0", "m1", "m2"))),
               (Mixer("m0", a, mask(1, 1, 0), "softmax"),
                Mixer("m1", a, mask(1, 0, 0), "mean"),
                Mixer("m2", a, mask(0, 1, 1), "static")))),
        (Mixer("t0", b, mask(1, 1, 0), "softmax"),
         Mixer("t1", b, mask(0, 1, 0), "static")))


def test_pruned_network_is_cheaper_and_computes_the_same():
    spec = prune_spec()
    pruned = RoutingNetwork(spec)
    pruned(X)
    unpruned = built_network(spec, seed=2, prune_fixed=False)
    full = RoutingNetwork(prune_spec(all_on=True))
    full(X)
    assert [len(ly.experts) for ly in pruned.spec.layers] == [2, 2]
    # banks 2 x (5*6 + 6) + 2 x (6*4 + 4); gates: m0 kernel 5x2 + bias 2; t0 kernel 5x2 +
    # bias 2; t1 static 2.
    assert pruned.count_params() == 72 + 56 + 12 + 12 + 2
    assert pruned.count_params() < unpruned.count_params() == full.count_params()
    # Experts 2*2*5*6 + 2*2*6*4; mixing 2*E*H per mixer; softmax logits 2*D*E.
    assert forward_flops(spec, D) == 120 + 96 + (24 + 20) + 24 + (16 + 20) + 16
    assert forward_flops(spec, D) < forward_flops(prune_spec(all_on=True), D)
    assert forward_flops(spec, D) == forward_flops(pruned.spec, D)

    keep = [0, 1]
    for dst, src in zip(pruned.banks, unpruned.banks, strict=True):
        for d, s in zip(dst.kernels + dst.biases, src.kernels + src.biases, strict=True):
            d.assign(tf.gather(s, keep))
    g0, u0 = pruned.group_gates[0], unpruned.group_gates[0]
    g0.kernel_input.assign(tf.gather(u0.kernel_input, keep, axis=-1))
    g0.bias.assign(tf.gather(u0.bias, keep, axis=-1))
    assert g0.static_weights is None  # m2 is gone
    g1, u1 = pruned.group_gates[1], unpruned.group_gates[1]
    g1.kernel_input.assign(tf.gather(u1.kernel_input, keep, axis=-1))
    g1.bias.assign(tf.gather(u1.bias, keep, axis=-1))
    g1.static_weights.assign(tf.gather(u1.static_weights, keep, axis=-1))
    assert_outputs_close(pruned(X), unpruned(X))


def test_xla_matches_eager():
    net = built_network(hand_spec(), prune_fixed=False)
    assert_outputs_close(tf.function(net, jit_compile=True)(X), net(X), rtol=1e-4, atol=1e-5)


def test_nddr_cross_init_scales_the_identity_on_other_candidates():
    spec = hand_spec()
    net = RoutingNetwork(spec, prune_fixed=False, nddr_cross_init=0.25)
    net(X)
    assert net.get_config()["nddr_cross_init"] == 0.25
    for g, v in zip(net.groups, net.group_gates, strict=True):
        kernel = v.nddr_weights.numpy()
        for n, c in enumerate(v.nddr):
            for e in range(g.shape[1]):
                eye = np.eye(kernel.shape[-1])
                expected = (eye if e == g.first[c] else 0.25 * eye if g.candidates[c, e]
                            else 0.0)
                np.testing.assert_array_equal(kernel[n, e], expected)


def test_an_all_off_mask_row_has_zero_output_and_a_finite_gradient():
    from tfmtnas.search.methods import search_space

    spec = search_space("gumbel_experts", ["a", "b"], num_layers=2, num_experts=3,
                        expert_units=(4,))
    net = RoutingNetwork(spec)
    net(X)
    masks = [tf.Variable(np.ones(g.shape, np.float32)) for g in net.groups]
    masks[1][0].assign([0.0, 0.0, 0.0])  # task a reads no expert
    coeff = tf.constant(RNG.normal(size=[B, 4]), tf.float32)
    with tf.GradientTape() as tape:
        out = net(X, routes=[{"mask": m} for m in masks])
        loss = tf.add_n([tf.reduce_sum(o * coeff) for o in out])
    np.testing.assert_array_equal(out[0].numpy(), 0.0)
    grads = tape.gradient(loss, masks)
    for g in grads:
        assert np.all(np.isfinite(g.numpy()))
    # d/dm_e of sum(m h) / 1 at m = 0 is sum(coeff * h_e), h_e read alone by task b.
    for e in range(3):
        alone = [m.numpy() for m in masks]
        alone[1][1] = np.eye(3)[e]
        h_e = net(X, routes=[{"mask": tf.constant(m)} for m in alone])[1]
        np.testing.assert_allclose(grads[1][0, e], np.sum(coeff * h_e), rtol=1e-4, atol=1e-5)


def _legacy_checkpoint_keys(search_queries: bool) -> list[str]:
    """The checkpoint keys of ``hand_spec``'s network as written before ``GroupGates`` (per
    group a dict ``gate_vars[g]``); weights saved then must restore."""
    kernel_mixer = "g1_kernel_mixers" if search_queries else "g1_kernel_mixer"
    variables = [f"banks/{i}/{w}_0" for i in (0, 1) for w in ("bias", "kernel")]
    variables += [f"g0_{w}" for w in ("bias", "kernel_input", "nddr", "static")]
    variables += ["g1_bias", "g1_kernel_input", kernel_mixer, "g1_nddr", "g1_static"]
    variables += [f"gate_vars/{g}/nddr_bn/{w}" for g in (0, 1)
                  for w in ("beta", "gamma", "moving_mean", "moving_variance")]
    return [f"net/{v}/.ATTRIBUTES/VARIABLE_VALUE" for v in variables]


@pytest.mark.parametrize("search_queries", [False, True])
def test_checkpoint_layout_is_stable(tmp_path, search_queries):
    net = built_network(hand_spec(), prune_fixed=False, search_queries=search_queries)
    path = tf.train.Checkpoint(net=net).write(str(tmp_path / "ckpt"))
    keys = sorted(name for name, _ in tf.train.list_variables(path)
                  if not name.startswith("_CHECKPOINTABLE_OBJECT_GRAPH"))
    assert keys == _legacy_checkpoint_keys(search_queries)
    # Weight order (get_weights/set_weights): gate weights, experts, then batch norms.
    names = [w.name.split("/", 1)[1] for w in net.weights]
    assert names[:9] == [f"g0_{w}:0" for w in ("kernel_input", "bias", "static", "nddr")] + [
        f"g1_{w}:0" for w in ("kernel_input", "kernel_mixers" if search_queries
                              else "kernel_mixer", "bias", "static", "nddr")]
    assert names[9:] == ["kernel_0:0", "bias_0:0"] * 2 + ["gamma:0", "beta:0"] * 2 + [
        "moving_mean:0", "moving_variance:0"] * 2
    again = built_network(hand_spec(), seed=1, prune_fixed=False, search_queries=search_queries)
    tf.train.Checkpoint(net=again).read(path).assert_consumed()
    for a, b in zip(net.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert_outputs_close(again(X, training=True), net(X, training=True), rtol=0, atol=0)
