"""A trained model dir -> a versioned SavedModel: the library behind ``tfmtnas-export``.

Also what ``tfmtnas-evaluate`` needs from a model dir: :func:`resolve_model_dir` (a search
dir's derived ``child/``) and :func:`training_record` (the run's resolved config).

Example:
    >>> path = export_model_dir("runs/mmoe", "saved_models")
    >>> path
    PosixPath('saved_models/mmoe/1')
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tfmtnas.errors import MissingFileError, UserError


def resolve_model_dir(model_dir: str | os.PathLike | None) -> Path:
    """The folder holding ``model.json``: ``model_dir`` itself or a search dir's ``child/``.

    Raises:
        UserError: no ``model_dir`` given.
        MissingFileError: ``model_dir`` does not exist or holds no trained model.
    """
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


def export_model_dir(model_dir: str | os.PathLike, export_root: str | os.PathLike,
                     name: str | None = None, version: int | None = None,
                     overwrite: bool = False, warmup_requests: bool = False,
                     jit_compile: bool = False) -> Path:
    """Export the model a training or search run wrote for TF Serving.

    The export's metadata records the model dir and the run's config, from which
    ``tfmtnas-evaluate`` takes the dataset the model was trained on.

    Args:
        model_dir: a folder ``tfmtnas-train`` wrote, or a ``tfmtnas-search`` dir (its
            derived ``child/`` is exported).
        export_root: TF Serving base folder; the model goes to
            ``<export_root>/<name>/<version>``.
        name: model name (default: :func:`default_name`).
        version: integer version (default: the next free one).
        overwrite: replace ``version`` if it exists.
        warmup_requests: also write TF Serving warm-up requests (needs
            ``tensorflow-serving-api``).
        jit_compile: XLA-compile the model core of the serving graph.

    Returns:
        The version folder written.

    Raises:
        UserError: no or a bad ``model_dir`` or ``name``, or ``version`` exists and not
            ``overwrite``.
    """
    from tfmtnas.export import export_saved_model
    from tfmtnas.export.client import sample_row
    from tfmtnas.export.versions import VersionExistsError, check_model_name
    from tfmtnas.pipelines.training import load_model

    model_dir = resolve_model_dir(model_dir)
    name = check_model_name(name or default_name(model_dir))
    target = Path(export_root) / name
    if version is not None and not overwrite and (target / str(version)).exists():
        raise VersionExistsError(f"Version {version} of {target} already exists; pass "
                                 f"--overwrite to replace it or choose another --version.")
    model = load_model(model_dir)
    metadata = {"model_dir": str(model_dir.resolve()), "train_config": training_record(model_dir)}
    return export_saved_model(
        model, export_root, name=name, version=version, overwrite=overwrite,
        metadata=metadata, jit_compile=jit_compile,
        warmup_rows=[sample_row(model.spec)] if warmup_requests else None)
