"""``tfmtnas-train``: train one multi-task model, evaluate it on the test split.

Writes the resolved config, the model and ``metrics.json`` into ``--model_dir``.

Example:
    tfmtnas-train --dataset=census --model=ple --epochs=3 --model_dir=runs/ple
"""

from __future__ import annotations

import json

from absl import app, flags

from tfmtnas.pipelines import flags as pipeline_flags
from tfmtnas.pipelines.errors import binary_main, run_binary

pipeline_flags.define_train_flags()
flags.adopt_module_key_flags(pipeline_flags)  # --helpshort lists them


@binary_main("tfmtnas-train")
def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from tfmtnas.pipelines.training import train_and_evaluate

    cfg = pipeline_flags.train_config()
    result = train_and_evaluate(cfg)
    print(json.dumps({"test": result.test_metrics, "train_seconds": round(result.seconds, 1)},
                     indent=1))


def run():
    run_binary(main, __name__)


if __name__ == "__main__":
    run()
