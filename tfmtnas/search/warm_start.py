"""Start an MTL-NAS supernet from a trained single-task model.

MTL-NAS (Gao et al., "MTL-NAS: Task-Agnostic Neural Architecture Search towards
General-Purpose Multi-Task Learning", CVPR 2020) does not search from scratch: each task's
backbone starts as a trained single-task network, and the searched cross-task edges, whose
NDDR fusions start as the identity on the task's own feature, can only add to it. Here the
single-task network is a :class:`~tfmtnas.models.MultiTaskModel` whose sharing layer is
:class:`~tfmtnas.layers.SingleTask` (``tfmtnas-train --model=single_task``): one MLP per
task over one embedding, and one tower per task. :func:`warm_start_columns` copies its
embedding table, each task's MLP into that task's column of the supernet, stage by stage
(with ``k`` layers per supernet expert, the MLP's layers ``0 .. k-1`` go into the column's
first expert, the next ``k`` into its second, ...), and each task's tower into the
supernet's tower of that task.

It also sets the moving variance of every NDDR batch normalisation to ``1 - epsilon``, so
that in inference mode a fusion at its initialisation (identity kernel on the own feature,
gamma 1, beta 0, moving mean 0) passes the feature through unchanged:
``(x - 0) / sqrt((1 - eps) + eps) = x``, exactly in float32 at Keras' ``eps = 1e-3``. With
the fresh moving variance of 1 each fusion would scale its feature by ``1 / sqrt(1 + eps)``,
about ``1 - 5e-4``. The warm-started supernet then predicts, in inference mode and before
any step, what the single-task model predicts. In training mode the batch norms use batch
statistics, as in the paper.

Example:
    >>> from tfmtnas.search.methods import search_space
    >>> task_columns(search_space("mtlnas", ["a", "b"], num_layers=2))
    {'a': ['d0_a', 'd1_a'], 'b': ['d0_b', 'd1_b']}
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfmtnas.errors import UserError
from tfmtnas.layers import SingleTask
from tfmtnas.search.methods import MTLNAS
from tfmtnas.search.spec import RoutingSpec


def task_columns(spec: RoutingSpec) -> dict[str, list[str]]:
    """Each task's column of an MTL-NAS spec: its own expert in every layer, bottom first.

    A task's own expert below a mixer is the mixer's first candidate (see
    :func:`~tfmtnas.search.methods.search_space` with ``"mtlnas"``); the column is followed
    from the task's output mixer down through each own expert's input mixer.

    Args:
        spec: a routing spec with one column per task, e.g. ``search_space("mtlnas", ...)``.

    Returns:
        ``{task: [expert of layer 0, expert of layer 1, ...]}`` in the spec's task order.

    Raises:
        UserError: a task's own experts skip a layer, or two tasks share one (the spec has
            no column per task to start from single-task networks).

    Example:
        >>> from tfmtnas.search.methods import search_space
        >>> task_columns(search_space("mtlnas", ["x", "y"], num_layers=3))["y"]
        ['d0_y', 'd1_y', 'd2_y']
    """
    where = {e.name: (i, e) for i, layer in enumerate(spec.layers) for e in layer.experts}
    mixers = {m.name: m for layer in spec.layers for m in layer.mixers}
    columns: dict[str, list[str]] = {}
    owner: dict[str, str] = {}
    for task, mixer in zip(spec.tasks, spec.outputs):
        column = []
        for depth in range(len(spec.layers) - 1, -1, -1):
            name = mixer.candidates[0]
            layer, expert = where[name]
            if name in owner or layer != depth:
                why = (f"task {owner[name]!r}'s too" if name in owner
                       else f"in layer {layer}, not {depth}")
                raise UserError(f"The searched spec has no column per task: task {task!r}'s "
                                f"own expert {name!r} is {why}; a warm start needs one expert "
                                f"per task in every layer, as search_space('mtlnas') makes.")
            owner[name] = task
            column.append(name)
            if depth:
                mixer = mixers[expert.input]
        columns[task] = column[::-1]
    return columns


def _repeat_of(units: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    """The fewest layers ``n`` and the units ``u`` with ``u * n == units``."""
    for k in range(1, len(units) + 1):
        if len(units) % k == 0 and units[:k] * (len(units) // k) == units:
            return len(units) // k, units[:k]
    return 1, units  # pragma: no cover (k = len(units) always matches)


def check_single_task(search_model, single_task) -> None:
    """Raise :class:`~tfmtnas.errors.UserError` unless ``single_task`` can start
    ``search_model``'s columns: the same tasks, features and sizes.

    Args:
        search_model: a :class:`~tfmtnas.search.model.SearchModel` of MTL-NAS.
        single_task: a built :class:`~tfmtnas.models.MultiTaskModel` whose sharing layer is
            :class:`~tfmtnas.layers.SingleTask`.

    Raises:
        UserError: one line saying what differs (method, sharing kind, tasks, features,
            embedding width, column or tower units) and what to do.

    Example:
        >>> check_single_task(search_model, load_model("runs/single"))  # doctest: +SKIP
    """
    if not isinstance(search_model.method, MTLNAS):
        raise UserError(f"A warm start from single-task columns applies to MTL-NAS, not "
                        f"{type(search_model.method).__name__}.")
    sharing = single_task.sharing
    if not isinstance(sharing, SingleTask):
        raise UserError(f"A warm start needs a single-task model (one MLP per task), got one "
                        f"whose sharing layer is {type(sharing).__name__}: train one with "
                        f"tfmtnas-train --model=single_task.")
    ours = [(t.name, t.kind_text) for t in search_model.tasks]
    theirs = [(t.name, t.kind_text) for t in single_task.tasks]
    if ours != theirs:
        raise UserError(f"The single-task model has tasks {_tasks(theirs)}, the search "
                        f"{_tasks(ours)}: train it on the search's data and tasks.")
    for what in ("categorical", "numeric"):
        a = [f.name for f in getattr(single_task.spec, what)]
        b = [f.name for f in getattr(search_model.spec, what)]
        if a != b:
            raise UserError(f"The single-task model has {what} features {a}, the search "
                            f"{b}: train it on the search's data.")
    if single_task.spec.total_ids != search_model.spec.total_ids:
        raise UserError(f"The single-task model's embedding has {single_task.spec.total_ids} "
                        f"rows, the search's {search_model.spec.total_ids} (other "
                        f"vocabularies): train it on the search's data.")
    for what, flag in (("embedding_dim", "embedding_dim"), ("tower_units", "tower_units")):
        a, b = getattr(single_task, what), getattr(search_model, what)
        if a != b:
            shown = ",".join(map(str, a)) if isinstance(a, tuple) else a
            raise UserError(f"The single-task model has {what} {a}, the search {b}: search "
                            f"with --{flag}={shown}.")
    net = search_model.sharing
    units = tuple(sharing.units)
    for task, column in task_columns(net.spec).items():
        layer_of = {e.name: ly for ly in net.spec.layers for e in ly.experts}
        stages = [layer_of[name].units for name in column]
        if sum(stages, ()) != units:
            n, per = _repeat_of(units)
            raise UserError(
                f"The single-task model's MLPs have units {units}, task {task!r}'s column "
                f"in the supernet {' + '.join(map(str, stages))}: search with "
                f"--num_layers={n} --expert_units={','.join(map(str, per))} (each column is "
                f"num_layers experts of expert_units).")


def _tasks(pairs: list[tuple[str, str]]) -> str:
    return "[" + ", ".join(f"{name} ({kind})" for name, kind in pairs) + "]"


def warm_start_columns(search_model, single_task) -> list[tf.Variable]:
    """Copy a single-task model into a freshly built MTL-NAS supernet (Gao et al., CVPR 2020).

    Copies the embedding table, each task's MLP into the task's column (see
    :func:`task_columns`; a column's layers in order take the MLP's layers in order) and
    each task's tower, and sets every NDDR batch normalisation's moving variance to
    ``1 - epsilon`` (the module docstring says why). The NDDR kernels, batch-norm scales and
    offsets and the edge logits keep their values: on a fresh supernet the fusions are the
    identity on each task's own feature, and in inference mode the supernet then computes
    the single-task model. Experts of the supernet outside every column (a spec file may
    add some) keep their initialisation.

    Args:
        search_model: a built :class:`~tfmtnas.search.model.SearchModel` of MTL-NAS,
            before its first step.
        single_task: a built :class:`~tfmtnas.models.MultiTaskModel` with a
            :class:`~tfmtnas.layers.SingleTask` sharing layer, the same tasks and features,
            ``embedding_dim`` and ``tower_units``, and MLP units equal to each column's
            units in order (``tfmtnas-train --model=single_task --expert_units=32,32`` for
            ``tfmtnas-search --method=mtlnas --num_layers=2 --expert_units=32``).

    Returns:
        The supernet variables written.

    Raises:
        UserError: the models do not match (:func:`check_single_task`).

    Example:
        >>> from tfmtnas.search.methods import make_method, search_space
        >>> from tfmtnas.search.model import SearchModel
        >>> space = search_space("mtlnas", ["ctr", "cvr"], num_layers=2, expert_units=(32,))
        >>> model = SearchModel(spec, tasks, make_method("mtlnas", space))  # doctest: +SKIP
        >>> # tfmtnas-train --model=single_task --expert_units=32,32 --model_dir=runs/single
        >>> single = load_model("runs/single")  # doctest: +SKIP
        >>> written = warm_start_columns(model, single)  # doctest: +SKIP
    """
    check_single_task(search_model, single_task)
    net = search_model.sharing
    columns = task_columns(net.spec)
    mlps = single_task.sharing.mlps
    writes: list[tuple[tf.Variable, np.ndarray]] = []
    if search_model.embedding.num_categorical:
        # One assign of the whole table (a table sharded over parameter servers splits it).
        writes.append((search_model.embedding.table, single_task.embedding.table.numpy()))
    ours, theirs = search_model.towers.towers, single_task.towers.towers
    writes += [(v, w.numpy()) for v, w in zip(ours.kernels + ours.biases,
                                              theirs.kernels + theirs.biases)]
    depth = 0
    for i, (bank, layer) in enumerate(zip(net.banks, net.spec.layers)):
        names = [e.name for e in layer.experts]
        rows = [names.index(columns[t][i]) for t in net.spec.tasks]  # task order, as mlps
        for j in range(len(layer.units)):
            for var, source in ((bank.kernels[j], mlps.kernels[depth + j]),
                                (bank.biases[j], mlps.biases[depth + j])):
                value = var.numpy()
                value[rows] = source.numpy()
                writes.append((var, value))
        depth += len(layer.units)
    for gates in net.group_gates:
        if gates.nddr_bn is not None:
            variance = gates.nddr_bn.moving_variance
            writes.append((variance, np.full(variance.shape, 1.0 - gates.nddr_bn.epsilon,
                                             variance.dtype.as_numpy_dtype)))
    for var, value in writes:
        var.assign(value)
    return [var for var, _ in writes]


__all__ = ["check_single_task", "task_columns", "warm_start_columns"]
