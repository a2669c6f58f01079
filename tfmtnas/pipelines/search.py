"""``tfmtnas-search``: learn the sharing structure, derive the child, evaluate it.

Re-running with the same ``--model_dir`` after a kill resumes from the last checkpoint.

Example:
    tfmtnas-search --dataset=census --method=gumbel --epochs=3 --model_dir=runs/gumbel
"""

from __future__ import annotations

import json

from absl import app, flags

from tfmtnas.pipelines import flags as pipeline_flags
from tfmtnas.pipelines.errors import binary_main, run_binary

pipeline_flags.define_search_flags()
flags.adopt_module_key_flags(pipeline_flags)  # --helpshort lists them


@binary_main("tfmtnas-search")
def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from tfmtnas.pipelines.searching import run_search

    result = run_search(pipeline_flags.search_config())
    print(json.dumps({"child_test": result.child_metrics,
                      "supernet_test": result.supernet_metrics, "cost": result.cost,
                      "search_seconds": round(result.search_seconds, 1)}, indent=1))
    print(f"derived spec, plots and child model written to {pipeline_flags.FLAGS.model_dir}")


def run():
    run_binary(main, __name__)


if __name__ == "__main__":
    run()
