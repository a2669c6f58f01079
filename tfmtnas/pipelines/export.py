"""``tfmtnas-export``: a trained model dir -> a versioned SavedModel TF Serving can serve.

Writes ``<export_root>/<name>/<version>/`` (next free version unless ``--version``), then
prints the path and a sample REST request.

Example:
    tfmtnas-export --model_dir=runs/mmoe --export_root=saved_models
    tfmtnas-export --model_dir=runs/gumbel   # a search dir: exports its derived child/
"""

from __future__ import annotations

from absl import app, flags

from tfmtnas.pipelines import flags as pipeline_flags
from tfmtnas.pipelines.errors import binary_main, run_binary

pipeline_flags.define_export_flags()
flags.adopt_module_key_flags(pipeline_flags)  # --helpshort lists them
FLAGS = pipeline_flags.FLAGS


@binary_main("tfmtnas-export")
def main(argv):
    """Export as the flags say; print the path and a sample REST request."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from tfmtnas.export.client import curl_request
    from tfmtnas.pipelines.exporting import export_model_dir, resolve_model_dir

    model_dir = resolve_model_dir(FLAGS.model_dir)
    path = export_model_dir(model_dir, FLAGS.export_root, name=FLAGS.name,
                            version=FLAGS.version, overwrite=FLAGS.overwrite,
                            warmup_requests=FLAGS.warmup_requests,
                            jit_compile=FLAGS.serving_jit_compile)
    name = path.parent.name
    print(f"Exported {model_dir} to {path}")
    print(f"Serve it with TF Serving: model_base_path={path.parent.resolve()}, "
          f"model_name={name}")
    print("Sample REST request:")
    print(curl_request(path, name))


def run():
    run_binary(main, __name__)


if __name__ == "__main__":
    run()
