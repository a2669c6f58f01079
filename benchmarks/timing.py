"""Epoch timing shared by the benchmarks: median of timed epochs after a warm-up."""

from __future__ import annotations

import statistics
import time

from tfmtnas import keras


class EpochTimer(keras.callbacks.Callback):
    """Records the wall time of every epoch."""

    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._t)


def epoch_times(model: keras.Model, ds, epochs: int, warmup: bool = True) -> list[float]:
    """Seconds of ``epochs`` timed epochs, after one warm-up epoch (tracing, XLA compile)
    unless ``warmup`` is False (the model has trained before)."""
    timer = EpochTimer()
    model.fit(ds, epochs=epochs + int(warmup), verbose=0, callbacks=[timer])
    return timer.times[int(warmup):]


def median_epoch(model: keras.Model, ds, epochs: int) -> float:
    return statistics.median(epoch_times(model, ds, epochs))


def interleaved_epochs(models: dict, data: dict, rounds: int) -> dict[str, list[float]]:
    """Seconds per epoch of each model: a warm-up epoch each, then ``rounds`` rounds of one
    epoch of every model in turn, so a slow spell of a shared machine hits all alike.

    ``models`` and ``data`` are keyed alike (each model trains on its own dataset)."""
    times: dict[str, list[float]] = {name: [] for name in models}
    for name, model in models.items():
        model.fit(data[name], epochs=1, verbose=0)
    for _ in range(rounds):
        for name, model in models.items():
            times[name].extend(epoch_times(model, data[name], 1, warmup=False))
    return times
