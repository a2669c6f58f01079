"""An export killed (SIGKILL) at any point leaves the previous version loadable, and the next
export cleans up what it left behind."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

from tfmtnas import fsutil
from tfmtnas.export import versions

_EXPORT = """
import sys
from tfmtnas import keras
from tfmtnas.export import export_saved_model
from tfmtnas.features import CategoricalFeature, FeatureSpec, NumericFeature, TaskSpec
from tfmtnas.models import MultiTaskModel

keras.utils.set_random_seed(int(sys.argv[2]))
spec = FeatureSpec([CategoricalFeature("shop", hash_bins=5)], [NumericFeature("price")])
model = MultiTaskModel(spec, [TaskSpec("click")], sharing={"kind": "mmoe", "expert_units": [4]})
model(model.dummy_features())
print("exporting", flush=True)
version = None if sys.argv[3] == "next" else int(sys.argv[3])
export_saved_model(model, sys.argv[1], name="m", version=version, overwrite=version is not None)
"""


def _export(root, seed, version="next", fault=None, kill_when_staging=False):
    env = {k: v for k, v in os.environ.items() if k != fsutil.FAULT_ENV}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    if fault:
        env[fsutil.FAULT_ENV] = fault
    proc = subprocess.Popen([sys.executable, "-c", _EXPORT, str(root), str(seed), str(version)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if kill_when_staging:  # a kill while the SavedModel is being written
            deadline = time.monotonic() + 120
            while not any(p.name.startswith(".tmp-") for p in (root / "m").glob(".*")):
                assert proc.poll() is None and time.monotonic() < deadline, "no staging"
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode


def _predict(path):
    loaded = tf.saved_model.load(str(path), tags=["serve"])
    out = loaded.signatures["serving_default"](shop=tf.constant(["a", "b"]),
                                               price=tf.constant([1.0, 2.0]))
    return out["click"].numpy()


def _hidden(root):
    return sorted(p.name for p in (root / "m").iterdir() if p.name.startswith("."))


def test_exports_killed_at_three_points_leave_the_old_version_and_are_cleaned_up(tmp_path):
    assert _export(tmp_path, seed=1) == 0
    v1 = _predict(tmp_path / "m" / "1")

    # 1. Killed while writing: version 1 intact, a staging folder left behind.
    assert _export(tmp_path, seed=2, kill_when_staging=True) == -signal.SIGKILL
    assert versions.existing_versions(tmp_path / "m") == [1]
    assert any(n.startswith(".tmp-") for n in _hidden(tmp_path))
    np.testing.assert_array_equal(_predict(tmp_path / "m" / "1"), v1)

    # 2. Killed just before replacing version 1: still the old version 1.
    assert _export(tmp_path, seed=3, version=1, fault="publish") == -signal.SIGKILL
    np.testing.assert_array_equal(_predict(tmp_path / "m" / "1"), v1)

    # 3. Killed between the two renames of a replacement (the fallback where folders cannot
    # be swapped in one step): version 1 is aside; the next export puts it back.
    assert _export(tmp_path, seed=4, version=1, fault="replace_dir_aside") == -signal.SIGKILL
    assert not (tmp_path / "m" / "1").exists()
    assert any(fsutil.ASIDE_MARK in n for n in _hidden(tmp_path))

    # The next export: every leftover gone, version 1 back as it was, version 2 published.
    assert _export(tmp_path, seed=5) == 0
    assert _hidden(tmp_path) == []
    assert versions.existing_versions(tmp_path / "m") == [1, 2]
    np.testing.assert_array_equal(_predict(tmp_path / "m" / "1"), v1)
    assert not np.allclose(_predict(tmp_path / "m" / "2"), v1)


def test_remove_stale_keeps_live_exporters_and_restores_asides(tmp_path):
    model = tmp_path / "m"
    (model / "1").mkdir(parents=True)
    live = model / f".tmp-2-{os.getpid()}-abcdef"
    live.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = model / f".tmp-2-{dead.pid}-abcdef"
    stale.mkdir()
    aside = model / f".3{fsutil.ASIDE_MARK}0123abcd"
    aside.mkdir()
    (aside / "saved_model.pb").write_text("old")
    versions.remove_stale(model)
    assert live.exists() and not stale.exists()
    assert (model / "3" / "saved_model.pb").read_text() == "old" and not aside.exists()
