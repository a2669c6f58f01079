"""Which experts a route computes: the cost side of a search, as a differentiable tensor.

An expert costs something at serving time only if it reaches a task (a derived child prunes
the others, :func:`tfmtnas.search.spec.prune`). :class:`ExpertUsage` computes, from per-group
connection masks, the fraction of the space's experts that reach some task:

``used(e) = 1 - prod_c (1 - m[c, e] * used(c))`` over the consumers ``c`` that may read ``e``,
where a task output is always used and a mixer is used when an expert that reads it is.
With 0/1 masks this is exactly the pruned child's expert count; with probabilities it is the
expected usage when entries are independent Bernoulli variables (exact for up to two
layers; deeper, upper-layer usages are shared by several experts below and correlate).

A search that pays for usage shares experts where sharing costs no accuracy, which is what
makes "share more when tasks are more related" a well-posed goal when sharing gives no
statistical gain by itself (see docs/results.md, "Negative transfer").

Example:
    >>> usage = ExpertUsage(preset("mmoe", ["a", "b"], expert_units=(4,), num_experts=2))
    >>> float(usage([tf.constant([[1.0, 0.0], [1.0, 0.0]])]))  # both tasks read expert 0
    0.5
    >>> float(usage([tf.constant([[0.5, 0.0], [0.5, 0.0]])]))  # 1 - (1 - 0.5)^2 of 2 experts
    0.375
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tfmtnas.search.network import mixer_groups
from tfmtnas.search.spec import RoutingSpec, preset  # noqa: F401 (docstring)


class ExpertUsage:
    """Fraction of the experts of ``spec`` that reach a task, given each group's mask."""

    def __init__(self, spec: RoutingSpec):
        self.groups = mixer_groups(spec)
        if any(len(g.producer_layers) > 1 for g in self.groups):
            raise ValueError("ExpertUsage counts experts read from the layer below only; this "
                             "spec has skip edges (mixers reading earlier layers).")
        # readers[p][j, e] = 1 if expert e of layer p reads mixer j of layer p.
        self.readers = {}
        for p, layer in enumerate(spec.layers[1:], start=1):
            names = [m.name for m in layer.mixers]
            r = np.zeros((len(names), len(layer.experts)), np.float32)
            for e, expert in enumerate(layer.experts):
                r[names.index(expert.input), e] = 1
            self.readers[p] = r
        self.num_experts = sum(len(ly.experts) for ly in spec.layers)

    def per_layer(self, masks: Sequence[tf.Tensor]) -> list[tf.Tensor]:
        """Per layer ``[E]``: whether (or how probably) each expert reaches a task."""
        used: list[tf.Tensor | None] = [None] * len(self.groups)
        consumers = tf.ones([self.groups[-1].shape[0]])
        for g_i in reversed(range(len(self.groups))):
            g = self.groups[g_i]
            m = tf.cast(masks[g_i], tf.float32) * g.candidates
            u = 1.0 - tf.reduce_prod(1.0 - m * consumers[:, None], axis=0)
            used[g.producer_layer] = u
            if g.producer_layer > 0:
                r = self.readers[g.producer_layer]
                consumers = 1.0 - tf.reduce_prod(1.0 - r * u[None, :], axis=1)
        return used

    def __call__(self, masks: Sequence[tf.Tensor]) -> tf.Tensor:
        """The used fraction of all experts (a scalar in [0, 1])."""
        return tf.add_n([tf.reduce_sum(u) for u in self.per_layer(masks)]) / self.num_experts
