"""Feature embedding over one concatenated table (one gather for all categorical features)."""

from __future__ import annotations

import tensorflow as tf

from tfmtnas import keras


@keras.utils.register_keras_serializable(package="tfmtnas")
class FeatureEmbedding(keras.layers.Layer):
    """``{"categorical": ids [B, n], "numeric": x [B, m]}`` -> ``[B, n * dim + m]``.

    All categorical features share one table of ``total_ids`` rows; the ids already carry
    each feature's offset (see :class:`tfmtnas.features.FeaturePreprocessor`), so the whole
    embedding is a single gather, which XLA compiles well.

    Args:
        total_ids: rows of the concatenated table (``FeatureSpec.total_ids``).
        num_categorical: categorical features per example.
        embedding_dim: width of every embedding (default 8).

    Example:
        >>> emb = FeatureEmbedding(total_ids=10, num_categorical=2, embedding_dim=4)
        >>> emb({"categorical": tf.constant([[0, 7]]), "numeric": tf.zeros([1, 3])}).shape
        TensorShape([1, 11])
    """

    def __init__(self, total_ids: int, num_categorical: int, embedding_dim: int = 8, **kwargs):
        super().__init__(**kwargs)
        if num_categorical < 0 or (num_categorical > 0 and total_ids < 1):
            raise ValueError(f"Need total_ids >= 1 for {num_categorical} categorical features, "
                             f"got total_ids={total_ids}.")
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}.")
        self.total_ids = int(total_ids)
        self.num_categorical = int(num_categorical)
        self.embedding_dim = int(embedding_dim)

    def build(self, input_shape):
        if self.num_categorical:
            self.table = self.add_weight(
                name="table", shape=(self.total_ids, self.embedding_dim), dtype=self.dtype,
                initializer=keras.initializers.RandomUniform(-0.05, 0.05))
        super().build(input_shape)

    def call(self, inputs):
        numeric = tf.cast(inputs["numeric"], self.compute_dtype)
        if not self.num_categorical:
            return numeric
        # embedding_lookup, not gather: on a table sharded over parameter servers
        # (ShardedVariable), tf.gather of 1-D ids [3, 700, 3, 999] returned rows out of order
        # (TF 2.21); embedding_lookup reads each shard and stitches the rows back in order.
        emb = tf.nn.embedding_lookup(self.table, inputs["categorical"])
        emb = tf.reshape(emb, [-1, self.num_categorical * self.embedding_dim])
        return tf.concat([tf.cast(emb, self.compute_dtype), numeric], axis=1)

    def get_config(self):
        return {**super().get_config(), "total_ids": self.total_ids,
                "num_categorical": self.num_categorical, "embedding_dim": self.embedding_dim}
