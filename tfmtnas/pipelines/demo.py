"""``tfmtnas-demo``: the README's first command.

On UCI Census-Income (KDD) with the MMoE paper's two tasks (income > 50K, never married):
trains the hand-designed baselines, searches the sharing structure with the best method,
derives and fine-tunes the child, and prints one table of test AUCs, FLOPs and parameters.

Example:
    python -m tfmtnas.pipelines.demo --method=mtnas --baselines=mmoe,ple,shared_bottom
"""

from __future__ import annotations

import time
from pathlib import Path

from absl import flags

from tfmtnas.pipelines.errors import binary_main, run_binary

flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string("data_dir", None, "Directory with the UCI files (default: fetch and cache).")
flags.DEFINE_list("baselines", ["mmoe", "ple", "shared_bottom"], "Hand-designed models to train.")
flags.DEFINE_string("method", "mtnas", "Search method (mtnas, gumbel, mtlnas; empty: none).")
flags.DEFINE_string("model_dir", "runs/demo", "Where each model's outputs go.")
flags.DEFINE_string("export_root", "saved_models", "Where the best model is exported for "
                    "TF Serving (<export_root>/<name>/<version>).")
FLAGS = flags.FLAGS


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


@binary_main("tfmtnas-demo")
def main(argv):
    from tfmtnas.data import load_census
    from tfmtnas.pipelines.searching import SearchConfig, run_search
    from tfmtnas.pipelines.training import TrainConfig, train_and_evaluate
    from tfmtnas.search import forward_flops, preset

    start = time.perf_counter()
    data = load_census(FLAGS.data_dir, seed=FLAGS.seed)
    tasks = [t.name for t in data.tasks]
    print(f"Census-Income: {len(data.train):,} train / {len(data.validation):,} validation / "
          f"{len(data.test):,} test rows, {len(data.spec.names)} features", flush=True)
    rows, models = [], {}
    for kind in FLAGS.baselines:
        cfg = TrainConfig(model=kind, seed=FLAGS.seed, model_dir=f"{FLAGS.model_dir}/{kind}")
        print(f"\n== {kind}: {cfg.epochs} epochs ==", flush=True)
        res = train_and_evaluate(cfg, data=data)
        input_dim = len(data.spec.categorical) * cfg.embedding_dim + len(data.spec.numeric)
        spec = preset(kind, tasks, cfg.expert_units, num_experts=cfg.num_experts,
                      num_task_experts=cfg.num_task_experts,
                      num_shared_experts=cfg.num_shared_experts, num_levels=cfg.num_levels)
        rows.append(_row(kind, res.test_metrics, forward_flops(spec, input_dim),
                         res.model.sharing.count_params(), res.seconds))
        models[kind] = (res.model, res.validation_metrics)
    if FLAGS.method:
        cfg = SearchConfig(method=FLAGS.method, seed=FLAGS.seed,
                           model_dir=f"{FLAGS.model_dir}/{FLAGS.method}")
        print(f"\n== {FLAGS.method} search: {cfg.epochs} epochs, then the child: "
              f"{cfg.child} {cfg.child_epochs} epochs ==", flush=True)
        res = run_search(cfg, data=data)
        rows.append(_row(f"{FLAGS.method} child", res.child_metrics, res.cost["child_flops"],
                         res.cost["child_sharing_params"], res.search_seconds))
        models[f"{FLAGS.method}_child"] = (res.child, res.child_validation_metrics)
        print(f"derived spec and pictures: {Path(cfg.model_dir).resolve()}")
    print(f"\nCensus-Income test AUC (seed {FLAGS.seed}); FLOPs and params of the sharing "
          f"network")
    print(format_table(rows, ["model", "income AUC", "marital AUC", "FLOPs/example", "params",
                              "train s"]))
    if models:
        export_best(models)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


def export_best(models: dict) -> str:
    """Export the model with the best mean validation AUC; print its path and a request.

    The test split only reports: choosing by it would make the reported test AUC of the
    exported model optimistic.

    Args:
        models: ``{name: (model, validation metrics)}``.

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
    path = export_saved_model(model, FLAGS.export_root, name=export_name)
    print(f"\nBest model by mean validation AUC: {name}, exported for TF Serving to {path}")
    print(f"(model_base_path={path.parent.resolve()}, model_name={export_name})")
    print("Sample REST request:")
    print(curl_request(path, export_name))
    return name


def run():
    run_binary(main, __name__)


if __name__ == "__main__":
    run()
