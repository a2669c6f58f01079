"""MTL-NAS's minimum-entropy term, ablated: does it close the gap between the supernet that
was searched and the hard child that is kept?

MTL-NAS (Gao et al., CVPR 2020) trains its edge gates as ``sigmoid(a)`` and keeps the edges
with ``a > 0``, evaluating that child without retraining. The minimum-entropy term pushes
every ``sigmoid(a)`` towards 0 or 1 so that the discretisation changes little. For each
dataset and seed this runs ``tfmtnas-search --method=mtlnas`` (the paper's defaults: NDDR
layers at 100x the learning rate, annealed temperature, edges from stages i-2..i, the split
redrawn each epoch, the inherited child) with the term (weight 10) and without it (0), and
prints:

- the final edge probabilities: mean binary entropy (nats; ln 2 = 0.693 is undecided), the
  fraction within 0.05 of 0 or 1, and the edges kept;
- the test metric of the supernet under its relaxed gates (``sigmoid(a)``, the architecture
  step's network), of the hard child (``a > 0``, inherited weights, no retraining), and
  their gap; AUC for Census-Income's binary tasks, MSE for the synthetic regressions.

Run: ``python benchmarks/mtlnas_entropy.py`` (``make bench-mtlnas``); ``--datasets``,
``--seeds``, ``--epochs``, ``--synthetic_epochs`` to change the grid.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from tfmtnas.data import load_dataset
from tfmtnas.data.sources import split_dataset
from tfmtnas.pipelines.searching import SearchConfig, run_search

NEAR = 0.05  # an edge probability within this of 0 or 1 counts as decided


def edge_probabilities(method) -> np.ndarray:
    """``sigmoid(a)`` of every searched cross-task edge."""
    out = []
    for g, a, own in zip(method.groups, method.edge_logits, method._own):
        out.append(tf.sigmoid(a).numpy()[method._edge_entries(g, own)])
    return np.concatenate(out)


def binary_entropy(p: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(np.mean(-p * np.log(p) - (1 - p) * np.log(1 - p)))


def test_scores(result, data) -> tuple[dict[str, float], dict[str, float]]:
    """Per task: the relaxed supernet's and the hard child's test metric (AUC or MSE)."""
    model, child = result.search_model, result.child
    relaxed, hard, labels = [], [], []
    for features, y in split_dataset(data, "test", 8192):
        relaxed.append(model.logits(features, mode="arch").numpy())
        hard.append(child.logits(features).numpy())
        labels.append(np.stack([y[t.name].numpy() for t in data.tasks], 1))
    relaxed, hard, labels = (np.concatenate(x) for x in (relaxed, hard, labels))
    scores = ({}, {})
    for i, task in enumerate(data.tasks):
        keep = ~np.isnan(labels[:, i])
        for out, logits in zip(scores, (relaxed, hard)):
            if task.kind == "binary":
                out[f"{task.name}_auc"] = roc_auc_score(labels[keep, i], logits[keep, i])
            else:
                out[f"{task.name}_mse"] = float(np.mean((logits[keep, i] - labels[keep, i]) ** 2))
    return scores


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="census,synthetic")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=3, help="search epochs (Census-Income)")
    parser.add_argument("--synthetic_epochs", type=int, default=20,
                        help="search epochs on the synthetic data (10 steps each by default)")
    parser.add_argument("--entropy_weights", default="10,0")
    parser.add_argument("--num_train", type=int, default=20000, help="synthetic rows")
    parser.add_argument("--correlation", type=float, default=0.5, help="synthetic tasks' p")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    weights = [float(w) for w in args.entropy_weights.split(",")]
    rows = []
    for name in args.datasets.split(","):
        for seed in seeds:
            options = ({"num_train": args.num_train, "num_validation": 2000, "num_test": 4000,
                        "correlation": args.correlation} if name == "synthetic" else {})
            data = load_dataset(name, seed=seed, **options)
            for weight in weights:
                epochs = args.synthetic_epochs if name == "synthetic" else args.epochs
                cfg = SearchConfig(dataset=name, method="mtlnas", epochs=epochs, seed=seed,
                                   method_options={"entropy_weight": weight})
                start = time.perf_counter()
                result = run_search(cfg, data=data, verbose=0)
                p = edge_probabilities(result.search_model.method)
                relaxed, hard = test_scores(result, data)
                rows.append(dict(dataset=name, seed=seed, weight=weight,
                                 entropy=binary_entropy(p),
                                 decided=float(np.mean((p < NEAR) | (p > 1 - NEAR))),
                                 kept=f"{int(np.sum(p > 0.5))}/{len(p)}", relaxed=relaxed,
                                 hard=hard, seconds=time.perf_counter() - start))
                _print_row(rows[-1])
    _summary(rows)


def _metric_text(scores: dict[str, float]) -> str:
    return " ".join(f"{k}={v:.4f}" for k, v in scores.items())


def _gap(row) -> float:
    """Mean over tasks of |relaxed supernet - hard child|."""
    return float(np.mean([abs(row["relaxed"][k] - row["hard"][k]) for k in row["hard"]]))


def _print_row(row) -> None:
    print(f"{row['dataset']:9s} seed {row['seed']} entropy_weight {row['weight']:g}: "
          f"H {row['entropy']:.3f} nats, {row['decided']:.0%} decided, kept {row['kept']}; "
          f"supernet {_metric_text(row['relaxed'])} | child {_metric_text(row['hard'])} | "
          f"gap {_gap(row):.6f} ({row['seconds']:.0f} s)", flush=True)


def _summary(rows) -> None:
    print("\nmean over seeds: dataset, entropy weight, edge entropy (nats), decided fraction, "
          "child metric, |supernet - child|")
    for name in dict.fromkeys(r["dataset"] for r in rows):
        for weight in dict.fromkeys(r["weight"] for r in rows):
            group = [r for r in rows if r["dataset"] == name and r["weight"] == weight]
            child = {k: np.mean([r["hard"][k] for r in group]) for k in group[0]["hard"]}
            print(f"{name:9s} {weight:4g}  H {np.mean([r['entropy'] for r in group]):.3f}  "
                  f"decided {np.mean([r['decided'] for r in group]):.0%}  "
                  f"child {_metric_text(child)}  gap {np.mean([_gap(r) for r in group]):.6f}")


if __name__ == "__main__":
    main()
