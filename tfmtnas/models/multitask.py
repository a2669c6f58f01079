"""The multi-task ranking model: embedding -> any sharing layer -> towers -> one TFRS task each.

Example:
    >>> model = MultiTaskModel(data.spec, data.tasks, sharing={"kind": "mmoe"})
    >>> model.compile(keras.optimizers.Adam(1e-3), jit_compile=True)
    >>> model.fit(make_dataset(data.train, data.spec, 1024, shuffle=True), epochs=2)
    >>> model.predict_raw(data.test.features)["income"]   # probabilities
    >>> digits = MultiTaskModel(spec, [TaskSpec("digit", "multiclass:10")], {"kind": "mmoe"})
    >>> digits.predict_raw(features)["digit"].shape        # [n, 10], rows sum to 1

Papers: tasks as in Ma et al., "Modeling Task Relationships in Multi-task Learning with
Multi-gate Mixture-of-Experts" (KDD 2018); the sharing layers cite their own papers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfmtnas import keras
from tfmtnas.features import FeaturePreprocessor, FeatureSpec, TaskSpec
from tfmtnas.layers import TaskTowers
from tfmtnas.models.embedding import FeatureEmbedding
from tfmtnas.models.zoo import build_sharing


def _make_task(task: TaskSpec) -> tfrs.tasks.Ranking:
    """The TFRS task of ``task``; its loss sums, the model divides by the labelled count."""
    if task.kind == "multiclass":
        metrics = [keras.metrics.SparseCategoricalAccuracy(name=f"{task.name}_accuracy")]
        if task.top_k is not None:
            metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(
                k=task.top_k, name=f"{task.name}_top{task.top_k}_accuracy"))
        return tfrs.tasks.Ranking(
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum"),
            metrics=metrics, name=f"{task.name}_task")
    if task.kind == "binary":
        return tfrs.tasks.Ranking(
            loss=keras.losses.BinaryCrossentropy(from_logits=True, reduction="sum"),
            metrics=[keras.metrics.AUC(from_logits=True, name=f"{task.name}_auc")],
            name=f"{task.name}_task")
    return tfrs.tasks.Ranking(
        loss=keras.losses.MeanSquaredError(reduction="sum"),
        metrics=[keras.metrics.RootMeanSquaredError(name=f"{task.name}_rmse")],
        name=f"{task.name}_task")


DEFAULT_STEPS_PER_EXECUTION = 8
"""Training steps per call of the train function unless ``compile`` is told otherwise."""


class MultiTaskModel(tfrs.Model):
    """A ``tfrs.Model`` that trains one ranking task per :class:`TaskSpec` over shared layers.

    Inputs are the preprocessed numbers ``{"categorical", "numeric"}`` (see
    :mod:`tfmtnas.features`); labels are a dict of float tensors by task name, NaN marking a
    missing label, which is then left out of that task's loss and metric (a multiclass
    task's label is its class id ``0 .. K-1``). The training logs show each task's loss
    (``<task>_loss``) and metrics (``TaskSpec.metric_names``: ``<task>_auc``,
    ``<task>_rmse``, ``<task>_accuracy`` and ``<task>_top<k>_accuracy``).

    The model's logits are ``[B, sum(task widths)]``: one column per binary or regression
    task, ``K`` columns per ``K``-class task, in task order (:attr:`task_columns`).

    Args:
        spec: the feature spec (or its dict form).
        tasks: the tasks (or their dict forms); loss weights come from ``TaskSpec.weight``.
        sharing: a Keras layer mapping ``[B, D]`` to a list of one tensor per task, or a dict
            ``{"kind": ..., **sizes}`` for :func:`tfmtnas.models.zoo.build_sharing`.
        embedding_dim: width of the categorical embeddings (default 8).
        tower_units: hidden sizes of each task tower (default ``(32,)``).
    """

    def __init__(
        self,
        spec: FeatureSpec | Mapping,
        tasks: Sequence[TaskSpec | Mapping],
        sharing: keras.layers.Layer | Mapping,
        embedding_dim: int = 8,
        tower_units: Sequence[int] = (32,),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.spec = spec if isinstance(spec, FeatureSpec) else FeatureSpec.from_dict(spec)
        self.tasks = tuple(t if isinstance(t, TaskSpec) else TaskSpec(**t) for t in tasks)
        if not self.tasks:
            raise ValueError("A MultiTaskModel needs at least one task, got none.")
        self.task_names = [t.name for t in self.tasks]
        self.sharing_config = dict(sharing) if isinstance(sharing, Mapping) else None
        if self.sharing_config is not None:
            cfg = dict(self.sharing_config)
            sharing = build_sharing(cfg.pop("kind", "mmoe"), len(self.tasks), **cfg)
        self.embedding_dim = int(embedding_dim)
        self.tower_units = tuple(int(u) for u in tower_units)
        self.embedding = FeatureEmbedding(self.spec.total_ids, len(self.spec.categorical),
                                          self.embedding_dim, name="embedding")
        self.sharing = sharing
        widths = [t.width for t in self.tasks]
        # Where each task's logits start in the towers' output, and how many it has.
        self.task_columns = tuple((int(sum(widths[:i])), w) for i, w in enumerate(widths))
        self.towers = TaskTowers(len(self.tasks), self.tower_units, name="towers",
                                 output_units=None if max(widths) == 1 else widths)
        self.ranking_tasks = [_make_task(t) for t in self.tasks]
        self.task_losses = [keras.metrics.Mean(name=f"{t.name}_loss") for t in self.tasks]

    def dummy_features(self, batch: int = 1) -> dict[str, tf.Tensor]:
        """Zero-valued preprocessed features, e.g. to build the model's variables."""
        return {"categorical": tf.zeros([batch, len(self.spec.categorical)], tf.int32),
                "numeric": tf.zeros([batch, len(self.spec.numeric)])}

    def compile(self, optimizer="adam", jit_compile: bool = True, full_jit: bool = False,
                steps_per_execution: int | None = None, **kwargs):
        """Compile for training.

        Example:
            >>> model.compile(make_optimizer("lazy_adam", 1e-3))  # 8 steps per call
            >>> model.compile("adam", steps_per_execution=1)      # one step per call

        Args:
            optimizer: the weight optimizer.
            jit_compile: XLA-compile the numeric core of the training step (sharing layers
                and towers, their gradients included) when one replica runs each step. The
                embedding gather and its gradient stay outside XLA: XLA's CPU scatter, which
                that gradient needs, measured 3-8x slower than TensorFlow's own (see
                docs/results.md, "Training throughput").
            full_jit: with ``jit_compile``, compile the whole train step instead (Keras's
                own ``jit_compile=True``).
            steps_per_execution: training steps per call of the compiled train function
                (Keras' argument). Default None: :data:`DEFAULT_STEPS_PER_EXECUTION` (8),
                or 1 under a ``ParameterServerStrategy``, whose coordinator schedules one
                step per call. Fewer calls save Keras' Python work and the function launch
                of every step (docs/results.md, "Where a training step's time goes"). A
                callback's ``on_train_batch_end`` then runs once per call, with the index of
                its last batch.
            **kwargs: passed to ``keras.Model.compile``.
        """
        if steps_per_execution is None:
            steps_per_execution = (1 if isinstance(self.distribute_strategy,
                                                   tf.distribute.ParameterServerStrategy)
                                   else DEFAULT_STEPS_PER_EXECUTION)
        if not self.built:
            self(self.dummy_features())  # variables exist before any compiled function
        # Over several synchronous replicas the core may hold synchronisation points (the
        # search network's batch norms average their statistics over the replicas), which
        # cannot sit inside a nested compiled function: the core then runs uncompiled.
        self.core_jit = (bool(jit_compile) and not full_jit
                         and self.distribute_strategy.num_replicas_in_sync == 1)
        super().compile(optimizer=optimizer, jit_compile=bool(jit_compile and full_jit),
                        steps_per_execution=steps_per_execution, **kwargs)

    @contextlib.contextmanager
    def _single_step_calls(self, make_function):
        """One step per call of a train/test/predict function while inside: the
        ``*_on_batch`` methods hand those functions a single batch.

        The function is made first, with the compiled ``steps_per_execution``, so the one
        Keras keeps for later ``fit`` calls runs the loop that reads the setting at each
        call; the setting is then 1 while inside (as Keras' own last partial execution of
        an epoch does)."""
        spe = getattr(self, "_steps_per_execution", None)
        before = None if spe is None else int(spe.numpy())
        if before in (None, 1):
            yield
            return
        make_function()
        spe.assign(1)
        try:
            yield
        finally:
            spe.assign(before)

    def train_on_batch(self, *args, **kwargs):
        """Keras' ``train_on_batch``: one step, whatever ``steps_per_execution`` is."""
        with self._single_step_calls(self.make_train_function):
            return super().train_on_batch(*args, **kwargs)

    def test_on_batch(self, *args, **kwargs):
        """Keras' ``test_on_batch``: one step, whatever ``steps_per_execution`` is."""
        with self._single_step_calls(self.make_test_function):
            return super().test_on_batch(*args, **kwargs)

    def predict_on_batch(self, *args, **kwargs):
        """Keras' ``predict_on_batch``: one step, whatever ``steps_per_execution`` is."""
        with self._single_step_calls(self.make_predict_function):
            return super().predict_on_batch(*args, **kwargs)

    def compiled_core(self, fn, *args):
        """``fn(*args)``, through an XLA-compiled ``tf.function`` when ``core_jit`` is on."""
        if not getattr(self, "core_jit", False):
            return fn(*args)
        cache = self.__dict__.setdefault("_xla_functions", {})
        if fn.__name__ not in cache:
            cache[fn.__name__] = tf.function(fn, jit_compile=True, autograph=False)
        return cache[fn.__name__](*args)

    def core_logits(self, x: tf.Tensor) -> tf.Tensor:
        """Sharing layers and towers: embedded features ``[B, d]`` -> logits ``[B, L]``
        (``L`` columns: see :attr:`task_columns`)."""
        return self.towers(list(self.sharing(x)))

    def logits(self, features: Mapping[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """Pre-activation outputs ``[B, L]`` from preprocessed features (one column per
        binary or regression task, ``K`` per multiclass task; :attr:`task_columns`).

        In training the core runs XLA-compiled if the model was compiled with ``jit_compile``;
        inference (evaluation, prediction, export) runs it as plain TensorFlow.
        """
        x = self.embedding(features)
        if training:
            return self.compiled_core(self.core_logits, x)
        return self.core_logits(x)

    def call(self, features: Mapping[str, tf.Tensor], training: bool = False):
        """Per-task outputs by name: probability ``[B]`` for binary tasks, value ``[B]`` for
        regression, class probabilities ``[B, K]`` (softmax) for multiclass."""
        logits = tf.cast(self.logits(features, training=training), tf.float32)
        out = {}
        for task, (start, width) in zip(self.tasks, self.task_columns):
            if task.kind == "multiclass":
                out[task.name] = tf.nn.softmax(logits[:, start:start + width], axis=-1)
                continue
            z = logits[:, start]
            out[task.name] = tf.sigmoid(z) if task.kind == "binary" else z
        return out

    def task_losses_from_logits(self, labels: Mapping[str, tf.Tensor], logits: tf.Tensor,
                                compute_metrics: bool = True) -> list[tf.Tensor]:
        """Each task's masked mean loss; missing (NaN) labels are left out.

        ``logits`` are ``[B, L]`` as :meth:`logits` returns them; a multiclass task's labels
        are class ids (float or integer), its loss the softmax cross-entropy.

        With ``compute_metrics`` the task metrics and the per-task loss trackers are updated.
        Losses and metrics are float32 whatever the compute dtype (e.g. ``mixed_bfloat16``).
        """
        logits = tf.cast(logits, tf.float32)
        losses = []
        for task, ranking, tracker, (start, width) in zip(
                self.tasks, self.ranking_tasks, self.task_losses, self.task_columns):
            y = tf.reshape(tf.cast(labels[task.name], logits.dtype), [-1, 1])
            present = tf.logical_not(tf.math.is_nan(y))
            weight = tf.cast(present, logits.dtype)
            # A missing label becomes 0 (a valid class id too) with weight 0.
            total = ranking(labels=tf.where(present, y, tf.zeros_like(y)),
                            predictions=logits[:, start:start + width], sample_weight=weight,
                            compute_metrics=compute_metrics)
            # Mean over the examples that have this task's label.
            loss = total / tf.maximum(tf.reduce_sum(weight), 1.0)
            if compute_metrics:
                tracker.update_state(loss)
            # Under a tf.distribute strategy the replicas' gradients are summed: each replica
            # contributes its share of the global mean.
            loss = loss / tf.distribute.get_strategy().num_replicas_in_sync
            losses.append(loss)
        return losses

    def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
        features, labels = inputs
        return self.weighted_loss(
            self.task_losses_from_logits(labels, self.logits(features, training=training)))

    def weighted_loss(self, losses: list[tf.Tensor]) -> tf.Tensor:
        """The total loss: task losses weighted by ``TaskSpec.weight``."""
        return tf.add_n([t.weight * loss for t, loss in zip(self.tasks, losses)])

    def predict_raw(self, raw_features: Mapping[str, np.ndarray],
                    batch_size: int = 8192) -> dict[str, np.ndarray]:
        """Predict from raw feature columns (strings / floats), preprocessing included."""
        # Built once: filling the lookup table of a 10^6-line vocabulary file takes ~0.3 s.
        # Kept out of Keras' attribute tracking, so checkpoints do not change.
        pre = self.__dict__.get("_raw_preprocessor")
        if pre is None:
            pre = self.__dict__["_raw_preprocessor"] = FeaturePreprocessor(self.spec)
        n = len(next(iter(raw_features.values())))
        outs: dict[str, list[np.ndarray]] = {t: [] for t in self.task_names}
        for start in range(0, n, batch_size):
            chunk = {k: np.asarray(v[start:start + batch_size]) for k, v in raw_features.items()}
            chunk = {k: v.astype(str) if self.spec.raw_dtype(k) == tf.string else v
                     for k, v in chunk.items() if k in self.spec.names}
            pred = self(pre(chunk), training=False)
            for t in self.task_names:
                outs[t].append(pred[t].numpy())
        return {t: np.concatenate(v) for t, v in outs.items()}

    def get_config(self) -> dict:
        if self.sharing_config is None:
            sharing = keras.layers.serialize(self.sharing)
        else:
            sharing = self.sharing_config
        return {"spec": self.spec.to_dict(), "tasks": [t.to_dict() for t in self.tasks],
                "sharing": sharing, "embedding_dim": self.embedding_dim,
                "tower_units": list(self.tower_units)}

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        sharing = config["sharing"]
        if "class_name" in sharing:
            config["sharing"] = keras.layers.deserialize(sharing)
        return cls(**config)
