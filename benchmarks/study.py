"""Test metrics over seeds: the hand-designed zoo and each search method's child.

For every model kind and search method, trains (or searches, derives and fine-tunes) once per
seed with the demo's sizes and prints mean ± std of each task's test metric (AUC for binary
tasks, RMSE for regression), the sharing network's forward FLOPs per example and its
parameter count. Results are also written as JSON (``--output``).

Run: ``python benchmarks/study.py --dataset=census --seeds=0,1,2`` (``make bench-census``;
``make bench-movielens`` for MovieLens-100K).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from tfmtnas.data import load_dataset
from tfmtnas.models import OPTIMIZERS
from tfmtnas.pipelines.searching import CHILD_MODES, SearchConfig, run_search
from tfmtnas.pipelines.training import TrainConfig, train_and_evaluate
from tfmtnas.search import forward_flops, preset

ZOO = ["single_task", "shared_bottom", "mmoe", "cgc", "ple", "cross_stitch"]
METHODS = ["gumbel", "mtnas", "mtlnas"]


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.4f} ± {np.std(values):.4f}"


def zoo_flops(kind: str, cfg: TrainConfig, tasks: list[str], input_dim: int) -> int:
    spec = preset(kind, tasks, cfg.expert_units, num_experts=cfg.num_experts,
                  num_task_experts=cfg.num_task_experts,
                  num_shared_experts=cfg.num_shared_experts, num_levels=cfg.num_levels)
    return forward_flops(spec, input_dim)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="census", choices=["census", "movielens"])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--models", default=",".join(ZOO))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--batch_size", type=int, default=TrainConfig.batch_size)
    parser.add_argument("--search_expert_units", default=None,
                        help="comma-separated expert widths of the search spaces (default: "
                             "SearchConfig's)")
    parser.add_argument("--child", default=SearchConfig.child,
                        choices=CHILD_MODES,
                        help="how a derived child gets its weights (SearchConfig.child)")
    parser.add_argument("--child_epochs", type=int, default=SearchConfig.child_epochs)
    parser.add_argument("--optimizer", default=TrainConfig.optimizer, choices=OPTIMIZERS,
                        help="weight optimizer of every model and search")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    print("command:", " ".join(["python", *sys.argv]), flush=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    search_units = (SearchConfig.expert_units if args.search_expert_units is None
                    else tuple(int(u) for u in args.search_expert_units.split(",")))
    rows = {}
    for seed in seeds:
        data = load_dataset(args.dataset, seed=seed)
        tasks = [t.name for t in data.tasks]
        input_dim = len(data.spec.categorical) * TrainConfig.embedding_dim + len(
            data.spec.numeric)
        for kind in [m for m in args.models.split(",") if m]:
            cfg = TrainConfig(dataset=args.dataset, model=kind, seed=seed, epochs=args.epochs,
                              batch_size=args.batch_size, optimizer=args.optimizer)
            res = train_and_evaluate(cfg, data=data, verbose=0)
            row = rows.setdefault(kind, {"seconds": [], "flops": zoo_flops(kind, cfg, tasks,
                                                                           input_dim),
                                         "params": res.model.sharing.count_params()})
            _record(row, res.test_metrics, res.seconds, data)
            print(f"seed {seed} {kind}: {res.test_metrics}", flush=True)
        for method in [m for m in args.methods.split(",") if m]:
            cfg = SearchConfig(dataset=args.dataset, method=method, seed=seed,
                               epochs=args.epochs, batch_size=args.batch_size,
                               expert_units=search_units, child=args.child,
                               child_epochs=args.child_epochs, optimizer=args.optimizer)
            res = run_search(cfg, data=data, verbose=0)
            row = rows.setdefault(f"{method} child", {"seconds": [], "flops": [], "params": []})
            _record(row, res.child_metrics, res.search_seconds, data)
            row["flops"].append(res.cost["child_flops"])
            row["params"].append(res.cost["child_sharing_params"])
            print(f"seed {seed} {method}: child {res.child_metrics} cost {res.cost}", flush=True)
    metrics = _metric_names(data)
    print(f"\n{args.dataset} test metrics, mean ± std over seeds {seeds}")
    print(f"{'model':<16} " + " ".join(f"{m:<18}" for m in metrics)
          + f" {'FLOPs/ex':>10} {'params':>8} {'train s':>8}")
    for name, row in rows.items():
        flops = np.mean(row["flops"]) if isinstance(row["flops"], list) else row["flops"]
        params = np.mean(row["params"]) if isinstance(row["params"], list) else row["params"]
        print(f"{name:<16} " + " ".join(f"{_mean_std(row[m]):<18}" for m in metrics)
              + f" {flops:>10,.0f} {params:>8,.0f} {np.mean(row['seconds']):>8.0f}")
    if args.output:
        with open(args.output, "w") as f:
            json.dump(rows, f, indent=1, default=float)


def _metric_names(data) -> list[str]:
    return [f"{t.name}_{'auc' if t.kind == 'binary' else 'rmse'}" for t in data.tasks]


def _record(row: dict, metrics: dict, seconds: float, data) -> None:
    for name in _metric_names(data):
        row.setdefault(name, []).append(metrics[name])
    row["seconds"].append(seconds)


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - start:.0f} s")
