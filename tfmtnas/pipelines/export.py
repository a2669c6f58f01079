"""``tfmtnas-export``: a trained model dir -> a versioned SavedModel TF Serving can serve.

Writes ``<export_root>/<name>/<version>/`` (next free version unless ``--version``), then
prints the path and a sample REST request.

Example:
    tfmtnas-export --model_dir=runs/mmoe --export_root=saved_models
    tfmtnas-export --model_dir=runs/gumbel   # a search dir: exports its derived child/
"""

from __future__ import annotations

import json
from pathlib import Path

from absl import app, flags

from tfmtnas.errors import MissingFileError, UserError
from tfmtnas.pipelines import flags as pipeline_flags
from tfmtnas.pipelines.errors import binary_main, run_binary

pipeline_flags.define_export_flags()
flags.adopt_module_key_flags(pipeline_flags)  # --helpshort lists them
FLAGS = pipeline_flags.FLAGS


def resolve_model_dir(model_dir: str | None) -> Path:
    """The folder holding ``model.json``: ``model_dir`` itself or a search dir's ``child/``."""
    if not model_dir:
        raise UserError("--model_dir is required: the folder tfmtnas-train (or "
                        "tfmtnas-search) wrote.")
    path = Path(model_dir)
    if not path.is_dir():
        raise MissingFileError(f"--model_dir {path} does not exist.")
    if (path / "model.json").is_file():
        return path
    if (path / "child" / "model.json").is_file():
        return path / "child"
    raise MissingFileError(f"No trained model in {path}: model.json is missing (expected the "
                           f"folder tfmtnas-train wrote, or a search dir with child/).")


def training_record(model_dir: Path) -> dict:
    """The run's resolved config (``config.json`` of the dir or of the search dir above)."""
    for folder in (model_dir, model_dir.parent):
        path = folder / "config.json"
        if path.is_file():
            return json.loads(path.read_text())
    return {}


def default_name(model_dir: Path) -> str:
    """The model dir's folder name (the search dir's, for a derived child)."""
    folder = model_dir.parent if model_dir.name == "child" else model_dir
    return folder.resolve().name


def export_from_flags() -> Path:
    """Export as the flags say; print the path and a sample request; return the path."""
    from tfmtnas.export import export_saved_model
    from tfmtnas.export.client import curl_request, sample_row
    from tfmtnas.export.versions import VersionExistsError, check_model_name
    from tfmtnas.pipelines.training import load_model

    model_dir = resolve_model_dir(FLAGS.model_dir)
    name = check_model_name(FLAGS.name or default_name(model_dir))
    target = Path(FLAGS.export_root) / name
    if FLAGS.version is not None and not FLAGS.overwrite and (target /
                                                              str(FLAGS.version)).exists():
        raise VersionExistsError(f"Version {FLAGS.version} of {target} already exists; pass "
                                 f"--overwrite to replace it or choose another --version.")
    model = load_model(model_dir)
    metadata = {"model_dir": str(model_dir.resolve()), "train_config": training_record(model_dir)}
    path = export_saved_model(
        model, FLAGS.export_root, name=name, version=FLAGS.version, overwrite=FLAGS.overwrite,
        metadata=metadata, jit_compile=FLAGS.serving_jit_compile,
        warmup_rows=[sample_row(model.spec)] if FLAGS.warmup_requests else None)
    print(f"Exported {model_dir} to {path}")
    print(f"Serve it with TF Serving: model_base_path={path.parent.resolve()}, "
          f"model_name={name}")
    print("Sample REST request:")
    print(curl_request(path, name))
    return path


@binary_main("tfmtnas-export")
def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    export_from_flags()


def run():
    run_binary(main, __name__)


if __name__ == "__main__":
    run()
