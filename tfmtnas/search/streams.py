"""Per-task activation streams over shared components: the Gumbel-matrix paper's search space.

Maziarz, Kokiopoulou, Gesmundo, Sbaiz, Bartok, Berent. "Flexible Multi-task Networks by
Learning Parameter Allocation." arXiv 1910.04915.

The network is a stack of **layers of components** (MLPs of one shape). Every task has its
own **activation stream**: at layer ``l`` the stream of task ``t`` passes through the
components the **allocation** ``A_l[t, c]`` (0/1, task x component) gives it, and their
outputs are averaged::

    s_t^0 = x,    s_t^{l+1} = sum_c A_l[t, c] f_c^l(s_t^l) / max(1, sum_c A_l[t, c])

A component's weights are the same for every stream that selected it, which is what "tasks
``t`` and ``u`` share component ``c``" means; a task that selects nothing at a layer gets a
zero stream there (as the paper's weighted-sum combiner gives). Task ``t``'s tower reads
``s_t`` of the last layer.

:class:`StreamSpec` is the JSON-serialisable description (an allocation of ``None`` is
searched); :class:`StreamNetwork` computes it. A searched (or unpruned) network applies
every component of a layer to every stream as one batched ``einsum`` and mixes with the
``[T, C]`` allocation. A fixed spec is pruned (:meth:`StreamSpec.prune`: components no
stream uses are dropped) and computed pair by pair: tasks whose allocations agree in every
layer so far have the same stream, so streams are merged, and a shared component runs once
per distinct stream that selected it, never for a stream that did not.

:class:`GumbelStreams` learns the allocation as in the paper: a Bernoulli per (layer, task,
component), parameterised like the reference by two logits ``log(p), log(1 - p)``, sampled
by a straight-through Gumbel-softmax at temperature ``max(0.5, 50 / sqrt(step + 1))``, an
optional per-task budget penalty, trained jointly with the weights.

Example:
    >>> spec = stream_space(["a", "b"], num_layers=2, num_components=3, units=(8,))
    >>> net = StreamNetwork(spec)
    >>> routes = [{"mask": tf.constant([[1., 1., 0.], [0., 1., 1.]])}] * 2
    >>> [t.shape for t in net(tf.ones([5, 4]), routes=routes)]
    [TensorShape([5, 8]), TensorShape([5, 8])]
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from tfmtnas import keras
from tfmtnas.layers import ExpertBank
from tfmtnas.search.spec import SpecError

Allocation = tuple[tuple[int, ...], ...]


@dataclasses.dataclass(frozen=True)
class StreamLayer:
    """One layer of components and its task x component allocation.

    Args:
        units: widths of each component's MLP layers.
        components: component names (unique in the spec); allocation columns follow them.
        allocation: ``[T][C]`` 0/1 per task and component, or ``None`` if searched.
    """

    units: tuple[int, ...]
    components: tuple[str, ...]
    allocation: Allocation | None = None

    def __post_init__(self):
        object.__setattr__(self, "units", tuple(int(u) for u in self.units))
        object.__setattr__(self, "components", tuple(str(c) for c in self.components))
        if self.allocation is not None:
            object.__setattr__(self, "allocation", tuple(
                tuple(int(v) if v in (0, 1) else v for v in row) for row in self.allocation))

    @property
    def searched(self) -> bool:
        return self.allocation is None

    def matrix(self, num_tasks: int) -> np.ndarray:
        """The allocation ``[T, C]`` as float32 (all ones while searched)."""
        if self.allocation is None:
            return np.ones((num_tasks, len(self.components)), np.float32)
        return np.array(self.allocation, np.float32).reshape(num_tasks, len(self.components))


@dataclasses.dataclass(frozen=True)
class StreamSpec:
    """Tasks and layers of a stream network; see the module docstring.

    Example:
        >>> spec = stream_space(["a", "b"], num_layers=1, num_components=2)
        >>> fixed = spec.with_allocations([[[1, 0], [1, 0]]])
        >>> [ly.components for ly in fixed.prune().layers]
        [('l0_c0',)]
    """

    tasks: tuple[str, ...]
    layers: tuple[StreamLayer, ...]
    kind: str = "streams"

    def __post_init__(self):
        object.__setattr__(self, "tasks", tuple(str(t) for t in self.tasks))
        object.__setattr__(self, "layers", tuple(self.layers))
        _validate(self)

    @property
    def searched(self) -> bool:
        return any(ly.searched for ly in self.layers)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "tasks": list(self.tasks),
                "layers": [{"units": list(ly.units), "components": list(ly.components),
                            "allocation": None if ly.allocation is None
                            else [list(r) for r in ly.allocation]} for ly in self.layers]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, d: Mapping) -> StreamSpec:
        try:
            if d.get("kind", "streams") != "streams":
                raise SpecError(f"Not a stream spec: kind {d.get('kind')!r}.")
            layers = tuple(StreamLayer(ly["units"], ly["components"], ly.get("allocation"))
                           for ly in d["layers"])
            return cls(tuple(d["tasks"]), layers)
        except SpecError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise SpecError(f"Malformed stream spec: {err!r}.") from err

    @classmethod
    def from_json(cls, text: str) -> StreamSpec:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as err:
            raise SpecError(f"Stream spec is not valid JSON: {err}.") from err

    def matrices(self) -> list[np.ndarray]:
        """Per layer the allocation ``[T, C]`` (ones where searched)."""
        return [ly.matrix(len(self.tasks)) for ly in self.layers]

    def with_allocations(self, allocations: Sequence) -> StreamSpec:
        """The spec with every layer's allocation set to ``allocations[l]`` ``[T, C]``."""
        if len(allocations) != len(self.layers):
            raise SpecError(f"Need one allocation per layer ({len(self.layers)}), got "
                            f"{len(allocations)}.")
        layers = tuple(dataclasses.replace(ly, allocation=tuple(
            tuple(int(v) for v in row) for row in np.asarray(a).tolist()))
            for ly, a in zip(self.layers, allocations))
        return StreamSpec(self.tasks, layers)

    def prune(self) -> StreamSpec:
        """The fixed spec without the components no task selects (their columns dropped)."""
        if self.searched:
            raise SpecError("Only a fixed stream spec (every allocation set) can be pruned.")
        layers = []
        for ly, a in zip(self.layers, self.matrices()):
            keep = np.flatnonzero(a.any(0))
            layers.append(StreamLayer(ly.units, tuple(ly.components[i] for i in keep),
                                      tuple(tuple(int(v) for v in row) for row in a[:, keep])))
        return StreamSpec(self.tasks, tuple(layers))


