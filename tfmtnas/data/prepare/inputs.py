"""The input side of a prepare: which files, their header, and blocks of complete lines.

Holds :func:`expand_inputs` (files and glob patterns to a list of files),
:func:`default_sep` (tab for ``.tsv``/``.tab``, else comma), :func:`split_line` (the
fields of one line, quoted ones through :mod:`csv`) and :class:`FileReader`, which reads a
plain or gzipped file once as its header row and then :class:`Block`-sized runs of
complete lines, counting the bytes read for the progress reports.

Example:
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "log.csv"
    >>> _ = path.write_text("user,click\\nu1,1\\nu2,0\\n")
    >>> reader = FileReader(str(path), chunk_bytes=1 << 20)
    >>> reader.header(","), list(reader.blocks())
    (['user', 'click'], [(2, b'u1,1\\nu2,0')])
    >>> reader.close()
"""

from __future__ import annotations

import csv as _csv
import dataclasses
import glob
import gzip
import io
import os
import re
from collections.abc import Iterator, Sequence

from tfmtnas.data.base import DataError
from tfmtnas.errors import MissingFileError

DEFAULT_CHUNK_BYTES = 4 << 20


@dataclasses.dataclass
class Block:
    """Complete lines of one file: ``data`` without the final newline."""

    index: int  # running number of the block over all files
    path: str
    first_line: int  # 1-based line number of the first line of data
    data: bytes


class _CountingReader(io.RawIOBase):
    """A raw binary file that counts the bytes read from it."""

    def __init__(self, f):
        self._f = f
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._f.readinto(buffer)
        self.count += n or 0
        return n

    def close(self) -> None:
        self._f.close()
        super().close()


def expand_inputs(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files: list[str] = []
    for item in inputs:
        item = os.fspath(item)
        if glob.has_magic(item):
            found = sorted(p for p in glob.glob(item) if os.path.isfile(p))
            if not found:
                raise MissingFileError(f"{item}: no file matches this pattern.")
        elif os.path.isdir(item):
            raise DataError(f"{item}: is a directory, not a file.")
        elif not os.path.isfile(item):
            raise MissingFileError(f"{item}: does not exist.")
        else:
            found = [item]
        files += [p for p in found if p not in files]
    if not files:
        raise DataError("No input files given.")
    return files


def default_sep(files: Sequence[str]) -> str:
    tsv = all(re.search(r"\.(tsv|tab)(\.gz)?$", f) for f in files)
    return "\t" if tsv else ","


def split_line(line: str, sep: str) -> list[str]:
    """Fields of one text line: the csv module for a quoted line and one-character ``sep``."""
    if len(sep) == 1 and '"' in line:
        return next(_csv.reader([line], delimiter=sep, strict=True), [""])
    return line.split(sep)


class FileReader:
    """Header and blocks of complete lines of one plain or gzipped file."""

    def __init__(self, path: str, chunk_bytes: int):
        self.path = path
        self._chunk = chunk_bytes
        self._raw = _CountingReader(open(path, "rb"))
        self._file = (gzip.GzipFile(fileobj=io.BufferedReader(self._raw), mode="rb")
                      if path.endswith(".gz") else self._raw)
        self._rest = b""
        self._line = 1  # line number of the first line of _rest
        self._eof = False

    @property
    def bytes_read(self) -> int:
        return self._raw.count

    def close(self) -> None:
        self._file.close()
        self._raw.close()

    def _fill(self) -> bool:
        if self._eof:
            return False
        try:
            data = self._file.read(self._chunk)
        except (OSError, EOFError, gzip.BadGzipFile) as err:
            raise DataError(f"{self.path}: cannot read: {err}") from None
        if not data:
            self._eof = True
            return False
        self._rest += data
        return True

    def header(self, sep: str) -> list[str]:
        """The column names of the first non-blank line (a UTF-8 BOM is dropped)."""
        while True:
            cut = self._rest.find(b"\n")
            if cut < 0 and self._fill():
                continue
            line = self._rest if cut < 0 else self._rest[:cut]
            self._rest = b"" if cut < 0 else self._rest[cut + 1:]
            lineno = self._line
            self._line += 1
            if self._line == 2 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            line = line.rstrip(b"\r")
            if line.strip():
                break
            if cut < 0:
                raise DataError(f"{self.path}: empty file, expected a header row.")
        try:
            text = line.decode("utf-8")
            names = [n.strip() for n in split_line(text, sep)]
        except (UnicodeDecodeError, _csv.Error) as err:
            raise DataError(f"{self.path}:{lineno}: unreadable header row: {err}") from None
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DataError(f"{self.path}:{lineno}: repeated column names {dupes}.")
        return names

    def blocks(self) -> Iterator[tuple[int, bytes]]:
        """``(first line number, complete lines)`` of about ``chunk_bytes`` each."""
        while True:
            cut = self._rest.rfind(b"\n")
            while cut < 0 and self._fill():
                cut = self._rest.rfind(b"\n")
            if cut < 0:
                if self._rest:
                    yield self._line, self._rest
                return
            data, self._rest = self._rest[:cut], self._rest[cut + 1:]
            first = self._line
            self._line += data.count(b"\n") + 1
            yield first, data
            if not self._fill() and not self._rest:
                return

