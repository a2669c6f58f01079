"""MTNAS at 16 experts x 8 tasks: architecture size per expert count, search epoch vs MMoE epoch.

MTNAS (Chen, Gu, Fu, arXiv 2009.00387) enumerates (2^E - 1) * Q local routes per block; the
factorised form (``MTNAS(routes="factorised")``: a Bernoulli per candidate and a categorical
over queries) needs E + Q logits per block. This prints:

1. the architecture parameter count of the MTNAS supernet (1 and ``--num_layers`` layers of
   E shared experts, 8 tasks) at E = 4, 8, 16, factorised and, where it can be built
   (E <= 12), enumerated; per block and in total. Per block the factorised count is linear
   in E; above layer 0 there are E blocks (one per expert) of E candidates each, so a
   supernet of 2 or more layers has E^2 + ... in total, as any expert x expert connection
   matrix (the Gumbel matrix's too); with 1 layer the total is T * E;
2. on synthetic data with 8 regression tasks (the MMoE paper's generator, Ma et al. KDD
   2018, extended to T tasks: ``w_k = c (sqrt(p) u_0 + sqrt(1 - p) u_k)`` with orthonormal
   ``u``, so every pair of tasks has correlation p), in one process, side by side: the median
   wall time of 3 epochs after a warm-up epoch (interleaved: one epoch of each model in
   turn) of an MMoE of E experts, and of an MTNAS
   search epoch (weight step on a training batch + architecture step on a validation
   batch, one pass over the same training rows) of E experts per layer at the same expert
   and tower widths and weight optimizer, with 1 layer (MMoE's depth) and with
   ``--num_layers``; and the ratios: of the medians, and ("paired") the median over rounds
   of each epoch over the MMoE epoch run just before it.

Run: ``python benchmarks/mtnas_scale.py`` (when the machine is otherwise idle: the ratio of
two wall times measured minutes apart on a busy machine is noise).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from timing import EpochTimer  # benchmarks/ is on sys.path when a script runs

from tfmtnas import keras
from tfmtnas.data import MultiTaskData, split_dataset
from tfmtnas.data.base import Split
from tfmtnas.data.sources import search_pairs
from tfmtnas.features import FeatureSpec, TaskSpec
from tfmtnas.models.optimizers import make_optimizer
from tfmtnas.pipelines.searching import SearchConfig
from tfmtnas.pipelines.training import TrainConfig, build_model
from tfmtnas.search.methods import ENUMERATED_MAX, make_method, search_space
from tfmtnas.search.model import SearchModel


def many_task_synthetic(num_tasks: int, num_train: int, num_validation: int, dim: int = 100,
                        correlation: float = 0.5, num_sin: int = 10, noise_std: float = 0.01,
                        seed: int = 0) -> MultiTaskData:
    """``num_tasks`` regression tasks, pairwise correlation ``correlation`` (see the docstring)."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, num_tasks + 1)))
    common, own = basis[:, 0], basis[:, 1:]
    w = np.sqrt(correlation) * common[:, None] + np.sqrt(1.0 - correlation) * own  # [d, T]
    alpha, beta = rng.standard_normal(num_sin), rng.standard_normal(num_sin)
    names = [f"x{i}" for i in range(dim)]
    tasks = tuple(TaskSpec(f"y{k}", "regression") for k in range(num_tasks))
    splits = []
    for n in (num_train, num_validation, num_validation):
        x = rng.standard_normal((n, dim))
        z = x @ w  # [n, T]
        y = z + np.sin(z[..., None] * alpha + beta).sum(-1) + noise_std * rng.standard_normal(
            z.shape)
        splits.append(Split({name: np.ascontiguousarray(x[:, i]) for i, name in enumerate(names)},
                            {t.name: y[:, k].astype(np.float32) for k, t in enumerate(tasks)}))
    spec = FeatureSpec.fit(splits[0].features, numeric=names)
    return MultiTaskData("synthetic_many", *splits, spec, tasks)


def arch_params(experts: int, tasks: int, num_layers: int, routes: str) -> tuple[int, int]:
    """(largest block's parameters, total) of the MTNAS architecture variables."""
    space = search_space("mtnas", [f"t{k}" for k in range(tasks)], num_layers, experts, (4,))
    method = make_method("mtnas", space, routes=routes, seed=0)
    sizes = [v.shape.num_elements() for v in method.trainable_variables]
    per_block = [v.shape[-1] for v in method.trainable_variables]
    if routes == "factorised":  # a block's E subset logits and its Q query logits
        per_block = [experts + (1 + experts if num_layers > 1 else 0)]
    return max(per_block), sum(sizes)