def spec_from_json(text: str):
    """A :class:`StreamSpec` (``"kind": "streams"``) or a routing spec, from JSON text.

    Example:
        >>> type(spec_from_json(stream_space(["a"], 1, 2).to_json())).__name__
        'StreamSpec'
    """
    from tfmtnas.search.spec import RoutingSpec

    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise SpecError(f"Spec is not valid JSON: {err}.") from err
    if isinstance(data, dict) and data.get("kind") == "streams":
        return StreamSpec.from_dict(data)
    return RoutingSpec.from_json(text)


def _validate(spec: StreamSpec) -> None:
    if not spec.tasks or len(set(spec.tasks)) != len(spec.tasks):
        raise SpecError(f"A stream spec needs unique task names, got {list(spec.tasks)}.")
    if not spec.layers:
        raise SpecError("A stream spec needs at least one layer of components.")
    names: set[str] = set()
    for i, ly in enumerate(spec.layers):
        if not ly.units or any(u < 1 for u in ly.units):
            raise SpecError(f"Layer {i}: units must be positive integers, got {ly.units}.")
        if len(set(ly.components) | names) != len(names) + len(ly.components):
            raise SpecError(f"Layer {i}: component names must be unique in the spec, got "
                            f"{list(ly.components)}.")
        names.update(ly.components)
        if ly.allocation is None:
            if not ly.components:
                raise SpecError(f"Layer {i}: a searched layer needs components.")
            continue
        a = ly.allocation
        if (len(a) != len(spec.tasks) or any(len(r) != len(ly.components) for r in a)
                or any(v not in (0, 1) for r in a for v in r)):
            raise SpecError(f"Layer {i}: allocation must be 0/1 with one row per task "
                            f"({len(spec.tasks)}) and one column per component "
                            f"({len(ly.components)}), got {[list(r) for r in a]}.")


