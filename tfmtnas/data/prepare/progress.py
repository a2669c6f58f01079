"""Progress reports of a running prepare: how many rows and bytes, how fast.

Holds :class:`Progress`, what :func:`~tfmtnas.data.prepare.prepare` passes to its
``progress`` callback every few seconds and at the end, and :func:`log_progress`, the
default callback (one absl INFO line).

Example:
    >>> str(Progress(rows=2_000, skipped=1, bytes_read=1_500_000, total_bytes=3_000_000,
    ...              seconds=2.0))
    '2,000 rows (1 skipped), 1,000 rows/s, 1.5 of 3.0 MB read, 2.0 s'
"""

from __future__ import annotations

import dataclasses

from absl import logging


@dataclasses.dataclass(frozen=True)
class Progress:
    """How far a prepare has come; passed to the ``progress`` callback.

    Args:
        rows: data rows read so far (skipped rows included).
        skipped: rows skipped as bad so far.
        bytes_read: input bytes read so far (compressed bytes for ``.gz`` files).
        total_bytes: total size of the input files.
        seconds: wall time since the start.
        done: True for the last report.
    """

    rows: int
    skipped: int
    bytes_read: int
    total_bytes: int
    seconds: float
    done: bool = False

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        return (f"{self.rows:,} rows ({self.skipped:,} skipped), "
                f"{self.rows_per_second:,.0f} rows/s, {self.bytes_read / 1e6:,.1f} of "
                f"{self.total_bytes / 1e6:,.1f} MB read, {self.seconds:.1f} s")


def log_progress(progress: Progress) -> None:
    """The default progress callback: one absl INFO line."""
    logging.info("prepare: %s", progress)
