"""Resuming a killed run: one mechanism for ``tfmtnas-train`` and ``tfmtnas-search``.

A run keeps its resumable state in ``<model_dir>/checkpoints/``: :class:`EpochCheckpoints`
saves the model, its optimizers and the data epoch after every epoch and restores them when
the run starts again, so a rerun after a kill continues from the last finished epoch, and a
rerun of a finished run with more ``--epochs`` trains on from where it ended (with the same
epochs it only redoes what follows training). Resuming is right only when the rerun has the
same resolved configuration and the same data; otherwise it would silently continue another
run's weights. :func:`check_resume` writes ``fingerprint.json`` when a run starts and, when
resumable state is present, refuses a rerun whose fingerprint differs, in one line that
says what changed and how to start fresh. ``--epochs`` may change (a rerun with more
epochs continues the run), and so may the search's child settings, which act after the
resumable state.

Example:
    >>> check_resume(Path("runs/mmoe"), CHECKPOINTS, cfg.to_dict(), data)  # doctest: +SKIP
    >>> resume = EpochCheckpoints(Path("runs/mmoe") / CHECKPOINTS, epoch, model=model)
    >>> model.fit(train, epochs=4, initial_epoch=resume.restore(), callbacks=[resume])
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfmtnas import keras
from tfmtnas.data.stream import PreparedData
from tfmtnas.errors import ResumeMismatchError
from tfmtnas.fsutil import atomic_write

FINGERPRINT_FILE = "fingerprint.json"
CHECKPOINTS = "checkpoints"  # the resumable state's folder in a model dir
# Settings a resumed run may change: where output goes, how often it is logged, how long it
# runs (more --epochs continue the run), and what happens after the resumable state (the
# search's child phase is redone from the searched supernet on every run).
IGNORED = ("model_dir", "log_every", "epochs", "child", "child_epochs")


def data_fingerprint(data) -> str:
    """SHA-256 of a dataset's content: its spec, tasks and every split's columns.

    For in-memory data every cell counts (numbers by their float64 bytes, strings by their
    text); a prepared dataset is identified by its spec and manifest (which lists its
    shards, rows and statistics).

    Args:
        data: a :class:`~tfmtnas.data.MultiTaskData` or a prepared dataset.

    Example:
        >>> data_fingerprint(load_dataset("synthetic", num_train=10))[:12]  # doctest: +SKIP
        '3f1c0e2a9b7d'
    """
    digest = hashlib.sha256()
    if isinstance(data, PreparedData):
        # Content, not place or timing: vocabulary files by their bytes (the folder may
        # move), shards by rows and sha256 (a re-prepare of the same data matches even
        # though its manifest's timings differ).
        spec = data.spec.to_dict()
        for feature in spec["categorical"]:
            if feature.get("vocabulary_file"):
                with open(feature["vocabulary_file"], "rb") as f:
                    feature["vocabulary_file"] = hashlib.sha256(f.read()).hexdigest()
        digest.update(json.dumps(spec, sort_keys=True).encode())
        digest.update(repr([(t.name, t.kind_text, t.weight) for t in data.tasks]).encode())
        shards = {name: [(s["rows"], s.get("sha256")) for s in split["shards"]]
                  for name, split in data.manifest.get("splits", {}).items()}
        digest.update(json.dumps(shards, sort_keys=True).encode())
        return digest.hexdigest()
    digest.update(data.spec.to_json().encode())
    digest.update(repr([(t.name, t.kind_text, t.weight) for t in data.tasks]).encode())
    for name, split in data.splits().items():
        digest.update(f"{name}:{len(split)}".encode())
        for key in sorted(split.features) + [f"label:{k}" for k in sorted(split.labels)]:
            column = (split.labels[key[6:]] if key.startswith("label:")
                      else split.features[key])
            digest.update(key.encode())
            if column.dtype == object or column.dtype.kind in "US":
                digest.update("\x1f".join(map(str, column.tolist())).encode("utf-8",
                                                                           "surrogatepass"))
            else:
                digest.update(np.ascontiguousarray(column, np.float64).tobytes())
    return digest.hexdigest()


def fingerprint(config: Mapping, data) -> dict:
    """``{"config": resolved config without output-only settings, "data": sha256}``."""
    kept = {k: v for k, v in config.items() if k not in IGNORED}
    return {"config": json.loads(json.dumps(kept)), "data": data_fingerprint(data)}


def check_resume(model_dir: Path, state: str, config: Mapping, data,
                 write: bool = True) -> None:
    """Refuse to resume ``model_dir/state`` under another config or data; record this run.

    Args:
        model_dir: the run's model dir.
        state: its sub-folder holding resumable state (:data:`CHECKPOINTS`).
        config: the resolved configuration (``cfg.to_dict()``).
        data: the loaded dataset.
        write: write ``fingerprint.json`` (default True).

    Raises:
        ResumeMismatchError: the state exists and the recorded fingerprint differs, or none
            was recorded.

    Example:
        >>> check_resume(Path("runs/gumbel"), CHECKPOINTS, cfg.to_dict(), data)  # doctest: +SKIP
    """
    model_dir = Path(model_dir)
    current = fingerprint(config, data)
    path = model_dir / FINGERPRINT_FILE
    state_dir = model_dir / state
    if state_dir.is_dir() and any(state_dir.iterdir()):
        fresh = (f"rerun with the same flags and data to resume or continue it, or start "
                 f"fresh with another --model_dir (or after deleting {state_dir})")
        try:
            recorded = json.loads(path.read_text())
        except (OSError, ValueError):
            raise ResumeMismatchError(
                f"{model_dir} holds a run ({state}/) without a readable "
                f"{FINGERPRINT_FILE}, so it cannot be checked: {fresh}.") from None
        old, new = recorded.get("config", {}), current["config"]
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if recorded.get("data") != current["data"]:
            changed.append("the data")
        if changed:
            shown = ", ".join(f"--{c}" if c in new or c in old else c for c in changed[:6])
            raise ResumeMismatchError(
                f"{model_dir} holds a run with other settings ({shown} "
                f"differ); {fresh}.")
    if write:
        model_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(current, indent=1, sort_keys=True))


class NextEpoch(keras.callbacks.Callback):
    """Set ``epoch`` to the next epoch at each epoch's end, before the next epoch's input
    iterator is made, so that the data order of epoch k is a function of the seed and k.

    :class:`EpochCheckpoints` does this and saves; a run without a model dir uses this alone.

    Args:
        epoch: int64 variable the input pipeline reads.

    Example:
        >>> epoch = tf.Variable(0, dtype=tf.int64)
        >>> model.fit(train, epochs=4, callbacks=[NextEpoch(epoch)])  # doctest: +SKIP
    """

    def __init__(self, epoch: tf.Variable):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.assign(epoch + 1)


class EpochCheckpoints(NextEpoch):
    """Save a run's state after every epoch; :meth:`restore` it when the run starts again.

    The state is ``objects`` (the model, which tracks its optimizer, and anything else with
    variables, e.g. a search's architecture optimizer) and ``epoch``, the int64 variable
    the input pipeline reads so that the data order of epoch k is a function of the seed
    and k (:func:`~tfmtnas.data.pipeline.seeded_shuffle`). At each epoch's end the callback
    sets ``epoch`` to the next epoch, then saves, so a restored run starts that epoch with
    the weights, optimizer slots, step counters and data order the uninterrupted run had.
    Saving is atomic (``tf.train.CheckpointManager`` writes the new checkpoint before its
    index names it); one checkpoint is kept.

    Multi-worker safe: every worker saves, because reading some distributed variables takes
    part in collective ops, but only the chief into ``directory``; the others save into
    temporary folders they remove at once. Every worker restores from ``directory``, which
    must therefore be on a file system they share.

    Args:
        directory: the run's checkpoint folder (``<model_dir>/checkpoints``).
        epoch: int64 variable holding the epoch being trained.
        chief: whether this process writes ``directory`` (default True).
        **objects: what to save, by name, e.g. ``model=model``.

    Example:
        >>> epoch = tf.Variable(0, dtype=tf.int64)
        >>> resume = EpochCheckpoints(Path("runs/mmoe/checkpoints"), epoch, model=model)
        >>> model.fit(train, epochs=4, initial_epoch=resume.restore(), callbacks=[resume])
    """

    def __init__(self, directory: Path, epoch: tf.Variable, chief: bool = True,
                 **objects):
        super().__init__(epoch)
        self.directory, self.chief = Path(directory), chief
        self._checkpoint = tf.train.Checkpoint(epoch=epoch, **objects)
        self._manager: tf.train.CheckpointManager | None = None

    def restore(self) -> int:
        """Restore the last saved state, if any; the epoch to start at (0 for a new run)."""
        latest = tf.train.latest_checkpoint(str(self.directory))
        if latest is None:
            self.epoch.assign(0)
            return 0
        self._checkpoint.restore(latest).assert_existing_objects_matched()
        return int(self.epoch.numpy())

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.chief:
            if self._manager is None:
                self._manager = tf.train.CheckpointManager(self._checkpoint,
                                                           str(self.directory), max_to_keep=1)
            self._manager.save(checkpoint_number=epoch + 1)
            return
        # The same save as the chief's (it takes part in the same collective ops).
        temp = tempfile.mkdtemp(prefix="tfmtnas-checkpoint-")
        try:
            tf.train.CheckpointManager(self._checkpoint, temp, max_to_keep=1).save(
                checkpoint_number=epoch + 1)
        finally:
            shutil.rmtree(temp, ignore_errors=True)


__all__ = ["CHECKPOINTS", "FINGERPRINT_FILE", "EpochCheckpoints", "check_resume",
           "data_fingerprint", "fingerprint"]
