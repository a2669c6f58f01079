"""The README's first command on UCI Census-Income: the library behind ``tfmtnas-demo``.

:func:`run_demo` trains the hand-designed baselines, searches the sharing structure, derives
and fine-tunes the child, prints one table of test AUCs, FLOPs and parameters, and exports
the model with the best validation AUC for TF Serving.

Example:
    >>> run_demo(baselines=["mmoe"], method="mtnas", model_dir="runs/demo")
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def format_table(rows: list[dict], columns: list[str]) -> str:
    """A plain-text table: one row per dict, the given columns."""
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths))
              for r in rows]
    return "\n".join(lines)


def _row(name: str, metrics: dict, flops: int, params: int, seconds: float) -> dict:
    return {"model": name, "income AUC": f"{metrics['income_auc']:.4f}",
            "marital AUC": f"{metrics['marital_auc']:.4f}", "FLOPs/example": f"{flops:,}",
            "params": f"{params:,}", "train s": f"{seconds:.0f}"}


def run_demo(data_dir: str | None = None, seed: int = 0,
             baselines: Sequence[str] = ("mmoe", "ple", "shared_bottom"),
             method: str = "mtnas", model_dir: str = "runs/demo",
             export_root: str = "saved_models") -> None:
    """Train, search, print the table and export the best model (see the module docstring).

    Args:
        data_dir: directory with the UCI files (default: fetch and cache).
        seed: random seed of the split, initialisation and shuffling.
        baselines: hand-designed sharing structures to train.
        method: search method (empty: no search).
        model_dir: each model's outputs go to ``<model_dir>/<baseline or method>``.
        export_root: where the best model is exported for TF Serving.
    """
    from tfmtnas.data import load_census
    from tfmtnas.pipelines.searching import SearchConfig, child_mode, run_search
    from tfmtnas.pipelines.training import TrainConfig, train_and_evaluate
    from tfmtnas.search import forward_flops, preset

    start = time.perf_counter()
    data = load_census(data_dir, seed=seed)
    tasks = [t.name for t in data.tasks]
    print(f"Census-Income: {len(data.train):,} train / {len(data.validation):,} validation / "
          f"{len(data.test):,} test rows, {len(data.spec.names)} features", flush=True)
    rows, models = [], {}
    for kind in baselines:
        cfg = TrainConfig(model=kind, seed=seed, model_dir=f"{model_dir}/{kind}")
        print(f"\n== {kind}: {cfg.epochs} epochs ==", flush=True)
        res = train_and_evaluate(cfg, data=data)
        input_dim = len(data.spec.categorical) * cfg.embedding_dim + len(data.spec.numeric)
        spec = preset(kind, tasks, cfg.expert_units, num_experts=cfg.num_experts,
                      num_task_experts=cfg.num_task_experts,
                      num_shared_experts=cfg.num_shared_experts, num_levels=cfg.num_levels)
        rows.append(_row(kind, res.test_metrics, forward_flops(spec, input_dim),
                         res.model.sharing.count_params(), res.seconds))
        models[kind] = (res.model, res.validation_metrics)
    if method:
        cfg = SearchConfig(method=method, seed=seed, model_dir=f"{model_dir}/{method}")
        print(f"\n== {method} search: {cfg.epochs} epochs, then the child: "
              f"{child_mode(cfg)} {cfg.child_epochs} epochs ==", flush=True)
        res = run_search(cfg, data=data)
        rows.append(_row(f"{method} child", res.child_metrics, res.cost["child_flops"],
                         res.cost["child_sharing_params"], res.search_seconds))
        models[f"{method}_child"] = (res.child, res.child_validation_metrics)
        print(f"derived spec and pictures: {Path(cfg.model_dir).resolve()}")
    print(f"\nCensus-Income test AUC (seed {seed}); FLOPs and params of the sharing "
          f"network")
    print(format_table(rows, ["model", "income AUC", "marital AUC", "FLOPs/example", "params",
                              "train s"]))
    if models:
        export_best(models, export_root)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


def export_best(models: Mapping[str, tuple], export_root: str = "saved_models") -> str:
    """Export the model with the best mean validation AUC; print its path and a request.

    The test split only reports: choosing by it would make the reported test AUC of the
    exported model optimistic.

    Args:
        models: ``{name: (model, validation metrics)}``.
        export_root: TF Serving base folder; the model goes to
            ``<export_root>/census_<name>/<version>``.

    Returns:
        The name of the exported model.

    Example:
        >>> export_best({"mmoe": (mmoe, {"income_auc": 0.95, "marital_auc": 0.99})})
        'mmoe'
    """
    from tfmtnas.export import export_saved_model
    from tfmtnas.export.client import curl_request

    def mean_auc(item):
        metrics = item[1][1]
        return sum(metrics[f"{t}_auc"] for t in ("income", "marital")) / 2

    name, (model, _) = max(models.items(), key=mean_auc)
    export_name = f"census_{name}"
    path = export_saved_model(model, export_root, name=export_name)
    print(f"\nBest model by mean validation AUC: {name}, exported for TF Serving to {path}")
    print(f"(model_base_path={path.parent.resolve()}, model_name={export_name})")
    print("Sample REST request:")
    print(curl_request(path, export_name))
    return name
