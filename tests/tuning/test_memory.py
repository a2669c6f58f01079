"""A trial's traced graphs are freed when it ends: TensorFlow's gradient registry would
otherwise keep every traced training step alive (see ``released_trial_graphs``)."""

import gc
import weakref

import tensorflow as tf
from tensorflow.python.framework import ops

from tfmtnas.tuning.tuner import released_trial_graphs


def _custom():
    return {k for k in ops._gradient_registry._registry if k.startswith("CustomGradient-")}


@tf.custom_gradient
def _double(x):
    return 2 * x, lambda dy: 2 * dy


def _traced_graph():
    @tf.function
    def step(x):
        return _double(x) + 1

    graph = step.get_concrete_function(tf.TensorSpec([], tf.float32)).graph
    return weakref.ref(graph)


def test_graphs_traced_in_a_trial_are_released_and_others_kept():
    outside = _traced_graph()
    gc.collect()
    kept = _custom()
    assert outside() is not None  # the registry keeps it alive: what the release is for
    with released_trial_graphs():
        inside = _traced_graph()
        assert len(_custom() - kept) == 1
    gc.collect()
    assert _custom() == kept
    assert inside() is None
    assert outside() is not None
