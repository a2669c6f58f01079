"""The search model: a supernet trained by alternating weight and architecture steps.

``train_step`` takes a ``((train_features, train_labels), (val_features, val_labels))``
pair. The weight step updates the weight variables only (the compiled optimizer) on the
training batch under routes sampled for ``"weight"``; the architecture step updates the
search method's variables only (``arch_optimizer``) on the validation batch under routes for
``"arch"``. Both run in one ``tf.function``, XLA-compiled with ``jit_compile=True``. With a
method whose ``joint`` flag is set (the Gumbel matrix by default), both gradients come from
the training batch's forward pass (single-level training).

Evaluation and prediction use the method's ``"eval"`` routes (the current most probable
architecture).

A method may name weights that learn faster than the others
(:meth:`~tfmtnas.search.methods.SearchMethod.fast_weights`, e.g. MTL-NAS's NDDR fusion layers
at 100x the rate, Gao et al., CVPR 2020): they get their own copy of the weight optimizer at
the learning rate times the method's ``fast_lr_multiplier``, so their update is exactly the
multiple of the update the base optimizer would make (SGD, Adam and LazyAdam alike).

Example:
    >>> space = search_space("gumbel", [t.name for t in data.tasks])
    >>> model = SearchModel(data.spec, data.tasks, make_method("gumbel", space))
    >>> model.compile(keras.optimizers.Adam(2e-3), jit_compile=True)
    >>> model.fit(paired_dataset(data, data.spec, 1024), epochs=2)
    >>> child_spec = model.method.derive()
"""

from __future__ import annotations

import tensorflow as tf

from tfmtnas import keras
from tfmtnas.models.multitask import MultiTaskModel
from tfmtnas.search.methods import SearchMethod


