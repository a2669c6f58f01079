"""Imported first by benchmarks that load code written against ``tensorflow.keras``.

TensorFlow decides what the module path ``tensorflow.keras`` (``from tensorflow.keras.layers
import Dense``) resolves to when TensorFlow itself is imported, while ``tf.keras`` is bound
on first use. ``import tfmtnas`` after ``import tensorflow`` binds ``tf.keras`` to tf-keras but
leaves that module path on Keras 3, so DeepCTR, which imports by module path, would build
Keras 3 layers. Importing this module before TensorFlow sets ``TF_USE_LEGACY_KERAS=1`` in
time for both.

Example:
    >>> import keras2_first  # noqa: F401  (before ``import tensorflow``)
"""

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