def search_model(data, cfg: SearchConfig, experts: int, num_layers: int) -> SearchModel:
    keras.utils.set_random_seed(0)
    space = search_space("mtnas", [t.name for t in data.tasks], num_layers, experts,
                         cfg.expert_units)
    model = SearchModel(data.spec, data.tasks,
                        make_method("mtnas", space, routes="factorised", seed=0),
                        arch_optimizer=keras.optimizers.Adam(cfg.arch_learning_rate),
                        embedding_dim=cfg.embedding_dim, tower_units=cfg.tower_units)
    # The weight optimizer of tfmtnas-search (and of the MMoE below).
    model.compile(make_optimizer(cfg.optimizer, cfg.learning_rate), jit_compile=cfg.jit_compile)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experts", type=int, default=16)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--num_layers", type=int, default=2, help="layers of the supernet")
    parser.add_argument("--num_train", type=int, default=131072,
                        help="training rows (128 batches: epochs of seconds, not tenths)")
    parser.add_argument("--num_validation", type=int, default=8192)
    parser.add_argument("--batch_size", type=int, default=1024)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after warm-up")
    args = parser.parse_args(argv)
    print("command:", " ".join(["python", *sys.argv]), flush=True)
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)

    for layers in sorted({1, args.num_layers}):
        print(f"\narchitecture parameters, MTNAS, {layers} layer{'s' * (layers > 1)}, "
              f"{args.tasks} tasks")
        print(f"{'experts':>7} {'factorised block':>16} {'factorised total':>16} "
              f"{'enumerated block':>16} {'enumerated total':>16}")
        for e in (4, 8, 16):
            f_block, f_total = arch_params(e, args.tasks, layers, "factorised")
            if e <= ENUMERATED_MAX:
                e_block, e_total = arch_params(e, args.tasks, layers, "enumerated")
                enumerated = f"{e_block:>16,} {e_total:>16,}"
            else:
                q = 1 + e if layers > 1 else 1
                enumerated = f"{(2 ** e - 1) * q:>16,} {'(not built)':>16}"
            print(f"{e:>7} {f_block:>16,} {f_total:>16,} {enumerated}")

    data = many_task_synthetic(args.tasks, args.num_train, args.num_validation)
    cfg = SearchConfig(num_experts=args.experts, batch_size=args.batch_size)
    train = split_dataset(data, "train", args.batch_size, shuffle=True, seed=0)
    keras.utils.set_random_seed(0)
    mmoe_cfg = TrainConfig(model="mmoe", expert_units=cfg.expert_units,
                           num_experts=args.experts, tower_units=cfg.tower_units,
                           embedding_dim=cfg.embedding_dim, learning_rate=cfg.learning_rate,
                           optimizer=cfg.optimizer, jit_compile=cfg.jit_compile)
    pairs, _ = search_pairs(data, False, args.batch_size, seed=0)
    runs = [("MMoE", build_model(data, mmoe_cfg), train)]
    for layers in sorted({1, args.num_layers}):
        runs.append((f"MTNAS search, {layers} layer{'s' * (layers > 1)}",
                     search_model(data, cfg, args.experts, layers), pairs))
    # Interleaved: one epoch of each model in turn, so that a slow spell of the machine
    # falls on every model alike rather than on whichever ran then. Each first epoch is the
    # warm-up (tracing, XLA compile).
    times: dict[str, list[float]] = {name: [] for name, _, _ in runs}
    for _ in range(args.epochs + 1):
        for name, model, ds in runs:
            timer = EpochTimer()
            model.fit(ds, epochs=1, verbose=0, callbacks=[timer])
            times[name] += timer.times
    rows = [(name, t[1:]) for name, t in times.items()]
    print(f"\n{args.experts} experts x {args.tasks} tasks, experts {cfg.expert_units}, towers "
          f"{cfg.tower_units}, {args.num_train:,} training rows, batch {args.batch_size}; "
          f"median of {args.epochs} epochs after a warm-up")
    mmoe = np.array(rows[0][1])
    print(f"{'model':<24} {'epoch s (median)':>16} {'epochs s':>24} {'/ MMoE epoch':>12} "
          f"{'paired':>7}")
    for name, seconds in rows:
        median = float(np.median(seconds))
        # Median over rounds of this model's epoch / the MMoE epoch just before it.
        paired = float(np.median(np.array(seconds) / mmoe))
        print(f"{name:<24} {median:>16.3f} {' '.join(f'{t:.3f}' for t in seconds):>24} "
              f"{median / float(np.median(mmoe)):>12.2f} {paired:>7.2f}")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