class SearchModel(MultiTaskModel):
    """A :class:`MultiTaskModel` whose sharing layer is a searched :class:`RoutingNetwork`.

    Args:
        spec: the feature spec.
        tasks: the tasks.
        method: the search method (owns the architecture variables and the searched spec).
        arch_optimizer: optimizer of the architecture variables (default Adam 3e-3).
        arch_warmup_steps: search steps whose architecture update is skipped (its gradients
            are zeroed), so that the weights learn before the architecture is judged by
            them, as one-shot searches commonly warm up their supernet. The architecture
            step still runs (and costs the same) during the warm-up. Default 0.
        embedding_dim, tower_units: as for :class:`MultiTaskModel`.
    """

    def __init__(self, spec, tasks, method: SearchMethod, arch_optimizer=None,
                 arch_warmup_steps: int = 0, embedding_dim: int = 8, tower_units=(32,),
                 **kwargs):
        network = method.build_network(name="supernet")
        super().__init__(spec, tasks, sharing=network, embedding_dim=embedding_dim,
                         tower_units=tower_units, **kwargs)
        self.method = method
        self.arch_optimizer = arch_optimizer or keras.optimizers.Adam(3e-3)
        if int(arch_warmup_steps) < 0:
            raise ValueError(f"arch_warmup_steps must be >= 0, got {arch_warmup_steps}.")
        self.arch_warmup_steps = int(arch_warmup_steps)
        # Under a strategy every replica computes the same step: the first one's is kept.
        self.search_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="search_step",
                                       aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        self.logits(self.dummy_features())  # create every variable now

    def compile(self, optimizer="adam", **kwargs):
        """Compile, then create both optimizers' slots outside the compiled step."""
        super().compile(optimizer=optimizer, **kwargs)
        self.optimizer.build(self.weight_variables())
        self.arch_optimizer.build(self.method.trainable_variables)
        fast = self.fast_variables()
        self.fast_optimizer = (scaled_optimizer(self.optimizer, self.method.fast_lr_multiplier)
                               if fast else None)
        if fast:
            self.fast_optimizer.build(fast)

    def logits(self, features, training=False, mode: str = "eval"):
        routes, _ = self.method.sample(mode, self.search_step)
        return self._routed_logits(features, routes, training)

    def _routed_logits(self, features, routes, training):
        x = self.embedding(features)
        if training:
            return self.compiled_core(self.routed_core, x, routes)
        return self.routed_core(x, routes, training=False)

    def routed_core(self, x, routes, training=True):
        """Supernet and towers under ``routes``: embedded features -> logits ``[B, T]``."""
        return self.towers(list(self.sharing(x, routes=routes, training=training)))

    def fast_variables(self) -> list[tf.Variable]:
        """Weights updated at ``fast_lr_multiplier`` times the rate (none at multiplier 1)."""
        if self.method.fast_lr_multiplier == 1.0:
            return []
        return self.method.fast_weights(self.sharing)

    def weight_variables(self) -> list[tf.Variable]:
        """Weights of the base weight optimizer: not architecture, not fast weights."""
        other = {id(v) for v in self.method.trainable_variables}
        other |= {id(v) for v in self.fast_variables()}
        return [v for v in self.trainable_variables if id(v) not in other]

    def train_step(self, data):
        (x_train, y_train), (x_val, y_val) = data
        step = self.search_step
        weight_vars = self.weight_variables()
        fast_vars = self.fast_variables()
        arch_vars = self.method.trainable_variables
        # Under a tf.distribute strategy each replica's task loss is its share of the global
        # mean (its own mean / replicas) and the optimizers sum the replicas' gradients. The
        # methods' penalties and objectives see this replica's own mean loss, and their
        # results are shared the same way, so the summed gradients are those of one device
        # on the global batch. Every replica samples the same routes (seeded by the step).
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape(persistent=self.method.joint) as tape:
            routes, aux = self.method.sample("weight", step)
            logits = self._routed_logits(x_train, routes, training=True)
            task_loss = self.weighted_loss(self.task_losses_from_logits(y_train, logits))
            loss = task_loss + self.method.weight_penalty(aux, step) / replicas
            if self.method.joint:
                arch_loss = self.method.arch_objective(task_loss * replicas, aux,
                                                       step) / replicas
        grads = tape.gradient(loss, weight_vars + fast_vars)
        self.optimizer.apply_gradients(zip(grads[:len(weight_vars)], weight_vars))
        if fast_vars:
            self.fast_optimizer.apply_gradients(zip(grads[len(weight_vars):], fast_vars))
        if self.method.joint:
            arch_grads = tape.gradient(arch_loss, arch_vars)
            del tape
        else:
            with tf.GradientTape() as arch_tape:
                routes, aux = self.method.sample("arch", step)
                val_logits = self._routed_logits(x_val, routes, training=True)
                val_loss = self.weighted_loss(self.task_losses_from_logits(
                    y_val, val_logits, compute_metrics=False))
                arch_loss = self.method.arch_objective(val_loss * replicas, aux,
                                                       step) / replicas
            arch_grads = arch_tape.gradient(arch_loss, arch_vars)
        if self.arch_warmup_steps:
            # Zero gradients leave the variables where they are (SGD and Adam alike: Adam's
            # moments stay zero, so its update is zero too).
            active = step >= self.arch_warmup_steps
            arch_grads = [None if g is None else g * tf.cast(active, g.dtype)
                          for g in arch_grads]
        self.arch_optimizer.apply_gradients(zip(arch_grads, arch_vars))
        step.assign_add(1)
        metrics = {m.name: m.result() for m in self.metrics}
        metrics.update(loss=loss, arch_loss=arch_loss)
        return metrics

    def get_config(self):
        raise NotImplementedError("Save a search with checkpoints; export its derived child.")


def scaled_optimizer(optimizer: keras.optimizers.Optimizer,
                     multiplier: float) -> keras.optimizers.Optimizer:
    """A fresh optimizer of ``optimizer``'s class and settings at ``multiplier`` times its rate.

    Its update of a variable is ``multiplier`` times the update ``optimizer`` would make
    from the same gradients and state (SGD, momentum, Adam: the rate scales the step).

    Example:
        >>> fast = scaled_optimizer(keras.optimizers.SGD(0.01), 100.0)
        >>> round(float(fast.learning_rate), 6)
        1.0
    """
    config = optimizer.get_config()
    rate = config.get("learning_rate")
    if isinstance(rate, dict):  # a serialised schedule
        raise ValueError(f"A learning-rate multiplier needs a constant learning rate; the weight "
                         f"optimizer has {rate!r}.")
    config.update(learning_rate=float(rate) * float(multiplier), name=f"{config['name']}_fast")
    return type(optimizer).from_config(config)
