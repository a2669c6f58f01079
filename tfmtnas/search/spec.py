"""The routing graph: one JSON-serialisable spec for every sharing structure tfmtnas knows.

A network between the feature embedding and the task towers is a stack of **layers**. Each
layer holds **experts** (MLPs of one shape) and, above layer 0, the **mixers** that feed
them. A mixer combines candidate **producers** (experts of the layer below) through a
**gate** (``mean``, ``static`` linear weights, ``softmax`` of a **query**), restricted by a
connection **mask**. Every expert reads one mixer (layer 0 experts read the input). The
**outputs** are one mixer per task over the last layer's experts.

A mask of ``None`` means *searched*: a search method owns the variables that decide it.
A fixed spec (all masks set) describes a concrete network; :func:`prune` drops experts that
reach no task, so a derived child computes only what it needs.

Example:
    >>> spec = preset("mmoe", ["income", "marital"], expert_units=(16,), num_experts=3)
    >>> RoutingSpec.from_json(spec.to_json()) == spec
    True
    >>> [o.mask for o in spec.outputs]
    [(1, 1, 1), (1, 1, 1)]
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

GATES = ("mean", "static", "softmax", "nddr")
INPUT = "input"


class SpecError(ValueError):
    """An invalid routing spec: the message names the layer, mixer or expert at fault."""


@dataclasses.dataclass(frozen=True)
class Expert:
    """An MLP expert. ``input`` is ``"input"`` (layer 0) or a mixer of the same layer."""

    name: str
    input: str = INPUT


@dataclasses.dataclass(frozen=True)
class Mixer:
    """A gated combination of candidate producers from the layer below.

    Args:
        name: unique name (an output mixer is named after its task).
        candidates: names of experts in the layer below.
        mask: 0/1 per candidate, or ``None`` if searched.
        gate: ``"mean"``, ``"static"``, ``"softmax"`` or ``"nddr"`` (NDDR fusion: the gated
            candidates concatenated, a dense layer initialised to the identity on the first
            candidate, the mixer's own feature, and batch normalisation; MTL-NAS).
        query: what a softmax gate reads: ``"input"`` or a mixer of the layer below.
        static_init: initial weights of a static gate, one per candidate.
    """

    name: str
    candidates: tuple[str, ...]
    mask: tuple[int, ...] | None = None
    gate: str = "softmax"
    query: str = INPUT
    static_init: tuple[float, ...] | None = None

    def __post_init__(self):
        object.__setattr__(self, "candidates", tuple(self.candidates))
        if self.mask is not None:
            # Only 0/1 become ints; anything else (0.5, "x") is kept for validate to reject.
            object.__setattr__(self, "mask", tuple(int(m) if m in (0, 1) else m
                                                   for m in self.mask))
        if self.static_init is not None:
            object.__setattr__(self, "static_init", tuple(float(v) for v in self.static_init))

    @property
    def searched(self) -> bool:
        return self.mask is None

    def active(self) -> list[str]:
        """Candidates this mixer uses (all of them while searched)."""
        if self.mask is None:
            return list(self.candidates)
        return [c for c, m in zip(self.candidates, self.mask) if m]


@dataclasses.dataclass(frozen=True)
class Layer:
    """Experts of one shape (``units``) and the mixers that feed them."""

    units: tuple[int, ...]
    experts: tuple[Expert, ...]
    mixers: tuple[Mixer, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "units", tuple(int(u) for u in self.units))
        object.__setattr__(self, "experts", tuple(self.experts))
        object.__setattr__(self, "mixers", tuple(self.mixers))


@dataclasses.dataclass(frozen=True)
class RoutingSpec:
    """A whole routing graph; see the module docstring."""

    tasks: tuple[str, ...]
    layers: tuple[Layer, ...]
    outputs: tuple[Mixer, ...]

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        validate(self)

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, d: dict) -> RoutingSpec:
        try:
            layers = tuple(
                Layer(units=ly["units"], experts=tuple(Expert(**e) for e in ly["experts"]),
                      mixers=tuple(Mixer(**m) for m in ly.get("mixers", ())))
                for ly in d["layers"])
            outputs = tuple(Mixer(**m) for m in d["outputs"])
            return cls(tasks=tuple(d["tasks"]), layers=layers, outputs=outputs)
        except SpecError:
            raise
        except (KeyError, TypeError, ValueError) as err:  # ValueError: e.g. units ["wide"]
            raise SpecError(f"Malformed routing spec: {err!r}.") from err

    @classmethod
    def from_json(cls, text: str) -> RoutingSpec:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as err:
            raise SpecError(f"Routing spec is not valid JSON: {err}.") from err
        return cls.from_dict(d)

    # -- queries -------------------------------------------------------------------------
    @property
    def searched(self) -> bool:
        return any(m.searched for m in self.all_mixers())

    def all_mixers(self) -> list[Mixer]:
        return [m for ly in self.layers for m in ly.mixers] + list(self.outputs)

    def mixer_layers(self) -> list[tuple[int, tuple[Mixer, ...]]]:
        """``(index of the producing layer, mixers)`` for every mixer group, bottom to top."""
        groups = [(i - 1, ly.mixers) for i, ly in enumerate(self.layers) if i > 0]
        return groups + [(len(self.layers) - 1, self.outputs)]


def validate(spec: RoutingSpec) -> None:
    """Raise :class:`SpecError` naming the first inconsistency in ``spec``."""
    if not spec.tasks:
        raise SpecError("A routing spec needs at least one task.")
    if not spec.layers:
        raise SpecError("A routing spec needs at least one layer of experts.")
    if [o.name for o in spec.outputs] != list(spec.tasks):
        raise SpecError(f"Outputs must be one mixer per task named after it, in task order "
                        f"{list(spec.tasks)}; got {[o.name for o in spec.outputs]}.")
    names: set[str] = {INPUT}
    prev_experts: list[str] = []
    prev_mixers: set[str] = set()
    for i, layer in enumerate(spec.layers):
        if not layer.units or any(u < 1 for u in layer.units):
            raise SpecError(f"Layer {i}: units must be positive integers, got {layer.units}.")
        if not layer.experts:
            raise SpecError(f"Layer {i} has no experts.")
        if i == 0 and layer.mixers:
            raise SpecError("Layer 0 reads the input directly and cannot have mixers.")
        for m in layer.mixers:
            _check_mixer(m, f"layer {i}", prev_experts, prev_mixers, names)
        mixer_names = {m.name for m in layer.mixers}
        for e in layer.experts:
            if e.name in names:
                raise SpecError(f"Layer {i}: name {e.name!r} is used twice.")
            names.add(e.name)
            allowed = {INPUT} if i == 0 else mixer_names
            if e.input not in allowed:
                raise SpecError(f"Layer {i}: expert {e.name!r} reads {e.input!r}, which is not "
                                f"one of {sorted(allowed)}.")
        prev_experts = [e.name for e in layer.experts]
        prev_mixers = mixer_names
    for m in spec.outputs:
        _check_mixer(m, "outputs", prev_experts, prev_mixers, names)


def _check_mixer(m: Mixer, where: str, producers: list[str], queries: set[str],
                 names: set[str]) -> None:
    if m.name in names:
        raise SpecError(f"{where}: name {m.name!r} is used twice.")
    names.add(m.name)
    missing = [c for c in m.candidates if c not in producers]
    if missing or not m.candidates:
        raise SpecError(f"{where}: mixer {m.name!r} names missing expert(s) {missing or '[]'}; "
                        f"experts of the layer below are {producers}.")
    if m.gate not in GATES:
        raise SpecError(f"{where}: mixer {m.name!r} has gate {m.gate!r}; choose one of {GATES}.")
    if m.query != INPUT and m.query not in queries:
        raise SpecError(f"{where}: mixer {m.name!r} queries {m.query!r}, which is neither "
                        f"'input' nor a mixer of the layer below {sorted(queries)}.")
    if m.mask is not None:
        if len(m.mask) != len(m.candidates) or not set(m.mask) <= {0, 1}:
            raise SpecError(f"{where}: mixer {m.name!r} mask {list(m.mask)} must be 0/1, one "
                            f"per candidate ({len(m.candidates)}).")
        if not any(m.mask):
            raise SpecError(f"{where}: mixer {m.name!r} mask selects no candidate.")
    if m.static_init is not None and len(m.static_init) != len(m.candidates):
        raise SpecError(f"{where}: mixer {m.name!r} static_init needs one value per candidate.")


def reachable(spec: RoutingSpec) -> set[str]:
    """Names of the experts and mixers on some path to a task output."""
    needed: set[str] = set()
    frontier = list(spec.outputs)
    layer_of = {}
    for ly in spec.layers:
        for e in ly.experts:
            layer_of[e.name] = e
        for m in ly.mixers:
            layer_of[m.name] = m
    while frontier:
        mixer = frontier.pop()
        if mixer.name in needed:
            continue
        needed.add(mixer.name)
        refs = mixer.active() + ([mixer.query] if mixer.gate == "softmax" else [])
        for ref in refs:
            if ref == INPUT or ref in needed:
                continue
            node = layer_of[ref]
            if isinstance(node, Mixer):
                frontier.append(node)
                continue
            needed.add(ref)
            if node.input != INPUT:
                frontier.append(layer_of[node.input])
    return needed


def prune(spec: RoutingSpec) -> RoutingSpec:
    """A fixed spec keeping only experts and mixers that reach a task output.

    Masked-out candidates are dropped from each mixer, so the pruned network computes
    exactly what the masked one does with fewer experts.
    """
    if spec.searched:
        raise SpecError("Only a fixed spec (every mask set) can be pruned; derive it first.")
    keep = reachable(spec)

    def shrink(m: Mixer) -> Mixer:
        idx = [i for i, (c, b) in enumerate(zip(m.candidates, m.mask)) if b and c in keep]
        init = None if m.static_init is None else tuple(m.static_init[i] for i in idx)
        return dataclasses.replace(m, candidates=tuple(m.candidates[i] for i in idx),
                                   mask=(1,) * len(idx), static_init=init)

    layers = []
    for ly in spec.layers:
        experts = tuple(e for e in ly.experts if e.name in keep)
        mixers = tuple(shrink(m) for m in ly.mixers if m.name in keep)
        layers.append(Layer(ly.units, experts, mixers))
    return RoutingSpec(spec.tasks, tuple(layers), tuple(shrink(o) for o in spec.outputs))


# -- presets: the hand-designed models as fixed specs -------------------------------------

def _full(name: str, candidates: Sequence[str], gate: str = "softmax", query: str = INPUT,
          mask: Sequence[int] | None = None, static_init=None) -> Mixer:
    return Mixer(name, tuple(candidates), tuple(mask) if mask else (1,) * len(candidates),
                 gate, query, static_init)


def _own_and_shared(owners: Sequence[str | None], task: str) -> tuple[int, ...]:
    """Mask over experts by owner (a task, or ``None`` for the shared pool): the task's own
    experts and the shared ones."""
    return tuple(int(o is None or o == task) for o in owners)


def _pool_label(tasks: Sequence[str]) -> str:
    """The shared pool's part of expert and mixer names: ``shared``, or, when a task has
    that name, ``shared`` with as many leading underscores as make it no task's name."""
    label = "shared"
    while label in tasks:
        label = f"_{label}"
    return label


def preset(kind: str, tasks: Sequence[str], expert_units: Sequence[int] = (64,),
           num_experts: int = 4, num_task_experts: int = 1, num_shared_experts: int = 2,
           num_levels: int = 2, alpha_self: float = 0.9) -> RoutingSpec:
    """The routing spec of a hand-designed model.

    ``kind`` is one of ``single_task``, ``shared_bottom``, ``mmoe``, ``cgc``, ``ple``,
    ``cross_stitch``; the sizes mean what they mean in :func:`tfmtnas.models.build_sharing`.
    """
    tasks = tuple(tasks)
    units = tuple(expert_units)
    if kind in ("shared_bottom", "single_task", "mmoe"):
        n = {"shared_bottom": 1, "single_task": len(tasks), "mmoe": num_experts}[kind]
        experts = [f"e{i}" for i in range(n)]
        if kind == "mmoe":
            outs = [_full(t, experts) for t in tasks]
        elif kind == "shared_bottom":
            outs = [_full(t, experts, "mean") for t in tasks]
        else:
            outs = [_full(t, experts, "mean", mask=[int(i == k) for i in range(n)])
                    for k, t in enumerate(tasks)]
        return RoutingSpec(tasks, (Layer(units, tuple(Expert(e) for e in experts)),), tuple(outs))
    if kind in ("cgc", "ple"):
        levels = 1 if kind == "cgc" else num_levels
        # Owner of each expert: a task, or None for the shared pool (named ``pool``).
        owners: list[str | None] = [t for t in tasks for _ in range(num_task_experts)]
        owners += [None] * num_shared_experts
        pool = _pool_label(tasks)
        label = {**{t: t for t in tasks}, None: pool}
        layers, queries = [], dict.fromkeys(label, INPUT)
        prev: list[str] = []
        for lvl in range(levels):
            names = [f"l{lvl}_{label[o]}_{i}" for i, o in enumerate(owners)]
            mixers = []
            if lvl > 0:
                for t in tasks:
                    mixers.append(_full(f"l{lvl}_in_{t}", prev, query=queries[t],
                                        mask=_own_and_shared(owners, t)))
                mixers.append(_full(f"l{lvl}_in_{pool}", prev, query=queries[None]))
                queries = {o: f"l{lvl}_in_{label[o]}" for o in label}
                experts = [Expert(n, f"l{lvl}_in_{label[o]}") for n, o in zip(names, owners)]
            else:
                experts = [Expert(n) for n in names]
            layers.append(Layer(units, tuple(experts), tuple(mixers)))
            prev = names
        outs = [_full(t, prev, query=queries[t], mask=_own_and_shared(owners, t))
                for t in tasks]
        return RoutingSpec(tasks, tuple(layers), tuple(outs))
    if kind == "cross_stitch":
        # As tfmtnas.layers.CrossStitch: a unit after every layer, the last one mixing what
        # the task towers read; one task's unit is the identity.
        t_n = len(tasks)
        self_w = alpha_self if t_n > 1 else 1.0
        off = (1.0 - alpha_self) / max(t_n - 1, 1)
        layers, prev = [], []
        for depth, u in enumerate(units):
            names = [f"d{depth}_{t}" for t in tasks]
            mixers = ()
            if depth > 0:
                mixers = tuple(
                    _full(f"d{depth}_in_{t}", prev, "static",
                          static_init=[self_w if j == k else off for j in range(t_n)])
                    for k, t in enumerate(tasks))
                experts = tuple(Expert(n, f"d{depth}_in_{t}") for n, t in zip(names, tasks))
            else:
                experts = tuple(Expert(n) for n in names)
            layers.append(Layer((u,), experts, mixers))
            prev = names
        outs = tuple(_full(t, prev, "static",
                           static_init=[self_w if j == k else off for j in range(t_n)])
                     for k, t in enumerate(tasks))
        return RoutingSpec(tasks, tuple(layers), outs)
    raise SpecError(f"Unknown preset {kind!r}; choose one of single_task, shared_bottom, mmoe, "
                    f"cgc, ple, cross_stitch.")