def stream_space(tasks: Sequence[str], num_layers: int = 2, num_components: int = 4,
                 units: Sequence[int] = (64,)) -> StreamSpec:
    """The searched space: ``num_layers`` layers of ``num_components`` components each.

    The paper's MNIST network has 3 routed layers of 4 components (one per task).

    Example:
        >>> spec = stream_space(["a", "b"], num_layers=3, num_components=4, units=(16,))
        >>> [ly.components[0] for ly in spec.layers], spec.searched
        (['l0_c0', 'l1_c0', 'l2_c0'], True)
    """
    if int(num_layers) < 1 or int(num_components) < 1:
        raise ValueError(f"num_layers and num_components must be >= 1, got {num_layers}, "
                         f"{num_components}.")
    layers = tuple(StreamLayer(units, tuple(f"l{i}_c{c}" for c in range(num_components)))
                   for i in range(num_layers))
    return StreamSpec(tuple(tasks), layers)


# -- the network --------------------------------------------------------------------------

@dataclasses.dataclass
class _Plan:
    """How a fixed layer is computed from the distinct streams below (numpy, no tensors).

    ``pair_stream[p]``/``pair_component[p]``: input stream and component of pair ``p``;
    ``combine[j, p]``: weight of pair ``p`` in output stream ``j`` (1 / its count);
    ``task_stream[t]``: the output stream of task ``t``.
    """

    pair_stream: np.ndarray
    pair_component: np.ndarray
    combine: np.ndarray
    task_stream: np.ndarray


def plan_layers(spec: StreamSpec) -> list[_Plan]:
    """Per layer of a fixed spec: the (stream, component) pairs to compute and how to mix them.

    Tasks whose allocation rows agree in every layer so far share one stream; a pair is
    computed once for each distinct stream that selects the component.

    Example:
        >>> spec = stream_space(["a", "b", "c"], 1, 3).with_allocations(
        ...     [[[1, 1, 0], [1, 1, 0], [0, 1, 1]]])
        >>> p = plan_layers(spec)[0]
        >>> p.pair_component.tolist(), p.task_stream.tolist()
        ([0, 1, 2], [0, 0, 1])
    """
    plans = []
    task_stream = np.zeros(len(spec.tasks), np.int64)  # every task reads the input at first
    for a in spec.matrices():
        keys: dict[tuple, int] = {}
        out_of_task = np.zeros(len(spec.tasks), np.int64)
        for t in range(len(spec.tasks)):
            key = (int(task_stream[t]), tuple(int(v) for v in a[t]))
            out_of_task[t] = keys.setdefault(key, len(keys))
        pairs: dict[tuple[int, int], int] = {}
        for (s, row) in keys:
            for c in np.flatnonzero(row):
                pairs.setdefault((s, int(c)), len(pairs))
        combine = np.zeros((len(keys), len(pairs)), np.float32)
        for (s, row), j in keys.items():
            on = np.flatnonzero(row)
            for c in on:
                combine[j, pairs[(s, int(c))]] = 1.0 / len(on)
        pair_list = list(pairs)
        plans.append(_Plan(np.array([s for s, _ in pair_list], np.int64),
                           np.array([c for _, c in pair_list], np.int64),
                           combine, out_of_task))
        task_stream = out_of_task
    return plans


