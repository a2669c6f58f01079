"""What a derived routing graph shares: which tasks each expert serves, and capacity shares.

Example:
    >>> from tfmtnas.search import preset
    >>> spec = preset("mmoe", ["a", "b"], expert_units=(8,), num_experts=2)
    >>> shared_capacity(spec)
    1.0
"""

from __future__ import annotations

from tfmtnas.search.spec import INPUT, Mixer, RoutingSpec, prune
from tfmtnas.search.streams import StreamSpec


def task_reach(spec: RoutingSpec | StreamSpec) -> dict[str, set[str]]:
    """For every expert of the pruned ``spec``, the tasks whose output it feeds.

    For a :class:`~tfmtnas.search.streams.StreamSpec`: every kept component and the tasks
    whose allocation selects it (a component runs on the streams of exactly those tasks).
    """
    if isinstance(spec, StreamSpec):
        spec = spec.prune()
        return {c: {t for t, row in zip(spec.tasks, ly.allocation) if row[i]}
                for ly in spec.layers for i, c in enumerate(ly.components)}
    spec = prune(spec)
    nodes: dict[str, object] = {}
    for ly in spec.layers:
        nodes.update({e.name: e for e in ly.experts})
        nodes.update({m.name: m for m in ly.mixers})
    reach: dict[str, set[str]] = {e: set() for ly in spec.layers for e in
                                  (x.name for x in ly.experts)}
    for task, out in zip(spec.tasks, spec.outputs):
        stack: list[str] = list(out.active())
        seen: set[str] = set()
        while stack:
            name = stack.pop()
            if name == INPUT or name in seen:
                continue
            seen.add(name)
            node = nodes[name]
            if isinstance(node, Mixer):
                stack.extend(node.active())
            else:
                reach[name].add(task)
                stack.append(node.input)
    return reach


def _units(spec) -> list[tuple[tuple[int, ...], list[str]]]:
    """Per layer of the pruned spec: the MLP widths and the expert (component) names."""
    if isinstance(spec, StreamSpec):
        return [(ly.units, list(ly.components)) for ly in spec.prune().layers]
    return [(ly.units, [e.name for e in ly.experts]) for ly in prune(spec).layers]


def expert_sizes(spec: RoutingSpec | StreamSpec, input_dim: int) -> dict[str, int]:
    """Weight count of every expert's (component's) MLP: its share of the capacity."""
    sizes, prev_width = {}, input_dim
    for units, names in _units(spec):
        n, d = 0, prev_width
        for u in units:
            n += d * u + u
            d = u
        sizes.update({name: n for name in names})
        prev_width = units[-1]
    return sizes


def shared_capacity(spec: RoutingSpec | StreamSpec, input_dim: int = 1) -> float:
    """Fraction of the used expert capacity (weights) that serves two or more tasks."""
    reach = task_reach(spec)
    sizes = expert_sizes(spec, input_dim)
    used = sum(sizes[e] for e, tasks in reach.items() if tasks)
    shared = sum(sizes[e] for e, tasks in reach.items() if len(tasks) >= 2)
    return shared / used if used else 0.0


def layer_shares(spec: RoutingSpec | StreamSpec) -> list[tuple[int, float]]:
    """Per layer: how many experts reach a task, and the fraction of those serving two or more.

    Unweighted by size, so a small upper layer counts as much as a wide first one (the
    capacity-weighted :func:`shared_capacity` is dominated by the layer that reads the input).
    """
    reach = task_reach(spec)  # pruned experts are absent: they reach nothing
    out = []
    for _, names in _units(spec):
        used = [reach[n] for n in names if reach.get(n)]
        shared = sum(1 for tasks in used if len(tasks) >= 2)
        out.append((len(used), shared / len(used) if used else 0.0))
    return out
