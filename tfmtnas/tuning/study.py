"""A whole study: the library function behind ``tfmtnas-tune``.

:func:`run_tuning` loads the data, narrows the search space, lets a keras-tuner oracle
propose trials (:mod:`tfmtnas.tuning.tuner`), then writes the study's results and exports
the selected model for TF Serving. A study dir (``--model_dir``) holds:

```
config.json        the resolved TuneConfig and the search space's domains
fingerprint.json   config and data of the study; a rerun with other settings is refused
tuner/             keras-tuner's project: oracle.json, tuner0.json, and per trial
  trial_<id>/        trial.json (keras-tuner), record.json (metrics, costs, times),
    run/             the trial's model dir (tfmtnas-train or tfmtnas-search layout)
trials.json        every trial: status, settings, metrics, objective
pareto.json        the front: metrics it is over, its trials' records
pareto.md          the front as a table
pareto.png         every trial, the front marked (plots.plot_front)
selected.json      the --select rule, the chosen trial and where it was exported
```

Rerunning the same command resumes the study: finished trials are kept, an interrupted
trial continues from its last epoch, and the study stops at ``max_trials`` trials in all.
A rerun with a larger ``--max_trials`` extends a finished study.

Example:
    >>> result = run_tuning(TuneConfig(dataset="census", oracle="bayesian", max_trials=30,
    ...                                model_dir="runs/census_tune"))
    >>> result.selected["trial_id"], result.export_path   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import keras_tuner

from tfmtnas.data import load_dataset
from tfmtnas.errors import UserError
from tfmtnas.fsutil import atomic_write
from tfmtnas.pipelines.resume import check_resume
from tfmtnas.pipelines.training import check_finite_config, finite_json
from tfmtnas.tuning.objective import (
    Goal,
    SelectRule,
    metric_names,
    quality_metrics,
)
from tfmtnas.tuning.pareto import front_table, pareto_front
from tfmtnas.tuning.plots import plot_front
from tfmtnas.tuning.space import SearchSpace
from tfmtnas.tuning.trial import TrialOptions, read_record
from tfmtnas.tuning.tuner import ORACLES, StopStudy, StudyTuner, make_oracle, run_dir

PROJECT = "tuner"  # keras-tuner's project dir inside the study dir
TRIAL_STRATEGIES = ("default", "mirrored", "parameter_server")
# Settings a rerun may change: how long it runs, what it reports, and what it exports.
RERUN_MAY_CHANGE = ("model_dir", "max_trials", "time_budget", "select", "pareto", "export",
                    "export_root", "export_name")


@dataclasses.dataclass(frozen=True)
class TuneConfig(TrialOptions):
    """Everything one study needs; written as ``config.json`` into the study dir.

    The settings every trial shares are :class:`~tfmtnas.tuning.trial.TrialOptions`' fields
    (``dataset``, ``data_dir``, ``dataset_options``, ``epochs`` per trial, also Hyperband's
    largest, ``batch_size``, ``optimizer``, ``seed``, ``jit_compile``, ``strategy``,
    ``child``, ``child_epochs``, ``arch_learning_rate``, ``latency_calls``); the study adds:

    Args:
        space: narrowing of the search space (:meth:`SearchSpace.narrow` entries).
        oracle: ``random``, ``bayesian`` or ``hyperband``.
        max_trials: trials in all (None: only with ``hyperband``, its schedule decides).
        time_budget: seconds this run may start trials for (None: no limit).
        objective: the oracle's scalar objective, ``[max:|min:]metric``
            (:mod:`tfmtnas.tuning.objective`); default the mean validation AUC.
        select: the rule choosing the exported trial (default: the best objective).
        pareto: the front's metrics (default: each task's quality metric and ``flops``).
        hyperband_factor: Hyperband's halving factor.
        initial_points: random trials before Bayesian optimisation proposes (default
            ``max(3, max_trials // 3)``).
        model_dir: the study dir.
        export: export the selected trial's model for TF Serving.
        export_root, export_name: ``<export_root>/<export_name>/<version>`` (name default:
            the study dir's folder name).

    Example:
        >>> TuneConfig(dataset="census", oracle="bayesian", max_trials=30,
        ...            model_dir="runs/tune").trial_options().epochs
        4
    """

    space: dict = dataclasses.field(default_factory=dict)
    oracle: str = "random"
    max_trials: int | None = 20
    time_budget: float | None = None
    objective: str = "mean_auc"
    select: str = ""
    pareto: tuple[str, ...] = ()
    hyperband_factor: int = 3
    initial_points: int | None = None
    model_dir: str | None = None
    export: bool = True
    export_root: str = "saved_models"
    export_name: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def trial_options(self) -> TrialOptions:
        """The settings every trial shares."""
        fields = {f.name for f in dataclasses.fields(TrialOptions)}
        return TrialOptions(**{k: v for k, v in self.to_dict().items() if k in fields})

    def identity(self, space: SearchSpace) -> dict:
        """What a rerun must keep to resume this study (for ``check_resume``).

        The per-trial settings sit under ``trial``: the resume check lets a training run's
        ``epochs`` and ``child`` settings change, a study's may not (its trials would no
        longer compare).
        """
        out = {k: v for k, v in self.to_dict().items() if k not in RERUN_MAY_CHANGE}
        out["trial"] = {k: out.pop(k) for k in ("epochs", "child", "child_epochs")}
        out["space"] = space.to_dict()
        return out


@dataclasses.dataclass
class TuneResult:
    """What a study produced.

    Attributes:
        records: the finished trials' records (:func:`tfmtnas.tuning.trial.run_trial`),
            in trial order.
        front: trial ids on the Pareto front.
        front_metrics: the goals the front is over.
        selected: the record of the selected trial (None if no trial qualified).
        export_path: the exported version folder (None if not exported).
        failed: ids of failed trials.
        stopped_by_budget: the time budget ended the run before ``max_trials``.
        seconds: wall time of this run.
    """

    records: list[dict]
    front: list[str]
    front_metrics: list[Goal]
    selected: dict | None
    export_path: Path | None
    failed: list[str]
    stopped_by_budget: bool
    seconds: float


def _check(cfg: TuneConfig, space: SearchSpace) -> None:
    if cfg.oracle not in ORACLES:
        raise UserError(f"--oracle must be one of {', '.join(ORACLES)}, got {cfg.oracle!r}.")
    if cfg.max_trials is None and cfg.oracle != "hyperband":
        raise UserError(f"--max_trials is required with --oracle={cfg.oracle}.")
    if cfg.max_trials is not None and cfg.max_trials < 1:
        raise UserError(f"--max_trials must be >= 1, got {cfg.max_trials}.")
    if cfg.time_budget is not None and not cfg.time_budget > 0:
        raise UserError(f"--time_budget must be > 0 seconds, got {cfg.time_budget}.")
    if cfg.strategy not in TRIAL_STRATEGIES:
        raise UserError(
            f"tfmtnas-tune runs trials under --strategy {', '.join(TRIAL_STRATEGIES)}, not "
            f"{cfg.strategy!r}: under multi_worker every worker would need to follow the "
            f"chief's oracle trial by trial.")
    if cfg.oracle == "hyperband" and cfg.hyperband_factor < 2:
        raise UserError(f"--hyperband_factor must be >= 2, got {cfg.hyperband_factor}.")


def _atomic_png(draw, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}-{os.getpid()}.tmp{path.suffix}")
    try:
        draw(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _front_rows(records: list[dict], score_name: str) -> list[dict]:
    return [{"trial": r["trial_id"], "architecture": r["architecture"], **r["metrics"],
             score_name: r["metrics"].get(score_name, math.nan)} for r in records]


def write_results(study_dir: Path, records: list[dict], statuses: list[dict],
                  goals: list[Goal], front: list[str], objective: Goal) -> str:
    """Write ``trials.json``, ``pareto.json``, ``pareto.md`` and ``pareto.png``; return the
    front's table (Markdown)."""
    atomic_write(study_dir / "trials.json", finite_json(statuses))
    front_records = [r for r in records if r["trial_id"] in front]
    atomic_write(study_dir / "pareto.json", finite_json(
        {"metrics": [str(g) for g in goals], "objective": str(objective),
         "trials": front_records}))
    columns = ["trial", "architecture", *[g.name for g in goals]]
    extra = [c for c in ("params", "latency_ms", objective.name) if c not in columns]
    table = front_table(_front_rows(front_records, objective.name), columns + extra)
    atomic_write(study_dir / "pareto.md",
                 f"Pareto front over {', '.join(str(g) for g in goals)} "
                 f"({len(front)} of {len(records)} finished trials)\n\n{table}\n")
    quality = [g.name for g in goals if g.name not in ("flops", "sharing_flops", "params",
                                                      "sharing_params", "latency_ms",
                                                      "train_seconds")]
    cost = next((g.name for g in goals if g.name not in quality), "flops")
    if records:
        _atomic_png(lambda p: plot_front(records, front, quality or [objective.name], cost, p),
                    study_dir / "pareto.png")
    return table


def _export(cfg: TuneConfig, study_dir: Path, project_dir: Path, record: dict,
            rule: SelectRule) -> Path | None:
    """Export the selected trial, unless this very trial was exported already."""
    from tfmtnas.pipelines.exporting import export_model_dir

    path = study_dir / "selected.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    name = cfg.export_name or study_dir.resolve().name
    export = None
    if cfg.export:
        old = previous.get("export_path")
        if (previous.get("trial_id") == record["trial_id"] and old and Path(old).is_dir()
                and Path(old).parent.name == name
                and Path(old).parent.parent.resolve() == Path(cfg.export_root).resolve()):
            export = Path(old)
        else:
            export = export_model_dir(run_dir(project_dir, record["trial_id"]),
                                      cfg.export_root, name=name)
    atomic_write(path, finite_json({"select": str(rule), "trial_id": record["trial_id"],
                                    "architecture": record["architecture"],
                                    "settings": record["settings"],
                                    "metrics": record["metrics"], "test": record["test"],
                                    "export_path": None if export is None else str(export)}))
    return export


def run_tuning(cfg: TuneConfig, data=None, progress=None) -> TuneResult:
    """Run (or resume) the study ``cfg`` describes; see the module docstring.

    Args:
        cfg: the study's configuration (``cfg.model_dir`` required).
        data: the loaded dataset (default: loaded as ``cfg`` says).
        progress: where progress lines go (default ``print``).

    Raises:
        UserError: bad settings, data or study dir; three trials in a row failed; or the
            ``select`` rule matches no finished trial (after the results are written).
    """
    start = time.monotonic()
    say = progress or (lambda line: print(line, flush=True))
    if not cfg.model_dir:
        raise UserError("--model_dir is required: the study's folder.")
    check_finite_config(cfg.to_dict())
    space = SearchSpace.default().narrow(cfg.space)
    _check(cfg, space)
    if data is None:
        data = load_dataset(cfg.dataset, data_dir=cfg.data_dir, seed=cfg.seed,
                            **cfg.dataset_options)
    known = metric_names(data.tasks)
    objective = Goal.parse(cfg.objective)
    objective.check(known, "--objective")
    if objective.name == "latency_ms" and cfg.latency_calls < 1:
        raise UserError("--objective=latency_ms needs --latency_calls >= 1.")
    rule = SelectRule.parse(cfg.select, default=objective)
    rule.check(known)
    goals = ([Goal.parse(p) for p in cfg.pareto] if cfg.pareto
             else [Goal.parse(q) for q in quality_metrics(data.tasks)] + [Goal.parse("flops")])
    for g in goals:
        g.check(known, "--pareto")

    study_dir = Path(cfg.model_dir)
    project_dir = study_dir / PROJECT
    check_resume(study_dir, PROJECT, cfg.identity(space), data)
    atomic_write(study_dir / "config.json",
                 finite_json({**cfg.to_dict(), "resolved_space": space.to_dict()}))
    oracle = make_oracle(cfg.oracle, objective, cfg.max_trials, space.hyperparameters(),
                         seed=cfg.seed, max_epochs=cfg.epochs,
                         hyperband_factor=cfg.hyperband_factor,
                         initial_points=cfg.initial_points)
    tuner = StudyTuner(oracle, space, cfg.trial_options(), data, project_dir, objective,
                       time_budget=cfg.time_budget, progress=say)
    finished = len(tuner.oracle.end_order)
    say(f"[tune] study {study_dir}: {cfg.oracle} oracle, objective {objective}, "
        f"{cfg.max_trials or 'Hyperband-scheduled'} trials"
        + (f", {finished} finished before" if finished else "")
        + (f", time budget {cfg.time_budget:g} s" if cfg.time_budget else ""))
    say("[tune] search space:\n" + space.describe())
    try:
        tuner.search(verbose=0)
    except StopStudy as stop:
        raise stop.error from None
    except RuntimeError as err:
        if "consecutive failures" not in str(err):
            raise
        last = [ln for ln in str(err).splitlines() if ln.strip()]
        raise UserError(f"{oracle.max_consecutive_failed_trials} trials in a row failed, the "
                        f"last with: {last[-1] if last else err}") from None
    if tuner.stopped_by_budget:
        say(f"[tune] time budget of {cfg.time_budget:g} s spent: stopped after "
            f"{len(tuner.oracle.trials)} trials; rerun to continue the study.")

    records, statuses, failed = [], [], []
    for trial_id in sorted(tuner.oracle.trials, key=int):
        trial = tuner.oracle.trials[trial_id]
        record = read_record(Path(tuner.get_trial_dir(trial_id)))
        status: dict[str, Any] = {"trial_id": trial_id, "status": trial.status,
                                  "score": trial.score,
                                  "hyperparameters": trial.hyperparameters.values}
        if trial.status == keras_tuner.engine.trial.TrialStatus.COMPLETED and record:
            records.append(record)
            status.update(architecture=record["architecture"], metrics=record["metrics"],
                          started=record["started"], finished=record["finished"],
                          pid=record["pid"])
        elif trial.status in ("FAILED", "INVALID"):
            failed.append(trial_id)
            status["message"] = (trial.message or "").strip().splitlines()[-1:]
        statuses.append(status)

    points = [r["metrics"] for r in records]
    front = [records[i]["trial_id"] for i in pareto_front(points, goals)]
    table = write_results(study_dir, records, statuses, goals, front, objective)
    say(f"[tune] Pareto front over {', '.join(str(g) for g in goals)} "
        f"({len(front)} of {len(records)} finished trials; {study_dir / 'pareto.png'}):\n"
        + table)
    chosen = rule.choose(points)
    if chosen is None:
        raise UserError(f"No finished trial meets --select={rule}; nothing was exported "
                        f"(the trials and the front are in {study_dir}).")
    selected = records[chosen]
    export_path = _export(cfg, study_dir, project_dir, selected, rule)
    say(f"[tune] selected trial {selected['trial_id']} ({selected['architecture']}) by "
        f"{rule}: {rule.goal.name} {selected['metrics'][rule.goal.name]:.4f}"
        + (f"; exported to {export_path}" if export_path else ""))
    return TuneResult(records, front, goals, selected, export_path, failed,
                      tuner.stopped_by_budget, time.monotonic() - start)


__all__ = ["PROJECT", "TuneConfig", "TuneResult", "run_tuning", "write_results"]
