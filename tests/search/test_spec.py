"""The routing spec: JSON round-trips, one-line SpecErrors, reachability and pruning."""

import json

import numpy as np
import pytest

from tfmtnas.search import (
    Expert,
    Layer,
    Mixer,
    RoutingSpec,
    SpecError,
    mixer_groups,
    preset,
    prune,
    reachable,
)
from tfmtnas.search.methods import METHODS, search_space
from tfmtnas.search.spec import INPUT

PRESETS = ("single_task", "shared_bottom", "mmoe", "cgc", "ple", "cross_stitch")


def _base(**outputs) -> dict:
    """A valid two-layer spec as a dict; keyword arguments replace the output mixers."""
    spec = {
        "tasks": ["t0", "t1"],
        "layers": [
            {"units": [4], "experts": [{"name": "a0"}, {"name": "a1"}]},
            {"units": [3], "experts": [{"name": "b0", "input": "m0"}],
             "mixers": [{"name": "m0", "candidates": ["a0", "a1"], "mask": [1, 1],
                         "gate": "mean"}]},
        ],
        "outputs": [{"name": "t0", "candidates": ["b0"], "mask": [1], "gate": "mean"},
                    {"name": "t1", "candidates": ["b0"], "mask": [1], "gate": "mean"}],
    }
    for i, name in enumerate(("t0", "t1")):
        if name in outputs:
            spec["outputs"][i] = {"name": name, **outputs[name]}
    return spec


