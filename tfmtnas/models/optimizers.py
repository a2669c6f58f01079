"""Weight optimizers whose embedding updates cost O(batch), not O(vocabulary).

tf-keras ``Adam`` decays both moment slots and rewrites every row of an embedding table at
every step, even when the gradient is an ``IndexedSlices`` touching a few hundred rows: at
10^6 ids per feature it trained at 0.01x of its speed at 10^3 on the wide shapes (660 against
44,765 examples/s; docs/results.md, "Click-log scale on one machine").
:class:`LazyAdam` applies Adam to the rows a batch touched and leaves the others (their
values and both moments) as they are; dense variables get the ordinary Adam update.

This is the "lazy" Adam of large-vocabulary recommenders: a row's moments decay only on the
steps that see it. The bias correction still uses the global step, as in the usual lazy
Adam, so a rarely seen row takes slightly larger first steps than dense Adam would give it.

Choose with :func:`make_optimizer` (``--optimizer`` of the binaries):

- ``"lazy_adam"`` (default): sparse rows for embeddings, Adam for dense weights;
- ``"adam"``: tf-keras Adam everywhere (every row updated every step).

Example:
    >>> opt = make_optimizer("lazy_adam", learning_rate=1e-3)
    >>> table = tf.Variable(tf.ones([5, 2]))
    >>> grad = tf.IndexedSlices(tf.ones([1, 2]), tf.constant([3]), tf.constant([5, 2]))
    >>> opt.apply_gradients([(grad, table)])
    >>> [round(float(x), 4) for x in table.numpy()[:, 0]]   # only row 3 moved
    [1.0, 1.0, 1.0, 0.999, 1.0]
"""

from __future__ import annotations

import tensorflow as tf

from tfmtnas import keras

OPTIMIZERS = ("lazy_adam", "adam")


@keras.utils.register_keras_serializable(package="tfmtnas")
class LazyAdam(keras.optimizers.Adam):
    """Adam that updates only the embedding rows present in a sparse gradient.

    Takes every argument of ``keras.optimizers.Adam`` (``amsgrad`` excepted). For an
    ``IndexedSlices`` gradient ``g`` over rows ``r`` (duplicates already summed by Keras):
    ``m[r] = b1 m[r] + (1 - b1) g``, ``v[r] = b2 v[r] + (1 - b2) g^2``,
    ``w[r] -= lr sqrt(1 - b2^t) / (1 - b1^t) * m[r] / (sqrt(v[r]) + eps)``.

    Paper: Kingma & Ba, "Adam: A Method for Stochastic Optimization" (ICLR 2015); the lazy
    variant updates moments only where the gradient is defined.
    """

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 name="LazyAdam", **kwargs):
        if kwargs.get("amsgrad"):
            raise ValueError("LazyAdam does not support amsgrad=True; use 'adam'.")
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, name=name, **kwargs)

    def update_step(self, gradient, variable):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable)
        dtype = variable.dtype
        lr = tf.cast(self.learning_rate, dtype)
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        alpha = lr * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))
        key = self._var_key(variable)
        m = self._momentums[self._index_dict[key]]
        v = self._velocities[self._index_dict[key]]
        rows, g = gradient.indices, tf.cast(gradient.values, dtype)
        m_rows = beta_1 * tf.gather(m, rows) + (1 - beta_1) * g
        v_rows = beta_2 * tf.gather(v, rows) + (1 - beta_2) * tf.square(g)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        variable.scatter_sub(tf.IndexedSlices(
            alpha * m_rows / (tf.sqrt(v_rows) + self.epsilon), rows))


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """The weight optimizer ``name`` (one of :data:`OPTIMIZERS`) at ``learning_rate``."""
    if name == "lazy_adam":
        return LazyAdam(learning_rate)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    raise ValueError(f"Unknown optimizer {name!r}; valid names: {list(OPTIMIZERS)}.")
