"""The search space: its table, narrowing by JSON and flags, keras-tuner's view of it."""

import json

import keras_tuner
import pytest

from tfmtnas.errors import DataError, UserError
from tfmtnas.models import SHARING_KINDS
from tfmtnas.tuning.space import (
    ARCHITECTURES,
    SearchSpace,
    build_space,
    parse_assignments,
)


def test_default_space_covers_the_zoo_and_the_methods():
    space = SearchSpace.default()
    assert space.architectures == ARCHITECTURES
    assert set(SHARING_KINDS) | {"mtnas", "gumbel", "gumbel_experts", "mtlnas"} == set(
        ARCHITECTURES)
    assert space.names == ("architecture", "expert_units", "num_experts", "num_task_experts",
                           "num_shared_experts", "num_levels", "num_layers", "tower_units",
                           "embedding_dim", "learning_rate", "entropy_weight", "budget",
                           "cost_weight")
    # Each method's hyperparameter applies to its method only.
    assert space["entropy_weight"].applies_to == ("mtlnas",)
    assert space["budget"].applies_to == ("gumbel", "gumbel_experts")
    assert space["cost_weight"].applies_to == ("mtnas", "gumbel", "gumbel_experts")


def test_narrowing_fixes_chooses_and_ranges():
    space = SearchSpace.default().narrow({
        "architecture": ["mmoe", "ple"], "embedding_dim": 8, "expert_units": [32],
        "learning_rate": {"min": 1e-3, "max": 4e-3}, "num_experts": [2, 6]})
    assert space["architecture"].kind == "choice"
    assert space["architecture"].values == ("mmoe", "ple")
    assert (space["embedding_dim"].kind, space["embedding_dim"].values) == ("fixed", (8,))
    assert (space["expert_units"].kind, space["expert_units"].values) == ("fixed", (32,))
    lr = space["learning_rate"]
    assert (lr.kind, lr.low, lr.high, lr.log, lr.default) == ("float", 1e-3, 4e-3, True, 2e-3)
    assert (space["num_experts"].kind, space["num_experts"].values) == ("choice", (2, 6))
    # No remaining architecture reads the method or the other zoo models' dimensions.
    assert set(space.names) == {"architecture", "expert_units", "num_experts",
                                "num_task_experts", "num_shared_experts", "num_levels",
                                "tower_units", "embedding_dim", "learning_rate"}
    # A default outside the narrowed range moves into it.
    assert SearchSpace.default().narrow(
        {"learning_rate": {"min": 0.005, "max": 0.01}})["learning_rate"].default == 0.005


@pytest.mark.parametrize("overrides, message", [
    ({"depth": 3}, "unknown dimension"),
    ({"architecture": "deepfm"}, "unknown architecture 'deepfm'"),
    ({"architecture": {"min": 1, "max": 2}}, "is a choice"),
    ({"num_experts": 2.5}, "whole numbers"),
    ({"num_experts": 0}, "must be >= 1"),
    ({"num_experts": "four"}, "takes numbers"),
    ({"budget": 1.5}, "must be <= 1.0"),
    ({"learning_rate": {"min": 0.0, "max": 0.1, "sampling": "log"}}, "needs min > 0"),
    ({"learning_rate": {"min": 0.1, "max": 0.01}}, "is above max"),
    ({"learning_rate": {"low": 0.1}}, "a range is"),
    ({"expert_units": []}, "empty list"),
    ({"expert_units": [8, 8]}, "lists a value twice"),
])
def test_bad_narrowing_is_a_user_error(overrides, message):
    with pytest.raises(UserError, match=message):
        SearchSpace.default().narrow(overrides)


def test_keras_tuner_sees_conditional_hyperparameters():
    space = SearchSpace.default().narrow({"architecture": ["mmoe", "ple", "gumbel"],
                                          "expert_units": [8, 16]})
    oracle = keras_tuner.oracles.RandomSearchOracle(
        objective=keras_tuner.Objective("mean_auc", "max"), max_trials=60,
        hyperparameters=space.hyperparameters(), seed=3, allow_new_entries=False,
        tune_new_entries=False)
    seen = set()
    for _ in range(40):
        values = oracle._random_values()
        arch = values["architecture"]
        seen.add(arch)
        reads = {"mmoe": {"num_experts"},
                 "ple": {"num_task_experts", "num_shared_experts", "num_levels"},
                 "gumbel": {"num_experts", "num_layers", "budget", "cost_weight"}}[arch]
        common = {"architecture", "expert_units", "tower_units", "embedding_dim",
                  "learning_rate"}
        assert set(values) == common | reads, values
        assert values["expert_units"] in (8, 16)
        assert 5e-4 <= values["learning_rate"] <= 1e-2
        settings = space.settings(values)
        # The settings hold every dimension: the trial's own values, defaults elsewhere.
        assert {k: settings[k] for k in values} == values
        assert settings["entropy_weight"] == 10.0
        if arch != "ple":
            assert settings["num_levels"] == 2
    assert seen == {"mmoe", "ple", "gumbel"}


def test_settings_ignore_what_the_architecture_does_not_read():
    space = SearchSpace.default()
    got = space.settings({"architecture": "mmoe", "num_levels": 3, "tuner/epochs": 4})
    assert got["num_levels"] == 2 and "tuner/epochs" not in got
    fixed = space.narrow({"embedding_dim": 16})
    assert fixed.settings({"architecture": "mmoe"})["embedding_dim"] == 16


def test_assignments_and_space_files(tmp_path):
    assert parse_assignments(["architecture=mmoe|ple", "expert_units=[32,64]",
                              'learning_rate={"min":0.001,"max":0.01}', "embedding_dim=8",
                              "num_experts=2|4"]) == {
        "architecture": ["mmoe", "ple"], "expert_units": [32, 64],
        "learning_rate": {"min": 0.001, "max": 0.01}, "embedding_dim": 8,
        "num_experts": [2, 4]}
    with pytest.raises(UserError, match="name=value"):
        parse_assignments(["architecture"])
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"architecture": ["mmoe", "mtnas"], "embedding_dim": 4}))
    # The file first, then the flags on top.
    space = build_space(path, ["embedding_dim=16"])
    assert space.architectures == ("mmoe", "mtnas")
    assert space["embedding_dim"].values == (16,)
    with pytest.raises(DataError, match="does not exist"):
        build_space(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="one JSON object"):
        build_space(tmp_path / "bad.json")
