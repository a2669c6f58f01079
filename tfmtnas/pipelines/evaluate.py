"""``tfmtnas-evaluate``: per-task metrics (AUC / RMSE) of a SavedModel or a model dir.

An exported SavedModel is evaluated through its ``serving_default`` signature, exactly as
TF Serving would compute the predictions. The dataset, its split seed and options default
to what the model was trained with (recorded in the model dir, and in the export's
metadata); ``--dataset`` and friends override them.

Example:
    tfmtnas-evaluate --saved_model=saved_models/mmoe/1 --output=metrics.json
    tfmtnas-evaluate --model_dir=runs/mmoe --split=validation
"""

from __future__ import annotations

import json
from pathlib import Path

from absl import app, flags

from tfmtnas.errors import MissingFileError, UserError
from tfmtnas.pipelines import flags as pipeline_flags
from tfmtnas.pipelines.errors import binary_main, run_binary

pipeline_flags.define_data_flags()
pipeline_flags.define_evaluate_flags()
flags.adopt_module_key_flags(pipeline_flags)  # --helpshort lists them
FLAGS = pipeline_flags.FLAGS


def _explicit(name: str) -> bool:
    return name in FLAGS and not FLAGS[name].using_default_value


def resolve_dataset(record: dict) -> dict:
    """Dataset name, data dir, seed and options: explicit flags, else the training record."""
    use_record = bool(record.get("dataset")) and not _explicit("dataset")
    if use_record:
        specific = sorted(n for n in FLAGS if n.startswith(f"{record['dataset']}_")
                          and _explicit(n))
        if specific:
            raise UserError(f"--{specific[0]} needs --dataset={record['dataset']} as well "
                            f"(without --dataset the recorded dataset options are used).")
        resolved = {"name": record["dataset"],
                    "data_dir": FLAGS.data_dir if _explicit("data_dir")
                    else record.get("data_dir"),
                    "options": dict(record.get("dataset_options") or {})}
    else:
        resolved = {"name": FLAGS.dataset, "data_dir": FLAGS.data_dir,
                    "options": pipeline_flags.dataset_options()}
    same_data = record.get("dataset") == resolved["name"]
    resolved["seed"] = (FLAGS.seed if _explicit("seed") or not same_data
                        else int(record.get("seed", FLAGS.seed)))
    resolved["from"] = "training record" if use_record else "flags"
    return resolved


def load_source():
    """``(label, predict function, spec, tasks, training record)`` from the flags."""
    if bool(FLAGS.saved_model) == bool(FLAGS.model_dir):
        raise UserError("Give exactly one of --saved_model (an exported version folder) and "
                        "--model_dir (a trained model dir).")
    if FLAGS.saved_model:
        from tfmtnas.export import SavedModelPredictor

        path = Path(FLAGS.saved_model)
        if not path.exists():
            raise MissingFileError(f"--saved_model {path} does not exist.")
        predictor = SavedModelPredictor(path)
        record = predictor.metadata.extra.get("train_config") or {}
        return str(path), predictor.predict, predictor.spec, predictor.tasks, record
    from tfmtnas.pipelines.evaluating import model_predict_fn
    from tfmtnas.pipelines.export import resolve_model_dir, training_record
    from tfmtnas.pipelines.training import load_model

    model_dir = resolve_model_dir(FLAGS.model_dir)
    model = load_model(model_dir)
    return (str(model_dir), model_predict_fn(model), model.spec, model.tasks,
            training_record(model_dir))


def evaluate_from_flags() -> dict:
    """Evaluate as the flags say; print the metrics JSON (and write ``--output``)."""
    from tfmtnas.data import load_dataset
    from tfmtnas.pipelines.evaluating import Progress, evaluate_source

    label, predict, spec, tasks, record = load_source()
    dataset = resolve_dataset(record)
    data = load_dataset(dataset["name"], data_dir=dataset["data_dir"], seed=dataset["seed"],
                        **dataset["options"])
    result = evaluate_source(predict, data, FLAGS.split, spec, tasks,
                             batch_size=FLAGS.batch_size,
                             progress=Progress(f"tfmtnas-evaluate {FLAGS.split}"))
    out = {"model": label, "dataset": dataset["name"], "split": FLAGS.split,
           "seed": dataset["seed"], "dataset_from": dataset["from"], **result}
    text = json.dumps(out, indent=1)
    if FLAGS.output:
        output = Path(FLAGS.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n")
    print(text)
    return out


@binary_main("tfmtnas-evaluate")
def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    evaluate_from_flags()


def run():
    run_binary(main, __name__)


if __name__ == "__main__":
    run()
