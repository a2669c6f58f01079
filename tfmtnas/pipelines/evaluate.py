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

from tfmtnas.pipelines import flags as pipeline_flags
from tfmtnas.pipelines.errors import binary_main, run_binary

pipeline_flags.define_evaluate_flags()
flags.adopt_module_key_flags(pipeline_flags)  # --helpshort lists them
FLAGS = pipeline_flags.FLAGS


@binary_main("tfmtnas-evaluate")
def main(argv):
    """Evaluate as the flags say; print the metrics JSON (and write ``--output``)."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from tfmtnas.pipelines.evaluating import Progress, evaluate_model, load_source

    source = load_source(saved_model=FLAGS.saved_model, model_dir=FLAGS.model_dir)
    out = evaluate_model(source, pipeline_flags.evaluate_dataset(source.record), FLAGS.split,
                         batch_size=FLAGS.batch_size,
                         progress=Progress(f"tfmtnas-evaluate {FLAGS.split}"))
    text = json.dumps(out, indent=1)
    if FLAGS.output:
        output = Path(FLAGS.output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text + "\n")
    print(text)


def run():
    run_binary(main, __name__)


if __name__ == "__main__":
    run()
