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

    ``fuse_dense`` (default True) runs each dense variable's Adam update as one TensorFlow
    kernel (``ResourceApplyAdam``) instead of about a dozen ops per variable, where Keras
    would not already compile every update with XLA (it does on GPU), except under a
    ``ParameterServerStrategy``; the masked table update is compiled with XLA, one function
    per table shape for the whole process. The gradient's summation into rows stays a
    TensorFlow kernel (XLA's CPU scatter is slow).

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
            key = self._var_key(variable)
            m = self._momentums[self._index_dict[key]]
            v = self._velocities[self._index_dict[key]]
            return _dense_adam(gradient, variable, m, v, *self._constants(variable.dtype))
        return super()._update_step(gradient, variable)

    def _constants(self, dtype) -> tuple[tf.Tensor, ...]:
        """The learning rate, step (``iterations + 1``), ``beta_1``, ``beta_2``, ``1 - beta_1``
        and ``1 - beta_2`` (taken in Python, as tf-keras' Adam does) and ``epsilon``, as
        tensors of ``dtype``: the compiled updates take them as arguments."""
        return tuple(tf.cast(x, dtype) for x in (
            self.learning_rate, self.iterations + 1, self.beta_1, self.beta_2,
            1 - self.beta_1, 1 - self.beta_2, self.epsilon))

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
        self._masked_apply(g, counts, variable, m, v)
        return tf.constant(True)

    def _masked_apply(self, g, counts, variable, m, v):
        apply = _masked_adam_xla if self._fusing() else _masked_adam
        apply(g, counts, variable.handle, m.handle, v.handle, *self._constants(variable.dtype))


# The fused updates are functions of variable handles and constants, shared by every
# optimizer of the process: one trace (and one XLA executable) serves every table of a shape.
# Compiled per optimizer instance and variable instead, each trained model left its XLA
# executables in TensorFlow's process-wide compilation cache: about 11 MB a trial of a
# tfmtnas-tune study of small MMoEs (benchmarks/tune_memory.py).

def _adam_alpha(lr, step, beta_1, beta_2):
    """The learning rate with both bias corrections at ``step``."""
    return lr * tf.sqrt(1 - tf.pow(beta_2, step)) / (1 - tf.pow(beta_1, step))


def _dense_adam(gradient, variable, m, v, lr, step, beta_1, beta_2, c_1, c_2, epsilon):
    """Adam's dense update in place, as one TensorFlow kernel (``ResourceApplyAdam``)."""
    del c_1, c_2
    return tf.raw_ops.ResourceApplyAdam(
        var=variable.handle, m=m.handle, v=v.handle, beta1_power=tf.pow(beta_1, step),
        beta2_power=tf.pow(beta_2, step), lr=lr, beta1=beta_1, beta2=beta_2, epsilon=epsilon,
        grad=tf.cast(gradient, variable.dtype))


def _masked_adam(g, counts, variable, m, v, lr, step, beta_1, beta_2, c_1, c_2,
                 epsilon) -> None:
    """Adam on the rows with ``counts > 0`` of a dense gradient ``g``; other rows unchanged.

    ``variable``, ``m`` and ``v`` are resource handles (``Variable.handle``): a function of
    handles is traced once per shape, where one of variables would hold on to the variables
    of its first call.
    """
    del c_1, c_2  # the row form's rounding: 1 - beta in the variable's dtype
    read = lambda handle: tf.raw_ops.ReadVariableOp(resource=handle, dtype=g.dtype)
    m_old, v_old = read(m), read(v)
    alpha = _adam_alpha(lr, step, beta_1, beta_2)
    touched = (counts > 0)[:, tf.newaxis]
    m_new = tf.where(touched, beta_1 * m_old + (1 - beta_1) * g, m_old)
    v_new = tf.where(touched, beta_2 * v_old + (1 - beta_2) * tf.square(g), v_old)
    step = tf.where(touched, alpha * m_new / (tf.sqrt(v_new) + epsilon), tf.zeros_like(m_new))
    tf.raw_ops.AssignVariableOp(resource=m, value=m_new)
    tf.raw_ops.AssignVariableOp(resource=v, value=v_new)
    tf.raw_ops.AssignSubVariableOp(resource=variable, value=step)


_masked_adam_xla = tf.function(_masked_adam, jit_compile=True, autograph=False)


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
