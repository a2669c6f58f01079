"""The gate functions of ``tfmtnas.layers.gating`` against NumPy references."""

import numpy as np
import pytest
import tensorflow as tf
from layer_testing import assert_outputs_close, np_linear_mix, np_softmax

from tfmtnas.layers import gating

RNG = np.random.default_rng(4)
B, C, E, H, D = 4, 3, 5, 6, 7
MASK = np.array([[1, 1, 0, 0, 1], [0, 0, 1, 0, 0], [1, 1, 1, 1, 1]])
EXPERTS = RNG.normal(size=[B, E, H]).astype(np.float32)
LOGITS = RNG.normal(size=[B, C, E]).astype(np.float32)


def np_masked_softmax(logits, mask):
    return np.where(mask > 0, np_softmax(np.where(mask > 0, logits, -np.inf)), 0.0)


def test_mean_weights():
    expected = [[1 / 3, 1 / 3, 0, 0, 1 / 3], [0, 0, 1, 0, 0], [0.2] * 5]
    np.testing.assert_array_equal(gating.mean_weights(MASK), np.asarray(expected))
    assert gating.mean_weights(MASK).dtype == np.float64


def test_normalise_keeps_zero_rows_zero_with_a_finite_gradient():
    w = tf.Variable([[1.0, 3.0, 0.0], [0.0, 0.0, 0.0]])
    with tf.GradientTape() as tape:
        out = gating.normalise(w)
        loss = tf.reduce_sum(out * [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    np.testing.assert_array_equal(out.numpy(), [[0.25, 0.75, 0.0], [0.0, 0.0, 0.0]])
    grad = tape.gradient(loss, w).numpy()
    assert np.all(np.isfinite(grad))
    # d/dw_e of sum(c * w) / 1 on an all-zero row is c_e.
    np.testing.assert_array_equal(grad[1], [4.0, 5.0, 6.0])


@pytest.mark.parametrize("batched", [False, True])
def test_static_weights_zero_masked_entries_and_keep_signs(batched):
    raw = RNG.normal(size=[C, E]).astype(np.float32)
    mask = np.broadcast_to(MASK, [B, C, E]) if batched else MASK
    out = gating.static_weights(tf.constant(raw), tf.constant(mask, tf.float32)).numpy()
    np.testing.assert_array_equal(out, raw * mask)


@pytest.mark.parametrize("per_consumer", [False, True])
def test_softmax_logits(per_consumer):
    query = RNG.normal(size=[B, C, D] if per_consumer else [B, D]).astype(np.float32)
    kernel = RNG.normal(size=[C, D, E]).astype(np.float32)
    bias = RNG.normal(size=[C, E]).astype(np.float32)
    expected = np.stack([(query[:, c] if per_consumer else query) @ kernel[c] + bias[c]
                         for c in range(C)], axis=1)
    assert_outputs_close(gating.softmax_logits(tf.constant(query), kernel, bias), expected)
    assert_outputs_close(gating.softmax_logits(tf.constant(query), kernel), expected - bias)


def test_masked_softmax_gives_masked_producers_exactly_zero_and_no_gradient():
    logits = tf.Variable(LOGITS)
    with tf.GradientTape() as tape:
        w = gating.masked_softmax(logits, MASK)
        loss = tf.reduce_sum(w * RNG.normal(size=[B, C, E]).astype(np.float32))
    assert_outputs_close(w, np_masked_softmax(LOGITS, MASK))
    assert np.all(w.numpy()[:, MASK == 0] == 0.0)
    np.testing.assert_allclose(w.numpy().sum(-1), 1.0, rtol=1e-6)
    assert np.all(tape.gradient(loss, logits).numpy()[:, MASK == 0] == 0.0)


def test_masked_softmax_with_a_full_mask_is_the_plain_softmax():
    full = gating.masked_softmax(tf.constant(LOGITS), np.ones([C, E]))
    np.testing.assert_array_equal(full.numpy(), tf.nn.softmax(LOGITS).numpy())


@pytest.mark.parametrize("dtype, value", [(tf.float32, -1e9), (tf.float64, -1e9),
                                          (tf.float16, -3e4), (tf.bfloat16, -3e4)])
def test_large_negative_is_finite_in_its_dtype(dtype, value):
    assert gating.large_negative(dtype) == value
    assert np.isfinite(tf.constant(value, dtype).numpy())
    w = gating.masked_softmax(tf.zeros([1, 1, 2], dtype), [[1, 0]])
    np.testing.assert_array_equal(tf.cast(w, tf.float32).numpy(), [[[1.0, 0.0]]])


@pytest.mark.parametrize("batched", [False, True])
def test_softmax_weights_with_a_multiplier_renormalise(batched):
    shape = [B, C, E] if batched else [C, E]
    multiplier = RNG.uniform(0.0, 1.0, size=shape).astype(np.float32)
    multiplier[..., 0, :] = 0.0  # consumer 0 reads nothing: all-zero weights
    p = np_masked_softmax(LOGITS, MASK) * multiplier
    total = p.sum(-1, keepdims=True)
    expected = p / np.where(total > 0, total, 1.0)
    out = gating.softmax_weights(tf.constant(LOGITS), MASK, tf.constant(multiplier))
    assert_outputs_close(out, expected)
    np.testing.assert_array_equal(out.numpy()[:, 0], 0.0)
    # Without a multiplier, the masked softmax itself.
    np.testing.assert_array_equal(gating.softmax_weights(tf.constant(LOGITS), MASK).numpy(),
                                  gating.masked_softmax(tf.constant(LOGITS), MASK).numpy())


def test_mix():
    weights = RNG.normal(size=[C, E]).astype(np.float32)
    assert_outputs_close(gating.mix(tf.constant(weights), EXPERTS),
                         np_linear_mix(weights, EXPERTS))
    per_example = RNG.normal(size=[B, C, E]).astype(np.float32)
    expected = np.stack([np_linear_mix(per_example[b], EXPERTS[b:b + 1])[0] for b in range(B)])
    assert_outputs_close(gating.mix(tf.constant(per_example), EXPERTS), expected)


@pytest.mark.parametrize("batched", [False, True])
def test_nddr_fuse(batched):
    n, k = 2, 3
    kernels = RNG.normal(size=[n, E, H, k]).astype(np.float32)
    mask = RNG.uniform(size=[B, n, E] if batched else [n, E]).astype(np.float32)
    m = mask if batched else np.broadcast_to(mask, [B, n, E])
    expected = np.stack([sum(m[:, j, e, None] * (EXPERTS[:, e] @ kernels[j, e])
                             for e in range(E)) for j in range(n)], axis=1)
    assert_outputs_close(gating.nddr_fuse(tf.constant(mask), EXPERTS, kernels), expected)


def test_nddr_init_is_the_identity_on_the_own_producer():
    candidates = np.array([[1, 1, 0], [0, 1, 1]])
    kernels = gating.nddr_init(candidates, [1, 2], 4, cross=0.25)
    assert kernels.shape == (2, 3, 4, 4) and kernels.dtype == np.float32
    eye = np.eye(4)
    for n, own, others, off in ((0, 1, [0], [2]), (1, 2, [1], [0])):
        np.testing.assert_array_equal(kernels[n, own], eye)
        for e in others:
            np.testing.assert_array_equal(kernels[n, e], 0.25 * eye)
        for e in off:
            np.testing.assert_array_equal(kernels[n, e], 0.0)
    # With the identity on the own producer only, fusing returns that producer.
    producers = EXPERTS[:, :3, :4]
    fused = gating.nddr_fuse(tf.constant(candidates, tf.float32), producers,
                             gating.nddr_init(candidates, [1, 2], 4))
    np.testing.assert_array_equal(fused.numpy(), producers[:, [1, 2]])

