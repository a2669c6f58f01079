"""What a derived routing graph shares: which tasks each expert serves, and capacity shares.

Example:
    >>> from tfmtnas.search import preset
    >>> spec = preset("mmoe", ["a", "b"], expert_units=(8,), num_experts=2)
    >>> shared_capacity(spec)
    1.0
"""

from __future__ import annotations

from tfmtnas.search.spec import INPUT, Mixer, RoutingSpec, prune


def task_reach(spec: RoutingSpec) -> dict[str, set[str]]:
    """For every expert of the pruned ``spec``, the tasks whose output it feeds."""
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


def expert_sizes(spec: RoutingSpec, input_dim: int) -> dict[str, int]:
    """Weight count of every expert's MLP (its share of the network's capacity)."""
    spec = prune(spec)
    sizes, prev_width = {}, input_dim
    for ly in spec.layers:
        n, d = 0, prev_width
        for u in ly.units:
            n += d * u + u
            d = u
        sizes.update({e.name: n for e in ly.experts})
        prev_width = ly.units[-1]
    return sizes


def shared_capacity(spec: RoutingSpec, input_dim: int = 1) -> float:
    """Fraction of the used expert capacity (weights) that serves two or more tasks."""
    reach = task_reach(spec)
    sizes = expert_sizes(spec, input_dim)
    used = sum(sizes[e] for e, tasks in reach.items() if tasks)
    shared = sum(sizes[e] for e, tasks in reach.items() if len(tasks) >= 2)
    return shared / used if used else 0.0


def layer_shares(spec: RoutingSpec) -> list[tuple[int, float]]:
    """Per layer: how many experts reach a task, and the fraction of those serving two or more.

    Unweighted by size, so a small upper layer counts as much as a wide first one (the
    capacity-weighted :func:`shared_capacity` is dominated by the layer that reads the input).
    """
    reach = task_reach(spec)  # pruned experts are absent: they reach nothing
    out = []
    for ly in spec.layers:
        used = [reach[e.name] for e in ly.experts if reach.get(e.name)]
        shared = sum(1 for tasks in used if len(tasks) >= 2)
        out.append((len(used), shared / len(used) if used else 0.0))
    return out
