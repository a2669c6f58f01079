"""``tfmtnas-tune``: tune the sharing architecture and its sizes with keras-tuner's oracles.

Each trial trains a zoo model or runs a search method and records per-task validation
metrics, FLOPs, parameters and the exported model's batch-1 latency. Writes the trials, the
Pareto front over the tasks and FLOPs (table, PNG, JSON) into ``--model_dir`` and exports
the ``--select``-ed trial's model for TF Serving. Rerun the same command after a kill: the
study resumes, finished trials are kept.

Example:
    tfmtnas-tune --dataset=census --oracle=bayesian --max_trials=30 --model_dir=runs/tune
    tfmtnas-tune --dataset=census --hp='architecture=mmoe|ple|mtnas' --hp=embedding_dim=8 \\
        --select='mean_auc,flops<=140000' --model_dir=runs/tune_small
"""

from __future__ import annotations

from absl import app, flags

from tfmtnas.pipelines import flags as pipeline_flags
from tfmtnas.pipelines.errors import binary_main, run_binary

pipeline_flags.define_tune_flags()
flags.adopt_module_key_flags(pipeline_flags)  # --helpshort lists them


@binary_main("tfmtnas-tune")
def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from tfmtnas.export.client import curl_request
    from tfmtnas.tuning.study import run_tuning

    result = run_tuning(pipeline_flags.tune_config())
    print(f"[tune] {len(result.records)} finished trials, {len(result.failed)} failed, "
          f"{round(result.seconds)} s in this run; results in {pipeline_flags.FLAGS.model_dir}")
    if result.export_path is not None:
        name = result.export_path.parent.name
        print(f"Serve it with TF Serving: model_base_path={result.export_path.parent.resolve()}, "
              f"model_name={name}")
        print(curl_request(result.export_path, name))


def run():
    run_binary(main, __name__)


if __name__ == "__main__":
    run()
