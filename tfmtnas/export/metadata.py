"""What tfmtnas records next to an exported SavedModel, and how it is read back.

The version folder holds, besides ``saved_model.pb`` and ``variables/``,
``assets.extra/tfmtnas.json`` (:data:`METADATA_FILE`): the feature spec, the tasks, the
signatures' input and output names and any caller metadata (the export binary records the
training config). TF Serving ignores it; ``tfmtnas-evaluate`` reads it.

A vocabulary file of the spec (``CategoricalFeature.vocabulary_file``) is copied by
TensorFlow into the version's ``assets/`` (the lookup table's initialiser tracks it as a
``tf.saved_model.Asset``), and the loaded model reads that copy. The metadata names the
copy, relative to the version folder (``"assets/user.txt"``), instead of repeating the
values (:func:`asset_spec`); :func:`read_metadata` resolves it, so its ``.spec`` is usable
as is.

Example:
    >>> meta = read_metadata("saved_models/mmoe/1")
    >>> meta.spec.names, [t.name for t in meta.tasks]
"""

from __future__ import annotations

import dataclasses
import datetime
import filecmp
import json
import os
from collections.abc import Mapping
from pathlib import Path

import tfmtnas
from tfmtnas.errors import MissingFileError
from tfmtnas.export import versions
from tfmtnas.features import FeatureSpec, TaskSpec

METADATA_FILE = Path("assets.extra") / "tfmtnas.json"
METADATA_FORMAT = 1


@dataclasses.dataclass(frozen=True)
class ExportMetadata:
    """What ``assets.extra/tfmtnas.json`` records about an exported model.

    Args:
        spec: the raw features the signatures take. The JSON names a vocabulary file by
            its copy under ``assets/``, relative to the version folder;
            :func:`read_metadata` returns the spec resolved against that folder.
        tasks: the tasks, in output order.
        signatures: ``{signature name: {"inputs": [...], "outputs": [...],
            "output_details": {task: {"kind", "shape", "value"}}}}`` (the details, from
            :func:`~tfmtnas.export.signatures.output_details`, say e.g. that a multiclass
            output is ``[None, K]`` class probabilities).
        model_class: class name of the exported model.
        jit_compile: the model core is XLA-compiled (TF Serving needs
            ``--xla_cpu_compilation_enabled=true`` on CPU).
        extra: caller metadata, e.g. ``{"train_config": {...}}``.
    """

    spec: FeatureSpec
    tasks: tuple[TaskSpec, ...]
    signatures: dict
    model_class: str = ""
    jit_compile: bool = False
    extra: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"format": METADATA_FORMAT, "tfmtnas_version": tfmtnas.__version__,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds"),
                "model_class": self.model_class, "jit_compile": self.jit_compile,
                "feature_spec": self.spec.to_dict(),
                "tasks": [t.to_dict() for t in self.tasks],
                "signatures": self.signatures, "extra": self.extra}

    @classmethod
    def from_dict(cls, d: Mapping) -> ExportMetadata:
        return cls(spec=FeatureSpec.from_dict(d["feature_spec"]),
                   tasks=tuple(TaskSpec(**t) for t in d["tasks"]),
                   signatures=dict(d["signatures"]), model_class=d.get("model_class", ""),
                   jit_compile=bool(d.get("jit_compile", False)),
                   extra=dict(d.get("extra") or {}))


def read_metadata(saved_model_dir: str | os.PathLike) -> ExportMetadata:
    """The :class:`ExportMetadata` of an exported version folder.

    Its ``spec`` names vocabulary files by their absolute path under the version's
    ``assets/``.

    Raises:
        FileNotFoundError: not a SavedModel folder, or not exported by tfmtnas.
    """
    path = Path(saved_model_dir)
    if not (path / "saved_model.pb").is_file():
        hint = ""
        if path.is_dir() and versions.existing_versions(path):
            hint = (f" It holds versions {versions.existing_versions(path)}: pass one of "
                    f"those folders.")
        raise MissingFileError(f"No SavedModel in {path} (saved_model.pb is missing).{hint}")
    meta = path / METADATA_FILE
    if not meta.is_file():
        raise MissingFileError(f"{path} is a SavedModel but not a tfmtnas export "
                               f"({METADATA_FILE} is missing).")
    metadata = ExportMetadata.from_dict(json.loads(meta.read_text()))
    return dataclasses.replace(metadata, spec=metadata.spec.resolved(path))


def asset_spec(spec: FeatureSpec, saved_model_dir: str | os.PathLike) -> FeatureSpec:
    """``spec`` naming each vocabulary file by its copy in the SavedModel's ``assets/``.

    TensorFlow names an asset after the file (with a suffix if two share a name), so the
    copy is found by content, preferring the same name. Paths are relative to
    ``saved_model_dir``.

    Args:
        spec: a spec whose vocabulary files were saved as assets of ``saved_model_dir``.
        saved_model_dir: the folder ``tf.saved_model.save`` wrote.

    Raises:
        RuntimeError: a vocabulary file has no copy under ``assets/``.

    Example:
        >>> asset_spec(model.spec, "saved_models/mmoe/1").vocabulary_files
        {'user': 'assets/user.txt'}
    """
    if not spec.vocabulary_files:
        return spec
    assets = Path(saved_model_dir) / "assets"
    stored = sorted(assets.iterdir()) if assets.is_dir() else []
    cats = []
    for f in spec.categorical:
        if f.vocabulary_file is None:
            cats.append(f)
            continue
        name = os.path.basename(f.vocabulary_file)
        copy = next((p for p in sorted(stored, key=lambda p: p.name != name)
                     if filecmp.cmp(p, f.vocabulary_file, shallow=False)), None)
        if copy is None:
            raise RuntimeError(f"Categorical feature {f.name!r}: the SavedModel in "
                               f"{saved_model_dir} has no copy of its vocabulary file "
                               f"{f.vocabulary_file} under assets/.")
        cats.append(dataclasses.replace(f, vocabulary_file=f"assets/{copy.name}"))
    return dataclasses.replace(spec, categorical=tuple(cats))


__all__ = ["METADATA_FILE", "METADATA_FORMAT", "ExportMetadata", "asset_spec", "read_metadata"]
