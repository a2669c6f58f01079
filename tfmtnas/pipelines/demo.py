"""``tfmtnas-demo``: the README's first command.

On UCI Census-Income (KDD) with the MMoE paper's two tasks (income > 50K, never married):
trains the hand-designed baselines, searches the sharing structure with the best method,
derives and fine-tunes the child, and prints one table of test AUCs, FLOPs and parameters.

Example:
    python -m tfmtnas.pipelines.demo --method=mtnas --baselines=mmoe,ple,shared_bottom
"""

from __future__ import annotations

from absl import flags

from tfmtnas.pipelines import flags as pipeline_flags
from tfmtnas.pipelines.errors import binary_main, run_binary

pipeline_flags.define_demo_flags()
flags.adopt_module_key_flags(pipeline_flags)  # --helpshort lists them
FLAGS = pipeline_flags.FLAGS


@binary_main("tfmtnas-demo")
def main(argv):
    """Run the demo (:func:`tfmtnas.pipelines.census_demo.run_demo`) as the flags say."""
    from tfmtnas.pipelines.census_demo import run_demo

    run_demo(data_dir=FLAGS.data_dir, seed=FLAGS.seed, baselines=FLAGS.baselines,
             method=FLAGS.method, model_dir=FLAGS.model_dir, export_root=FLAGS.export_root)


def run():
    run_binary(main, __name__)


if __name__ == "__main__":
    run()