def mix_weights(mask: tf.Tensor) -> tf.Tensor:
    """Averaging weights of a ``[T, C]`` allocation: each row over ``max(1, its sum)``.

    As the paper's router normalises its path weights: the active outputs are averaged,
    and a task with no active component gets zeros.

    Example:
        >>> mix_weights(tf.constant([[1., 1., 0.], [0., 0., 0.]])).numpy().tolist()
        [[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]
    """
    return mask / tf.maximum(tf.reduce_sum(mask, -1, keepdims=True), 1.0)


@keras.utils.register_keras_serializable(package="tfmtnas")
class StreamNetwork(keras.layers.Layer):
    """Compute a :class:`StreamSpec`: ``[batch, d]`` -> one ``[batch, h]`` stream per task.

    Args:
        spec: the :class:`StreamSpec` (or its dict form).
        activation: activation of the components (default ``"relu"``, every layer of them).
        prune_fixed: prune a fixed spec and compute it pair by pair (default ``True``);
            ``False`` keeps every component and applies each to every stream, as the
            supernet does.

    ``call(inputs, routes=None)``: ``routes[l]["mask"]`` is layer ``l``'s allocation
    ``[T, C]`` (hard 0/1 or straight-through) for a searched or unpruned network; a pruned
    fixed network ignores routes.

    Paper: Maziarz et al., arXiv 1910.04915 (the components are MLPs here, convolutions in
    the paper's image experiments).
    """

    def __init__(self, spec: StreamSpec | Mapping, activation="relu", prune_fixed: bool = True,
                 **kwargs):
        super().__init__(**kwargs)
        spec = spec if isinstance(spec, StreamSpec) else StreamSpec.from_dict(spec)
        self.source_spec = spec
        self.prune_fixed = bool(prune_fixed)
        self.pruned = self.prune_fixed and not spec.searched
        self.spec = spec.prune() if self.pruned else spec
        self.activation = activation
        self.plans = plan_layers(self.spec) if self.pruned else None

    def build(self, input_shape):
        d = int(input_shape[-1])
        self.banks = []
        for i, ly in enumerate(self.spec.layers):
            # A pruned layer may keep no component (no task selects one): nothing to build.
            bank = ExpertBank(max(1, len(ly.components)), ly.units, self.activation,
                              name=f"components_{i}", dtype=self.dtype_policy)
            bank.build(tf.TensorShape([None, d]))
            self.banks.append(bank)
            d = ly.units[-1]
        super().build(input_shape)

    def call(self, inputs, routes: Sequence[Mapping] | None = None, training=None):
        x = tf.convert_to_tensor(inputs)
        if self.pruned:
            return self._call_pairs(x)
        num_tasks = len(self.spec.tasks)
        streams = None  # [B, T, h]; the input is shared by all tasks at layer 0
        for i, (ly, bank) in enumerate(zip(self.spec.layers, self.banks)):
            mask = routes[i]["mask"] if routes is not None else ly.matrix(num_tasks)
            w = mix_weights(tf.cast(mask, x.dtype))
            if streams is None:
                out = bank(x)  # [B, C, h]: each component once on the shared input
                streams = tf.einsum("tc,bch->bth", w, out)
                continue
            flat = tf.reshape(streams, [-1, streams.shape[-1]])  # [B*T, h]
            out = bank(flat)  # [B*T, C, h']: every component on every stream
            out = tf.reshape(out, [-1, num_tasks, out.shape[1], out.shape[2]])
            streams = tf.einsum("tc,btch->bth", w, out)
        return [streams[:, t] for t in range(num_tasks)]

    def _call_pairs(self, x):
        streams = x[:, tf.newaxis]  # [B, S, d]: one distinct stream, the input
        for ly, bank, plan in zip(self.spec.layers, self.banks, self.plans):
            width = ly.units[-1]
            if not len(plan.pair_component):
                streams = tf.zeros([tf.shape(x)[0], plan.combine.shape[0], width], x.dtype)
                continue
            h = tf.gather(streams, plan.pair_stream, axis=1)  # [B, P, d]
            # Each pair's weights picked by a one-hot product rather than a gather, so the
            # kernels' gradients stay dense tensors (optimizers treat gathered, IndexedSlices
            # gradients as sparse rows).
            pick = tf.constant(np.eye(len(ly.components), dtype=np.float32)[
                plan.pair_component], h.dtype)  # [P, C]
            last = len(bank.kernels) - 1
            for k, (kernel, bias) in enumerate(zip(bank.kernels, bank.biases)):
                w = tf.einsum("pc,cdh->pdh", pick, kernel)
                h = tf.einsum("bpd,pdh->bph", h, w) + tf.matmul(pick, bias)
                h = (bank.output_activation if k == last else bank.activation)(h)
            streams = tf.einsum("jp,bph->bjh", tf.constant(plan.combine, h.dtype), h)
        last_plan = self.plans[-1]
        return [streams[:, int(s)] for s in last_plan.task_stream]

    def component_evaluations(self) -> int:
        """Component MLP evaluations per example: pairs of a pruned network, else ``T * C``
        above layer 0 and ``C`` at layer 0 (the shared input)."""
        if self.pruned:
            return int(sum(len(p.pair_component) for p in self.plans))
        c = [len(ly.components) for ly in self.spec.layers]
        return c[0] + len(self.spec.tasks) * sum(c[1:])

    def get_config(self) -> dict:
        return {**super().get_config(), "spec": self.source_spec.to_dict(),
                "activation": self.activation, "prune_fixed": self.prune_fixed}


