"""TF Serving's ``model_base_path`` layout: ``<root>/<name>/<version>/``, integer versions.

A version folder is written elsewhere first (a hidden sibling, which TF Serving ignores as
its name is not an integer) and renamed into place, so a server watching the folder never
sees half a version. :func:`publish` does the rename; replacing a version swaps the two
folders in one step (:func:`tfmtnas.fsutil.replace_dir`).

An exporter killed at any point leaves the previous versions loadable. What it leaves
behind, a staging folder ``.tmp-<version>-<pid>-<hex>`` or (only where the system cannot
swap two folders in one step) an old version renamed aside, is cleaned up by the next
export into the same model folder (:func:`remove_stale`): staging folders whose process is
gone are deleted, a version set aside is renamed back. Liveness is checked by process id, so
exporters into one model folder are assumed to run on one host.

Example:
    >>> root = Path("saved_models/mmoe")
    >>> staged = staging_dir(root, next_version(root))   # also removes stale leftovers
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from pathlib import Path

from tfmtnas import fsutil
from tfmtnas.errors import UserError

_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_STAGING = re.compile(r"\.tmp-\d+-(\d+)-[0-9a-f]+\Z")
_ASIDE = re.compile(r"\.(\d+)" + re.escape(fsutil.ASIDE_MARK) + r"[0-9a-f]+\Z")


class VersionExistsError(FileExistsError, UserError):
    """The requested version is already published and overwriting was not asked for.

    A :class:`~tfmtnas.errors.UserError` (and so a ``ValueError``): for the binaries it is
    bad input, reported in one line.
    """


def check_model_name(name: str) -> str:
    """A model name is one folder name: letters, digits, ``.``, ``_``, ``-``."""
    if not isinstance(name, str) or not _MODEL_NAME.match(name):
        raise UserError(f"Invalid model name {name!r}: use letters, digits, '.', '_' and "
                        f"'-', starting with a letter or digit.")
    return name


def check_version(version) -> int:
    """Versions are non-negative integers (TF Serving parses folder names as int64)."""
    if isinstance(version, bool) or not isinstance(version, int):
        try:
            as_int = int(str(version))
        except ValueError:
            as_int = None
        if as_int is None or str(as_int) != str(version).strip():
            raise UserError(f"A version must be an integer >= 0, got {version!r}.")
        version = as_int
    if version < 0 or version >= 2**63:
        raise UserError(f"A version must be an integer >= 0, got {version}.")
    return int(version)


def existing_versions(model_path: str | os.PathLike) -> list[int]:
    """Published versions under ``<root>/<name>``, ascending (folders named by an integer)."""
    model_path = Path(model_path)
    if not model_path.is_dir():
        return []
    return sorted(int(p.name) for p in model_path.iterdir()
                  if p.is_dir() and p.name.isdigit() and str(int(p.name)) == p.name)


def next_version(model_path: str | os.PathLike) -> int:
    """One more than the highest published version; 1 for a new model."""
    versions = existing_versions(model_path)
    return versions[-1] + 1 if versions else 1


def remove_stale(model_path: str | os.PathLike) -> list[Path]:
    """Clean up after exporters that were killed: returns the folders removed or restored.

    Staging folders whose process no longer runs are deleted; a version renamed aside by an
    interrupted replacement is renamed back if its place is empty (else deleted).
    """
    model_path = Path(model_path)
    if not model_path.is_dir():
        return []
    touched = []
    for path in sorted(model_path.iterdir()):
        staging = _STAGING.match(path.name)
        if staging and not fsutil.pid_alive(int(staging.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            touched.append(path)
        aside = _ASIDE.match(path.name)
        if aside and path.exists():
            final = model_path / aside.group(1)
            if not fsutil.restore_aside(final) and path.exists():
                shutil.rmtree(path, ignore_errors=True)
            touched.append(path)
    return touched


def staging_dir(model_path: Path, version: int) -> Path:
    """A fresh hidden folder next to the versions (not an integer: servers ignore it).

    Removes the leftovers of killed exporters first (:func:`remove_stale`).
    """
    remove_stale(model_path)
    return model_path / f".tmp-{version}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def publish(staged: Path, final: Path, overwrite: bool = False) -> None:
    """Rename ``staged`` to ``final``.

    Without ``overwrite``, an existing ``final`` is an error (checked by the rename itself,
    so two exporters racing for one version cannot both win). With it, the two folders swap
    names in one step and the old one is deleted (where the system cannot swap, the old
    folder is renamed aside first; :func:`remove_stale` restores it after a kill).

    Raises:
        VersionExistsError: ``final`` exists and ``overwrite`` is false.
    """
    fsutil.fault_point("publish")
    if not overwrite:
        try:
            # os.rename replaces an *empty* destination folder; anything else fails.
            if final.exists():
                raise FileExistsError(final)
            os.rename(staged, final)
        except (FileExistsError, OSError) as err:
            if final.exists():
                raise VersionExistsError(
                    f"Version {final.name} of {final.parent} already exists; pass "
                    f"overwrite=True (--overwrite) to replace it or choose another "
                    f"version.") from err
            raise
        return
    fsutil.replace_dir(staged, final)


@contextlib.contextmanager
def cleanup_on_error(path: Path):
    """Remove ``path`` (a staging folder) if the block raises or leaves it behind."""
    try:
        yield path
    finally:
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
