"""Helpers for binary tests: a tiny CSV dataset, a subprocess runner and a binary module
imported in this process with its flags."""

import contextlib
import importlib
import os
import subprocess
import sys
import types
from collections.abc import Iterator

import numpy as np
import pytest
from absl import flags


@pytest.fixture
def tiny_csv(tmp_path):
    """A 400-row CSV with a categorical, two numeric columns and two labels."""
    rng = np.random.default_rng(0)
    n = 400
    color = rng.choice(["red", "green", "blue"], n)
    x = rng.normal(size=n)
    z = rng.normal(size=n)
    click = ((x + (color == "red")) > 0.5).astype(int)
    watch = 2 * x - z + rng.normal(scale=0.1, size=n)
    path = tmp_path / "tiny.csv"
    lines = ["color,x,z,click,watch"]
    lines += [f"{c},{a:.4f},{b:.4f},{k},{w:.4f}" for c, a, b, k, w in zip(color, x, z, click,
                                                                         watch)]
    path.write_text("\n".join(lines) + "\n")
    return path


CSV_FLAGS = ["--dataset=csv", "--csv_labels=click:binary,watch:regression",
             "--csv_numeric=x,z", "--csv_categorical=color"]


def run_module(module: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


@contextlib.contextmanager
def scoped_flags() -> Iterator[None]:
    """Remove on exit the flags that tfmtnas modules defined inside the block.

    Binaries give flags the same name with other defaults and help, so one process holds the
    flags of one binary at a time; tests that run binaries in this process take turns.
    """
    before = set(flags.FLAGS)
    try:
        yield
    finally:
        for name in set(flags.FLAGS) - before:
            if flags.FLAGS.find_module_defining_flag(name, "").startswith("tfmtnas."):
                delattr(flags.FLAGS, name)


@contextlib.contextmanager
def binary_module(module: str) -> Iterator[types.ModuleType]:
    """Import the binary ``module`` afresh, which defines its flags, for the block.

    The flags count as parsed at their defaults (set them with ``flagsaver``); on exit the
    flags and the module are gone, so another binary can be imported next.
    """
    with scoped_flags():
        sys.modules.pop(module, None)
        try:
            imported = importlib.import_module(module)
            if not flags.FLAGS.is_parsed():
                flags.FLAGS.mark_as_parsed()
            yield imported
        finally:
            sys.modules.pop(module, None)
