"""What a search costs: a search epoch vs an MMoE epoch, and the search step with vs without XLA.

On Census-Income, in one process: the median wall time of an MMoE training epoch (4 experts
of the search space's size) and of each method's search epoch (weight step + architecture
step per batch, the same training data), after one warm-up epoch each; then the same for the
search step compiled without XLA.

Run: ``python benchmarks/search_cost.py`` (``make bench-search``).
"""

from __future__ import annotations

import argparse
import sys

from timing import median_epoch  # benchmarks/ is on sys.path when a script runs

from tfmtnas import keras
from tfmtnas.data import load_census, num_rows, split_dataset
from tfmtnas.data.sources import search_pairs
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
    model.compile(keras.optimizers.Adam(cfg.learning_rate), jit_compile=jit)
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
                           num_experts=cfg.num_experts, tower_units=cfg.tower_units)
    keras.utils.set_random_seed(0)
    mmoe = median_epoch(build_model(data, mmoe_cfg), train, args.epochs)
    print(f"MMoE epoch (XLA): {mmoe:.2f} s", flush=True)
    rows = []
    for method in [m for m in args.methods.split(",") if m]:
        paired, weight_rows = search_pairs(data, method == "mtlnas", cfg.batch_size, seed=0)
        # mtlnas trains weights on half the rows: scale to a full pass for the comparison.
        scale = num_rows(data, "train") / weight_rows
        xla = median_epoch(search_model(method, data, cfg, True), paired, args.epochs) * scale
        plain = median_epoch(search_model(method, data, cfg, False), paired, args.epochs) * scale
        rows.append((method, xla, plain))
        print(f"{method}: search epoch {xla:.2f} s with XLA, {plain:.2f} s without", flush=True)
    print(f"\nmedian of {args.epochs} epochs after a warm-up; {len(data.train):,} training rows, "
          f"batch {cfg.batch_size}")
    print(f"{'method':<8} {'search/MMoE epoch':>18} {'no-XLA/XLA step':>16}")
    for method, xla, plain in rows:
        print(f"{method:<8} {xla / mmoe:>18.2f} {plain / xla:>16.2f}")


if __name__ == "__main__":
    main()
