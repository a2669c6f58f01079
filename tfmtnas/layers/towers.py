"""Per-task towers: each task's representation -> its logits (one, or one per class), batched."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from tfmtnas import keras
from tfmtnas.layers import _util
from tfmtnas.layers.experts import ExpertBank


@keras.utils.register_keras_serializable(package="tfmtnas")
class TaskTowers(keras.layers.Layer):
    """One MLP tower per task ending in a linear layer; returns the tasks' logits.

    Tower ``t`` reads input ``t``: hidden layers ``units`` (may be empty) with ``activation``,
    then a linear layer of ``output_units[t]`` logits (1 for a binary or regression task,
    ``K`` for a ``K``-class task). All towers are one :class:`ExpertBank` with one input per
    tower, i.e. one ``einsum`` per depth; the last layer of every tower is as wide as the
    widest, and a narrower tower's extra logits are dropped (their weights get no gradient).

    Input: a list of ``num_tasks`` tensors ``[batch, h]`` (same ``h``), e.g. the output of
    :class:`MMoE`, or one tensor ``[batch, num_tasks, h]``.
    Output: logits ``[batch, sum(output_units)]``, tower ``t``'s in the columns
    ``sum(output_units[:t]) ..`` (with one output per tower: ``[batch, num_tasks]``; apply a
    sigmoid for binary tasks, a softmax over a multiclass task's columns).

    Args:
        num_tasks: number of tasks (>= 1).
        units: hidden layer widths of each tower, e.g. ``[16]`` or ``[]``.
        activation: activation of the hidden layers. Default ``"relu"``.
        output_units: logits per tower, ``num_tasks`` positive integers; default None: one
            each.
        **kwargs: standard layer arguments (``name``, ``dtype``, ...).

    Example:
        >>> towers = TaskTowers(num_tasks=2, units=[4])
        >>> towers([tf.ones([3, 8]), tf.zeros([3, 8])]).shape
        TensorShape([3, 2])
        >>> TaskTowers(2, [4], output_units=[1, 10])([tf.ones([3, 8])] * 2).shape
        TensorShape([3, 11])

    Raises:
        ValueError: ``num_tasks`` < 1, bad ``units`` or ``output_units``, or a list input
            whose length is not ``num_tasks``; the message shows the value.
    """

    def __init__(self, num_tasks: int, units: Sequence[int], activation="relu",
                 output_units: Sequence[int] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.num_tasks = _util.check_int("num_tasks", num_tasks, 1)
        self.units = _util.check_units("units", units, allow_empty=True)
        self.activation = _util.check_activation("activation", activation)
        if output_units is None:
            self.output_units = None
            widths = [1] * self.num_tasks
        else:
            widths = list(_util.check_units("output_units", output_units))
            if len(widths) != self.num_tasks:
                raise ValueError(f"output_units must give one width per task "
                                 f"(num_tasks={self.num_tasks}), got {list(output_units)}.")
            self.output_units = tuple(widths)
        width = max(widths)
        # Columns of the flattened [batch, num_tasks * width] bank output that are logits;
        # None when every one is (all towers equally wide).
        self._columns = None if min(widths) == width else [
            t * width + j for t, w in enumerate(widths) for j in range(w)]
        self._width = width
        self.towers = ExpertBank(self.num_tasks, [*self.units, width], activation=activation,
                                 output_activation=None, name="towers",
                                 dtype=self.dtype_policy)

    def call(self, inputs):
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != self.num_tasks:
                raise ValueError(f"{self.name}: expected a list of num_tasks={self.num_tasks} "
                                 f"tensors, got {len(inputs)}.")
            inputs = tf.stack(inputs, axis=1)
        if inputs.shape.rank != 3:
            raise ValueError(f"{self.name}: expected [batch, num_tasks, h], got shape "
                             f"{inputs.shape}.")
        out = self.towers(inputs)
        if self._width == 1:
            return out[..., 0]
        out = tf.reshape(out, [-1, self.num_tasks * self._width])
        return out if self._columns is None else tf.gather(out, self._columns, axis=1)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_tasks": self.num_tasks,
            "units": list(self.units),
            "activation": keras.activations.serialize(self.activation),
            "output_units": None if self.output_units is None else list(self.output_units),
        }
