"""What a search costs: a search epoch vs an MMoE epoch, and the search step with vs without XLA.

On Census-Income, in one process: the median wall time of an MMoE training epoch (4 experts
of the search space's size) and of each method's search epoch (weight step + architecture
step per batch, the same training data), after one warm-up epoch each; then the same for the
search step compiled without XLA. Both use the weight optimizer of tfmtnas-search's defaults
(``lazy_adam``) and the defaults of ``compile``.

Run: ``python benchmarks/search_cost.py`` (``make bench-search``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from timing import interleaved_epochs  # benchmarks/ is on sys.path when a script runs

from tfmtnas import keras
from tfmtnas.data import load_census, num_rows, split_dataset
from tfmtnas.data.sources import search_pairs
from tfmtnas.models import make_optimizer
from tfmtnas.pipelines.searching import SearchConfig
from tfmtnas.pipelines.training import TrainConfig, build_model
from tfmtnas.search.methods import make_method, search_space
from tfmtnas.search.model import SearchModel


def search_model(method: str, data, cfg: SearchConfig, jit: bool):
    keras.utils.set_random_seed(0)
    space = search_space(method, [t.name for t in data.tasks], cfg.num_layers, cfg.num_experts,
                         cfg.expert_units)
    model = SearchModel(data.spec, data.tasks, make_method(method, space),
                        arch_optimizer=keras.optimizers.Adam(cfg.arch_learning_rate),
                        embedding_dim=cfg.embedding_dim, tower_units=cfg.tower_units)
    model.compile(make_optimizer(cfg.optimizer, cfg.learning_rate), jit_compile=jit)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="mtnas,gumbel,mtlnas")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after warm-up")
    args = parser.parse_args(argv)
    print("command:", " ".join(["python", *sys.argv]), flush=True)
    data = load_census()
    cfg = SearchConfig()
    train = split_dataset(data, "train", cfg.batch_size, shuffle=True, seed=0)
    mmoe_cfg = TrainConfig(model="mmoe", expert_units=cfg.expert_units,
                           num_experts=cfg.num_experts, tower_units=cfg.tower_units,
                           optimizer=cfg.optimizer)
    keras.utils.set_random_seed(0)
    models, data_of, scale = {"mmoe": build_model(data, mmoe_cfg)}, {"mmoe": train}, {}
    for method in [m for m in args.methods.split(",") if m]:
        paired, weight_rows = search_pairs(data, method == "mtlnas", cfg.batch_size, seed=0)
        # mtlnas trains weights on half the rows: scale to a full pass for the comparison.
        scale[method] = num_rows(data, "train") / weight_rows
        for jit in (True, False):
            models[(method, jit)] = search_model(method, data, cfg, jit)
            data_of[(method, jit)] = paired
    load = os.getloadavg()[0]
    # Interleaved (one epoch of every model per round): a slow spell hits all alike.
    times = interleaved_epochs(models, data_of, args.epochs)
    mmoe = statistics.median(times["mmoe"])
    print(f"MMoE epoch (XLA core): {mmoe:.2f} s; load average {load:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after", flush=True)
    rows = []
    for method in scale:
        # Paired per round: each search epoch against the MMoE epoch of the same round.
        xla = statistics.median(s * scale[method] / m for s, m in
                                zip(times[(method, True)], times["mmoe"]))
        plain = statistics.median(p / x for p, x in zip(times[(method, False)],
                                                        times[(method, True)]))
        rows.append((method, xla, plain))
        print(f"{method}: search epoch "
              f"{statistics.median(times[(method, True)]) * scale[method]:.2f} s with XLA, "
              f"{statistics.median(times[(method, False)]) * scale[method]:.2f} s without",
              flush=True)
    print(f"\nmedian of {args.epochs} interleaved epochs after a warm-up; "
          f"{len(data.train):,} training rows, batch {cfg.batch_size}")
    print(f"{'method':<8} {'search/MMoE epoch':>18} {'no-XLA/XLA step':>16}")
    for method, ratio, plain in rows:
        print(f"{method:<8} {ratio:>18.2f} {plain:>16.2f}")


if __name__ == "__main__":
    main()
