"""``tf.distribute`` strategies by name, the cluster from ``TF_CONFIG``, and server processes.

``tfmtnas-train --strategy=...`` takes one of :data:`STRATEGIES`:

- ``default``: one device (TensorFlow's default strategy);
- ``mirrored``: every local GPU (or CPU) of this machine, one synchronous replica each;
- ``multi_worker``: ``MultiWorkerMirroredStrategy``; every machine runs the same
  ``tfmtnas-train`` command with its own ``TF_CONFIG`` (``cluster.worker`` lists them all,
  ``task`` says which one this is); worker 0 (or the ``chief``) writes the outputs;
- ``parameter_server``: ``ParameterServerStrategy``; the ``chief`` runs ``tfmtnas-train``,
  which sends training steps to the workers through a ``ClusterCoordinator``; variables
  live on the parameter servers, large ones (the embedding table) split into row shards by
  a ``MinSizePartitioner``; workers and parameter servers run
  ``tfmtnas-server`` (:func:`serve`).

Example:
    >>> strategy = make_strategy("default")
    >>> is_chief(strategy), uses_dataset_creator(strategy)
    (True, False)
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from tfmtnas.errors import UserError

STRATEGIES = ("default", "mirrored", "multi_worker", "parameter_server")
# A variable is split into shards of at least this many bytes, at most one per parameter
# server: a 10^6 x 8 float32 table (32 MB) spreads over every server, a Dense kernel stays whole.
DEFAULT_MIN_SHARD_BYTES = 256 << 10


def cluster_config() -> dict:
    """The parsed ``TF_CONFIG`` environment variable (``{}`` when it is unset).

    Raises:
        UserError: ``TF_CONFIG`` is not a JSON object.
    """
    text = os.environ.get("TF_CONFIG", "")
    if not text.strip():
        return {}
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"TF_CONFIG is not valid JSON ({err}): {text[:200]!r}") from None
    if not isinstance(config, dict):
        raise UserError(f"TF_CONFIG must be a JSON object, got {text[:200]!r}.")
    return config


def _require_cluster(name: str, jobs: tuple[str, ...], task_types: tuple[str, ...]) -> dict:
    config = cluster_config()
    cluster, task = config.get("cluster") or {}, config.get("task") or {}
    missing = [j for j in jobs if not cluster.get(j)]
    if missing or task.get("type") not in task_types:
        raise UserError(
            f"--strategy={name} reads the cluster from TF_CONFIG, which needs cluster jobs "
            f"{list(jobs)} and a task of type {' or '.join(task_types)}; got cluster jobs "
            f"{sorted(cluster)} and task {task or None} (README, 'Running on a cluster').")
    return config


def make_strategy(name: str, min_shard_bytes: int = DEFAULT_MIN_SHARD_BYTES
                  ) -> tf.distribute.Strategy:
    """The strategy ``name`` (one of :data:`STRATEGIES`).

    Create it before anything else runs TensorFlow ops: ``MultiWorkerMirroredStrategy``
    configures the collective ops of the process and refuses once they started.

    Args:
        name: ``default``, ``mirrored``, ``multi_worker`` or ``parameter_server``.
        min_shard_bytes: parameter server only: smallest shard a variable is split into
            (at most one shard per parameter server). Default 256 KiB.

    Raises:
        UserError: an unknown name, or ``TF_CONFIG`` does not describe the cluster.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        _require_cluster(name, ("worker",), ("worker", "chief"))
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "parameter_server":
        _require_cluster(name, ("worker", "ps"), ("chief",))
        # Fail a step whose worker is gone at once (and retry it elsewhere), instead of
        # waiting on the connection.
        os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        num_ps = resolver.cluster_spec().num_tasks("ps")
        partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
            min_shard_bytes=min_shard_bytes, max_shards=num_ps)
        return tf.distribute.ParameterServerStrategy(resolver,
                                                     variable_partitioner=partitioner)
    raise UserError(f"Unknown strategy {name!r}; valid names: {list(STRATEGIES)}.")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's outputs (config, backups, model, metrics).

    One process per run does: the only one without a cluster, worker 0 (or the ``chief``)
    under ``multi_worker``, the chief (the coordinator) under ``parameter_server``.
    """
    return bool(getattr(strategy.extended, "should_checkpoint", True))


def is_parameter_server(strategy: tf.distribute.Strategy) -> bool:
    """Whether ``strategy`` is a ``ParameterServerStrategy``."""
    return isinstance(strategy, tf.distribute.ParameterServerStrategy)


def uses_dataset_creator(strategy: tf.distribute.Strategy) -> bool:
    """Whether training input is a per-worker function of an ``InputContext`` with a fixed
    number of steps per epoch (the parameter-server strategy's asynchronous workers)."""
    return is_parameter_server(strategy)


def split_global_batches(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` (of global batches) set to be split by examples across workers.

    Under ``multi_worker`` every worker reads the same global batches, in the same seeded
    order, and Keras hands each replica its share of each one (auto-sharding by data): a
    step is the step one device would take on that global batch, epochs have the same
    number of steps on every worker, and a resumed run reads what the uninterrupted one
    read. Every worker reads all of the input for it. Without a cluster nothing changes.

    Example:
        >>> ds = split_global_batches(tf.data.Dataset.range(8).batch(4))
        >>> ds.options().experimental_distribute.auto_shard_policy.name
        'DATA'
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def sharded_variables(model) -> dict[str, list[list[int]]]:
    """``{variable name: [shape of each shard]}`` of the model's sharded variables.

    Under ``parameter_server`` a variable larger than two minimum shards is a
    ``ShardedVariable``; others (and every variable under other strategies) are whole.
    """
    shards = {}
    # Keras lists the shards among a layer's weights; the ShardedVariable itself is only the
    # layer attribute that add_weight returned.
    for layer in model._flatten_layers():
        for value in vars(layer).values():
            if type(value).__name__ == "ShardedVariable":
                shards[value.name] = [v.shape.as_list() for v in value.variables]
    return shards


def serve() -> None:
    """Run this machine's worker or parameter server of a ``parameter_server`` cluster.

    Reads ``TF_CONFIG`` (task type ``worker`` or ``ps``), starts a ``tf.distribute.Server``
    on its address and serves until the process is stopped.

    Raises:
        UserError: ``TF_CONFIG`` does not describe a worker or parameter server.
    """
    _require_cluster("parameter_server", ("worker", "ps"), ("worker", "ps"))
    os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    server = tf.distribute.Server(resolver.cluster_spec(), job_name=resolver.task_type,
                                  task_index=resolver.task_id,
                                  protocol=resolver.rpc_layer or "grpc", start=True)
    print(f"tfmtnas server: {resolver.task_type} {resolver.task_id} serving at "
          f"{server.target}", flush=True)
    server.join()


__all__ = ["DEFAULT_MIN_SHARD_BYTES", "STRATEGIES", "cluster_config", "is_chief",
           "is_parameter_server", "make_strategy", "serve", "sharded_variables",
           "uses_dataset_creator"]
