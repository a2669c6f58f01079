"""Export a trained model as a versioned SavedModel that TF Serving loads as is.

Example:
    >>> path = export_saved_model(model, "saved_models", name="mmoe")   # .../mmoe/1
    >>> loaded = tf.saved_model.load(str(path), tags=["serve"])
    >>> out = loaded.signatures["serving_default"](age=tf.constant([39.0]), ...)
    >>> out["income"]   # probability, one per example (a K-class task: [batch, K])

The version folder holds, besides ``saved_model.pb`` and ``variables/``, the export's
metadata (:mod:`tfmtnas.export.metadata`): ``assets.extra/tfmtnas.json`` with the feature
spec, the tasks, the signatures' inputs and outputs and any caller metadata.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import tensorflow as tf

from tfmtnas.export import versions
from tfmtnas.export.client import write_warmup_requests
from tfmtnas.export.metadata import (
    METADATA_FILE,
    ExportMetadata,
    asset_spec,
    read_metadata,
)
from tfmtnas.export.signatures import (
    EXAMPLES_SIGNATURE,
    SERVING_SIGNATURE,
    ServingModule,
    output_details,
    signature_inputs,
)

SERVE_TAG = "serve"


@contextlib.contextmanager
def _quiet_tf_logging():
    """Keras' SavedModel tracing warns about unbuilt metric/task layers; not useful here."""
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def write_saved_model(model, path: str | os.PathLike, metadata: Mapping | None = None,
                      jit_compile: bool = False) -> ExportMetadata:
    """Write the serving SavedModel of ``model`` into the new folder ``path`` (no versioning).

    Most callers want :func:`export_saved_model`, which adds the versioned layout and the
    atomic rename on top of this. The metadata file names vocabulary files by their copies
    under ``assets/``; the returned metadata keeps the model's own spec (its paths).
    """
    module = ServingModule(model, jit_compile=jit_compile)
    signatures = module.signatures()
    outputs = [t.name for t in module.task_specs]
    details = output_details(module.task_specs)
    meta = ExportMetadata(
        spec=module.feature_spec, tasks=module.task_specs,
        signatures={name: {"inputs": inputs, "outputs": outputs, "output_details": details}
                    for name, inputs in signature_inputs(module.feature_spec).items()},
        model_class=type(model).__name__, jit_compile=module.jit_compile,
        extra=dict(metadata or {}))
    path = Path(path)
    with _quiet_tf_logging():
        tf.saved_model.save(module, str(path), signatures=signatures)
    (path / METADATA_FILE).parent.mkdir(parents=True, exist_ok=True)
    stored = dataclasses.replace(meta, spec=asset_spec(meta.spec, path))
    (path / METADATA_FILE).write_text(json.dumps(stored.to_dict(), indent=1))
    return meta


def export_saved_model(
    model,
    export_root: str | os.PathLike = "saved_models",
    name: str = "model",
    version: int | None = None,
    overwrite: bool = False,
    metadata: Mapping | None = None,
    warmup_rows=None,
    jit_compile: bool = False,
) -> Path:
    """Export ``model`` to ``<export_root>/<name>/<version>/`` for TF Serving.

    Signatures ``serving_default`` (one named input per raw feature) and
    ``predict_examples`` (serialized ``tf.Example`` under ``examples``), each returning one
    output per task; see :mod:`tfmtnas.export.signatures`.

    Args:
        model: a trained tfmtnas model (``.spec``, ``.tasks``, call on preprocessed
            features), e.g. a :class:`~tfmtnas.models.MultiTaskModel` or a derived child.
        export_root: TF Serving's base folder for all models (default ``"saved_models"``).
        name: the model's name (its folder under ``export_root``; default ``"model"``).
        version: integer version; default the next free one (1 for a new model).
        overwrite: replace ``version`` if it exists (default False: refuse).
        metadata: JSON-serialisable extra metadata stored in ``assets.extra/tfmtnas.json``.
        warmup_rows: raw rows (or columns) to store as TF Serving warm-up requests
            (``assets.extra/tf_serving_warmup_requests``, one per signature); needs
            ``tensorflow-serving-api``. Default None: no warm-up file.
        jit_compile: XLA-compile the model core in the graph (faster at small batches;
            TF Serving on CPU then needs ``--xla_cpu_compilation_enabled=true``). Default
            False.

    Returns:
        The version folder written.

    Raises:
        VersionExistsError: ``version`` exists and ``overwrite`` is False.
        ValueError: invalid name or version, or feature names unusable as input names.
    """
    versions.check_model_name(name)
    if version is not None:
        version = versions.check_version(version)
    if metadata is not None:
        json.dumps(dict(metadata))  # fail before the slow part if not serialisable
    model_path = Path(export_root) / name
    if version is not None and not overwrite and (model_path / str(version)).exists():
        raise versions.VersionExistsError(
            f"Version {version} of {model_path} already exists; pass overwrite=True "
            f"(--overwrite) to replace it or choose another version.")
    model_path.mkdir(parents=True, exist_ok=True)
    staged = versions.staging_dir(model_path, version if version is not None else 0)
    with versions.cleanup_on_error(staged):
        meta = write_saved_model(model, staged, metadata, jit_compile=jit_compile)
        if warmup_rows is not None:
            write_warmup_requests(staged, warmup_rows, name, meta.spec)
        if version is not None:
            final = model_path / str(version)
            versions.publish(staged, final, overwrite=overwrite)
            return final
        for _ in range(100):  # another exporter may take the next free version first
            final = model_path / str(versions.next_version(model_path))
            try:
                versions.publish(staged, final)
                return final
            except versions.VersionExistsError:
                continue
        raise RuntimeError(f"Could not find a free version under {model_path}.")


def load_signatures(saved_model_dir: str | os.PathLike):
    """Load a version folder with the ``serve`` tag as TF Serving does; return the object.

    ``loaded.signatures[SERVING_SIGNATURE]`` and ``[EXAMPLES_SIGNATURE]`` are callable with
    keyword tensors. Needs only TensorFlow (not tfmtnas) to work, like TF Serving.
    """
    path = Path(saved_model_dir)
    if not (path / "saved_model.pb").is_file():
        read_metadata(path)  # raises the explanatory FileNotFoundError
    return tf.saved_model.load(str(path), tags=[SERVE_TAG])


__all__ = ["EXAMPLES_SIGNATURE", "ExportMetadata", "METADATA_FILE", "SERVING_SIGNATURE",
           "asset_spec", "export_saved_model", "load_signatures", "read_metadata",
           "write_saved_model"]
