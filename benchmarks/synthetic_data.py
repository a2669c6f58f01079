"""The synthetic-data flags and data of the negative-transfer benchmarks.

Shared by ``negative_transfer.py`` and ``route_oracle.py`` so that both train on the same
problems (Ma et al., KDD 2018 generator, see :func:`tfmtnas.data.make_synthetic`).
"""

from __future__ import annotations

import argparse

from tfmtnas.data import MultiTaskData, make_synthetic


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--num_train``, ``--disjoint_labels`` and ``--noise_std``."""
    parser.add_argument("--num_train", type=int, default=20000)
    parser.add_argument("--disjoint_labels", action="store_true",
                        help="each training example labels one task only (see make_synthetic)")
    parser.add_argument("--noise_std", type=float, default=0.01,
                        help="label noise (the MMoE paper's 0.01 makes both tasks' labels "
                             "almost the same function at p = 1)")


def synthetic_data(args: argparse.Namespace, correlation: float, seed: int) -> MultiTaskData:
    """The problem of task correlation ``correlation`` and ``seed``, 2,000 validation and
    2,000 test examples."""
    return make_synthetic(num_train=args.num_train, num_validation=2000, num_test=2000,
                          correlation=correlation, seed=seed, noise_std=args.noise_std,
                          disjoint_labels=args.disjoint_labels)
