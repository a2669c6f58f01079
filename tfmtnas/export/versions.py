"""TF Serving's ``model_base_path`` layout: ``<root>/<name>/<version>/``, integer versions.

A version folder is written elsewhere first (a hidden sibling, which TF Serving ignores as
its name is not an integer) and renamed into place, so a server watching the folder never
sees half a version. :func:`publish` does the rename.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from pathlib import Path

from tfmtnas.errors import UserError

_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")


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


def staging_dir(model_path: Path, version: int) -> Path:
    """A fresh hidden folder next to the versions (not an integer: servers ignore it)."""
    return model_path / f".tmp-{version}-{uuid.uuid4().hex[:12]}"


def publish(staged: Path, final: Path, overwrite: bool = False) -> None:
    """Rename ``staged`` to ``final``.

    Without ``overwrite``, an existing ``final`` is an error (checked by the rename itself,
    so two exporters racing for one version cannot both win). With it, the old folder is
    first renamed aside, then the new one renamed in, then the old one deleted: two renames
    within microseconds, far below a server's polling interval.

    Raises:
        VersionExistsError: ``final`` exists and ``overwrite`` is false.
    """
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
    old = final.parent / f".old-{final.name}-{uuid.uuid4().hex[:12]}"
    had_old = final.exists()
    if had_old:
        os.rename(final, old)
    try:
        os.rename(staged, final)
    except OSError:
        if had_old:
            os.rename(old, final)
        raise
    if had_old:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def cleanup_on_error(path: Path):
    """Remove ``path`` (a staging folder) if the block raises or leaves it behind."""
    try:
        yield path
    finally:
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
