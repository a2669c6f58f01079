"""Customized Gate Control (CGC) and Progressive Layered Extraction (PLE)."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tfmtnas import keras
from tfmtnas.layers import _util
from tfmtnas.layers.experts import ExpertBank
from tfmtnas.layers.gates import ExpertGate


def cgc_mask(num_tasks: int, num_task_experts: int, num_shared_experts: int,
             include_shared_gate: bool) -> list[list[int]]:
    """The CGC gate mask: task ``t`` reads its own and the shared experts; the shared gate all.

    Experts are ordered task 0's ``num_task_experts``, ..., task ``T-1``'s, then the shared
    ones; rows are the task gates, then the shared gate if ``include_shared_gate``.
    """
    total = num_tasks * num_task_experts + num_shared_experts
    rows = []
    for t in range(num_tasks):
        own = range(t * num_task_experts, (t + 1) * num_task_experts)
        rows.append([1 if e in own or e >= num_tasks * num_task_experts else 0
                     for e in range(total)])
    if include_shared_gate:
        rows.append([1] * total)
    return rows


@keras.utils.register_keras_serializable(package="tfmtnas")
class CGC(keras.layers.Layer):
    """Task-specific and shared experts; each task's softmax gate reads its own and shared ones.

    Tang, Liu, Zhao, Gong. "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning
    (MTL) Model for Personalized Recommendations", RecSys 2020 (Customized Gate Control).
    Task ``t``'s output mixes task ``t``'s ``num_task_experts`` experts and the
    ``num_shared_experts`` shared experts with a softmax gate; with ``return_shared`` a shared
    gate mixes all experts into an extra output (the shared input of the next PLE level).

    All ``T * num_task_experts + num_shared_experts`` experts are one :class:`ExpertBank`
    (ordered task 0's, ..., task ``T-1``'s, then shared) and all gates one masked softmax
    :class:`ExpertGate` (see :func:`cgc_mask`), so a level costs one ``einsum`` per depth.

    Input: ``x`` ``[batch, d]`` read by every expert and gate, or a list of ``num_tasks + 1``
    tensors ``[batch, d]``: task ``t``'s experts and gate read input ``t``, the shared experts
    and the shared gate read the last one.

    Output: a list of ``num_tasks`` tensors ``[batch, expert_units[-1]]``, plus the shared
    output last if ``return_shared``.

    Args:
        num_tasks: number of tasks (>= 1).
        num_task_experts: experts owned by each task (>= 0).
        num_shared_experts: experts shared by all tasks (>= 0; at least one expert per task
            in total).
        expert_units: layer widths of each expert MLP, e.g. ``[64, 32]``.
        activation: activation of every expert layer. Default ``"relu"``.
        return_shared: also return the shared gate's output. Default ``False``.
        **kwargs: standard layer arguments (``name``, ``dtype``, ...).

    Example:
        >>> cgc = CGC(num_tasks=2, num_task_experts=1, num_shared_experts=2, expert_units=[8])
        >>> [t.shape for t in cgc(tf.ones([3, 10]))]
        [TensorShape([3, 8]), TensorShape([3, 8])]

    Raises:
        ValueError: bad counts or ``expert_units``, or a list input of the wrong length; the
            message shows the value.
    """

    def __init__(self, num_tasks: int, num_task_experts: int, num_shared_experts: int,
                 expert_units: Sequence[int], activation="relu", return_shared: bool = False,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_tasks = _util.check_int("num_tasks", num_tasks, 1)
        self.num_task_experts = _util.check_int("num_task_experts", num_task_experts, 0)
        self.num_shared_experts = _util.check_int("num_shared_experts", num_shared_experts, 0)
        if self.num_task_experts + self.num_shared_experts < 1:
            raise ValueError(f"Each task needs at least one expert, got num_task_experts="
                             f"{num_task_experts!r} and num_shared_experts="
                             f"{num_shared_experts!r}.")
        self.expert_units = _util.check_units("expert_units", expert_units)
        self.activation = _util.check_activation("activation", activation)
        self.return_shared = bool(return_shared)
        self.num_experts = self.num_tasks * self.num_task_experts + self.num_shared_experts
        # Which input (task t, or num_tasks for shared) each expert reads.
        self.expert_inputs = ([t for t in range(self.num_tasks)
                               for _ in range(self.num_task_experts)]
                              + [self.num_tasks] * self.num_shared_experts)
        self.mask = cgc_mask(self.num_tasks, self.num_task_experts, self.num_shared_experts,
                             self.return_shared)
        self.num_outputs = len(self.mask)
        self.experts = ExpertBank(self.num_experts, self.expert_units, activation=activation,
                                  name="experts", dtype=self.dtype_policy)
        self.gate = ExpertGate(self.num_outputs, self.num_experts, kind="softmax",
                               mask=self.mask, name="gate", dtype=self.dtype_policy)

    def _expert_and_query_inputs(self, inputs):
        if not isinstance(inputs, (list, tuple)):
            return inputs, inputs
        if len(inputs) != self.num_tasks + 1:
            raise ValueError(f"{self.name}: a list input needs num_tasks + 1 = "
                             f"{self.num_tasks + 1} tensors (tasks then shared), got "
                             f"{len(inputs)}.")
        widths = [t.shape[-1] for t in inputs]
        if len(set(widths)) != 1:
            raise ValueError(f"{self.name}: all inputs must have the same width, got "
                             f"{widths}.")
        # Stacked from the list, not gathered from a stack: the gradient of a gather is a
        # scatter, which XLA's CPU backend runs slowly; that of a stack is a slice.
        expert_inputs = tf.stack([inputs[i] for i in self.expert_inputs], axis=1)
        queries = tf.stack(inputs if self.return_shared else inputs[:self.num_tasks], axis=1)
        return expert_inputs, queries

    def gate_weights(self, inputs) -> tf.Tensor:
        """Mixing weights ``[batch, num_outputs, num_experts]`` (zeros where masked)."""
        _, queries = self._expert_and_query_inputs(inputs)
        return self.gate.gate_weights(queries)

    def call(self, inputs):
        expert_inputs, queries = self._expert_and_query_inputs(inputs)
        mixed = self.gate([queries, self.experts(expert_inputs)])
        return tf.unstack(mixed, num=self.num_outputs, axis=1)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_tasks": self.num_tasks,
            "num_task_experts": self.num_task_experts,
            "num_shared_experts": self.num_shared_experts,
            "expert_units": list(self.expert_units),
            "activation": keras.activations.serialize(self.activation),
            "return_shared": self.return_shared,
        }


@keras.utils.register_keras_serializable(package="tfmtnas")
class PLE(keras.layers.Layer):
    """Progressive Layered Extraction: stacked CGC levels with a shared path between them.

    Tang, Liu, Zhao, Gong. "Progressive Layered Extraction (PLE): A Novel Multi-Task Learning
    (MTL) Model for Personalized Recommendations", RecSys 2020. Level 1 reads ``x``; level
    ``k > 1``'s task-``t`` experts read level ``k-1``'s task-``t`` output and its shared
    experts read level ``k-1``'s shared-gate output. All levels but the last are
    :class:`CGC` with ``return_shared=True``.

    Input: ``x`` ``[batch, d]``.
    Output: a list of ``num_tasks`` tensors ``[batch, expert_units[-1]]``.

    Args:
        num_tasks: number of tasks (>= 1).
        num_levels: number of CGC levels (>= 1; 1 is a plain CGC).
        num_task_experts: experts owned by each task at each level (>= 0).
        num_shared_experts: shared experts at each level (>= 0).
        expert_units: layer widths of each expert MLP (every level).
        activation: activation of every expert layer. Default ``"relu"``.
        **kwargs: standard layer arguments (``name``, ``dtype``, ...).

    Example:
        >>> ple = PLE(num_tasks=2, num_levels=2, num_task_experts=1, num_shared_experts=1,
        ...           expert_units=[8])
        >>> [t.shape for t in ple(tf.ones([3, 10]))]
        [TensorShape([3, 8]), TensorShape([3, 8])]

    Raises:
        ValueError: bad counts or ``expert_units``; the message shows the value.
    """

    def __init__(self, num_tasks: int, num_levels: int, num_task_experts: int,
                 num_shared_experts: int, expert_units: Sequence[int], activation="relu",
                 **kwargs):
        super().__init__(**kwargs)
        self.num_levels = _util.check_int("num_levels", num_levels, 1)
        self.levels = [
            CGC(num_tasks, num_task_experts, num_shared_experts, expert_units,
                activation=activation, return_shared=level < self.num_levels - 1,
                name=f"level_{level}", dtype=self.dtype_policy)
            for level in range(self.num_levels)
        ]
        first = self.levels[0]
        self.num_tasks = first.num_tasks
        self.num_task_experts = first.num_task_experts
        self.num_shared_experts = first.num_shared_experts
        self.expert_units = first.expert_units
        self.activation = first.activation

    def gate_weights(self, x) -> list[tf.Tensor]:
        """Per level, the mixing weights ``[batch, num_outputs, num_experts]``."""
        weights, h = [], x
        for level in self.levels:
            weights.append(level.gate_weights(h))
            h = level(h)
        return weights

    def call(self, x):
        h = x
        for level in self.levels:
            h = level(h)
        return h

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_tasks": self.num_tasks,
            "num_levels": self.num_levels,
            "num_task_experts": self.num_task_experts,
            "num_shared_experts": self.num_shared_experts,
            "expert_units": list(self.expert_units),
            "activation": keras.activations.serialize(self.activation),
        }
