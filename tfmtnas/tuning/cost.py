"""What a trial's model costs to serve: FLOPs and parameters per example, batch-1 latency.

- **FLOPs** (2 per multiply-add, one example): the sharing network as
  :func:`tfmtnas.search.forward_flops` counts it (a zoo model through its preset's routing
  graph, a searched child through its derived spec), plus the task towers, which a study
  varies too. The embedding lookup is a gather, not counted.
- **Parameters**: every weight of the model (embedding table included) and the sharing
  network's alone.
- **Latency**: the model exported as TF Serving loads it (:func:`tfmtnas.export.export_saved_model`)
  and run one example at a time through TensorFlow's C API
  (:class:`tfmtnas.export.capi.CApiSession`, the C++ path a model server takes): the median
  of ``calls`` timed ``TF_SessionRun`` calls after ``warmup`` untimed ones. The export is
  removed afterwards; only the number is kept.

Example:
    >>> tower_flops(32, (16,), num_tasks=2)      # 2 x 2 x (32*16 + 16*1)
    2112
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tfmtnas.features import FeatureSpec


def input_width(spec: FeatureSpec, embedding_dim: int) -> int:
    """Width of the sharing network's input: the embeddings and the numeric features.

    Example:
        >>> from tfmtnas.features import CategoricalFeature, NumericFeature
        >>> spec = FeatureSpec([CategoricalFeature("c", ("a", "b"))], [NumericFeature("x")])
        >>> input_width(spec, 8)
        9
    """
    return len(spec.categorical) * int(embedding_dim) + len(spec.numeric)


def tower_flops(width: int, units: Sequence[int], num_tasks: int | Sequence[int]) -> int:
    """FLOPs of the task towers: each an MLP ``width -> units... -> outputs``.

    Args:
        width: input width of each tower.
        units: hidden widths of each tower.
        num_tasks: the number of towers (one output each), or each tower's outputs
            (``TaskSpec.width``: ``K`` for a ``K``-class task). The towers run as one bank,
            every last layer as wide as the widest (:class:`~tfmtnas.layers.TaskTowers`),
            which is what is counted.

    Example:
        >>> tower_flops(32, (16,), [1, 10])      # 2 x 2 x (32*16 + 16*10)
        2688
    """
    outputs = [1] * int(num_tasks) if isinstance(num_tasks, int) else list(num_tasks)
    total, prev = 0, int(width)
    for u in [*units, max(outputs)]:
        total += 2 * prev * int(u)
        prev = int(u)
    return len(outputs) * total


def zoo_sharing_flops(kind: str, tasks: Sequence[str], sizes: dict, input_dim: int) -> int:
    """FLOPs of a zoo model's sharing layer, through its routing-graph preset.

    Args:
        kind: a :data:`tfmtnas.models.SHARING_KINDS` name.
        tasks: task names.
        sizes: :class:`~tfmtnas.search.spec.BaselineSizes` fields (``expert_units``,
            ``num_experts``, ...).
        input_dim: :func:`input_width`.
    """
    from tfmtnas.search import forward_flops, preset

    return forward_flops(preset(kind, tasks, **sizes), input_dim)


def serving_latency_ms(model, calls: int = 200, warmup: int = 20,
                       work_dir: str | Path | None = None) -> float:
    """Batch-1 median latency (ms) of ``model`` exported for TF Serving, via the C API.

    The request is one plausible row (:func:`tfmtnas.export.client.sample_row`: the first
    vocabulary entry, the mean number), as all trials get the same kind of request.

    Args:
        model: a trained tfmtnas model (``.spec``, ``.tasks``).
        calls: timed calls.
        warmup: untimed calls before them.
        work_dir: where the temporary export goes (default: the system's temp folder).

    Example:
        >>> serving_latency_ms(result.model, calls=100)   # doctest: +SKIP
        0.31
    """
    from tfmtnas.export import export_saved_model, to_columns
    from tfmtnas.export.capi import CApiSession
    from tfmtnas.export.client import sample_row

    if calls < 1:
        raise ValueError(f"calls must be >= 1, got {calls}.")
    if work_dir is not None:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix=".latency-", dir=work_dir))
    try:
        path = export_saved_model(model, root, name="trial", version=1)
        with CApiSession(path) as session:
            session.set_inputs(to_columns([sample_row(model.spec)], model.spec))
            times = session.time_runs(warmup + calls)[warmup:]
        return float(np.median(times) * 1e3)
    finally:
        shutil.rmtree(root, ignore_errors=True)


__all__ = ["input_width", "serving_latency_ms", "tower_flops", "zoo_sharing_flops"]