def _spec_error(text_or_dict) -> str:
    with pytest.raises(SpecError) as info:
        if isinstance(text_or_dict, str):
            RoutingSpec.from_json(text_or_dict)
        else:
            RoutingSpec.from_dict(text_or_dict)
    message = str(info.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize("kind", PRESETS)
@pytest.mark.parametrize("tasks", [["a"], ["a", "b", "c"]], ids=["one_task", "three_tasks"])
def test_preset_json_round_trip(kind, tasks):
    spec = preset(kind, tasks, expert_units=(8, 4), num_experts=3, num_task_experts=2,
                  num_shared_experts=1, num_levels=3)
    text = spec.to_json()
    again = RoutingSpec.from_json(text)
    assert again == spec
    assert again.to_json() == text
    assert not spec.searched
    assert json.loads(text)["tasks"] == tasks


def _wiring(spec: RoutingSpec) -> list[list[int]]:
    """Per layer, per expert: the index of the mixer it reads (-1: the input)."""
    return [[-1 if e.input == INPUT else [m.name for m in ly.mixers].index(e.input)
             for e in ly.experts] for ly in spec.layers]


@pytest.mark.parametrize("kind", PRESETS)
@pytest.mark.parametrize("tasks, plain_tasks", [(["shared", "b"], ["a", "b"]),
                                                (["b", "shared", "_shared"], ["a", "b", "c"])],
                         ids=["shared", "shared_and__shared"])
def test_a_task_may_be_called_shared(kind, tasks, plain_tasks):
    sizes = dict(expert_units=(8, 4), num_experts=3, num_task_experts=2,
                 num_shared_experts=1, num_levels=3)
    named, plain = preset(kind, tasks, **sizes), preset(kind, plain_tasks, **sizes)
    assert RoutingSpec.from_json(named.to_json()) == named
    assert [m.name for m in named.outputs] == tasks
    # The same graph as with other task names: mixer by mixer the same candidates, masks,
    # gates, queries and initial values, and every expert reads the same mixer.
    for n, p in zip(mixer_groups(named), mixer_groups(plain), strict=True):
        for field in ("candidates", "fixed_mask", "static_init", "searched"):
            np.testing.assert_array_equal(getattr(n, field), getattr(p, field))
        assert (n.gates, n.query, n.first) == (p.gates, p.query, p.first)
    assert _wiring(named) == _wiring(plain)


def test_cgc_task_called_shared_keeps_its_experts_to_itself():
    spec = preset("cgc", ["shared", "b"], num_task_experts=1, num_shared_experts=1)
    own, own_b, pool = [e.name for e in spec.layers[0].experts]
    assert (own, own_b, pool) == ("l0_shared_0", "l0_b_1", "l0__shared_2")
    reads = {m.name: [c for c, on in zip(m.candidates, m.mask, strict=True) if on]
             for m in spec.outputs}
    assert reads == {"shared": [own, pool], "b": [own_b, pool]}


def test_ple_with_a_task_called_shared_names_the_pool_apart():
    spec = preset("ple", ["a", "shared"], num_levels=2, num_task_experts=1,
                  num_shared_experts=1)
    assert [m.name for m in spec.layers[1].mixers] == ["l1_in_a", "l1_in_shared",
                                                       "l1_in__shared"]
    assert [(e.name, e.input) for e in spec.layers[1].experts] == [
        ("l1_a_0", "l1_in_a"), ("l1_shared_1", "l1_in_shared"),
        ("l1__shared_2", "l1_in__shared")]
    # Names for other tasks are as they always were.
    assert [e.name for e in preset("ple", ["a", "b"], num_levels=2, num_task_experts=1,
                                   num_shared_experts=1).layers[1].experts] == [
        "l1_a_0", "l1_b_1", "l1_shared_2"]


@pytest.mark.parametrize("method", METHODS)
def test_search_space_json_round_trip(method):
    spec = search_space(method, ["a", "b"], num_layers=3, num_experts=3, expert_units=(6,))
    assert spec.searched
    again = type(spec).from_json(spec.to_json())
    assert again == spec
    if method == "gumbel":  # the published space: a stream spec, every allocation searched
        assert all(ly.allocation is None for ly in again.layers)
    else:
        assert all(m.mask is None for m in again.all_mixers())


def test_base_example_is_valid():
    RoutingSpec.from_dict(_base())


def test_invalid_json_text():
    message = _spec_error('{"tasks": ["a"], "layers": [')
    assert message.startswith("Routing spec is not valid JSON")


def test_malformed_structure():
    assert "Malformed routing spec" in _spec_error('{"tasks": ["a"]}')
    assert "Malformed routing spec" in _spec_error("[1, 2]")
    bad_key = _base(t1={"candidates": ["b0"], "gates": "mean"})
    assert "gates" in _spec_error(bad_key)
    bad_units = _base()
    bad_units["layers"][1]["units"] = ["wide"]
    assert "wide" in _spec_error(bad_units)


def test_mixer_names_missing_expert():
    message = _spec_error(_base(t1={"candidates": ["b0", "b7"], "mask": [1, 1]}))
    assert message == ("outputs: mixer 't1' names missing expert(s) ['b7']; it may read the "
                       "experts of the layer below and of earlier layers as wide: ['b0'].")
    # An expert two layers below of another width is not a candidate either.
    spec = _base()
    spec["outputs"][0]["candidates"] = ["a0"]
    spec["outputs"][0]["mask"] = [1]
    assert "names missing expert(s) ['a0']" in _spec_error(spec)
    # As wide as the layer below, it is (a skip edge).
    spec["layers"][1]["units"] = [4]
    assert RoutingSpec.from_dict(spec).outputs[0].candidates == ("a0",)


@pytest.mark.parametrize("mask, fragment", [
    ([1], "mask [1] must be 0/1, one per candidate (2)"),
    ([1, 2], "mask [1, 2] must be 0/1"),
    ([0.5, 1], "mask [0.5, 1] must be 0/1"),
    (["on", 1], "mask ['on', 1] must be 0/1"),
    ([0, 0], "mask selects no candidate"),
])
def test_bad_masks(mask, fragment):
    spec = _base()
    spec["layers"][1]["mixers"][0]["mask"] = mask
    message = _spec_error(spec)
    assert fragment in message and "'m0'" in message


def test_duplicate_names():
    spec = _base()
    spec["layers"][0]["experts"][1]["name"] = "a0"
    assert _spec_error(spec) == "Layer 0: name 'a0' is used twice."
    spec = _base()
    spec["layers"][1]["mixers"][0]["name"] = "a1"  # a mixer named like an expert
    assert "name 'a1' is used twice" in _spec_error(spec)


def test_unknown_gate():
    message = _spec_error(_base(t0={"candidates": ["b0"], "gate": "attention"}))
    assert message == ("outputs: mixer 't0' has gate 'attention'; choose one of "
                       "('mean', 'static', 'softmax', 'nddr').")


def test_other_inconsistencies():
    assert "queries 'm9'" in _spec_error(_base(t0={"candidates": ["b0"], "query": "m9"}))
    spec = _base()
    spec["layers"][1]["experts"][0]["input"] = "nowhere"
    assert "reads 'nowhere'" in _spec_error(spec)
    spec = _base()
    spec["outputs"] = spec["outputs"][::-1]
    assert "one mixer per task" in _spec_error(spec)
    with pytest.raises(SpecError, match="Unknown preset 'moe'"):
        preset("moe", ["a"])


def _hand_spec(query: str = "input") -> RoutingSpec:
    """a2 is reached only through m1, m1 only through b1, and no task reads b1."""
    return RoutingSpec(
        ("t0", "t1"),
        (Layer((4,), (Expert("a0"), Expert("a1"), Expert("a2"))),
         Layer((3,), (Expert("b0", "m0"), Expert("b1", "m1")),
               (Mixer("m0", ("a0", "a1"), (1, 0), "mean"),
                Mixer("m1", ("a1", "a2"), (1, 1), "softmax")))),
        (Mixer("t0", ("b0", "b1"), (1, 0), "softmax", query=query),
         Mixer("t1", ("b0", "b1"), (1, 0), "static", static_init=(0.3, 0.7))))


def test_reachable_and_prune_drop_unreached_experts():
    spec = _hand_spec()
    assert reachable(spec) == {"t0", "t1", "b0", "m0", "a0"}
    pruned = prune(spec)
    assert [[e.name for e in ly.experts] for ly in pruned.layers] == [["a0"], ["b0"]]
    assert [m.name for m in pruned.layers[1].mixers] == ["m0"]
    assert pruned.layers[1].mixers[0] == Mixer("m0", ("a0",), (1,), "mean")
    assert pruned.outputs == (Mixer("t0", ("b0",), (1,), "softmax"),
                              Mixer("t1", ("b0",), (1,), "static", static_init=(0.3,)))
    assert prune(pruned) == pruned


def test_a_softmax_query_keeps_its_mixer():
    spec = _hand_spec(query="m1")
    assert reachable(spec) == {"t0", "t1", "b0", "m0", "m1", "a0", "a1", "a2"}
    pruned = prune(spec)
    assert [[e.name for e in ly.experts] for ly in pruned.layers] == [["a0", "a1", "a2"],
                                                                        ["b0"]]
    assert [m.name for m in pruned.layers[1].mixers] == ["m0", "m1"]


def test_prune_needs_a_fixed_spec():
    with pytest.raises(SpecError, match="derive it first"):
        prune(search_space("gumbel", ["a"]))
