"""Private helpers shared by the sharing layers: argument checks and per-slice initialisation."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tfmtnas import keras


def check_int(name: str, value, minimum: int) -> int:
    """Return ``value`` as an int if it is an integer >= ``minimum``; raise ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_units(name: str, units, allow_empty: bool = False) -> list[int]:
    """Return ``units`` as a list of positive ints; raise ValueError showing the value otherwise."""
    if isinstance(units, (str, bytes)) or not isinstance(units, Sequence):
        raise ValueError(f"{name} must be a sequence of positive integers, got {units!r}.")
    units = list(units)
    if not units and not allow_empty:
        raise ValueError(f"{name} must be a non-empty sequence of positive integers, "
                         f"got {units!r}.")
    bad = [u for u in units
           if isinstance(u, bool) or not isinstance(u, numbers.Integral) or u < 1]
    if bad:
        raise ValueError(f"{name} must contain positive integers only, got {units!r} "
                         f"(bad entries: {bad!r}).")
    return [int(u) for u in units]


def check_finite(name: str, value) -> float:
    """Return ``value`` as a float if it is a finite real number; raise ValueError otherwise."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value)):
        raise ValueError(f"{name} must be a finite real number, got {value!r}.")
    return float(value)


def check_matrix(name: str, value, rows: int, cols: int) -> np.ndarray:
    """Return ``value`` as a float64 ``[rows, cols]`` array of finite numbers, or raise."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a {rows} x {cols} nested list of numbers, "
                         f"got {value!r}.") from err
    if arr.shape != (rows, cols):
        raise ValueError(f"{name} must have shape {rows} x {cols}, got shape "
                         f"{' x '.join(map(str, arr.shape)) or 'scalar'}: {value!r}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must contain finite numbers only, got {value!r}.")
    return arr


def check_activation(name: str, value):
    """Resolve an activation (name, callable or None) or raise ValueError showing the value."""
    try:
        return keras.activations.get(value)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{name}: unknown activation {value!r}.") from err


def per_slice_initializer(initializer):
    """Wrap ``initializer`` so a ``[S, fan_in, fan_out]`` tensor is filled slice by slice.

    Keras computes fans of a rank-3 shape as ``S * fan_in`` and ``S * fan_out``, which would
    shrink Glorot/He scales by ``S``. Each slice (one expert, one gate consumer) is therefore
    initialised as its own ``[fan_in, fan_out]`` matrix. Keras initialisers return the same
    values on every call of one instance, so each slice gets its own instance: a seeded
    initialiser uses ``seed + s`` for slice ``s``, an unseeded one a fresh instance per slice.

    Args:
        initializer: a Keras initializer (instance, name or config).
    """
    base = keras.initializers.get(initializer)

    def init(shape, dtype=None, **kwargs):
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or not hasattr(base, "get_config"):
            return base(shape, dtype=dtype, **kwargs)
        config = base.get_config()
        seed = config.get("seed")
        slices = []
        for s in range(shape[0]):
            slice_config = dict(config)
            if seed is not None:
                slice_config["seed"] = seed + s
            slices.append(base.__class__.from_config(slice_config)(shape[1:], dtype=dtype))
        return tf.stack(slices, axis=0)

    return init
