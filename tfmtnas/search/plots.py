"""Pictures of a search: the learned allocation (probabilities) and the derived graph.

Figures are drawn on their own Agg canvas (:class:`matplotlib.figure.Figure`, no
``pyplot``): importing or calling this module never selects or changes the process's
matplotlib backend, and needs no display.

Example:
    >>> plot_allocation(method, "allocation.png")
    >>> plot_graph(method.derive(), "derived_graph.png")
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tfmtnas.search.network import mixer_groups
from tfmtnas.search.spec import INPUT, RoutingSpec
from tfmtnas.search.streams import StreamSpec


def _figure(figsize: tuple[float, float]) -> Figure:
    """A figure with its own Agg canvas (PNG without a GUI, whatever the global backend)."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def plot_allocation(method, path: str | Path) -> Path:
    """One heat map per mixer group: consumers x candidate experts, shaded by probability.

    For a stream space (the Gumbel matrix as published): one task x component map per layer.
    """
    if isinstance(method.spec, StreamSpec):
        return _plot_stream_allocation(method, path)
    groups = method.groups
    probs = method.probabilities()
    producers = [g.producers for g in groups]
    fig = _figure((3.2 * len(groups) + 1, 3.2))
    axes = fig.subplots(1, len(groups), squeeze=False)
    for ax, g, p, names in zip(axes[0], groups, probs, producers):
        im = _probability_panel(ax, p, names, g.names, f"reads layer {g.producer_layer}",
                                shown=g.candidates)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="P(connection)")
    fig.suptitle(f"{method.method_name}: learned allocation", fontsize=9)
    return _save(fig, path)


def _plot_stream_allocation(method, path) -> Path:
    spec, probs = method.spec, method.probabilities()
    fig = _figure((3.2 * len(spec.layers) + 1, 0.5 * len(spec.tasks) + 2.2))
    axes = fig.subplots(1, len(spec.layers), squeeze=False)
    for i, (ax, ly, p) in enumerate(zip(axes[0], spec.layers, probs)):
        im = _probability_panel(ax, p, ly.components, spec.tasks, f"layer {i}")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="P(task uses component)")
    fig.suptitle(f"{method.method_name}: learned allocation", fontsize=9)
    return _save(fig, path)


def _probability_panel(ax, p, columns, rows, title: str, shown=None):
    """One heat map of probabilities ``p`` [rows, columns], each ``shown`` cell labelled."""
    im = ax.imshow(p, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(len(columns)), columns, rotation=60, fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    for (r, c), val in _cells(p):
        if shown is None or shown[r, c]:
            ax.text(c, r, f"{val:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if val > 0.6 else "black")
    ax.set_title(title, fontsize=8)
    return im


def _cells(p):
    for r in range(p.shape[0]):
        for c in range(p.shape[1]):
            yield (r, c), float(p[r, c])


def plot_graph(spec: RoutingSpec | StreamSpec, path: str | Path) -> Path:
    """The fixed graph: input at the bottom, expert layers, task outputs on top; active edges.

    A stream spec draws each layer's kept components and, per task, an edge from every
    component of its allocation to the task (its stream's row).
    """
    if isinstance(spec, StreamSpec):
        return _plot_stream_graph(spec, path)
    rows = [[INPUT]] + [[e.name for e in ly.experts] for ly in spec.layers] + [list(spec.tasks)]
    pos = {}
    for y, row in enumerate(rows):
        for x, name in enumerate(row):
            pos[(y, name)] = ((x + 1) / (len(row) + 1), y)
    fig = _figure((max(4, 1.3 * max(len(r) for r in rows)), 1.4 * len(rows)))
    ax = fig.subplots()
    row_of = {name: y for y, row in enumerate(rows[:-1]) for name in row}
    for i, ly in enumerate(spec.layers):
        mixers = {m.name: m for m in ly.mixers}
        for e in ly.experts:
            sources = [INPUT] if e.input == INPUT else mixers[e.input].active()
            for s in sources:  # a skip edge comes from a row further down
                _edge(ax, pos[(row_of[s], s)], pos[(i + 1, e.name)])
    for m in spec.outputs:
        for s in m.active():
            _edge(ax, pos[(row_of[s], s)], pos[(len(spec.layers) + 1, m.name)])
    for (y, name), (px, py) in pos.items():
        color = "#f4d35e" if y == len(rows) - 1 else ("#dddddd" if y == 0 else "#9cc3e6")
        ax.text(px, py, name, ha="center", va="center", fontsize=7,
                bbox=dict(boxstyle="round", fc=color, ec="#444444"))
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.5, len(rows) - 0.5)
    ax.axis("off")
    ax.set_title("derived routing graph", fontsize=9)
    return _save(fig, path)


def _plot_stream_graph(spec: StreamSpec, path) -> Path:
    spec = spec.prune()
    rows = [ly.components for ly in spec.layers]
    fig = _figure((max(4, 1.3 * max(len(spec.tasks), *map(len, rows))),
                   1.4 * len(spec.layers) + 0.6))
    ax = fig.subplots()
    colors = [f"C{t % 10}" for t in range(len(spec.tasks))]
    for y, (ly, row) in enumerate(zip(spec.layers, rows)):
        a = ly.matrix(len(spec.tasks))
        for c, name in enumerate(row):
            x = (c + 1) / (len(row) + 1)
            users = [spec.tasks[t] for t in np.flatnonzero(a[:, c])]
            ax.text(x, y, f"{name}\n{', '.join(users)}", ha="center", va="center", fontsize=6,
                    bbox=dict(boxstyle="round", fc="#9cc3e6", ec="#444444"))
    for t, task in enumerate(spec.tasks):
        ax.text((t + 1) / (len(spec.tasks) + 1), len(spec.layers), task, ha="center",
                va="center", fontsize=7, color=colors[t],
                bbox=dict(boxstyle="round", fc="#f4d35e", ec="#444444"))
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.5, len(spec.layers) + 0.5)
    ax.axis("off")
    ax.set_title("derived allocation: components and the tasks using them", fontsize=9)
    return _save(fig, path)


def _edge(ax, a, b):
    ax.plot([a[0], b[0]], [a[1], b[1]], color="#555555", lw=1, zorder=0)


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def allocation_scalars(method) -> dict[str, float]:
    """``{"group/consumer/expert": probability}`` for TensorBoard (``layer/task/component``
    for a stream space)."""
    out = {}
    if isinstance(method.spec, StreamSpec):
        for i, (ly, p) in enumerate(zip(method.spec.layers, method.probabilities())):
            if ly.searched:
                for t, task in enumerate(method.spec.tasks):
                    for c, name in enumerate(ly.components):
                        out[f"arch/l{i}/{task}/{name}"] = float(p[t, c])
        return out
    for g_i, (g, p) in enumerate(zip(mixer_groups(method.spec), method.probabilities())):
        names = g.producers
        for r, consumer in enumerate(g.names):
            for c, producer in enumerate(names):
                if g.candidates[r, c] and g.searched[r]:
                    out[f"arch/g{g_i}/{consumer}/{producer}"] = float(p[r, c])
    return out
