"""Memory of one ``tfmtnas-tune`` process over many tiny trials: does RSS stay flat?

What it does: generates a 400-row CSV with two binary tasks (as the tests' tiny data), then
runs one study in this process (:func:`tfmtnas.tuning.run_tuning`, random oracle) of
``--trials`` trials over every architecture of the zoo and the search methods, each with
tiny experts, one epoch, the exported model's latency measured through the C API (so every
trial also exports a SavedModel and loads it in a C API session). After each trial it reads
the process's resident set size (``VmRSS`` in ``/proc/self/status``) and at the end its peak
(``resource.getrusage(...).ru_maxrss``).

It prints one line per trial and a summary: RSS after the first trial, after the last, the
growth between them, the growth over the second half of the trials (the steady-state
slope) and the peak. The target is a growth of at most 200 MB over 50 trials.

Run: ``python benchmarks/tune_memory.py`` (``make bench-tune-memory``; about 3 minutes on
2 cores); ``--trials=10 --architectures=mmoe`` for a quick look.
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def rss_mb() -> float:
    """This process's resident set size now, in MB (from ``/proc/self/status``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak_rss_mb() -> float:
    """The process's peak resident set size so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_csv(path: Path, rows: int = 400) -> None:
    rng = np.random.default_rng(0)
    color = rng.choice(["red", "green", "blue"], rows)
    x, z = rng.normal(size=rows), rng.normal(size=rows)
    click = ((x + (color == "red")) > 0.5).astype(int)
    buy = ((z - x) > 0.3).astype(int)
    lines = ["color,x,z,click,buy"] + [f"{c},{a:.4f},{b:.4f},{k},{w}"
                                       for c, a, b, k, w in zip(color, x, z, click, buy)]
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--architectures", default="",
                        help="comma-separated (default: every architecture)")
    parser.add_argument("--latency_calls", type=int, default=20)
    parser.add_argument("--output", default=None, help="also write the numbers as JSON")
    args = parser.parse_args()
    command = "python benchmarks/tune_memory.py " + shlex.join(sys.argv[1:])

    from tfmtnas.tuning import TuneConfig, run_tuning

    work = Path(tempfile.mkdtemp(prefix="tune-memory-"))
    csv = work / "tiny.csv"
    write_csv(csv)
    space = {"expert_units": [4, 8], "tower_units": 4, "embedding_dim": 4,
             "num_experts": [2, 4], "num_layers": [1, 2]}
    if args.architectures:
        space["architecture"] = args.architectures.split(",")
    cfg = TuneConfig(
        dataset="csv", dataset_options={
            "train_path": str(csv), "label_columns": {"click": "binary", "buy": "binary"},
            "categorical": ["color"], "numeric": ["x", "z"]},
        space=space, oracle="random", max_trials=args.trials, epochs=1, batch_size=64,
        jit_compile=False, child_epochs=1, latency_calls=args.latency_calls,
        model_dir=str(work / "study"), export=False)
    samples: list[tuple[int, float]] = []
    start = time.perf_counter()

    def progress(line: str) -> None:
        if " done in " in line:
            samples.append((len(samples) + 1, rss_mb()))
            print(f"trial {len(samples):3d}: RSS {samples[-1][1]:8.1f} MB | {line[7:120]}",
                  flush=True)

    result = run_tuning(cfg, progress=progress)
    seconds = time.perf_counter() - start
    first, last = samples[0][1], samples[-1][1]
    half = samples[len(samples) // 2 - 1][1]
    summary = {
        "command": command, "trials": len(samples), "finished": len(result.records),
        "failed": len(result.failed), "seconds": round(seconds, 1),
        "rss_after_first_mb": round(first, 1), "rss_after_last_mb": round(last, 1),
        "growth_mb": round(last - first, 1),
        "growth_second_half_mb": round(last - half, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "architectures": sorted({r["architecture"] for r in result.records}),
    }
    print(f"\n{command}")
    print(f"{summary['trials']} trials ({summary['failed']} failed) in {seconds:.0f} s; "
          f"RSS after trial 1: {first:.1f} MB, after trial {len(samples)}: {last:.1f} MB, "
          f"growth {last - first:+.1f} MB (second half {last - half:+.1f} MB), peak "
          f"{summary['peak_rss_mb']:.1f} MB; target: growth <= 200 MB -> "
          f"{'met' if last - first <= 200 else 'NOT met'}")
    if args.output:
        Path(args.output).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
