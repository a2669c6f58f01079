"""The routing network: a Keras layer that computes any :class:`RoutingSpec`.

Experts of one layer run as one batched ``einsum`` (:class:`tfmtnas.layers.ExpertBank`);
the mixers of one layer run as a few batched ``einsum`` s (one per gate kind), computed by
:mod:`tfmtnas.layers.gating` as in the dedicated layers. A fixed spec is pruned before it is
built, so experts that reach no task are never computed.

A search method drives a searched spec by passing ``routes``: per mixer group a connection
multiplier ``[C, E]`` or ``[batch, C, E]`` (hard 0/1, straight-through or relaxed) and, when
``search_queries`` is on, a one-hot query choice ``[C, 1 + M]`` (input, or one of the ``M``
mixers of the layer below).

Example:
    >>> from tfmtnas.search import preset
    >>> net = RoutingNetwork(preset("mmoe", ["a", "b"], expert_units=(8,), num_experts=3))
    >>> [t.shape for t in net(tf.ones([2, 5]))]
    [TensorShape([2, 8]), TensorShape([2, 8])]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from tfmtnas import keras
from tfmtnas.layers import ExpertBank, _util, gating
from tfmtnas.search.spec import INPUT, RoutingSpec, prune


@dataclasses.dataclass
class MixerGroup:
    """Static description of the mixers that read one layer of experts (numpy, no tensors)."""

    producer_layer: int
    names: list[str]
    candidates: np.ndarray  # [C, E] 0/1: which producers each mixer may read
    fixed_mask: np.ndarray  # [C, E] the spec's mask (candidates where searched)
    searched: np.ndarray  # [C] bool
    gates: list[str]
    query: list[int]  # -1: the input, m >= 0: mixer m of the producing layer
    static_init: np.ndarray  # [C, E]
    num_query_mixers: int  # mixers of the producing layer (query options besides the input)
    first: list[int]  # per mixer, the producer index of its first listed candidate (own feature)
    # The producers, in column order: the producing layer's experts, then those of any
    # earlier layers the group's mixers read (skip edges), nearest layer first.
    producers: list[str] = dataclasses.field(default_factory=list)
    producer_layers: list[int] = dataclasses.field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        return self.candidates.shape


def mixer_groups(spec: RoutingSpec) -> list[MixerGroup]:
    """One :class:`MixerGroup` per layer above 0 and one for the task outputs."""
    groups = []
    for p, mixers in spec.mixer_layers():
        layer_of = {e.name: q for q, ly in enumerate(spec.layers[:p + 1]) for e in ly.experts}
        deepest = min([p] + [layer_of[c] for m in mixers for c in m.candidates])
        layers = list(range(p, deepest - 1, -1))
        producers = [e.name for q in layers for e in spec.layers[q].experts]
        below = [m.name for m in spec.layers[p].mixers]
        c, e = len(mixers), len(producers)
        cand, mask, init = np.zeros((c, e)), np.zeros((c, e)), np.zeros((c, e))
        for i, m in enumerate(mixers):
            idx = [producers.index(n) for n in m.candidates]
            cand[i, idx] = 1
            mask[i, idx] = 1 if m.mask is None else m.mask
            # A static gate without static_init starts as the mean of its candidates.
            init[i, idx] = m.static_init or gating.mean_weights(np.ones(len(idx)))
        groups.append(MixerGroup(
            p, [m.name for m in mixers], cand, mask, np.array([m.searched for m in mixers]),
            [m.gate for m in mixers],
            [-1 if m.query == INPUT else below.index(m.query) for m in mixers], init,
            len(below), [producers.index(m.candidates[0]) for m in mixers], producers,
            layers))
    return groups


def _no_rows() -> np.ndarray:
    return np.zeros(0, np.int64)


@dataclasses.dataclass(eq=False)
class GroupGates:
    """The gate weights of one :class:`MixerGroup` and the mixer indices that address them.

    The group's mixers are split by gate kind; each kind's weights hold one row per mixer
    of that kind, in the order of the kind's index array. Weights of a kind the group does
    not use are ``None``.

    Attributes:
        softmax: positions (in the group's mixer list) of the softmax mixers; likewise
            ``static``, ``mean`` and ``nddr``.
        restore: the permutation that puts the kinds' outputs, concatenated in the order
            softmax, static, mean, nddr, back into mixer order.
        bias: softmax logit bias ``[S, E]`` (``S`` softmax mixers, ``E`` producers).
        kernel_input: softmax logit kernel on the input, one row per entry of
            ``input_rows``: ``[S_in, d, E]``; with ``search_queries`` one per softmax mixer.
        kernel_mixer: softmax logit kernel on a mixer of the layer below, one row per
            entry of ``mixer_rows``: ``[S_mq, h, E]``; with ``search_queries``
            ``[S, M * h, E]``, one ``h``-slice per mixer below.
        input_rows: fixed queries: the softmax mixers (positions in ``softmax``) that
            query the input.
        mixer_rows: fixed queries: the softmax mixers that query a mixer below.
        query_mixers: per entry of ``mixer_rows``, the mixer below it queries.
        static_weights: static gate weights ``[S_static, E]``.
        nddr_weights: NDDR fusion kernels ``[N, E, h, h]``.
        nddr_bn: batch normalisation of the ``N`` fused NDDR features.
    """

    softmax: np.ndarray
    static: np.ndarray
    mean: np.ndarray
    nddr: np.ndarray
    restore: np.ndarray
    bias: tf.Variable | None = None
    kernel_input: tf.Variable | None = None
    kernel_mixer: tf.Variable | None = None
    input_rows: np.ndarray = dataclasses.field(default_factory=_no_rows)
    mixer_rows: np.ndarray = dataclasses.field(default_factory=_no_rows)
    query_mixers: np.ndarray = dataclasses.field(default_factory=_no_rows)
    static_weights: tf.Variable | None = None
    nddr_weights: tf.Variable | None = None
    nddr_bn: keras.layers.BatchNormalization | None = None


@keras.utils.register_keras_serializable(package="tfmtnas")
class RoutingNetwork(keras.layers.Layer):
    """Compute a routing graph: ``[batch, d]`` -> one ``[batch, h]`` tensor per task.

    Args:
        spec: the :class:`RoutingSpec` (or its dict form).
        activation: activation of the experts (default ``"relu"``).
        search_queries: give softmax mixers a kernel for every query option so a search
            method can choose the query per step (MTNAS); default ``False``.
        prune_fixed: prune a fixed spec to the experts that reach a task (default ``True``).
        nddr_cross_init: initial NDDR weight on every candidate other than a mixer's own
            (first) one, as a multiple of the identity; default 0 (identity on the own
            feature, zero elsewhere).

    Papers: the space generalises MMoE (Ma et al., KDD 2018), PLE (Tang et al., RecSys
    2020) and cross-stitch networks (Misra et al., CVPR 2016); the searched form follows
    Chen et al., arXiv 2009.00387, Maziarz et al., arXiv 1910.04915, Gao et al., CVPR 2020.
    """

    def __init__(self, spec: RoutingSpec | Mapping, activation="relu",
                 search_queries: bool = False, prune_fixed: bool = True,
                 nddr_cross_init: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        spec = spec if isinstance(spec, RoutingSpec) else RoutingSpec.from_dict(spec)
        self.source_spec = spec
        self.spec = prune(spec) if prune_fixed and not spec.searched else spec
        self.activation = activation
        self.search_queries = bool(search_queries)
        self.prune_fixed = bool(prune_fixed)
        self.nddr_cross_init = float(nddr_cross_init)
        self.groups = mixer_groups(self.spec)

    # -- build -------------------------------------------------------------------------
    def build(self, input_shape):
        d = int(input_shape[-1])
        spec = self.spec
        self.banks = [ExpertBank(len(ly.experts), ly.units, self.activation,
                                 name=f"experts_{i}", dtype=self.dtype_policy)
                      for i, ly in enumerate(spec.layers)]
        width = [ly.units[-1] for ly in spec.layers]
        in_dim = d
        for i, bank in enumerate(self.banks):
            shape = [None, in_dim] if i == 0 else [None, len(spec.layers[i].experts), in_dim]
            bank.build(tf.TensorShape(shape))
            in_dim = width[i]
        self.group_gates = [
            self._build_group(g_i, g, d, width[g.producer_layer],
                              width[g.producer_layer - 1] if g.producer_layer > 0 else None)
            for g_i, g in enumerate(self.groups)]
        # Checkpoints name each NDDR batch normalisation gate_vars/<group>/nddr_bn (the
        # layer's checkpoint layout before GroupGates); keeping that path lets weights
        # saved earlier restore. Everything else is in ``group_gates``.
        self.gate_vars = [{} if gates.nddr_bn is None else {"nddr_bn": gates.nddr_bn}
                          for gates in self.group_gates]
        super().build(input_shape)

    def _build_group(self, g_i: int, g: MixerGroup, d: int, h_p: int,
                     h_q: int | None) -> GroupGates:
        c, e = g.shape
        kinds = np.array(g.gates)
        soft, static, mean, nddr = (np.flatnonzero(kinds == k)
                                    for k in ("softmax", "static", "mean", "nddr"))
        gates = GroupGates(soft, static, mean, nddr,
                           restore=np.argsort(np.concatenate([soft, static, mean, nddr])))
        init = _util.per_slice_initializer("glorot_uniform")
        add = lambda name, shape, initializer: self.add_weight(  # noqa: E731
            name=f"g{g_i}_{name}", shape=shape, initializer=initializer, dtype=self.dtype)
        if len(soft):
            if self.search_queries:
                gates.kernel_input = add("kernel_input", [len(soft), d, e], init)
                if g.num_query_mixers:
                    gates.kernel_mixer = add("kernel_mixers",
                                             [len(soft), g.num_query_mixers * h_q, e], init)
            else:
                q = np.array(g.query)[soft]
                gates.input_rows, gates.mixer_rows = np.flatnonzero(q < 0), np.flatnonzero(q >= 0)
                gates.query_mixers = q[q >= 0]
                if len(gates.input_rows):
                    gates.kernel_input = add("kernel_input", [len(gates.input_rows), d, e], init)
                if len(gates.mixer_rows):
                    gates.kernel_mixer = add("kernel_mixer", [len(gates.mixer_rows), h_q, e],
                                             init)
            gates.bias = add("bias", [len(soft), e], "zeros")
        if len(static):
            vals = (g.static_init * g.candidates)[static]
            gates.static_weights = add("static", list(vals.shape),
                                       keras.initializers.Constant(vals.tolist()))
        if len(nddr):
            own = gating.nddr_init(g.candidates[nddr], [g.first[row] for row in nddr], h_p,
                                   self.nddr_cross_init)
            gates.nddr_weights = add("nddr", list(own.shape), keras.initializers.Constant(own))
            # Over several replicas, batch statistics of the global batch (as one device
            # would compute them), not of each replica's share.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            gates.nddr_bn = keras.layers.BatchNormalization(name=f"g{g_i}_nddr_bn",
                                                            synchronized=replicas > 1,
                                                            dtype=self.dtype_policy)
            gates.nddr_bn.build(tf.TensorShape([None, len(nddr) * h_p]))
        return gates

    def nddr_variables(self) -> list[tf.Variable]:
        """The NDDR fusion layers' trainable weights: kernels, batch-norm scales and offsets."""
        out = []
        for gates in self.group_gates:
            if gates.nddr_weights is not None:
                out += [gates.nddr_weights, *gates.nddr_bn.trainable_variables]
        return out

    # -- call --------------------------------------------------------------------------
    def call(self, inputs, routes: Sequence[Mapping] | None = None, training=None):
        """Outputs per task; ``routes[g]`` may hold ``"mask"`` and ``"query"`` for group g."""
        x = tf.convert_to_tensor(inputs)
        outputs = self.banks[0](x)  # [B, E0, H0]
        by_layer = [outputs]
        mixed_below = None
        result = None
        for g_i, g in enumerate(self.groups):
            route = routes[g_i] if routes is not None else {}
            if len(g.producer_layers) > 1:  # skip edges: earlier layers' experts too
                outputs = tf.concat([by_layer[q] for q in g.producer_layers], axis=1)
            mixed = self._mix(g_i, g, x, outputs, mixed_below, route, training)
            if g_i + 1 < len(self.groups):
                layer = self.spec.layers[g.producer_layer + 1]
                names = g.names
                idx = [names.index(e.input) for e in layer.experts]
                outputs = self.banks[g.producer_layer + 1](tf.gather(mixed, idx, axis=1))
                by_layer.append(outputs)
                mixed_below = mixed
            else:
                result = [mixed[:, i] for i in range(len(self.spec.tasks))]
        return result

    def _mix(self, g_i, g, x, producers, mixed_below, route, training):
        gates = self.group_gates[g_i]
        dtype = producers.dtype
        cand = tf.constant(g.candidates, dtype)
        mask = route.get("mask")
        mask = tf.constant(g.fixed_mask, dtype) if mask is None else tf.cast(mask, dtype) * cand
        pieces = []
        if len(gates.softmax):
            logits = (self._softmax_logits(gates, g, x, mixed_below, route.get("query"))
                      + gates.bias)
            sel = gates.softmax
            w = gating.softmax_weights(logits, g.candidates[sel], tf.gather(mask, sel, axis=-2))
            pieces.append(gating.mix(w, producers))
        if len(gates.static):
            m = tf.gather(mask, gates.static, axis=-2)
            pieces.append(gating.mix(gating.static_weights(gates.static_weights, m), producers))
        if len(gates.mean):
            m = tf.gather(mask, gates.mean, axis=-2)
            pieces.append(gating.mix(gating.normalise(m), producers))
        if len(gates.nddr):
            m = tf.gather(mask, gates.nddr, axis=-2)
            fused = gating.nddr_fuse(m, producers, gates.nddr_weights)
            n, h = fused.shape[1], fused.shape[2]
            fused = gates.nddr_bn(tf.reshape(fused, [-1, n * h]), training=training)
            pieces.append(tf.reshape(fused, [-1, n, h]))
        mixed = tf.concat(pieces, axis=1) if len(pieces) > 1 else pieces[0]
        if len(pieces) > 1:
            mixed = tf.gather(mixed, gates.restore, axis=1)
        return mixed

    def _softmax_logits(self, gates: GroupGates, g, x, mixed_below, query):
        soft = gates.softmax
        if self.search_queries:
            logits = gating.softmax_logits(x, gates.kernel_input)
            if gates.kernel_mixer is None:
                return logits
            if query is None:
                q = np.zeros((len(soft), 1 + g.num_query_mixers), np.float32)
                for j, c in enumerate(soft):
                    q[j, g.query[c] + 1] = 1
                query = tf.constant(q)
            query = tf.cast(tf.gather(query, soft, axis=0), x.dtype)
            # Each mixer query option m has its own kernel slice; the choice is a one-hot mix.
            per = tf.reshape(gates.kernel_mixer, [len(soft), g.num_query_mixers, -1,
                                                  gates.kernel_mixer.shape[-1]])
            below = tf.einsum("bmh,cmhe->bcme", mixed_below, per)
            return (query[:, :1][tf.newaxis] * logits
                    + tf.einsum("cm,bcme->bce", query[:, 1:], below))
        parts = []
        if gates.kernel_input is not None:
            parts.append(gating.softmax_logits(x, gates.kernel_input))
        if gates.kernel_mixer is not None:
            q = tf.gather(mixed_below, gates.query_mixers, axis=1)
            parts.append(gating.softmax_logits(q, gates.kernel_mixer))
        if len(parts) == 1:
            return parts[0]
        order = np.concatenate([gates.input_rows, gates.mixer_rows])
        return tf.gather(tf.concat(parts, axis=1), np.argsort(order), axis=1)

    def get_config(self) -> dict:
        return {**super().get_config(), "spec": self.source_spec.to_dict(),
                "activation": self.activation, "search_queries": self.search_queries,
                "prune_fixed": self.prune_fixed, "nddr_cross_init": self.nddr_cross_init}


def forward_flops(spec, input_dim: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of one example through the pruned network of ``spec``.

    Counts expert matmuls, gate logits and the mixing sums, as :class:`RoutingNetwork`
    computes them; a searched spec is counted as its supernet. A
    :class:`~tfmtnas.search.streams.StreamSpec` is counted by
    :func:`~tfmtnas.search.streams.stream_flops`.
    """
    from tfmtnas.search.streams import StreamSpec, stream_flops

    if isinstance(spec, StreamSpec):
        return stream_flops(spec, input_dim)
    spec = prune(spec) if not spec.searched else spec
    total, d_in = 0, input_dim
    widths = [ly.units[-1] for ly in spec.layers]
    for i, ly in enumerate(spec.layers):
        prev = d_in if i == 0 else widths[i - 1]
        for u in ly.units:
            total += 2 * len(ly.experts) * prev * u
            prev = u
    for g in mixer_groups(spec):
        c, e = g.shape
        h_p = widths[g.producer_layer]
        for i, gate in enumerate(g.gates):
            total += 2 * e * h_p
            if gate == "softmax":
                q = input_dim if g.query[i] < 0 else widths[g.producer_layer - 1]
                total += 2 * q * e
            elif gate == "nddr":
                total += 2 * e * h_p * h_p
    return total
