import numpy as np
import pytest
from layer_testing import (
    assert_outputs_close,
    np_expert_bank,
    np_identity,
    randomize_weights,
    run_layer_checks,
)

from tfmtnas import keras
from tfmtnas.layers import MMoE, TaskTowers

RNG = np.random.default_rng(7)
T, B, H = 3, 4, 5
INPUTS = [RNG.normal(size=[B, H]).astype(np.float32) for _ in range(T)]


def np_towers(inputs, towers):
    """One logit per tower: ``[B, T]``."""
    return np_wide_towers(inputs, towers, [1] * len(inputs))


@pytest.mark.parametrize("units", [[], [6, 3]], ids=["linear", "hidden"])
def test_standard_checks(units):
    run_layer_checks(lambda: TaskTowers(T, units), INPUTS,
                     expected_num_weights=2 * (len(units) + 1), expected_output_shapes=[[B, T]])


@pytest.mark.parametrize("units", [[], [6, 3]], ids=["linear", "hidden"])
def test_matches_numpy(units):
    towers = TaskTowers(T, units)
    towers(INPUTS)
    randomize_weights(towers)
    assert_outputs_close(towers(INPUTS), np_towers(INPUTS, towers))


def test_last_layer_is_linear_and_stacked_input_accepted():
    towers = TaskTowers(T, [], activation="relu")
    towers(INPUTS)
    randomize_weights(towers, scale=2.0)
    logits = towers(INPUTS).numpy()
    assert (logits < 0).any()
    assert_outputs_close(towers(np.stack(INPUTS, axis=1)), logits)
    bank = towers.towers
    expected = np_expert_bank(np.stack(INPUTS, 1), [k.numpy() for k in bank.kernels],
                              [b.numpy() for b in bank.biases], output_activation=np_identity)
    assert_outputs_close(logits, expected[..., 0])


def test_on_top_of_mmoe_in_functional_model():
    x = keras.Input([7])
    logits = TaskTowers(2, [4])(MMoE(2, 3, [8])(x))
    model = keras.Model(x, logits)
    assert model.output_shape == (None, 2)


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="got 0"):
        TaskTowers(0, [])
    with pytest.raises(ValueError, match=r"\[4, 0\]"):
        TaskTowers(2, [4, 0])
    with pytest.raises(ValueError, match="num_tasks=3 tensors, got 2"):
        TaskTowers(T, [])(INPUTS[:2])
    with pytest.raises(ValueError, match="expected \\[batch, num_tasks, h\\]"):
        TaskTowers(T, [])(INPUTS[0])


WIDTHS = [1, 4, 2]  # e.g. a binary task, a 4-class task and a 2-class task


def np_wide_towers(inputs, towers, widths):
    """Each tower's first ``widths[t]`` outputs, concatenated in task order."""
    bank = towers.towers
    kernels = [k.numpy() for k in bank.kernels]
    biases = [b.numpy() for b in bank.biases]
    out = []
    for t, x in enumerate(inputs):
        h = x.astype(np.float64)
        for i, (k, b) in enumerate(zip(kernels, biases, strict=True)):
            h = h @ k[t] + b[t]
            if i < len(kernels) - 1:
                h = np.maximum(h, 0.0)
        out.append(h[:, :widths[t]])
    return np.concatenate(out, axis=1)


def test_output_units_standard_checks():
    run_layer_checks(lambda: TaskTowers(T, [6], output_units=WIDTHS), INPUTS,
                     expected_num_weights=4, expected_output_shapes=[[B, sum(WIDTHS)]])


@pytest.mark.parametrize("widths", [WIDTHS, [3, 3, 3]], ids=["mixed", "equal"])
def test_output_units_match_numpy(widths):
    towers = TaskTowers(T, [6], output_units=widths)
    towers(INPUTS)
    randomize_weights(towers)
    assert towers.towers.kernels[-1].shape == (T, 6, max(widths))
    assert_outputs_close(towers(INPUTS), np_wide_towers(INPUTS, towers, widths))


def test_bad_output_units():
    with pytest.raises(ValueError, match=r"one width per task \(num_tasks=3\), got \[1, 2\]"):
        TaskTowers(T, [], output_units=[1, 2])
    with pytest.raises(ValueError, match="output_units must contain positive integers"):
        TaskTowers(T, [], output_units=[1, 0, 2])
