"""A tfmtnas-tune study on UCI Census-Income, and whether it beats PLE at MMoE's cost.

What it does:

1. runs the study (:func:`tfmtnas.tuning.run_tuning`): ``--max_trials`` trials (default 30)
   proposed by ``--oracle`` (default Bayesian optimisation) over the whole default search
   space (the zoo and the three search methods), each trained ``--epochs`` epochs with
   ``tfmtnas-train``'s defaults otherwise; objective: mean validation AUC of income and
   marital status. Writes the trials, the Pareto front (table, PNG, JSON) into
   ``--model_dir`` and exports the best trial to ``--export_root``. Rerunning the command
   resumes the study.
2. unless ``--skip_comparison``: trains the references PLE and MMoE at ``tfmtnas-train``'s
   default sizes (seed 0, the trials' seed) and asks whether a trial reaches at least PLE's
   validation AUC on both tasks at no more than MMoE's FLOPs per example; the best such
   trial (by mean validation AUC) is retrained with seeds 0, 1 and 2 (each seed also splits
   the data) and its test AUCs reported as mean and standard deviation.
3. prints the command, the wall time of each phase, the front, the answer; writes them to
   ``<model_dir>/bench_summary.json``.

Run: ``python benchmarks/tune_census.py`` (``make bench-tune``); the census data is fetched
and cached on first use.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path


def _reference(kind: str, options, data, folder: Path) -> dict:
    from tfmtnas.pipelines.training import TrainConfig
    from tfmtnas.tuning.space import SearchSpace
    from tfmtnas.tuning.trial import run_trial

    d = TrainConfig()
    settings = SearchSpace.default().settings({
        "architecture": kind, "expert_units": d.expert_units[0], "num_experts": d.num_experts,
        "num_task_experts": d.num_task_experts, "num_shared_experts": d.num_shared_experts,
        "num_levels": d.num_levels, "tower_units": d.tower_units[0],
        "embedding_dim": d.embedding_dim, "learning_rate": d.learning_rate})
    return run_trial(settings, options, data, folder / kind, trial_id=kind)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oracle", default="bayesian")
    parser.add_argument("--max_trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--model_dir", default="runs/bench_tune_census")
    parser.add_argument("--export_root", default="saved_models")
    parser.add_argument("--latency_calls", type=int, default=200)
    parser.add_argument("--seeds", default="0,1,2", help="seeds of the retrained point")
    parser.add_argument("--skip_comparison", action="store_true")
    args = parser.parse_args()
    command = "python benchmarks/tune_census.py " + shlex.join(sys.argv[1:])

    import dataclasses

    from tfmtnas.data import load_dataset
    from tfmtnas.tuning import TuneConfig, run_tuning
    from tfmtnas.tuning.trial import run_trial

    times: dict[str, float] = {}
    start = time.perf_counter()
    data = load_dataset("census", seed=0)
    times["load_data_s"] = time.perf_counter() - start
    cfg = TuneConfig(dataset="census", oracle=args.oracle, max_trials=args.max_trials,
                     epochs=args.epochs, latency_calls=args.latency_calls,
                     model_dir=args.model_dir, export_root=args.export_root,
                     export_name="census_tune")
    t = time.perf_counter()
    result = run_tuning(cfg, data=data)
    times["study_s"] = time.perf_counter() - t
    summary: dict = {"command": command, "trials": len(result.records),
                     "failed": result.failed, "front": result.front,
                     "selected": result.selected["trial_id"] if result.selected else None,
                     "export_path": str(result.export_path) if result.export_path else None,
                     "trial_seconds": {r["trial_id"]: round(r["seconds"], 1)
                                       for r in result.records},
                     "trial_architectures": {r["trial_id"]: r["architecture"]
                                             for r in result.records}}
    if not args.skip_comparison:
        t = time.perf_counter()
        folder = Path(args.model_dir) / "references"
        options = cfg.trial_options()
        refs = {k: _reference(k, options, data, folder) for k in ("ple", "mmoe")}
        ple, mmoe = refs["ple"]["metrics"], refs["mmoe"]["metrics"]
        summary["references"] = {k: {m: r["metrics"][m] for m in
                                     ("income_auc", "marital_auc", "flops", "mean_auc")}
                                 for k, r in refs.items()}
        winners = [r for r in result.records
                   if r["metrics"]["income_auc"] >= ple["income_auc"]
                   and r["metrics"]["marital_auc"] >= ple["marital_auc"]
                   and r["metrics"]["flops"] <= mmoe["flops"]]
        summary["beats_ple_at_mmoe_flops"] = [r["trial_id"] for r in winners]
        times["references_s"] = time.perf_counter() - t
        if winners:
            t = time.perf_counter()
            best = max(winners, key=lambda r: r["metrics"]["mean_auc"])
            tests = []
            for seed in (int(s) for s in args.seeds.split(",")):
                seeded = load_dataset("census", seed=seed)
                rec = run_trial(best["settings"], dataclasses.replace(options, seed=seed),
                                seeded, folder / f"trial_{best['trial_id']}_seed{seed}",
                                trial_id=f"{best['trial_id']}/seed{seed}")
                tests.append(rec["test"])
            summary["retrained"] = {
                "trial_id": best["trial_id"], "settings": best["settings"],
                **{f"test_{m}": [round(x[m], 4) for x in tests]
                   for m in ("income_auc", "marital_auc")},
                **{f"test_{m}_mean_std": (round(statistics.mean(x[m] for x in tests), 4),
                                          round(statistics.pstdev(x[m] for x in tests), 4))
                   for m in ("income_auc", "marital_auc")}}
            times["retrain_s"] = time.perf_counter() - t
    times["total_s"] = time.perf_counter() - start
    summary["times"] = {k: round(v, 1) for k, v in times.items()}
    print(f"\n{command}")
    print(json.dumps(summary, indent=1))
    (Path(args.model_dir) / "bench_summary.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
