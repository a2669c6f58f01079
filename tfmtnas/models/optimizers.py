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
    ``IndexedSlices`` gradient ``g`` over rows ``r`` (duplicates summed):
    ``m[r] = b1 m[r] + (1 - b1) g``, ``v[r] = b2 v[r] + (1 - b2) g^2``,
    ``w[r] -= lr sqrt(1 - b2^t) / (1 - b1^t) * m[r] / (sqrt(v[r]) + eps)``.

    Two ways compute that same update; each step takes the cheaper one for its table:

    - rows: sum duplicate ids (``unique``), gather the rows' moments, scatter the new
      moments and rows back. Its cost grows with the ids in the batch; the choice for large
      tables.
    - masked: sum the gradient into a dense ``[rows, dim]`` tensor, then update every row
      where the batch had an id and leave the others exactly as they are, in one pass over
      the table. Its cost grows with the table; on the wide benchmark (26 features x 1,000
      ids, 13,312 ids a batch) it took a fraction of the row path's unique, gathers and
      scatters (docs/results.md, "Where a training step's time goes").

    A step takes the masked form when the table has at most ``masked_rows_per_id`` rows per
    id of the batch (default 8; 0 always takes the row path).

    ``fuse_dense`` (default True) compiles each dense variable's Adam update with XLA into
    one kernel, instead of about a dozen TensorFlow ops per variable, where Keras would not
    already do so (Keras compiles every update with XLA on GPU), except under a
    ``ParameterServerStrategy``. The masked table update is compiled the same way; the
    gradient's summation into rows stays a TensorFlow kernel (XLA's CPU scatter is slow).

    Paper: Kingma & Ba, "Adam: A Method for Stochastic Optimization" (ICLR 2015); the lazy
    variant updates moments only where the gradient is defined.

    Example:
        >>> opt = LazyAdam(1e-3, masked_rows_per_id=0)  # always the row form
        >>> opt.get_config()["masked_rows_per_id"]
        0
    """

    def __init__(self, learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 name="LazyAdam", masked_rows_per_id: float = 8.0, fuse_dense: bool = True,
                 **kwargs):
        if kwargs.get("amsgrad"):
            raise ValueError("LazyAdam does not support amsgrad=True; use 'adam'.")
        if kwargs.get("adaptive_epsilon"):
            raise ValueError("LazyAdam does not support adaptive_epsilon=True; use 'adam'.")
        if not masked_rows_per_id >= 0:
            raise ValueError(f"masked_rows_per_id must be >= 0, got {masked_rows_per_id!r}.")
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2,
                         epsilon=epsilon, name=name, **kwargs)
        self.masked_rows_per_id = float(masked_rows_per_id)
        self.fuse_dense = bool(fuse_dense)

    def get_config(self):
        return {**super().get_config(), "masked_rows_per_id": self.masked_rows_per_id,
                "fuse_dense": self.fuse_dense}

    def _deduplicate_sparse_grad(self, grads):
        if self.jit_compile:  # updates run in XLA (GPU), which has no unique: Keras sums first
            return super()._deduplicate_sparse_grad(grads)
        # Duplicates are summed in update_step, by whichever form the step takes.
        return list(grads)

    def _fusing(self) -> bool:
        if not self.fuse_dense or self.jit_compile:  # Keras compiles every update already
            return False
        return not isinstance(tf.distribute.get_strategy(), tf.distribute.ParameterServerStrategy)

    def _update_step(self, gradient, variable):
        if (self._fusing() and not isinstance(gradient, tf.IndexedSlices)
                and getattr(variable, "_unique_id", None) is not None
                and self._var_key(variable) in self._index_dict):
            return self._fused_dense_step(gradient, variable, id(self._var_key(variable)))
        return super()._update_step(gradient, variable)

    @tf.function(jit_compile=True, autograph=False)
    def _fused_dense_step(self, gradient, variable, key):
        """Adam's dense update of one variable, XLA-compiled (``key`` keeps the functions of
        same-shaped variables apart, as in Keras' own ``_update_step_xla``)."""
        del key
        return keras.optimizers.Adam.update_step(self, gradient, variable)

    def _alpha(self, dtype):
        step = tf.cast(self.iterations + 1, dtype)
        lr = tf.cast(self.learning_rate, dtype)
        return (lr * tf.sqrt(1 - tf.pow(tf.cast(self.beta_2, dtype), step))
                / (1 - tf.pow(tf.cast(self.beta_1, dtype), step)))

    def update_step(self, gradient, variable):
        if not isinstance(gradient, tf.IndexedSlices):
            return super().update_step(gradient, variable)
        key = self._var_key(variable)
        m = self._momentums[self._index_dict[key]]
        v = self._velocities[self._index_dict[key]]
        rows = variable.shape[0]
        if not self.masked_rows_per_id or rows is None:
            return self._row_update(gradient, variable, m, v)
        ids = tf.cast(tf.size(gradient.indices), tf.float32)
        masked = tf.cast(rows, tf.float32) <= self.masked_rows_per_id * ids
        return tf.cond(masked, lambda: self._masked_update(gradient, variable, m, v),
                       lambda: self._row_update(gradient, variable, m, v))

    def _row_update(self, gradient, variable, m, v):
        """Sum duplicates, then update the touched rows through gathers and scatters."""
        dtype = variable.dtype
        if self.jit_compile:  # Keras summed the duplicates already (XLA has no unique)
            rows, g = gradient.indices, tf.cast(gradient.values, dtype)
        else:
            rows, positions = tf.unique(gradient.indices)
            g = tf.math.unsorted_segment_sum(tf.cast(gradient.values, dtype), positions,
                                             tf.shape(rows)[0])
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        m_rows = beta_1 * tf.gather(m, rows) + (1 - beta_1) * g
        v_rows = beta_2 * tf.gather(v, rows) + (1 - beta_2) * tf.square(g)
        m.scatter_update(tf.IndexedSlices(m_rows, rows))
        v.scatter_update(tf.IndexedSlices(v_rows, rows))
        variable.scatter_sub(tf.IndexedSlices(
            self._alpha(dtype) * m_rows / (tf.sqrt(v_rows) + self.epsilon), rows))
        return tf.constant(True)

    def _masked_update(self, gradient, variable, m, v):
        """Sum the gradient into a dense table, then update the touched rows in one pass."""
        dtype = variable.dtype
        rows = variable.shape[0]
        g = tf.math.unsorted_segment_sum(tf.cast(gradient.values, dtype), gradient.indices,
                                         rows)
        counts = tf.math.unsorted_segment_sum(tf.ones_like(gradient.indices, dtype),
                                              gradient.indices, rows)
        self._masked_apply(g, counts, variable, m, v, id(self._var_key(variable)))
        return tf.constant(True)

    def _masked_apply(self, g, counts, variable, m, v, key):
        apply = self._masked_apply_xla if self._fusing() else self._masked_apply_math
        apply(g, counts, variable, m, v, key)

    def _masked_apply_math(self, g, counts, variable, m, v, key=None):
        del key
        dtype = variable.dtype
        touched = (counts > 0)[:, tf.newaxis]
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        m_new = tf.where(touched, beta_1 * m + (1 - beta_1) * g, m)
        v_new = tf.where(touched, beta_2 * v + (1 - beta_2) * tf.square(g), v)
        step = tf.where(touched, self._alpha(dtype) * m_new / (tf.sqrt(v_new) + self.epsilon),
                        tf.zeros_like(m_new))
        m.assign(m_new)
        v.assign(v_new)
        variable.assign_sub(step)

    @tf.function(jit_compile=True, autograph=False)
    def _masked_apply_xla(self, g, counts, variable, m, v, key):
        self._masked_apply_math(g, counts, variable, m, v)


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """The weight optimizer ``name`` (one of :data:`OPTIMIZERS`) at ``learning_rate``.

    Example:
        >>> type(make_optimizer("lazy_adam", 1e-3)).__name__
        'LazyAdam'
    """
    if name == "lazy_adam":
        return LazyAdam(learning_rate)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate)
    raise ValueError(f"Unknown optimizer {name!r}; valid names: {list(OPTIMIZERS)}.")
