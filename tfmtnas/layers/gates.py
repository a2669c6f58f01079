"""Gates that mix a bank of experts into one output per consumer (task, next-layer expert).

The layer owns the gate's variables and checks; the math is :mod:`tfmtnas.layers.gating`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tfmtnas import keras
from tfmtnas.layers import _util, gating

GATE_KINDS = ("softmax", "mean", "static")


@keras.utils.register_keras_serializable(package="tfmtnas")
class ExpertGate(keras.layers.Layer):
    """Per-consumer weighted sums of experts: ``out[b, c] = sum_e w[b, c, e] * experts[b, e]``.

    A connection ``mask`` (``num_consumers x num_experts``, 0/1) says which experts each
    consumer may read; masked experts always get weight 0. The weights ``w`` depend on
    ``kind``:

    - ``"softmax"``: ``w[b, c] = softmax(query[b] @ K[c] + bias[c])`` over the consumer's
      unmasked experts (the gating network of MMoE, Ma et al., KDD 2018, and of PLE, Tang et
      al., RecSys 2020). All consumers' logits are one batched ``einsum`` with a kernel
      ``[num_consumers, d_query, num_experts]``.
    - ``"mean"``: uniform average over the unmasked experts; no weights, query ignored.
    - ``"static"``: learned input-independent linear weights ``[num_consumers, num_experts]``
      (no softmax, any sign), e.g. a cross-stitch unit (Misra et al., CVPR 2016,
      "Cross-stitch Networks for Multi-task Learning"). Initialised from ``static_init``,
      by default the ``"mean"`` weights; query ignored.

    Inputs:
        ``[query, experts]`` with ``experts`` ``[batch, num_experts, h]`` and ``query``
        ``[batch, d_query]`` (shared by all consumers) or ``[batch, num_consumers, d_query]``
        (one per consumer). For ``"mean"`` and ``"static"`` the query may be ``None``, and
        ``experts`` alone may be passed instead of the list.

    Output:
        ``[batch, num_consumers, h]``.

    Args:
        num_consumers: number of consumers ``C`` (>= 1).
        num_experts: number of experts ``E`` (>= 1).
        kind: ``"softmax"`` (default), ``"mean"`` or ``"static"``.
        mask: ``C x E`` nested list of 0/1, each row with at least one 1; ``None`` (default)
            connects every consumer to every expert.
        static_init: ``C x E`` initial weights of a ``"static"`` gate; ``None`` (default) uses
            the mean weights (``mask`` rows divided by their sums). Masked entries are ignored.
        kernel_initializer: initializer of the softmax gate's kernel (per consumer).
            Default ``"glorot_uniform"``.
        **kwargs: standard layer arguments (``name``, ``dtype``, ...).

    Example:
        >>> gate = ExpertGate(num_consumers=2, num_experts=3, mask=[[1, 1, 0], [0, 1, 1]])
        >>> out = gate([tf.ones([4, 5]), tf.ones([4, 3, 8])])
        >>> out.shape
        TensorShape([4, 2, 8])
        >>> float(gate.gate_weights(tf.ones([4, 5]))[0, 0, 2])  # expert 2 is masked for consumer 0
        0.0

    Raises:
        ValueError: bad counts, unknown ``kind``, a mask that is not ``C x E`` 0/1 or has an
            all-zero row, or a ``static_init`` of the wrong shape; the message shows the value.
    """

    def __init__(
        self,
        num_consumers: int,
        num_experts: int,
        kind: str = "softmax",
        mask: Sequence[Sequence[int]] | None = None,
        static_init: Sequence[Sequence[float]] | None = None,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_consumers = _util.check_int("num_consumers", num_consumers, 1)
        self.num_experts = _util.check_int("num_experts", num_experts, 1)
        if kind not in GATE_KINDS:
            raise ValueError(f"kind must be one of {GATE_KINDS}, got {kind!r}.")
        self.kind = kind
        shape = (self.num_consumers, self.num_experts)
        if mask is None:
            mask_array = np.ones(shape)
        else:
            mask_array = _util.check_matrix("mask", mask, *shape)
            if not np.all((mask_array == 0) | (mask_array == 1)):
                raise ValueError(f"mask entries must be 0 or 1, got {mask!r}.")
            empty = np.flatnonzero(mask_array.sum(axis=1) == 0).tolist()
            if empty:
                raise ValueError(f"every mask row needs at least one 1 (consumer rows {empty} "
                                 f"read no expert), got {mask!r}.")
        self.mask = None if mask is None else mask_array.astype(int).tolist()
        self._mask = mask_array
        self._mean_weights = gating.mean_weights(mask_array)
        if static_init is not None:
            if kind != "static":
                raise ValueError(f"static_init is only used by kind='static', got "
                                 f"kind={kind!r} with static_init={static_init!r}.")
            static_array = _util.check_matrix("static_init", static_init, *shape)
            self.static_init = static_array.tolist()
        else:
            self.static_init = None
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel = self.bias = self.static_weights = None

    def build(self, input_shape):
        if self.kind == "softmax":
            query_shape, _ = self._split_shapes(input_shape)
            if query_shape is None or query_shape.rank not in (2, 3):
                raise ValueError(f"{self.name}: a softmax gate needs a query of rank 2 "
                                 f"[batch, d] or 3 [batch, num_consumers, d], got "
                                 f"{query_shape}.")
            if query_shape.rank == 3 and query_shape[1] not in (None, self.num_consumers):
                raise ValueError(f"{self.name}: a rank-3 query must have num_consumers="
                                 f"{self.num_consumers} rows, got shape {query_shape}.")
            d_query = query_shape[-1]
            if d_query is None:
                raise ValueError(f"{self.name}: the last query dimension must be known, got "
                                 f"shape {query_shape}.")
            self.kernel = self.add_weight(
                name="kernel", shape=[self.num_consumers, d_query, self.num_experts],
                initializer=_util.per_slice_initializer(self.kernel_initializer),
                dtype=self.dtype, trainable=True)
            self.bias = self.add_weight(
                name="bias", shape=[self.num_consumers, self.num_experts],
                initializer="zeros", dtype=self.dtype, trainable=True)
        elif self.kind == "static":
            init = self._mean_weights if self.static_init is None else self.static_init
            init = np.asarray(init) * self._mask
            self.static_weights = self.add_weight(
                name="static_weights", shape=[self.num_consumers, self.num_experts],
                initializer=keras.initializers.Constant(init.tolist()), dtype=self.dtype,
                trainable=True)
        super().build(input_shape)

    @staticmethod
    def _split_shapes(input_shape):
        """``(query_shape or None, experts_shape)`` of a layer input shape."""
        if isinstance(input_shape, (list, tuple)) and len(input_shape) == 2 and isinstance(
                input_shape[1], (tf.TensorShape, list, tuple)):
            query, experts = input_shape
            return (None if query is None else tf.TensorShape(query)), tf.TensorShape(experts)
        return None, tf.TensorShape(input_shape)

    def _split(self, inputs):
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 2:
                raise ValueError(f"{self.name}: expected [query, experts], got a list of "
                                 f"{len(inputs)} inputs.")
            query, experts = inputs
        else:
            query, experts = None, inputs
        if experts.shape.rank != 3 or experts.shape[1] not in (None, self.num_experts):
            raise ValueError(f"{self.name}: experts must have shape [batch, num_experts="
                             f"{self.num_experts}, h], got {experts.shape}.")
        if self.kind == "softmax" and query is None:
            raise ValueError(f"{self.name}: a softmax gate needs a query; call it on "
                             f"[query, experts].")
        return query, experts

    def _weights(self, query):
        """``[C, E]`` for mean/static gates, ``[batch, C, E]`` for softmax gates."""
        if self.kind == "mean":
            return tf.constant(self._mean_weights, dtype=self.compute_dtype)
        # Explicit casts: gate_weights() runs outside __call__, where no autocasting happens.
        if self.kind == "static":
            return gating.static_weights(tf.cast(self.static_weights, self.compute_dtype),
                                         tf.constant(self._mask, dtype=self.compute_dtype))
        logits = gating.softmax_logits(tf.cast(query, self.compute_dtype),
                                       tf.cast(self.kernel, self.compute_dtype),
                                       tf.cast(self.bias, self.compute_dtype))
        return gating.masked_softmax(logits, self._mask)

    def gate_weights(self, query=None) -> tf.Tensor:
        """The mixing weights ``[batch, C, E]`` (``[1, C, E]`` for mean/static without query).

        Args:
            query: the gate query (``[batch, d]`` or ``[batch, C, d]``); needed for softmax
                gates, only used for its batch size by mean and static gates.
        """
        if self.kind == "softmax":
            if query is None:
                raise ValueError(f"{self.name}: gate_weights of a softmax gate needs a query.")
            query = tf.convert_to_tensor(query, dtype=self.compute_dtype)
            if not self.built:
                self([query, tf.zeros([tf.shape(query)[0], self.num_experts, 1], query.dtype)])
            return self._weights(query)
        if not self.built:
            self(tf.zeros([1, self.num_experts, 1], self.compute_dtype))
        weights = self._weights(None)[tf.newaxis]
        if query is None:
            return weights
        batch = tf.shape(tf.convert_to_tensor(query))[0]
        return tf.tile(weights, [batch, 1, 1])

    def call(self, inputs):
        query, experts = self._split(inputs)
        return gating.mix(self._weights(query), experts)

    def compute_output_shape(self, input_shape):
        _, experts = self._split_shapes(input_shape)
        return tf.TensorShape([experts[0], self.num_consumers, experts[-1]])

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_consumers": self.num_consumers,
            "num_experts": self.num_experts,
            "kind": self.kind,
            "mask": self.mask,
            "static_init": self.static_init,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
