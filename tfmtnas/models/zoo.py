"""The hand-designed sharing zoo, by name: the dedicated layer of each classic model.

The kinds, their sizes and defaults come from one table, :data:`tfmtnas.search.spec.BASELINES`,
which also gives each kind's routing spec (:func:`tfmtnas.search.preset`); the layer built
here computes what the preset's routing network computes, given the same weights.

Example:
    >>> layer = build_sharing("mmoe", num_tasks=2, expert_units=(64,), num_experts=4)
    >>> type(layer).__name__, layer.num_experts
    ('MMoE', 4)
"""

from __future__ import annotations

from tfmtnas import keras
from tfmtnas.search.spec import BASELINES, BaselineSizes

SHARING_KINDS = tuple(BASELINES)


def build_sharing(kind: str, num_tasks: int, *sizes, **named_sizes) -> keras.layers.Layer:
    """Build a sharing layer, named ``sharing``, mapping ``[B, D]`` to ``num_tasks`` tensors.

    Args:
        kind: one of ``SHARING_KINDS``: ``single_task`` (:class:`~tfmtnas.layers.SingleTask`),
            ``shared_bottom`` (:class:`~tfmtnas.layers.SharedBottom`, Caruana 1997), ``mmoe``
            (:class:`~tfmtnas.layers.MMoE`, Ma et al., KDD 2018), ``cgc`` and ``ple``
            (:class:`~tfmtnas.layers.CGC`, :class:`~tfmtnas.layers.PLE`, Tang et al., RecSys
            2020), ``cross_stitch`` (:class:`~tfmtnas.layers.CrossStitch`, Misra et al., CVPR
            2016).
        num_tasks: number of tasks.
        *sizes, **named_sizes: the fields of :class:`~tfmtnas.search.spec.BaselineSizes`,
            positionally in order or by name: ``expert_units`` (default ``(64,)``; the hidden
            sizes of each expert, of the whole bottom for shared-bottom and single-task and
            of each cross-stitch column), ``num_experts`` (MMoE, default 4),
            ``num_task_experts`` (per task, CGC and PLE, default 1), ``num_shared_experts``
            (CGC and PLE, default 2), ``num_levels`` (PLE, default 2) and ``alpha_self``
            (cross-stitch, default 0.9).

    Raises:
        ValueError: an unknown ``kind`` (the message lists the kinds), or sizes the layer
            rejects.
    """
    if kind not in BASELINES:
        raise ValueError(f"Unknown sharing kind {kind!r}; choose one of "
                         f"{', '.join(SHARING_KINDS)}.")
    return BASELINES[kind].layer(num_tasks, BaselineSizes(*sizes, **named_sizes),
                                 name="sharing")
