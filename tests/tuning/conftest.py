"""Tiny data for the tuning tests: 400 rows, a categorical, two numerics, two binary tasks."""

from __future__ import annotations

import numpy as np
import pytest

from tfmtnas.data import load_dataset

TINY_OPTIONS = {"label_columns": {"click": "binary", "buy": "binary"},
                "categorical": ["color"], "numeric": ["x", "z"]}
# The flags of the same dataset, for the binary.
TINY_FLAGS = ["--dataset=csv", "--csv_labels=click:binary,buy:binary", "--csv_numeric=x,z",
              "--csv_categorical=color"]
# Small, fast trials: narrow experts and towers, no XLA (compiling costs more than it saves).
TRIAL_FLAGS = ["--epochs=2", "--batch_size=64", "--nojit_compile", "--latency_calls=20",
               "--hp=expert_units=[4,8]", "--hp=tower_units=4", "--hp=embedding_dim=4"]


def write_tiny_csv(path) -> None:
    rng = np.random.default_rng(0)
    n = 400
    color = rng.choice(["red", "green", "blue"], n)
    x, z = rng.normal(size=n), rng.normal(size=n)
    click = ((x + (color == "red")) > 0.5).astype(int)
    buy = ((z - x) > 0.3).astype(int)
    lines = ["color,x,z,click,buy"] + [f"{c},{a:.4f},{b:.4f},{k},{w}"
                                       for c, a, b, k, w in zip(color, x, z, click, buy)]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def tiny_tune_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("tune_data") / "tiny.csv"
    write_tiny_csv(path)
    return path


@pytest.fixture(scope="session")
def tiny_tune_data(tiny_tune_csv):
    return load_dataset("csv", train_path=str(tiny_tune_csv), **TINY_OPTIONS)
