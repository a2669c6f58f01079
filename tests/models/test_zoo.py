"""build_sharing reads the one table of baselines: same kinds, sizes and defaults as preset."""

import doctest

import pytest

from tfmtnas.layers import PLE, CrossStitch
from tfmtnas.models import SHARING_KINDS, build_sharing, zoo
from tfmtnas.search import preset
from tfmtnas.search.spec import BASELINES, BaselineSizes


def test_kinds_are_the_presets():
    assert SHARING_KINDS == ("single_task", "shared_bottom", "mmoe", "cgc", "ple",
                             "cross_stitch")
    assert SHARING_KINDS == tuple(BASELINES)


def test_defaults_are_the_preset_defaults():
    ple = build_sharing("ple", 2)
    assert (ple.num_levels, ple.num_task_experts, ple.num_shared_experts, ple.expert_units) \
        == (2, 1, 2, [64])
    spec = preset("ple", ["a", "b"])
    assert len(spec.layers) == 2 and spec.layers[0].units == (64,)
    assert len(spec.layers[0].experts) == 2 * 1 + 2
    assert build_sharing("mmoe", 2).num_experts == 4 == len(preset("mmoe", ["a"]).layers[0].experts)
    assert build_sharing("cross_stitch", 2).alpha_self == 0.9 == BaselineSizes().alpha_self


def test_alpha_self_reaches_the_cross_stitch_layer_and_the_spec():
    layer = build_sharing("cross_stitch", 2, expert_units=(4,), alpha_self=0.6)
    assert isinstance(layer, CrossStitch) and layer.alpha_self == 0.6
    assert preset("cross_stitch", ["a", "b"], (4,), alpha_self=0.6).outputs[0].static_init \
        == (0.6, 0.4)


def test_sizes_by_position_follow_the_field_order():
    layer = build_sharing("ple", 2, (4,), 3, 2, 1, 3)
    assert isinstance(layer, PLE) and layer.name == "sharing"
    assert (layer.expert_units, layer.num_task_experts, layer.num_shared_experts,
            layer.num_levels) == ([4], 2, 1, 3)


def test_unknown_size_is_a_type_error():
    with pytest.raises(TypeError, match="num_expert"):
        build_sharing("mmoe", 2, num_expert=3)
    with pytest.raises(TypeError, match="num_expert"):
        preset("mmoe", ["a"], num_expert=3)


def test_docstring_example():
    result = doctest.testmod(zoo)
    assert result.attempted > 0 and result.failed == 0
