"""The atomic output folder of a prepare: built beside the target, renamed into place.

Holds :class:`Staging`: everything is written to ``<output>.partial-<random>`` (with an
owner file naming the host and process), and :meth:`Staging.commit` renames it over the
output once ``manifest.json`` is written, so a killed prepare never leaves a folder that
looks complete. The next run removes the ``.partial-*`` and ``.old-*`` leftovers of runs
on this host whose process is gone (:func:`remove_stale`). Also :func:`write_json`, the
JSON files of the folder.

Example:
    >>> import pathlib, tempfile
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "prepared"
    >>> staging = Staging(out, overwrite=False)
    >>> write_json(staging.path / "manifest.json", {"format": 1})
    >>> staging.commit()
    >>> sorted(p.name for p in out.iterdir())
    ['manifest.json']
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import socket
from pathlib import Path

from absl import logging

from tfmtnas.data import layout
from tfmtnas.data.base import DataError
from tfmtnas.fsutil import pid_alive

_OWNER = ".owner"


def remove_stale(out: Path) -> list[Path]:
    """Remove ``<out>.partial-*`` / ``<out>.old-*`` folders left by runs that died."""
    removed = []
    host = socket.gethostname()
    for pattern in (".partial-*", ".old-*"):
        for folder in out.parent.glob(glob.escape(out.name) + pattern):
            try:
                owner_host, pid = (folder / _OWNER).read_text().split()
                pid = int(pid)
            except (OSError, ValueError):
                owner_host, pid = host, None
            if owner_host != host or (pid is not None and pid_alive(pid)):
                continue  # another machine's or a live run's
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _check_output(out: Path, overwrite: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder.")
    if (out / layout.MANIFEST).is_file():
        if not overwrite:
            raise DataError(f"{out}: a prepared dataset is already there; pass overwrite "
                            f"(--overwrite) to replace it.")
    elif any(out.iterdir()):
        raise DataError(f"{out}: folder is not empty and is not a prepared dataset; "
                        f"refusing to replace it.")


class Staging:
    """A temporary sibling folder renamed into place when complete."""

    def __init__(self, out: Path, overwrite: bool):
        out.parent.mkdir(parents=True, exist_ok=True)
        _check_output(out, overwrite)
        for folder in remove_stale(out):
            logging.info("prepare: removed %s, left by a run that did not finish", folder)
        self.out = out
        self.overwrite = overwrite
        self.path = out.parent / f"{out.name}.partial-{secrets.token_hex(4)}"
        self.path.mkdir()
        (self.path / _OWNER).write_text(f"{socket.gethostname()} {os.getpid()}\n")

    def commit(self) -> None:
        _check_output(self.out, self.overwrite)  # again: it may have appeared meanwhile
        (self.path / _OWNER).unlink()
        old = None
        if self.out.exists() and any(self.out.iterdir()):
            old = self.out.parent / f"{self.out.name}.old-{secrets.token_hex(4)}"
            os.rename(self.out, old)
        os.replace(self.path, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def write_json(path: Path, doc: dict) -> None:
    """``doc`` as indented UTF-8 JSON with a final newline."""
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
