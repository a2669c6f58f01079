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

The hand-designed models are fixed specs: :data:`BASELINES` gives, per kind, the spec
(:func:`preset`) and the dedicated layer (:func:`tfmtnas.models.build_sharing`), both from
one :class:`BaselineSizes`.

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
from collections.abc import Callable, Sequence

from tfmtnas import keras
from tfmtnas import layers as sharing_layers
from tfmtnas.layers import cgc_mask, cross_stitch_init

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
        candidates: names of experts in the layer below or, as wide as those, in an earlier
            layer (a skip edge: MTL-NAS reads the other tasks' stages i-2..i).
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
    readable: list[str] = []
    for i, layer in enumerate(spec.layers):
        if not layer.units or any(u < 1 for u in layer.units):
            raise SpecError(f"Layer {i}: units must be positive integers, got {layer.units}.")
        if not layer.experts:
            raise SpecError(f"Layer {i} has no experts.")
        if i == 0 and layer.mixers:
            raise SpecError("Layer 0 reads the input directly and cannot have mixers.")
        for m in layer.mixers:
            _check_mixer(m, f"layer {i}", readable, prev_mixers, names)
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
        readable = prev_experts + _skip_producers(spec, i)
    for m in spec.outputs:
        _check_mixer(m, "outputs", readable, prev_mixers, names)


def _skip_producers(spec: RoutingSpec, p: int) -> list[str]:
    """Experts of layers below ``p`` as wide as layer ``p``'s, nearest layer first: what a
    mixer reading layer ``p`` may also read (skip edges, e.g. MTL-NAS's depth-limited edges)."""
    width = spec.layers[p].units[-1]
    return [e.name for q in range(p - 1, -1, -1) if spec.layers[q].units[-1] == width
            for e in spec.layers[q].experts]


def _check_mixer(m: Mixer, where: str, producers: list[str], queries: set[str],
                 names: set[str]) -> None:
    if m.name in names:
        raise SpecError(f"{where}: name {m.name!r} is used twice.")
    names.add(m.name)
    missing = [c for c in m.candidates if c not in producers]
    if missing or not m.candidates:
        raise SpecError(f"{where}: mixer {m.name!r} names missing expert(s) {missing or '[]'}; "
                        f"it may read the experts of the layer below and of earlier layers as "
                        f"wide: {producers}.")
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


# -- the hand-designed models: one table, a fixed spec and a dedicated layer per kind -------

@dataclasses.dataclass(frozen=True)
class BaselineSizes:
    """The sizes of the hand-designed models and their defaults, for spec and layer alike.

    Each kind reads the fields it needs and ignores the others.

    Args:
        expert_units: layer widths of each expert MLP; of the whole bottom for shared-bottom
            and single-task, of each column for cross-stitch. Default ``(64,)``.
        num_experts: experts of MMoE. Default 4.
        num_task_experts: experts owned by each task in CGC and PLE. Default 1.
        num_shared_experts: shared experts of CGC and PLE. Default 2.
        num_levels: extraction levels of PLE. Default 2.
        alpha_self: initial weight of a cross-stitch column on itself. Default 0.9.

    Example:
        >>> sizes = BaselineSizes([32, 16], num_experts=3)
        >>> sizes.expert_units, sizes.num_experts, sizes.num_levels
        ((32, 16), 3, 2)
    """

    expert_units: tuple[int, ...] = (64,)
    num_experts: int = 4
    num_task_experts: int = 1
    num_shared_experts: int = 2
    num_levels: int = 2
    alpha_self: float = 0.9

    def __post_init__(self):
        object.__setattr__(self, "expert_units", tuple(int(u) for u in self.expert_units))


@dataclasses.dataclass(frozen=True)
class Baseline:
    """A hand-designed model as the two things tfmtnas builds from it.

    The models: shared-bottom (Caruana, 1997), MMoE (Ma et al., KDD 2018), CGC and PLE (Tang
    et al., RecSys 2020), cross-stitch (Misra et al., CVPR 2016) and one network per task.

    Attributes:
        spec: ``(tasks, sizes) -> RoutingSpec``, the model as a fixed routing graph.
        layer: ``(num_tasks, sizes, **layer_kwargs) -> keras layer``, its dedicated layer
            (``tfmtnas.layers``), which computes the same function as the spec's routing
            network given the same weights.

    Example:
        >>> mmoe, sizes = BASELINES["mmoe"], BaselineSizes((8,), num_experts=3)
        >>> type(mmoe.layer(2, sizes)).__name__
        'MMoE'
        >>> [e.name for e in mmoe.spec(("a", "b"), sizes).layers[0].experts]
        ['e0', 'e1', 'e2']
    """

    spec: Callable[[tuple[str, ...], BaselineSizes], RoutingSpec]
    layer: Callable[..., keras.layers.Layer]


def _full(name: str, candidates: Sequence[str], gate: str = "softmax", query: str = INPUT,
          mask: Sequence[int] | None = None, static_init=None) -> Mixer:
    return Mixer(name, tuple(candidates), tuple(mask) if mask else (1,) * len(candidates),
                 gate, query, static_init)


def _pool_label(tasks: Sequence[str]) -> str:
    """The shared pool's part of expert and mixer names: ``shared``, or, when a task has
    that name, ``shared`` with as many leading underscores as make it no task's name."""
    label = "shared"
    while label in tasks:
        label = f"_{label}"
    return label


def _one_layer_spec(tasks: tuple[str, ...], units: tuple[int, ...], num_experts: int,
                    gate: str, masks: Sequence[Sequence[int]] | None = None) -> RoutingSpec:
    """One layer of experts ``e0, e1, ...`` and one output mixer per task."""
    experts = [f"e{i}" for i in range(num_experts)]
    outs = [_full(t, experts, gate, mask=None if masks is None else masks[k])
            for k, t in enumerate(tasks)]
    return RoutingSpec(tasks, (Layer(units, tuple(Expert(e) for e in experts)),), tuple(outs))


def _single_task_spec(tasks: tuple[str, ...], s: BaselineSizes) -> RoutingSpec:
    n = len(tasks)
    return _one_layer_spec(tasks, s.expert_units, n, "mean",
                           [[int(i == k) for i in range(n)] for k in range(n)])


def _extraction_spec(tasks: tuple[str, ...], s: BaselineSizes, levels: int) -> RoutingSpec:
    """CGC (one level) or PLE: experts ordered task 0's, ..., then shared, as in
    :class:`tfmtnas.layers.CGC`, and task gates masked by :func:`tfmtnas.layers.cgc_mask`."""
    # Owner of each expert: a task, or None for the shared pool (named ``pool``).
    owners: list[str | None] = [t for t in tasks for _ in range(s.num_task_experts)]
    owners += [None] * s.num_shared_experts
    task_masks = cgc_mask(len(tasks), s.num_task_experts, s.num_shared_experts,
                          include_shared_gate=False)
    pool = _pool_label(tasks)
    label = {**{t: t for t in tasks}, None: pool}
    layers, queries = [], dict.fromkeys(label, INPUT)
    prev: list[str] = []
    for lvl in range(levels):
        names = [f"l{lvl}_{label[o]}_{i}" for i, o in enumerate(owners)]
        mixers = []
        if lvl > 0:
            for t, mask in zip(tasks, task_masks):
                mixers.append(_full(f"l{lvl}_in_{t}", prev, query=queries[t], mask=mask))
            mixers.append(_full(f"l{lvl}_in_{pool}", prev, query=queries[None]))
            queries = {o: f"l{lvl}_in_{label[o]}" for o in label}
            experts = [Expert(n, f"l{lvl}_in_{label[o]}") for n, o in zip(names, owners)]
        else:
            experts = [Expert(n) for n in names]
        layers.append(Layer(s.expert_units, tuple(experts), tuple(mixers)))
        prev = names
    outs = [_full(t, prev, query=queries[t], mask=mask) for t, mask in zip(tasks, task_masks)]
    return RoutingSpec(tasks, tuple(layers), tuple(outs))


def _cross_stitch_spec(tasks: tuple[str, ...], s: BaselineSizes) -> RoutingSpec:
    """As :class:`tfmtnas.layers.CrossStitch`: a unit after every layer, the last one mixing
    what the task towers read, each started at :func:`tfmtnas.layers.cross_stitch_init`."""
    init = cross_stitch_init(len(tasks), s.alpha_self)
    layers, prev = [], []
    for depth, u in enumerate(s.expert_units):
        names = [f"d{depth}_{t}" for t in tasks]
        mixers = ()
        if depth > 0:
            mixers = tuple(_full(f"d{depth}_in_{t}", prev, "static", static_init=init[k])
                           for k, t in enumerate(tasks))
            experts = tuple(Expert(n, f"d{depth}_in_{t}") for n, t in zip(names, tasks))
        else:
            experts = tuple(Expert(n) for n in names)
        layers.append(Layer((u,), experts, mixers))
        prev = names
    outs = tuple(_full(t, prev, "static", static_init=init[k]) for k, t in enumerate(tasks))
    return RoutingSpec(tasks, tuple(layers), outs)


BASELINES: dict[str, Baseline] = {
    "single_task": Baseline(
        _single_task_spec,
        lambda t, s, **kw: sharing_layers.SingleTask(t, s.expert_units, **kw)),
    "shared_bottom": Baseline(
        lambda tasks, s: _one_layer_spec(tasks, s.expert_units, 1, "mean"),
        lambda t, s, **kw: sharing_layers.SharedBottom(t, s.expert_units, **kw)),
    "mmoe": Baseline(
        lambda tasks, s: _one_layer_spec(tasks, s.expert_units, s.num_experts, "softmax"),
        lambda t, s, **kw: sharing_layers.MMoE(t, s.num_experts, s.expert_units, **kw)),
    "cgc": Baseline(
        lambda tasks, s: _extraction_spec(tasks, s, levels=1),
        lambda t, s, **kw: sharing_layers.CGC(t, s.num_task_experts, s.num_shared_experts,
                                              s.expert_units, **kw)),
    "ple": Baseline(
        lambda tasks, s: _extraction_spec(tasks, s, levels=s.num_levels),
        lambda t, s, **kw: sharing_layers.PLE(t, s.num_levels, s.num_task_experts,
                                              s.num_shared_experts, s.expert_units, **kw)),
    "cross_stitch": Baseline(
        _cross_stitch_spec,
        lambda t, s, **kw: sharing_layers.CrossStitch(t, s.expert_units,
                                                      alpha_self=s.alpha_self, **kw)),
}
"""Every hand-designed model by kind: the one source of the presets and of
:func:`tfmtnas.models.build_sharing`."""


def preset(kind: str, tasks: Sequence[str], *sizes, **named_sizes) -> RoutingSpec:
    """The routing spec of a hand-designed model (its row of :data:`BASELINES`).

    Args:
        kind: ``single_task``, ``shared_bottom``, ``mmoe`` (Ma et al., KDD 2018), ``cgc`` or
            ``ple`` (Tang et al., RecSys 2020), ``cross_stitch`` (Misra et al., CVPR 2016).
        tasks: task names, one output mixer each.
        *sizes, **named_sizes: the fields of :class:`BaselineSizes` (``expert_units``,
            ``num_experts``, ``num_task_experts``, ``num_shared_experts``, ``num_levels``,
            ``alpha_self``), positionally in that order or by name; they mean what they mean
            in :func:`tfmtnas.models.build_sharing`.

    Example:
        >>> spec = preset("cgc", ["a", "b"], (8,), num_task_experts=1, num_shared_experts=1)
        >>> [o.mask for o in spec.outputs]
        [(1, 0, 1), (0, 1, 1)]

    Raises:
        SpecError: an unknown ``kind`` (the message lists the kinds) or sizes that make an
            invalid spec (e.g. no experts).
    """
    if kind not in BASELINES:
        raise SpecError(f"Unknown preset {kind!r}; choose one of {', '.join(BASELINES)}.")
    return BASELINES[kind].spec(tuple(tasks), BaselineSizes(*sizes, **named_sizes))
