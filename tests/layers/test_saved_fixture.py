"""A SavedModel exported by an earlier release still loads and computes what it did then.

``fixtures/sharing_savedmodel`` was written by ``fixtures/make_sharing_savedmodel.py`` before
the gate math moved to :mod:`tfmtnas.layers.gating`: an MMoE, a two-level PLE and a
cross-stitch network (softmax gates with shared and per-consumer queries, masked and not,
and static gates). Loading it with today's code must rebuild the same layers from their
configs, restore every weight under its old name, and give the recorded outputs.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from layer_testing import assert_outputs_close

from tfmtnas import keras
from tfmtnas.layers import PLE, CrossStitch, MMoE

FIXTURES = Path(__file__).resolve().parent / "fixtures"
EXPECTED = np.load(FIXTURES / "expected.npz")


def _fixture_module():
    spec = importlib.util.spec_from_file_location(
        "make_sharing_savedmodel", FIXTURES / "make_sharing_savedmodel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def loaded() -> keras.Model:
    return keras.models.load_model(str(FIXTURES / "sharing_savedmodel"))


def test_fixture_is_small():
    size = sum(p.stat().st_size for p in FIXTURES.rglob("*") if p.is_file())
    assert size < 200_000, size


def test_layers_are_rebuilt_from_their_configs(loaded):
    # Registered classes, not Keras's revived stand-ins: today's call() is what runs.
    assert [type(loaded.get_layer(n)) for n in ("mmoe", "ple", "stitch")] == [
        MMoE, PLE, CrossStitch]


def test_weight_names_and_order_unchanged(loaded):
    assert [w.name for w in loaded.weights] == EXPECTED["weight_names"].tolist()


def test_outputs_match_the_recorded_ones(loaded):
    x = EXPECTED["x"]
    assert_outputs_close(loaded(x), list(EXPECTED["outputs"]))
    assert_outputs_close(loaded.get_layer("mmoe").gate_weights(x), EXPECTED["mmoe_gate"])
    ple_gates = np.concatenate(
        [w.numpy() for w in loaded.get_layer("ple").gate_weights(x)], axis=1)
    assert_outputs_close(ple_gates, EXPECTED["ple_gates"])


def test_a_model_built_today_takes_the_saved_weights(loaded):
    model = _fixture_module().make_model()
    assert [w.name for w in model.weights] == EXPECTED["weight_names"].tolist()
    model.set_weights(loaded.get_weights())
    assert_outputs_close(model(EXPECTED["x"]), list(EXPECTED["outputs"]))
