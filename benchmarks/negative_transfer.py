"""Negative transfer on the MMoE paper's synthetic data: does the search share less when tasks
are less related?

For each task correlation p, trains MMoE and runs each search method (search, derive,
fine-tune the child) on two regression tasks, then prints the share of expert capacity the
derived route gives to both tasks and the child's test MSE beside MMoE's (mean of both tasks,
averaged over seeds), then per layer the experts the child uses and the fraction of them
serving both tasks (unweighted, so the upper layer counts as much as the first).

Fair comparison: MMoE trains for as many epochs as a child's weights see in total (search
epochs + fine-tune epochs; with ``--child=retrain`` the child's epochs only). Each method's
settings (architecture optimizer, its learning rate, method options) are in
``METHOD_SETTINGS``; ``--settings`` (JSON) overrides them per method, e.g.
``--settings '{"gumbel": {"options": {"budget_weight": 5}}}'``.

Run: ``python benchmarks/negative_transfer.py`` (``make bench-synthetic``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
from synthetic_data import add_data_arguments, synthetic_data  # benchmarks/ is on sys.path

from tfmtnas.pipelines.searching import CHILD_MODES, SearchConfig, run_search
from tfmtnas.pipelines.training import TrainConfig, train_and_evaluate
from tfmtnas.search.analysis import layer_shares, shared_capacity

SIZES = dict(expert_units=(16,), num_experts=4, tower_units=(8,), batch_size=256,
             learning_rate=3e-3)
# Per method: SearchConfig fields (architecture optimizer, its learning rate, warm-up, ...)
# and the method's options.
METHOD_SETTINGS = {
    "gumbel": {"arch_optimizer": "adam", "arch_learning_rate": 0.05,
               "options": {"budget": 0.5}},
    # Plain SGD on a normalised advantage: Adam rescales every route logit's REINFORCE
    # gradient to a similar step, so its argmax route stayed close to random. Queries are
    # not searched here: they do not change what is shared and multiply the routes by 5.
    "mtnas": {"arch_optimizer": "sgd", "arch_learning_rate": 0.5,
              "options": {"normalize_advantage": True, "search_queries": False}},
    # Non-zero cross-task NDDR weights (else every edge's gradient starts at exactly 0) and
    # the min-entropy term ramped in, so the validation loss, not noise, decides the edges.
    "mtlnas": {"arch_optimizer": "adam", "arch_learning_rate": 0.05,
               "options": {"cross_init": 0.1, "entropy_warmup": 600}},
}


def settings(method: str, overrides: dict) -> dict:
    out = json.loads(json.dumps(METHOD_SETTINGS[method]))
    for key, value in overrides.get(method, {}).items():
        if key == "options":
            out["options"].update(value)
        else:
            out[key] = value
    return out


def mse(metrics: dict) -> float:
    return float(np.mean([metrics["y1_rmse"] ** 2, metrics["y2_rmse"] ** 2]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--correlations", default="0,0.5,0.9,1.0")
    parser.add_argument("--methods", default="gumbel,mtnas,mtlnas")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, default=12, help="search epochs")
    parser.add_argument("--child_epochs", type=int, default=None,
                        help="training epochs of the child (default epochs // 2)")
    parser.add_argument("--child", default="finetune", choices=CHILD_MODES,
                        help="the child keeps the supernet's weights (finetune, inherit) or "
                             "starts from scratch (retrain)")
    add_data_arguments(parser)
    parser.add_argument("--settings", default="{}", help="JSON: per-method overrides")
    parser.add_argument("--learning_rate", type=float, default=SIZES["learning_rate"],
                        help="weight learning rate of every model")
    parser.add_argument("--num_layers", type=int, default=2,
                        help="expert layers of the search spaces (MMoE has one)")
    parser.add_argument("--expert_units", type=int, default=SIZES["expert_units"][0],
                        help="width of every expert (MMoE's and the search spaces')")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    sizes = {**SIZES, "learning_rate": args.learning_rate,
             "expert_units": (args.expert_units,)}
    print("command:", " ".join(["python", *sys.argv]), flush=True)
    methods = [m for m in args.methods.split(",") if m]
    child_epochs = args.epochs // 2 if args.child_epochs is None else args.child_epochs
    mmoe_epochs = child_epochs if args.child == "retrain" else args.epochs + child_epochs
    overrides = json.loads(args.settings)
    chosen = {m: settings(m, overrides) for m in methods}
    print("settings:", json.dumps(chosen), flush=True)
    print(f"search {args.epochs} + child {child_epochs} epochs ({args.child}); MMoE "
          f"{mmoe_epochs} epochs", flush=True)
    results: dict = {}
    for p in [float(c) for c in args.correlations.split(",")]:
        for seed in [int(s) for s in args.seeds.split(",")]:
            data = synthetic_data(args, p, seed)
            base = train_and_evaluate(TrainConfig(dataset="synthetic", model="mmoe", seed=seed,
                                                  epochs=mmoe_epochs, **sizes),
                                      data=data, verbose=0)
            results.setdefault((p, "mmoe"), []).append((mse(base.test_metrics), 1.0, []))
            for method in methods:
                st = chosen[method]
                fields = {k: v for k, v in st.items() if k != "options"}
                cfg = SearchConfig(dataset="synthetic", method=method, seed=seed,
                                   num_layers=args.num_layers,
                                   epochs=args.epochs, child=args.child,
                                   child_epochs=child_epochs,
                                   method_options=st["options"], **fields, **sizes)
                res = run_search(cfg, data=data, verbose=0)
                share = shared_capacity(res.derived, 100)
                layers = layer_shares(res.derived)
                results.setdefault((p, method), []).append((mse(res.child_metrics), share,
                                                            layers))
                print(f"p={p} seed={seed} {method}: child MSE {mse(res.child_metrics):.4f} "
                      f"(supernet {mse(res.supernet_metrics):.4f}, MMoE "
                      f"{mse(base.test_metrics):.4f}), shared capacity {share:.2f}, "
                      f"per layer (used, shared) {layers}", flush=True)
    print("\nshare of expert capacity serving both tasks / child test MSE (MMoE test MSE)")
    header = f"{'p':>5}  {'MMoE MSE':>9}  " + "  ".join(f"{m:>22}" for m in methods)
    print(header)
    for p in sorted({k[0] for k in results}):
        base = np.mean([r[0] for r in results[(p, "mmoe")]])
        cells = []
        for m in methods:
            vals = np.array([r[:2] for r in results[(p, m)]])
            cells.append(f"{vals[:, 1].mean():.2f} / {vals[:, 0].mean():.4f}".rjust(22))
        print(f"{p:>5}  {base:>9.4f}  " + "  ".join(cells))
    print("\nper layer, mean over seeds: experts used / fraction of them serving both tasks")
    print(f"{'p':>5}  " + "  ".join(f"{m:>22}" for m in methods))
    for p in sorted({k[0] for k in results}):
        cells = []
        for m in methods:
            per = np.array([r[2] for r in results[(p, m)]])  # [seeds, layers, 2]
            cells.append(", ".join(f"{u:.1f}/{f:.2f}" for u, f in per.mean(0)).rjust(22))
        print(f"{p:>5}  " + "  ".join(cells))
    if args.output:
        with open(args.output, "w") as f:
            json.dump({f"{k[0]}|{k[1]}": v for k, v in results.items()}, f, indent=1)


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - start:.0f} s")
