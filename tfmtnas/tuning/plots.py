"""The picture of a study: every trial, its Pareto front marked, one panel per metric pair.

Panels: each task's quality metric against FLOPs per example (the serving cost), and, with
two tasks, the two quality metrics against each other. Trials are coloured by architecture;
front trials are drawn larger with a black edge and labelled with their trial id. Drawn on
a figure with its own Agg canvas, as :mod:`tfmtnas.search.plots` does: the process's
matplotlib backend is never touched.

Example:
    >>> plot_front(records, front_ids, ["income_auc", "marital_auc"], "flops", "pareto.png")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from tfmtnas.search.plots import _figure, _save


def plot_front(records: Sequence[Mapping], front_ids: Sequence[str], quality: Sequence[str],
               cost: str, path: str | Path) -> Path:
    """Draw the study's trials and front into ``path`` (PNG).

    Args:
        records: one dict per finished trial with ``trial_id``, ``architecture`` and
            ``metrics`` (the flat namespace of :func:`tfmtnas.tuning.objective.trial_metrics`).
        front_ids: trial ids on the Pareto front.
        quality: the per-task quality metrics (one panel each against ``cost``).
        cost: the cost metric on the x axis, e.g. ``"flops"``.
        path: the PNG to write.

    Returns:
        ``path``.
    """
    pairs = [(cost, q) for q in quality]
    if len(quality) == 2:
        pairs.append((quality[0], quality[1]))
    fig = _figure((4.2 * len(pairs), 3.6))
    axes = fig.subplots(1, len(pairs), squeeze=False)[0]
    architectures = sorted({r["architecture"] for r in records})
    colors = {a: f"C{i % 10}" for i, a in enumerate(architectures)}
    front = set(front_ids)
    for ax, (x_name, y_name) in zip(axes, pairs):
        for arch in architectures:
            rows = [r for r in records if r["architecture"] == arch]
            for on_front in (False, True):
                pts = [r for r in rows if (r["trial_id"] in front) == on_front]
                if not pts:
                    continue
                ax.scatter([r["metrics"].get(x_name) for r in pts],
                           [r["metrics"].get(y_name) for r in pts],
                           s=60 if on_front else 22, c=colors[arch],
                           edgecolors="black" if on_front else "none",
                           linewidths=1.2, alpha=1.0 if on_front else 0.55,
                           label=arch if not on_front or len(pts) == len(rows) else None,
                           zorder=3 if on_front else 2)
        for r in records:
            if r["trial_id"] in front:
                ax.annotate(str(r["trial_id"]), (r["metrics"].get(x_name),
                                                 r["metrics"].get(y_name)),
                            textcoords="offset points", xytext=(4, 4), fontsize=6)
        ax.set_xlabel(x_name, fontsize=8)
        ax.set_ylabel(y_name, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    fig.legend(unique.values(), unique.keys(), loc="upper center", ncol=min(len(unique), 9),
               fontsize=7, frameon=False)
    fig.suptitle(f"{len(records)} trials, {len(front)} on the Pareto front (black edges)",
                 fontsize=9, y=0.02, va="bottom")
    fig.tight_layout(rect=(0, 0.05, 1, 0.9))
    return _save(fig, path)


__all__ = ["plot_front"]