def inherit_streams(child: StreamNetwork, parent: StreamNetwork) -> None:
    """Copy ``parent``'s component weights into ``child``, matching components by name."""
    for bank, child_layer, parent_layer, pbank in zip(child.banks, child.spec.layers,
                                                      parent.spec.layers, parent.banks):
        if not child_layer.components:
            continue
        rows = [parent_layer.components.index(c) for c in child_layer.components]
        bank.set_weights([w[rows] for w in pbank.get_weights()])


# -- the search method --------------------------------------------------------------------

def _gumbel_difference(shape, seed: tf.Tensor) -> tf.Tensor:
    """``g_on - g_off`` for two independent standard Gumbel draws (a standard logistic)."""
    u = tf.random.stateless_uniform(shape, seed, 1e-6, 1.0 - 1e-6)
    return tf.math.log(u) - tf.math.log1p(-u)


class GumbelStreams(keras.layers.Layer):
    """Learned task x component allocations (Maziarz et al., arXiv 1910.04915), as published.

    Per (layer, task, component) a Bernoulli "task uses component" with two logits
    ``(log p, log(1 - p))``, as the reference parameterises it (Adam then moves both). The
    weight-and-router step samples every entry with a straight-through Gumbel-softmax over
    {on, off}: forward the hard argmax, backward the softmax at temperature
    ``max(temperature_min, temperature_init / sqrt(step + 1))``. Evaluation and the derived
    child take the more probable value (on when ``p >= 0.5``, as the reference's greedy
    argmax). Active outputs are averaged (:func:`mix_weights`). Router logits and weights
    learn jointly from the training loss (``joint=True``: single-level, the paper's), the
    router with its own optimizer (``tfmtnas-search``'s ``--arch_learning_rate``).

    Departures from the reference: ``tfmtnas-search`` feeds batches that mix the tasks' rows
    (the reference trains one task's batch per step, so its step counter, and with it the
    temperature, advances once per task batch; ``benchmarks/mnist_task_sets.py`` feeds
    per-task batches as it does); the components are MLPs. A task that selects nothing at
    a layer has a zero stream there (as in the reference); with ReLU layers whose biases are
    zero the layers above pass such a stream no gradient until a component is selected again.

    Args:
        spec: a searched :class:`StreamSpec` (see :func:`stream_space`).
        init_probability: initial ``p`` of every entry (default 0.5, the reference's MNIST
            and task-cluster setting; it used 0.97 on Omniglot).
        temperature_init, temperature_min: the temperature schedule (default 50 and 0.5).
        budget: target fraction of the network each task uses; ``None`` (default, as the
            reference's MNIST run) for no penalty. The penalty is the reference's per-task
            ``budget_weight * relu(E[components task t uses] / N - budget)``, ``N`` the
            components of all searched layers, summed over the tasks (each task's training
            step adds its own in the reference).
        budget_weight: weight of the budget penalty (default 1.0, the reference's
            task-clusters setting).
        joint: train the router on the training batch with the weights (default True).
        cost_weight: weight of the expected fraction of components the child keeps (a
            component is kept if any task uses it: ``1 - prod_t (1 - p[t, c])``) in the
            loss. Unlike the budget, which counts each task's components, it makes sharing
            a component cheaper than using two. Default 0; not in the paper.
        seed: base seed of the sampled allocations (default: from Python's RNG, which
            ``keras.utils.set_random_seed`` seeds).

    Example:
        >>> method = GumbelStreams(stream_space(["a", "b"], 2, 3, (8,)), seed=1)
        >>> routes, aux = method.sample("weight", tf.constant(0))
        >>> [r["mask"].shape for r in routes], float(tf.reduce_mean(aux["p_on"][0]))
        ([TensorShape([2, 3]), TensorShape([2, 3])], 0.5)
    """

    method_name = "gumbel"
    search_queries = False
    fast_lr_multiplier = 1.0
    default_arch_learning_rate = 5e-3

    def __init__(self, spec: StreamSpec | Mapping, init_probability: float = 0.5,
                 temperature_init: float = 50.0, temperature_min: float = 0.5,
                 budget: float | None = None, budget_weight: float = 1.0, joint: bool = True,
                 cost_weight: float = 0.0, seed: int | None = None, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        spec = spec if isinstance(spec, StreamSpec) else StreamSpec.from_dict(spec)
        if not spec.searched:
            raise ValueError("GumbelStreams needs a stream spec with a searched layer "
                             "(allocation None); this one is fixed.")
        if not 0.0 < init_probability < 1.0:
            raise ValueError(f"init_probability must be in (0, 1), got {init_probability!r}.")
        if not (temperature_init > 0 and temperature_min > 0):
            raise ValueError(f"temperatures must be > 0, got {temperature_init!r}, "
                             f"{temperature_min!r}.")
        if budget is not None and not 0.0 <= budget <= 1.0:
            raise ValueError(f"budget must be in [0, 1] or None, got {budget!r}.")
        if not budget_weight >= 0:
            raise ValueError(f"budget_weight must be >= 0, got {budget_weight!r}.")
        if not cost_weight >= 0:
            raise ValueError(f"cost_weight must be >= 0, got {cost_weight!r}.")
        self.cost_weight = float(cost_weight)
        self.spec = spec
        self.init_probability = float(init_probability)
        self.temperature_init = float(temperature_init)
        self.temperature_min = float(temperature_min)
        self.budget = None if budget is None else float(budget)
        self.budget_weight, self.joint = float(budget_weight), bool(joint)
        self.seed = int(seed) if seed is not None else random.randint(0, 2**30)
        num_tasks = len(spec.tasks)
        p = self.init_probability
        self.searched_layers = [i for i, ly in enumerate(spec.layers) if ly.searched]
        self.searched_layers = tuple(self.searched_layers)
        init = np.log([p, 1.0 - p])
        self.alloc_logits = [
            self.add_weight(name=f"alloc_{i}", shape=(num_tasks, len(spec.layers[i].components),
                                                      2), dtype="float32",
                            initializer=keras.initializers.Constant(np.broadcast_to(
                                init, (num_tasks, len(spec.layers[i].components), 2)).tolist()))
            for i in self.searched_layers]
        self.num_searched_components = sum(len(spec.layers[i].components)
                                           for i in self.searched_layers)

    # -- the interface SearchModel uses -------------------------------------------------
    def build_network(self, **kwargs) -> StreamNetwork:
        """The supernet."""
        return StreamNetwork(self.spec, **kwargs)

    def child_network(self, fixed: StreamSpec, **kwargs) -> StreamNetwork:
        """The network of a derived (fixed) spec."""
        return StreamNetwork(fixed, **kwargs)

    @staticmethod
    def inherit(child: StreamNetwork, parent: StreamNetwork) -> None:
        inherit_streams(child, parent)

    def fast_weights(self, network) -> list[tf.Variable]:
        return []

    def temperature(self, step: tf.Tensor) -> tf.Tensor:
        """``max(temperature_min, temperature_init / sqrt(step + 1))``."""
        return tf.maximum(self.temperature_min,
                          self.temperature_init / tf.sqrt(tf.cast(step, tf.float32) + 1.0))

    def noise_seed(self, mode: str, step: tf.Tensor, layer: int) -> tf.Tensor:
        """The stateless seed of one draw, fixed by (seed, layer, step, mode) (XLA-safe)."""
        modes = ("weight", "arch", "eval")
        return tf.stack([tf.constant(self.seed + layer, tf.int32),
                         tf.cast(step, tf.int32) * len(modes) + modes.index(mode)])

    def on_logit(self, layer: int) -> tf.Tensor:
        """``log p - log(1 - p)`` of every entry of a searched layer ``[T, C]``."""
        phi = self.alloc_logits[self.searched_layers.index(layer)]
        return phi[..., 0] - phi[..., 1]

    def sample(self, mode: str, step: tf.Tensor) -> tuple[list[dict], dict]:
        """Per layer ``{"mask": [T, C]}`` and ``aux["p_on"]``: per searched layer ``[T, C]``."""
        routes, p_on = [], []
        tau = self.temperature(step)
        for i, ly in enumerate(self.spec.layers):
            if not ly.searched:
                routes.append({"mask": tf.constant(ly.matrix(len(self.spec.tasks)))})
                continue
            z = self.on_logit(i)
            p_on.append(tf.sigmoid(z))
            if mode == "eval":
                m = tf.cast(z >= 0.0, tf.float32)
            else:
                soft = tf.sigmoid((z + _gumbel_difference(z.shape, self.noise_seed(mode, step,
                                                                                   i))) / tau)
                hard = tf.cast(soft > 0.5, tf.float32)
                # Straight-through; the bracket keeps the forward value exactly 0/1.
                m = hard + (soft - tf.stop_gradient(soft))
            routes.append({"mask": m})
        return routes, {"p_on": p_on}

    def task_usage(self, aux: dict) -> tf.Tensor:
        """Per task: the expected fraction of the searched components it uses ``[T]``."""
        return tf.add_n([tf.reduce_sum(p, -1) for p in aux["p_on"]]) / float(
            self.num_searched_components)

    def budget_penalty(self, aux: dict) -> tf.Tensor:
        """``budget_weight * sum_t relu(usage_t - budget)``; 0 without a budget."""
        if self.budget is None:
            return tf.constant(0.0)
        return self.budget_weight * tf.reduce_sum(tf.nn.relu(self.task_usage(aux) - self.budget))

    def kept_fraction(self, aux: dict) -> tf.Tensor:
        """Expected fraction of all components some task uses (entries independent)."""
        kept = [tf.reduce_sum(1.0 - tf.reduce_prod(1.0 - p, 0)) for p in aux["p_on"]]
        fixed = sum(float(ly.matrix(len(self.spec.tasks)).any(0).sum())
                    for ly in self.spec.layers if not ly.searched)
        total = sum(len(ly.components) for ly in self.spec.layers)
        return (tf.add_n(kept) + fixed) / float(total)

    def weight_penalty(self, aux: dict, step: tf.Tensor) -> tf.Tensor:
        penalty = self.budget_penalty(aux)
        if self.cost_weight:
            penalty += self.cost_weight * self.kept_fraction(aux)
        return penalty

    def arch_objective(self, task_loss: tf.Tensor, aux: dict, step: tf.Tensor) -> tf.Tensor:
        return task_loss + self.weight_penalty(aux, step)

    def probabilities(self) -> list[np.ndarray]:
        """Per layer ``[T, C]``: the probability each task uses each component."""
        out = []
        for i, ly in enumerate(self.spec.layers):
            out.append(tf.sigmoid(self.on_logit(i)).numpy() if ly.searched
                       else ly.matrix(len(self.spec.tasks)))
        return out

    def final_masks(self) -> list[np.ndarray]:
        routes, _ = self.sample("eval", tf.constant(0))
        return [r["mask"].numpy() for r in routes]

    def derive(self) -> StreamSpec:
        """The fixed spec under the final allocation (unpruned: :class:`StreamNetwork`
        prunes it when built)."""
        return self.spec.with_allocations(self.final_masks())

    def get_config(self) -> dict:
        return {**super().get_config(), "spec": self.spec.to_dict(),
                "init_probability": self.init_probability,
                "temperature_init": self.temperature_init,
                "temperature_min": self.temperature_min, "budget": self.budget,
                "budget_weight": self.budget_weight, "joint": self.joint,
                "cost_weight": self.cost_weight, "seed": self.seed}


def stream_flops(spec: StreamSpec, input_dim: int) -> int:
    """Multiply-add FLOPs (2 per MAC) of one example, as :class:`StreamNetwork` computes it.

    A fixed spec: its pruned pairs (a component once per distinct stream that selected it)
    and the averaging; a searched spec: its supernet (every component on the input at layer
    0, on every task's stream above).

    Example:
        >>> spec = stream_space(["a", "b"], 1, 2, (4,))
        >>> stream_flops(spec, 3), stream_flops(spec.with_allocations([[[1, 0], [1, 0]]]), 3)
        (80, 32)
    """
    pruned = not spec.searched
    if pruned:
        spec = spec.prune()
    plans = plan_layers(spec) if pruned else None
    total, d, num_tasks = 0, int(input_dim), len(spec.tasks)
    for i, ly in enumerate(spec.layers):
        mlp, prev = 0, d
        for u in ly.units:
            mlp += 2 * prev * u
            prev = u
        if pruned:
            runs, outputs = len(plans[i].pair_component), int(np.count_nonzero(plans[i].combine))
        else:
            runs = len(ly.components) * (1 if i == 0 else num_tasks)
            outputs = num_tasks * len(ly.components)
        total += runs * mlp + 2 * outputs * ly.units[-1]
        d = ly.units[-1]
    return total


def allocation_overlap(allocations: Sequence[np.ndarray]) -> np.ndarray:
    """Per task pair: shared components over components either uses, over all layers.

    ``overlap[t, u] = sum_l |A_l[t] & A_l[u]| / sum_l |A_l[t] | A_l[u]|`` (Jaccard index of
    the two tasks' allocated components; 0 when neither uses any).

    Example:
        >>> allocation_overlap([np.array([[1, 1, 0], [1, 0, 0], [0, 0, 1]])]).tolist()
        [[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    both = sum(np.asarray(a, bool)[:, None] & np.asarray(a, bool)[None] for a in allocations)
    either = sum(np.asarray(a, bool)[:, None] | np.asarray(a, bool)[None] for a in allocations)
    both, either = both.sum(-1), either.sum(-1)
    return np.where(either > 0, both / np.maximum(either, 1), 0.0)
