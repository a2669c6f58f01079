"""Writes that a kill at any moment cannot leave half done: files and folders, by renames.

A reader (a resumed run, a model server) sees a file or folder either as it was or as it
became, never in between: new content goes to a temporary sibling first, then one
``rename`` puts it in place. Replacing a whole folder uses Linux's ``renameat2`` with
``RENAME_EXCHANGE`` (the two folders swap names in one step) where available; elsewhere the
old folder is renamed aside first, and :func:`restore_aside` puts such a folder back if a
kill came between the two renames.

Example:
    >>> import pathlib, tempfile
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> atomic_write(root / "metrics.json", '{"auc": 0.9}')
    >>> (root / "metrics.json").read_text()
    '{"auc": 0.9}'
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import signal
import uuid
from pathlib import Path

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
ASIDE_MARK = ".aside-"
# Fault injection for the kill tests: a process whose environment names one of the points
# passed to :func:`fault_point` kills itself there with SIGKILL, as a crash would.
FAULT_ENV = "TFMTNAS_FAULT_POINT"


def fault_point(name: str) -> None:
    """Die here (SIGKILL) if ``$TFMTNAS_FAULT_POINT`` is ``name``; a no-op otherwise.

    Example:
        >>> fault_point("publish")  # nothing happens unless the variable names it
    """
    if os.environ.get(FAULT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host.

    Example:
        >>> pid_alive(os.getpid())
        True
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def atomic_write(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary sibling, flushed, then renamed.

    Args:
        path: the file to (re)place.
        text: its new content.

    Example:
        >>> atomic_write("runs/mmoe/config.json", "{}")  # doctest: +SKIP
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _exchange(a: Path, b: Path) -> bool:
    """Swap the names of ``a`` and ``b`` in one step; False if the system cannot."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: not supported here
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def replace_dir(staged: str | os.PathLike, final: str | os.PathLike) -> None:
    """Put the folder ``staged`` at ``final`` (replacing any folder there) atomically.

    With ``RENAME_EXCHANGE`` the two swap in one step and the old content is then deleted.
    Without it the old folder is renamed to ``<parent>/.<name>.aside-<hex>`` first; a kill
    before the second rename leaves it there for :func:`restore_aside`.

    Args:
        staged: the complete new folder (a sibling of ``final``).
        final: where it goes.

    Example:
        >>> replace_dir("runs/mmoe/.weights-1a2b", "runs/mmoe/weights")  # doctest: +SKIP
    """
    staged, final = Path(staged), Path(final)
    if not final.exists():
        os.rename(staged, final)
        return
    # The fault point forces the two-rename fallback, so tests can kill between its renames.
    if os.environ.get(FAULT_ENV) != "replace_dir_aside" and _exchange(staged, final):
        shutil.rmtree(staged, ignore_errors=True)
        return
    aside = final.with_name(f".{final.name}{ASIDE_MARK}{uuid.uuid4().hex[:8]}")
    os.rename(final, aside)
    fault_point("replace_dir_aside")
    os.rename(staged, final)
    shutil.rmtree(aside, ignore_errors=True)


def restore_aside(final: str | os.PathLike) -> bool:
    """If ``final`` is missing but an old copy was renamed aside, rename it back.

    Args:
        final: a folder :func:`replace_dir` may have been replacing when killed.

    Returns:
        Whether a folder was restored.

    Example:
        >>> restore_aside("runs/mmoe/weights")  # doctest: +SKIP
        False
    """
    final = Path(final)
    if final.exists() or not final.parent.is_dir():
        return False
    asides = sorted(final.parent.glob(f".{final.name}{ASIDE_MARK}*"))
    if not asides:
        return False
    os.rename(asides[-1], final)
    for extra in asides[:-1]:
        shutil.rmtree(extra, ignore_errors=True)
    return True


__all__ = ["atomic_write", "fault_point", "pid_alive", "replace_dir", "restore_aside"]
