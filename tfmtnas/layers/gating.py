"""Gate math: pure functions that turn gate parameters into mixing weights and mix experts.

The one implementation behind every gated mixer in tfmtnas: :class:`~tfmtnas.layers.ExpertGate`
(hence MMoE, CGC/PLE and cross-stitch networks) and the mixer groups of
:class:`~tfmtnas.search.RoutingNetwork`. Both keep their own variables and call these
functions on them; nothing here creates a variable.

Shapes: ``B`` examples, ``C`` consumers (tasks, next-layer experts), ``E`` producers
(experts of the layer below), ``H`` producer width. Weights are ``[C, E]`` when they do not
depend on the example and ``[B, C, E]`` when they do. A *mask* is a static NumPy ``[C, E]``
0/1 array of which producers a consumer may read; a *multiplier* is a tensor of the same
shape (or ``[B, C, E]``) that a search method varies (hard 0/1, straight-through or relaxed).

Gate kinds:

- **mean**: the average of the readable producers (:func:`mean_weights`, :func:`normalise`).
- **static**: learned input-independent weights of any sign, zero where masked
  (:func:`static_weights`): a cross-stitch unit, Misra et al., "Cross-stitch Networks for
  Multi-task Learning", CVPR 2016.
- **softmax**: a softmax over the readable producers of ``query @ K[c] + b[c]``
  (:func:`softmax_logits`, :func:`masked_softmax`, :func:`softmax_weights`): the gating
  network of MMoE (Ma et al., KDD 2018) and PLE (Tang et al., RecSys 2020).
- **nddr**: gated producers fused by a per-producer ``[H, H]`` kernel (:func:`nddr_fuse`,
  initialised by :func:`nddr_init`); the caller applies batch normalisation. NDDR-CNN (Gao et
  al., CVPR 2019) as used by MTL-NAS (Gao et al., CVPR 2020).

Example:
    >>> mask = np.array([[1, 1, 0], [0, 1, 1]])
    >>> logits = softmax_logits(tf.ones([4, 5]), tf.ones([2, 5, 3]), tf.zeros([2, 3]))
    >>> w = masked_softmax(logits, mask)
    >>> w[0].numpy().round(2).tolist()
    [[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]]
    >>> mix(w, tf.ones([4, 3, 8])).shape
    TensorShape([4, 2, 8])
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def large_negative(dtype: tf.DType) -> float:
    """A finite logit that softmax maps to zero, representable in ``dtype``.

    Example:
        >>> large_negative(tf.float32), large_negative(tf.float16)
        (-1000000000.0, -30000.0)
    """
    return -1e9 if tf.as_dtype(dtype).size >= 4 else -3e4


def mean_weights(mask: np.ndarray) -> np.ndarray:
    """The mean gate of a fixed mask: each row divided by its sum (NumPy, float64).

    Also the default start of a static gate. Every row must have a 1.

    Args:
        mask: ``[C, E]`` 0/1.

    Example:
        >>> mean_weights(np.array([[1, 0, 1], [1, 1, 1]])).round(3).tolist()
        [[0.5, 0.0, 0.5], [0.333, 0.333, 0.333]]
    """
    mask = np.asarray(mask, np.float64)
    return mask / mask.sum(axis=-1, keepdims=True)


def normalise(weights: tf.Tensor) -> tf.Tensor:
    """``weights`` divided by their sum over the last axis; a row summing to 0 stays 0.

    The mean gate under a multiplier, and the renormalisation of softmax weights under
    one. Dividing an all-zero row by 1 instead of by a tiny epsilon computes the same zeros
    but keeps the gradient finite: a straight-through mask row sampled all-off would
    otherwise send ``1 / epsilon``-sized gradients to the architecture logits.

    Args:
        weights: ``[..., E]`` non-negative.

    Example:
        >>> normalise(tf.constant([[1.0, 3.0], [0.0, 0.0]])).numpy().tolist()
        [[0.25, 0.75], [0.0, 0.0]]
    """
    total = tf.reduce_sum(weights, -1, keepdims=True)
    return weights / tf.where(total > 0, total, tf.ones_like(total))


def static_weights(weights: tf.Tensor, mask) -> tf.Tensor:
    """A static gate: the learned ``weights`` (any sign, not normalised) zeroed where masked.

    Args:
        weights: ``[C, E]`` learned weights.
        mask: ``[C, E]`` or ``[B, C, E]`` mask or multiplier.

    Example:
        >>> static_weights(tf.constant([[0.9, -0.1, 0.2]]), tf.constant([[1.0, 0.0, 1.0]]))
        <tf.Tensor: shape=(1, 3), dtype=float32, numpy=array([[ 0.9, -0. ,  0.2]], dtype=float32)>
    """
    return weights * mask


def softmax_logits(query: tf.Tensor, kernel: tf.Tensor, bias: tf.Tensor | None = None
                   ) -> tf.Tensor:
    """Every consumer's gate logits in one batched ``einsum``: ``query @ kernel[c] + bias[c]``.

    Args:
        query: ``[B, D]`` read by every consumer, or ``[B, C, D]`` one per consumer.
        kernel: ``[C, D, E]``.
        bias: ``[C, E]`` or ``None`` (default; the caller adds it).

    Returns:
        ``[B, C, E]``.

    Example:
        >>> softmax_logits(tf.ones([4, 5]), tf.ones([2, 5, 3])).shape
        TensorShape([4, 2, 3])
    """
    equation = "bd,cde->bce" if query.shape.rank == 2 else "bcd,cde->bce"
    logits = tf.einsum(equation, query, kernel)
    return logits if bias is None else logits + bias


def masked_softmax(logits: tf.Tensor, mask) -> tf.Tensor:
    """Softmax over the last axis in which masked producers get exactly zero weight.

    Masked logits are replaced by :func:`large_negative` (so they get no gradient either);
    an all-ones mask leaves the logits as they are.

    Args:
        logits: ``[B, C, E]``.
        mask: static ``[C, E]`` 0/1 (NumPy or nested lists); every row needs a 1.

    Example:
        >>> masked_softmax(tf.zeros([1, 1, 3]), [[1, 0, 1]]).numpy().tolist()
        [[[0.5, 0.0, 0.5]]]
    """
    allowed = np.asarray(mask) > 0
    if not allowed.all():
        fill = tf.constant(large_negative(logits.dtype), logits.dtype)
        logits = tf.where(tf.constant(allowed), logits, fill)
    return tf.nn.softmax(logits, axis=-1)


def softmax_weights(logits: tf.Tensor, mask, multiplier: tf.Tensor | None = None
                    ) -> tf.Tensor:
    """A softmax gate's weights: :func:`masked_softmax`, then optionally a multiplier.

    With a ``multiplier`` the masked softmax is multiplied by it and renormalised
    (:func:`normalise`): the gate then spreads its weight over the producers the
    multiplier keeps, as the routing network's searched and derived mixers do.

    Args:
        logits: ``[B, C, E]``.
        mask: static ``[C, E]`` 0/1, the producers the gate may ever read.
        multiplier: ``[C, E]`` or ``[B, C, E]``, or ``None`` (default).

    Example:
        >>> w = softmax_weights(tf.zeros([1, 1, 3]), [[1, 1, 1]], tf.constant([[1.0, 1, 0]]))
        >>> w.numpy().tolist()
        [[[0.5, 0.5, 0.0]]]
    """
    weights = masked_softmax(logits, mask)
    return weights if multiplier is None else normalise(weights * multiplier)


def mix(weights: tf.Tensor, experts: tf.Tensor) -> tf.Tensor:
    """Per-consumer weighted sums ``out[b, c] = sum_e w[(b,) c, e] * experts[b, e]``.

    Args:
        weights: ``[C, E]`` or ``[B, C, E]``.
        experts: ``[B, E, H]``.

    Returns:
        ``[B, C, H]``.

    Example:
        >>> mix(tf.constant([[0.5, 0.5]]), tf.constant([[[1.0], [3.0]]])).numpy().tolist()
        [[[2.0]]]
    """
    equation = "bce,beh->bch" if weights.shape.rank == 3 else "ce,beh->bch"
    return tf.einsum(equation, weights, experts)


def nddr_fuse(mask: tf.Tensor, experts: tf.Tensor, kernels: tf.Tensor) -> tf.Tensor:
    """NDDR fusion before its batch normalisation: ``sum_e m[n, e] * experts[:, e] @ K[n, e]``.

    This is the 1x1 convolution (a dense layer without bias) on the concatenated, gated
    producers, with the kernel split per producer.

    Args:
        mask: ``[N, E]`` or ``[B, N, E]`` mask or multiplier of the ``N`` NDDR consumers.
        experts: ``[B, E, H]``.
        kernels: ``[N, E, H, K]``.

    Returns:
        ``[B, N, K]``.

    Example:
        >>> kernels = tf.constant(nddr_init(np.ones([1, 2]), [0], 3), tf.float32)
        >>> fused = nddr_fuse(tf.ones([1, 2]), tf.ones([4, 2, 3]), kernels)
        >>> fused.shape, float(fused[0, 0, 0])
        (TensorShape([4, 1, 3]), 1.0)
    """
    equation = "bne,beh,nehk->bnk" if mask.shape.rank == 3 else "ne,beh,nehk->bnk"
    return tf.einsum(equation, mask, experts, kernels)


def nddr_init(candidates: np.ndarray, own: list[int], width: int, cross: float = 0.0
              ) -> np.ndarray:
    """Initial NDDR kernels: the identity on each consumer's own producer (MTL-NAS).

    Args:
        candidates: ``[N, E]`` 0/1, the producers each NDDR consumer may read.
        own: per consumer, the index of its own producer.
        width: ``H``, the producer width.
        cross: the multiple of the identity on every other candidate (default 0).

    Returns:
        ``[N, E, H, H]`` float32.

    Example:
        >>> nddr_init(np.ones([1, 2]), [1], 2, cross=0.5)[0].tolist()
        [[[0.5, 0.0], [0.0, 0.5]], [[1.0, 0.0], [0.0, 1.0]]]
    """
    candidates = np.asarray(candidates)
    kernels = np.zeros((len(candidates), candidates.shape[1], width, width), np.float32)
    for n, row in enumerate(candidates):
        for e in np.flatnonzero(row):
            kernels[n, e] = cross * np.eye(width)
        kernels[n, own[n]] = np.eye(width)
    return kernels
