"""Fixed-route oracle on the MMoE paper's synthetic data: which sharing is best from scratch?

A search can only find a trend that the routes themselves show. For each task correlation p
and seed, this trains fixed routes of one layer of mean-gated experts from scratch (no
search, no weight sharing between routes) and prints each route's test MSE beside its share
of expert capacity serving both tasks:

- ``separate``: each task averages its own half of the experts (share 0);
- ``overlap``: each task averages all but one expert, the middle ones shared (share 0.5);
- ``shared``: both tasks average every expert (share 1);
- ``one each`` and ``one shared``: each task uses a single expert, its own (share 0) or the
  same one (share 1), the choice a search makes when expert usage is priced;
- ``B, init 2``: route B of ``--compare A,B`` (default ``shared,separate``) again on the same
  data with another initialisation, which measures how much of a difference between routes
  is training noise.

It also prints, per p, the best route per seed and the paired difference ``A - B`` per
seed. Sizes and epochs are those of
``negative_transfer.py`` (MMoE's budget: search + child epochs).

Run: ``python benchmarks/route_oracle.py`` (``make bench-oracle``).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from synthetic_data import add_data_arguments, synthetic_data  # benchmarks/ is on sys.path

from tfmtnas import keras
from tfmtnas.data.pipeline import make_dataset
from tfmtnas.models import MultiTaskModel
from tfmtnas.search.analysis import shared_capacity
from tfmtnas.search.network import RoutingNetwork
from tfmtnas.search.spec import Expert, Layer, Mixer, RoutingSpec

TASKS = ("y1", "y2")


def route_spec(masks: list[tuple[int, ...]], units: tuple[int, ...]) -> RoutingSpec:
    """One layer of ``len(masks[0])`` experts; task k averages the experts ``masks[k]`` marks."""
    experts = tuple(Expert(f"e{i}") for i in range(len(masks[0])))
    names = tuple(e.name for e in experts)
    outputs = tuple(Mixer(t, names, tuple(m), "mean") for t, m in zip(TASKS, masks))
    return RoutingSpec(TASKS, (Layer(units, experts),), outputs)


def routes(num_experts: int) -> dict[str, list[tuple[int, ...]]]:
    """The candidate routes over ``num_experts`` (even, >= 4) experts."""
    if num_experts < 4 or num_experts % 2:
        raise ValueError(f"num_experts must be even and >= 4, got {num_experts}.")
    half = num_experts // 2
    first = tuple(int(i < half) for i in range(num_experts))
    second = tuple(1 - v for v in first)
    one = tuple(int(i == 0) for i in range(num_experts))
    other = tuple(int(i == 1) for i in range(num_experts))
    return {"separate": [first, second],
            "overlap": [tuple(int(i < num_experts - 1) for i in range(num_experts)),
                        tuple(int(i > 0) for i in range(num_experts))],
            "shared": [(1,) * num_experts] * 2,
            "one each": [one, other],
            "one shared": [one, one]}


def test_mse(spec: RoutingSpec, data, init_seed: int, args) -> float:
    keras.utils.set_random_seed(init_seed)
    model = MultiTaskModel(data.spec, data.tasks, sharing=RoutingNetwork(spec),
                           tower_units=(args.tower_units,))
    model.compile(keras.optimizers.Adam(args.learning_rate), jit_compile=True)
    train = make_dataset(data.train, data.spec, args.batch_size, shuffle=True, seed=init_seed)
    model.fit(train, epochs=args.epochs, verbose=0)
    out = model.evaluate(make_dataset(data.test, data.spec, 8192), return_dict=True, verbose=0)
    return float(np.mean([out["y1_rmse"] ** 2, out["y2_rmse"] ** 2]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--correlations", default="0,0.5,0.9,1.0")
    parser.add_argument("--seeds", default="0,1,2")
    add_data_arguments(parser)
    parser.add_argument("--num_experts", type=int, default=4)
    parser.add_argument("--expert_units", type=int, default=16)
    parser.add_argument("--tower_units", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=18)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    parser.add_argument("--routes", default=None,
                        help="comma-separated routes to train (default: all)")
    parser.add_argument("--compare", default="shared,separate",
                        help="two routes A,B: prints A - B per seed, and B again under a "
                             "second initialisation")
    args = parser.parse_args(argv)
    print("command:", " ".join(["python", *sys.argv]), flush=True)
    all_routes = routes(args.num_experts)
    pair = args.compare.split(",")
    if len(pair) != 2:
        parser.error(f"--compare takes two routes A,B, got {args.compare!r}.")
    a, b = pair
    chosen = list(all_routes) if args.routes is None else args.routes.split(",")
    unknown = sorted({a, b, *chosen} - set(all_routes))
    if unknown:
        parser.error(f"unknown routes {unknown}; choose from {list(all_routes)}.")
    candidates = {name: route_spec(m, (args.expert_units,))
                  for name, m in all_routes.items() if name in {a, b, *chosen}}
    repeat = f"{b}, init 2"
    shares = {name: shared_capacity(s, 100) for name, s in candidates.items()}
    seeds = [int(s) for s in args.seeds.split(",")]
    table = {}
    for p in [float(c) for c in args.correlations.split(",")]:
        rows = {name: [] for name in [*candidates, repeat]}
        for seed in seeds:
            data = synthetic_data(args, p, seed)
            for name, spec in candidates.items():
                rows[name].append(test_mse(spec, data, seed, args))
            rows[repeat].append(test_mse(candidates[b], data, seed + 1000, args))
            print(f"p={p} seed={seed}: " + ", ".join(f"{n} {v[-1]:.4f}" for n, v in rows.items()),
                  flush=True)
        table[p] = rows
    print(f"\ntest MSE (mean of both tasks), mean ± std over seeds {seeds}")
    names = list(table[next(iter(table))])
    print(f"{'p':>5}  " + "  ".join(f"{n:>20}" for n in names) + "  best route per seed")
    for p, rows in table.items():
        cells = [f"{np.mean(v):.4f} ± {np.std(v):.4f}".rjust(20) for v in rows.values()]
        best = [min(candidates, key=lambda n, i=i: rows[n][i]) for i in range(len(seeds))]
        print(f"{p:>5}  " + "  ".join(cells) + "  " + ", ".join(best))
    print("share of expert capacity serving both tasks: "
          + ", ".join(f"{n} {s:.2f}" for n, s in shares.items()))
    print(f"\npaired per seed: {a} - {b} | {repeat} - {b}")
    for p, rows in table.items():
        diff = np.subtract(rows[a], rows[b])
        noise = np.subtract(rows[repeat], rows[b])
        print(f"{p:>5}  " + " ".join(f"{d:+.4f}" for d in diff) + "  |  "
              + " ".join(f"{d:+.4f}" for d in noise))


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - start:.0f} s")
