"""The three published search methods over one routing-graph space.

Each method is a Keras layer that owns the architecture variables of a searched
:class:`~tfmtnas.search.spec.RoutingSpec` and turns them into ``routes`` for
:class:`~tfmtnas.search.network.RoutingNetwork`:

- :class:`MTNAS` (Chen, Gu, Fu, "Boosting Share Routing for Multi-task Learning",
  arXiv 2009.00387): per block (searched mixer) a categorical distribution over local routes,
  i.e. a non-empty subset of the candidate experts times the gate's query (enumerated, as in
  the paper, up to 8 candidates; beyond, a factorised form with a Bernoulli per candidate and
  a categorical over queries, linear in the candidates); sampled routes in the weight step;
  REINFORCE with a moving-average baseline on the validation reward in the architecture
  step; the final route is the most probable one.
- ``"gumbel"``: :class:`~tfmtnas.search.streams.GumbelStreams` (Maziarz et al., "Flexible
  Multi-task Networks by Learning Parameter Allocation", arXiv 1910.04915), as published: a
  task x component allocation per layer over per-task activation streams
  (:mod:`tfmtnas.search.streams`).
- ``"gumbel_experts"``: :class:`GumbelMatrix`, the same Bernoulli/Gumbel-softmax machinery on
  this module's routing graph: a Bernoulli per (consumer, expert), where consumers are the
  next layer's experts and the task outputs over one shared activation per layer. Every
  expert then runs once per example whatever the number of tasks (the streams run a shared
  component once per distinct task stream), so a child costs at most an MMoE of its experts
  and its serving cost can be priced (``cost_weight``); what it learns is which experts feed
  which, not which tasks share a component.
- :class:`MTLNAS` (Gao et al., "MTL-NAS: Task-Agnostic Neural Architecture Search towards
  General-Purpose Multi-Task Learning", CVPR 2020): one logit per candidate cross-task edge,
  gate ``sigmoid(a)``; relaxed Bernoulli gates in the weight step, deterministic ones in the
  architecture step; a minimum-entropy regulariser on ``sigmoid(a)``; final edges ``a > 0``.

Example:
    >>> space = search_space("gumbel_experts", ["income", "marital"], expert_units=(32,))
    >>> method = make_method("gumbel_experts", space)
    >>> routes, aux = method.sample("weight", tf.constant(0))
    >>> [r["mask"].shape for r in routes]  # layer-1 mixers, then the task outputs
    [TensorShape([4, 4]), TensorShape([2, 4])]
    >>> streams = make_method("gumbel", search_space("gumbel", ["income", "marital"]))
    >>> [r["mask"].shape for r in streams.sample("weight", tf.constant(0))[0]]  # task x comp.
    [TensorShape([2, 4]), TensorShape([2, 4])]
"""

from __future__ import annotations

import dataclasses
import itertools
import random

import numpy as np
import tensorflow as tf

from tfmtnas import keras
from tfmtnas.search.network import MixerGroup, RoutingNetwork, mixer_groups
from tfmtnas.search.spec import INPUT, Expert, Layer, Mixer, RoutingSpec
from tfmtnas.search.streams import GumbelStreams, StreamSpec, stream_space
from tfmtnas.search.usage import ExpertUsage

METHODS = ("mtnas", "gumbel", "gumbel_experts", "mtlnas")
MODES = ("weight", "arch", "eval")


def search_space(method: str, tasks, num_layers: int = 2, num_experts: int = 4,
                 expert_units=(64,), edge_depth: int = 3) -> RoutingSpec | StreamSpec:
    """The searched supernet each method starts from.

    ``gumbel``: a :class:`~tfmtnas.search.streams.StreamSpec` of ``num_layers`` layers of
    ``num_experts`` components, every task x component entry searched.
    ``mtnas`` and ``gumbel_experts``: ``num_layers`` layers of ``num_experts`` shared experts;
    every
    expert above layer 0 and every task output has its own searched mixer over all experts of
    the layer below (softmax gates for MTNAS, averaging for the Gumbel matrix). ``mtlnas``: one
    column of experts per task and, above layer 0 and at the outputs, an NDDR mixer per task
    whose first candidate is the task's own expert and the others are searched cross-task
    edges: the mixer after stage ``i`` of task ``t`` may read every other task's stages
    ``i - edge_depth + 1 .. i`` (the reference's depth-limited connectivity, stages
    ``i-2..i`` at its ``edge_depth`` of 3; 1: the layer below only). ``edge_depth`` is read
    by ``mtlnas`` only.

    Example:
        >>> space = search_space("mtlnas", ["a", "b"], num_layers=3, edge_depth=2)
        >>> [m.candidates for m in space.outputs]  # after stage 2: own, then b's stages 2, 1
        [('d2_a', 'd2_b', 'd1_b'), ('d2_b', 'd2_a', 'd1_a')]
    """
    tasks = tuple(tasks)
    units = tuple(int(u) for u in expert_units)
    if method not in METHODS:
        raise ValueError(f"Unknown search method {method!r}; choose one of {', '.join(METHODS)}.")
    if num_layers < 1 or num_experts < 1:
        raise ValueError(f"num_layers and num_experts must be >= 1, got {num_layers}, "
                         f"{num_experts}.")
    if method == "gumbel":
        return stream_space(tasks, num_layers, num_experts, units)
    if method == "mtlnas":
        if int(edge_depth) != edge_depth or edge_depth < 1:
            raise ValueError(f"edge_depth must be an integer >= 1, got {edge_depth!r}.")
        layers, columns = [], []
        for depth in range(num_layers):
            names = [f"d{depth}_{t}" for t in tasks]
            if depth == 0:
                layers.append(Layer(units, tuple(Expert(n) for n in names)))
            else:
                mixers = tuple(_nddr(f"d{depth}_in_{t}", columns, k, edge_depth)
                               for k, t in enumerate(tasks))
                experts = tuple(Expert(n, f"d{depth}_in_{t}") for n, t in zip(names, tasks))
                layers.append(Layer(units, experts, mixers))
            columns.append(names)
        outputs = tuple(_nddr(t, columns, k, edge_depth) for k, t in enumerate(tasks))
        return RoutingSpec(tasks, tuple(layers), outputs)
    gate = "softmax" if method == "mtnas" else "mean"
    layers, prev = [], []
    for depth in range(num_layers):
        names = [f"l{depth}_e{i}" for i in range(num_experts)]
        if depth == 0:
            layers.append(Layer(units, tuple(Expert(n) for n in names)))
        else:
            mixers = tuple(Mixer(f"l{depth}_in{i}", tuple(prev), None, gate)
                           for i in range(num_experts))
            layers.append(Layer(units, tuple(Expert(n, f"l{depth}_in{i}")
                                             for i, n in enumerate(names)), mixers))
        prev = names
    outputs = tuple(Mixer(t, tuple(prev), None, gate) for t in tasks)
    return RoutingSpec(tasks, tuple(layers), outputs)


def _nddr(name: str, columns: list[list[str]], own: int, edge_depth: int) -> Mixer:
    """The NDDR mixer of task ``own`` after the last stage of ``columns`` (stage x task names):
    its own feature first, then the other tasks' last ``edge_depth`` stages, nearest first."""
    last = len(columns) - 1
    stages = range(last, max(-1, last - edge_depth), -1)
    others = [columns[q][k] for q in stages for k in range(len(columns[q])) if k != own]
    return Mixer(name, (columns[last][own], *others), None, "nddr")


# The floor of MTL-NAS's annealed temperature: the reference anneals to 0, where
# sigmoid((a + noise) / t) is already a hard gate in float32 long before.
_MIN_TEMPERATURE = 1e-3


def _fixed(g: MixerGroup) -> tf.Tensor:
    return tf.constant(g.fixed_mask, tf.float32)


def _logistic_noise(shape, seed: tf.Tensor) -> tf.Tensor:
    u = tf.random.stateless_uniform(shape, seed, 1e-6, 1.0 - 1e-6)
    return tf.math.log(u) - tf.math.log1p(-u)


def _one_per_row(on: np.ndarray, prob: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """``on`` with the most probable candidate switched on in rows that have none."""
    on = on * cand
    for r in np.flatnonzero(on.sum(1) == 0):
        on[r, np.argmax(np.where(cand[r] > 0, prob[r], -np.inf))] = 1
    return on


class SearchMethod(keras.layers.Layer):
    """Base class: architecture variables of one searched spec and the routes they give.

    ``spec`` is a searched :class:`~tfmtnas.search.spec.RoutingSpec` or its dict form (as in
    ``get_config``). ``seed`` (keyword, every method) is the base seed of the sampled routes;
    by default it is drawn from Python's RNG, which ``keras.utils.set_random_seed`` seeds.
    """

    method_name = ""

    def __init__(self, spec: RoutingSpec | dict, seed: int | None = None, **kwargs):
        # Architecture variables and routes stay float32 under a mixed precision policy; the
        # network casts the routes to its compute dtype.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        spec = spec if isinstance(spec, RoutingSpec) else RoutingSpec.from_dict(spec)
        if not spec.searched:
            raise ValueError(f"{type(self).__name__} needs a spec with searched mixers "
                             f"(mask None); this one is fixed.")
        self.spec = spec
        self.groups = mixer_groups(spec)
        # Python's RNG is seeded by keras.utils.set_random_seed.
        self.seed = int(seed) if seed is not None else random.randint(0, 2**30)

    def noise_seed(self, mode: str, step: tf.Tensor, group: int) -> tf.Tensor:
        """The seed of one stateless random op, fixed by (seed, group, step, mode).

        Stateless because XLA ignores the seeds of stateful random ops: a seeded search
        would not repeat under ``jit_compile=True``.
        """
        return tf.stack([tf.constant(self.seed + group, tf.int32),  # XLA: int32 seeds only
                         tf.cast(step, tf.int32) * len(MODES) + MODES.index(mode)])

    search_queries = False
    joint = False
    # Weights the method trains at a multiple of the weight learning rate (see fast_weights).
    fast_lr_multiplier = 1.0

    def fast_weights(self, network) -> list[tf.Variable]:
        """Weights of ``network`` (the supernet) to train at ``fast_lr_multiplier`` times the
        weight learning rate; default none."""
        return []

    def network_options(self) -> dict:
        """Extra :class:`RoutingNetwork` arguments the method needs (default none)."""
        return {}

    def build_network(self, **kwargs) -> RoutingNetwork:
        """The supernet over the method's spec (a method with a space of its own, as
        :class:`~tfmtnas.search.streams.GumbelStreams`, builds its own network)."""
        return RoutingNetwork(self.spec, search_queries=self.search_queries,
                              **self.network_options(), **kwargs)

    def child_network(self, fixed: RoutingSpec, **kwargs) -> RoutingNetwork:
        """The network of a derived (fixed) spec."""
        return RoutingNetwork(fixed, **kwargs)

    def sample(self, mode: str, step: tf.Tensor) -> tuple[list[dict], dict]:
        """Routes for ``mode`` (weight / arch / eval) and auxiliary tensors for the losses."""
        raise NotImplementedError

    def weight_penalty(self, aux: dict, step: tf.Tensor) -> tf.Tensor:
        """Extra loss of the weight step (default none)."""
        return tf.constant(0.0)

    def _set_cost_weight(self, cost_weight: float) -> None:
        """Validate ``cost_weight``; with a price, also build the usage it is charged on."""
        if not cost_weight >= 0:
            raise ValueError(f"cost_weight must be >= 0, got {cost_weight!r}.")
        self.cost_weight = float(cost_weight)
        self.usage = ExpertUsage(self.spec) if self.cost_weight else None

    def _usage_aux(self, masks: list[tf.Tensor]) -> dict:
        """``{"usage": ...}`` of ``masks`` when usage is priced, else nothing (no extra ops)."""
        return {"usage": self.usage(masks)} if self.usage is not None else {}

    def _cost(self, aux: dict) -> tf.Tensor:
        return self.cost_weight * aux["usage"] if self.usage is not None else tf.constant(0.0)

    def arch_objective(self, task_loss: tf.Tensor, aux: dict, step: tf.Tensor) -> tf.Tensor:
        """What the architecture optimizer minimises (default: the task loss)."""
        return task_loss

    def probabilities(self) -> list[np.ndarray]:
        """Per group ``[C, E]``: the probability each consumer uses each candidate."""
        raise NotImplementedError

    def derive(self) -> RoutingSpec:
        """The fixed spec: every searched mask decided, queries chosen."""
        masks = self.final_masks()
        queries = self.final_queries()
        groups = iter(zip(self.groups, masks, queries))
        new_layers = list(self.spec.layers)
        new_outputs = None
        for p, mixers in self.spec.mixer_layers():
            g, mask, query = next(groups)
            below = [m.name for m in self.spec.layers[p].mixers]
            producers = g.producers
            fixed = []
            for i, m in enumerate(mixers):
                row = [int(mask[i, producers.index(c)]) for c in m.candidates]
                q = m.query if query is None else (INPUT if query[i] < 0 else below[query[i]])
                fixed.append(dataclasses.replace(m, mask=tuple(row), query=q))
            if p + 1 < len(self.spec.layers):
                ly = new_layers[p + 1]
                new_layers[p + 1] = Layer(ly.units, ly.experts, tuple(fixed))
            else:
                new_outputs = tuple(fixed)
        return RoutingSpec(self.spec.tasks, tuple(new_layers), new_outputs)

    def final_masks(self) -> list[np.ndarray]:
        raise NotImplementedError

    def final_queries(self) -> list[list[int] | None]:
        return [None] * len(self.groups)

    def get_config(self):
        return {**super().get_config(), "spec": self.spec.to_dict(), "seed": self.seed}


class GumbelMatrix(SearchMethod):
    """Learned binary consumer x expert matrices (``gumbel_experts``; the Bernoulli and
    Gumbel-softmax machinery of Maziarz et al., arXiv 1910.04915, on the routing graph).

    The paper's own space, a task x component allocation over per-task streams, is
    :class:`~tfmtnas.search.streams.GumbelStreams` (``gumbel``). This variant learns which
    experts feed which consumers over one shared activation per layer, so every expert runs
    once per example: use it when the child's serving cost must stay that of its experts
    (priced with ``cost_weight``), not to learn which tasks share what.

    Args:
        spec: a searched spec (see :func:`search_space`).
        budget: target fraction of active entries; ``None`` for no budget penalty.
        budget_weight: weight of ``relu(mean(p_on) - budget)`` in the weight-step loss.
        init_logit: initial logit of every entry (default 2.0, i.e. mostly on, as the paper
            starts from full sharing).
        joint: train router logits on the training batch together with the weights (the
            paper's single-level training), instead of on the validation batch.
        cost_weight: weight of the expected fraction of experts the child computes
            (:class:`~tfmtnas.search.usage.ExpertUsage` of the on-probabilities) in the
            loss. Unlike the budget, which counts entries, it makes sharing an expert
            cheaper than using two. Default 0; not in the paper.
    """

    method_name = "gumbel_experts"

    def __init__(self, spec, budget: float | None = None, budget_weight: float = 1.0,
                 init_logit: float = 2.0, joint: bool = True, cost_weight: float = 0.0,
                 **kwargs):
        super().__init__(spec, **kwargs)
        self._set_cost_weight(cost_weight)
        self.budget, self.budget_weight = budget, float(budget_weight)
        self.init_logit, self.joint = float(init_logit), bool(joint)
        self.logits = [self.add_weight(name=f"alloc_{i}", shape=g.shape, dtype="float32",
                                       initializer=keras.initializers.Constant(init_logit))
                       for i, g in enumerate(self.groups)]

    @staticmethod
    def temperature(step: tf.Tensor) -> tf.Tensor:
        """``max(0.5, 50 / sqrt(step + 1))`` as in the paper."""
        return tf.maximum(0.5, 50.0 / tf.sqrt(tf.cast(step, tf.float32) + 1.0))

    def sample(self, mode, step):
        routes, probs, expected = [], [], []
        tau = self.temperature(step)
        for i, (g, phi) in enumerate(zip(self.groups, self.logits)):
            searched = tf.constant(g.searched[:, None])
            p = tf.sigmoid(phi)
            if self.usage is not None:
                expected.append(tf.where(searched, p, _fixed(g)))
            if mode == "eval":
                hard = tf.cast(p > 0.5, tf.float32)
                # A consumer with nothing on keeps its most probable component.
                top = tf.one_hot(tf.argmax(tf.where(g.candidates > 0, phi, -1e9), -1),
                                 g.shape[1])
                none_on = tf.reduce_sum(hard * g.candidates, -1, keepdims=True) < 0.5
                m = tf.where(none_on, top, hard)
            else:
                noise = _logistic_noise(g.shape, self.noise_seed(mode, step, i))
                soft = tf.sigmoid((phi + noise) / tau)
                hard = tf.cast(soft > 0.5, tf.float32)
                # Straight-through; the bracket keeps the forward value exactly 0/1.
                m = hard + (soft - tf.stop_gradient(soft))
            routes.append({"mask": tf.where(searched, m, _fixed(g))})
            probs.append(tf.boolean_mask(p, g.candidates * g.searched[:, None] > 0))
        return routes, {"p_on": tf.concat(probs, 0), **self._usage_aux(expected)}

    def weight_penalty(self, aux, step):
        penalty = self._cost(aux)
        if self.budget is None:
            return penalty
        return penalty + self.budget_weight * tf.nn.relu(tf.reduce_mean(aux["p_on"])
                                                          - self.budget)

    def arch_objective(self, task_loss, aux, step):
        return task_loss + self.weight_penalty(aux, step)

    def probabilities(self):
        return [tf.sigmoid(phi).numpy() * g.candidates for g, phi in zip(self.groups, self.logits)]

    def final_masks(self):
        out = []
        for g, prob in zip(self.groups, self.probabilities()):
            on = _one_per_row((prob > 0.5).astype(float), prob, g.candidates)
            out.append(np.where(g.searched[:, None], on, g.fixed_mask))
        return out

    def get_config(self):
        return {**super().get_config(), "budget": self.budget,
                "budget_weight": self.budget_weight, "init_logit": self.init_logit,
                "joint": self.joint, "cost_weight": self.cost_weight}


class MTLNAS(SearchMethod):
    """Cross-task edges with minimum-entropy regularisation (Gao et al., CVPR 2020).

    The defaults follow the paper's reference code (its ablation default): NDDR fusion
    layers learn at 100x the weight learning rate, the weight step's relaxed-Bernoulli
    temperature anneals as ``temperature * (1 - step / temperature_steps)^2`` when
    ``temperature_steps`` is set (``tfmtnas-search`` sets it to the whole search),
    the minimum-entropy term has weight 10 from the first step, and the derived child is
    used without retraining.

    Args:
        spec: a searched NDDR spec (see :func:`search_space` with ``"mtlnas"``).
        entropy_weight: weight of the minimum-entropy regulariser (the paper uses about 10).
        temperature: temperature of the relaxed Bernoulli gates of the weight step (its
            start, with ``temperature_steps``).
        init_logit: initial edge logit (0: undecided).
        entropy_warmup: architecture steps over which the regulariser's weight rises linearly
            from 0 to ``entropy_weight`` (default 0: full weight from the first step, as in the
            paper). At ``a = 0`` the regulariser's gradient is zero but it grows with ``|a|``,
            so at full weight the first few (noisy) task gradients decide every edge; a
            warm-up lets the validation loss move the edges first. Not in the paper.
        cross_init: initial NDDR weight on every cross-task edge, as a multiple of the
            identity (default 0: the fusion starts as the identity on the task's own
            feature, the reference's ablation default). With 0 the architecture gradient of
            every edge is exactly zero at the start, until the (fast) NDDR weights move; a
            small diagonal (e.g. 0.1, NDDR-CNN's diagonal initialisation, Gao et al., CVPR
            2019) lets the validation loss see every edge at once.
        nddr_lr_multiplier: the NDDR fusion layers' (kernels and batch norms) learning rate
            as a multiple of the weight learning rate (default 100, the paper's; 1: one
            rate for all weights).
        temperature_steps: steps over which the temperature anneals from ``temperature``
            to 0 (polynomial of ``temperature_power``, floored at 1e-3 so the relaxed gates
            stay finite); 0 (default): constant temperature.
        temperature_power: power of the annealing polynomial (default 2, the paper's).
        column_warmup: weight steps at the start in which every cross-task edge is off, so
            each task's column trains alone (a single-task model on the shared embedding)
            before the edges are searched; the architecture objective is zero meanwhile.
            The paper starts its columns from single-task models trained beforehand; this
            trains them inside the search run. Default 0.

    Example:
        >>> method = make_method("mtlnas", search_space("mtlnas", ["a", "b"]),
        ...                      temperature_steps=100)
        >>> [round(float(method.annealed_temperature(s)), 4) for s in (0, 50, 100)]
        [1.0, 0.25, 0.001]
    """

    method_name = "mtlnas"

    def __init__(self, spec, entropy_weight: float = 10.0, temperature: float = 1.0,
                 init_logit: float = 0.0, entropy_warmup: int = 0, cross_init: float = 0.0,
                 nddr_lr_multiplier: float = 100.0, temperature_steps: int = 0,
                 temperature_power: float = 2.0, column_warmup: int = 0, **kwargs):
        super().__init__(spec, **kwargs)
        if any(gate != "nddr" for g in self.groups for gate in g.gates):
            raise ValueError("MTLNAS searches NDDR mixers only; use search_space('mtlnas').")
        for name, value in (("entropy_warmup", entropy_warmup),
                            ("temperature_steps", temperature_steps),
                            ("column_warmup", column_warmup)):
            if int(value) != value or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}.")
        if not nddr_lr_multiplier > 0:
            raise ValueError(f"nddr_lr_multiplier must be > 0, got {nddr_lr_multiplier!r}.")
        if not temperature > 0 or not temperature_power > 0:
            raise ValueError(f"temperature and temperature_power must be > 0, got "
                             f"{temperature!r}, {temperature_power!r}.")
        self.entropy_weight, self.temperature = float(entropy_weight), float(temperature)
        self.init_logit = float(init_logit)
        self.entropy_warmup, self.cross_init = int(entropy_warmup), float(cross_init)
        self.fast_lr_multiplier = float(nddr_lr_multiplier)
        self.temperature_steps, self.temperature_power = (int(temperature_steps),
                                                          float(temperature_power))
        self.column_warmup = int(column_warmup)
        self.edge_logits = [self.add_weight(name=f"edges_{i}", shape=g.shape, dtype="float32",
                                            initializer=keras.initializers.Constant(init_logit))
                            for i, g in enumerate(self.groups)]
        # The first candidate of an NDDR mixer is its own feature: always on, never searched.
        self._own = [self._own_mask(g) for g in self.groups]

    @staticmethod
    def _own_mask(g: MixerGroup) -> np.ndarray:
        own = np.zeros(g.shape, np.float32)
        for r in range(g.shape[0]):
            own[r, g.first[r]] = 1
        return own

    def fast_weights(self, network):
        return network.nddr_variables()

    def annealed_temperature(self, step) -> tf.Tensor:
        """The weight step's temperature at ``step``.

        ``temperature * (1 - step / temperature_steps)^temperature_power``, at least 1e-3
        (0 at the end in the reference, where the relaxed gates become hard); constant
        without ``temperature_steps``.
        """
        if not self.temperature_steps:
            return tf.constant(self.temperature)
        left = 1.0 - tf.minimum(tf.cast(step, tf.float32) / float(self.temperature_steps), 1.0)
        return tf.maximum(self.temperature * tf.pow(left, self.temperature_power),
                          _MIN_TEMPERATURE)

    def _edge_entries(self, g: MixerGroup, own: np.ndarray) -> np.ndarray:
        return (g.candidates > 0) & (own == 0) & g.searched[:, None]

    def sample(self, mode, step):
        routes, gates = [], []
        for i, (g, a, own) in enumerate(zip(self.groups, self.edge_logits, self._own)):
            if mode == "weight":
                noise = _logistic_noise(g.shape, self.noise_seed(mode, step, i))
                gate = tf.sigmoid((a + noise) / self.annealed_temperature(step))
                if self.column_warmup:
                    gate = tf.where(tf.cast(step, tf.int64) < self.column_warmup, 0.0, gate)
            elif mode == "arch":
                gate = tf.sigmoid(a)
            else:
                gate = tf.cast(a > 0, tf.float32)
            m = tf.where(tf.constant(own > 0), 1.0, gate * g.candidates.astype(np.float32))
            routes.append({"mask": tf.where(tf.constant(g.searched[:, None]), m, _fixed(g))})
            gates.append(tf.boolean_mask(tf.sigmoid(a), self._edge_entries(g, own)))
        return routes, {"edge_p": tf.concat(gates, 0)}

    def entropy(self, aux) -> tf.Tensor:
        p = tf.clip_by_value(aux["edge_p"], 1e-6, 1 - 1e-6)
        return tf.reduce_mean(-p * tf.math.log(p) - (1 - p) * tf.math.log(1 - p))

    def network_options(self):
        return {"nddr_cross_init": self.cross_init} if self.cross_init else {}

    def entropy_scale(self, step: tf.Tensor) -> tf.Tensor:
        """Weight of the regulariser at ``step``: ``entropy_weight``, ramped over the warm-up."""
        if not self.entropy_warmup:
            return tf.constant(self.entropy_weight)
        ramp = tf.cast(step, tf.float32) / float(self.entropy_warmup)
        return self.entropy_weight * tf.minimum(1.0, ramp)

    def arch_objective(self, task_loss, aux, step):
        objective = task_loss + self.entropy_scale(step) * self.entropy(aux)
        if self.column_warmup:
            # Zero gradients leave the edges where they are (SGD and Adam alike).
            objective *= tf.cast(tf.cast(step, tf.int64) >= self.column_warmup, tf.float32)
        return objective

    def probabilities(self):
        return [np.where(own > 0, 1.0, tf.sigmoid(a).numpy()) * g.candidates
                for g, a, own in zip(self.groups, self.edge_logits, self._own)]

    def final_masks(self):
        out = []
        for g, a, own in zip(self.groups, self.edge_logits, self._own):
            on = np.maximum((a.numpy() > 0).astype(float), own) * g.candidates
            out.append(np.where(g.searched[:, None], on, g.fixed_mask))
        return out

    def get_config(self):
        return {**super().get_config(), "entropy_weight": self.entropy_weight,
                "temperature": self.temperature, "init_logit": self.init_logit,
                "entropy_warmup": self.entropy_warmup, "cross_init": self.cross_init,
                "nddr_lr_multiplier": self.fast_lr_multiplier,
                "temperature_steps": self.temperature_steps,
                "temperature_power": self.temperature_power,
                "column_warmup": self.column_warmup}


def route_table(num_candidates: int, num_queries: int) -> np.ndarray:
    """All local routes ``[R, E + Q]``: a non-empty candidate subset and a one-hot query.

    ``R = (2^E - 1) * Q``, subsets in ``itertools.product`` order, the query varying slowest.

    Example:
        >>> route_table(2, 1).tolist()
        [[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 1.0]]
    """
    subsets = [s for s in itertools.product((0, 1), repeat=num_candidates) if any(s)]
    rows = [list(s) + list(np.eye(num_queries)[q]) for q in range(num_queries) for s in subsets]
    return np.array(rows, np.float32)


def reinforce_surrogate(log_probs: tf.Tensor, reward: tf.Tensor,
                        baseline: tf.Tensor) -> tf.Tensor:
    """Loss whose gradient is the REINFORCE estimate of ``-grad E[reward]``.

    ``log_probs`` are the log-probabilities of the sampled choices (summed over blocks);
    ``reward`` and ``baseline`` carry no gradient.
    """
    advantage = tf.stop_gradient(reward - baseline)
    return -advantage * tf.reduce_sum(log_probs)


# A logit no sample picks, finite so that XLA and the gradient stay finite.
_NEVER = -1e9


def factorised_log_prob(subset_logits: tf.Tensor, candidates: np.ndarray, subset: tf.Tensor,
                        query_logits: tf.Tensor | None = None,
                        query: tf.Tensor | None = None) -> tf.Tensor:
    """Log-probability of local routes under the factorised MTNAS distribution.

    Each candidate ``e`` of consumer ``c`` is on with probability ``sigmoid(phi[c, e])``,
    independently, conditioned on at least one being on; the query is a categorical of
    ``softmax(psi[c])``, independent of the subset::

        log P(s, q) = sum_e log Bernoulli(s_e; sigmoid(phi_e))
                      - log(1 - prod_e (1 - sigmoid(phi_e))) + log_softmax(psi)_q

    which equals ``log_softmax`` over the route table of ``sum_e s_e phi_e + psi_q``: the
    paper's categorical over routes with log-linear logits.

    Args:
        subset_logits: ``phi`` ``[C, E]``.
        candidates: ``[C, E]`` 0/1: entries that are not candidates are never on.
        subset: ``[..., C, E]`` 0/1 routes (a non-empty candidate subset per consumer).
        query_logits: ``psi`` ``[C, Q]``, or ``None`` (no query choice).
        query: ``[..., C, Q]`` one-hot, with ``query_logits``.

    Returns:
        ``[..., C]``.

    Example:
        >>> log_p = factorised_log_prob(tf.zeros([1, 2]), np.ones([1, 2]), tf.constant([[1.0, 0]]))
        >>> round(float(np.exp(log_p[0])), 4)  # {e0}: 1 of the 3 non-empty subsets
        0.3333
    """
    cand = tf.constant(np.asarray(candidates) > 0)
    log_on = tf.math.log_sigmoid(subset_logits)
    log_off = tf.math.log_sigmoid(-subset_logits)
    all_off = tf.reduce_sum(tf.where(cand, log_off, 0.0), -1)
    log_non_empty = tf.math.log(-tf.math.expm1(all_off))
    subset = tf.cast(subset, subset_logits.dtype)
    terms = tf.where(cand, subset * log_on + (1.0 - subset) * log_off, 0.0)
    log_p = tf.reduce_sum(terms, -1) - log_non_empty
    if query_logits is not None:
        log_p += tf.reduce_sum(tf.cast(query, log_p.dtype) * tf.nn.log_softmax(query_logits), -1)
    return log_p


def sample_factorised(subset_logits: tf.Tensor, candidates: np.ndarray, seed: tf.Tensor,
                      query_logits: tf.Tensor | None = None
                      ) -> tuple[tf.Tensor, tf.Tensor | None]:
    """One exact draw of the factorised distribution (:func:`factorised_log_prob`) per consumer.

    Conditioning on a non-empty subset without rejection: the first candidate that is on is
    drawn first, ``P(first = k) ∝ prod_{j<k} (1 - p_j) p_k`` (these sum to
    ``1 - prod_j (1 - p_j)``), then every later candidate independently with its own ``p_j``.
    The product of the two is the product of Bernoullis divided by ``P(non-empty)``.
    Categorical draws use the Gumbel-max trick on one stateless uniform draw (XLA-safe).

    Args:
        subset_logits: ``phi`` ``[C, E]``.
        candidates: ``[C, E]`` 0/1, a candidate in every row.
        seed: a stateless seed ``[2]``.
        query_logits: ``psi`` ``[C, Q]`` or ``None``.

    Returns:
        ``(subset [C, E], query [C, Q] or None)``, float 0/1.

    Example:
        >>> subset, _ = sample_factorised(tf.zeros([3, 4]), np.ones([3, 4]), tf.constant([1, 2]))
        >>> bool(tf.reduce_all(tf.reduce_sum(subset, -1) >= 1))
        True
    """
    c, e = candidates.shape
    q = 0 if query_logits is None else int(query_logits.shape[-1])
    u = tf.random.stateless_uniform([c, 2 * e + q], seed, np.finfo(np.float32).tiny, 1.0)
    gumbel = -tf.math.log(-tf.math.log(u))
    cand = tf.constant(np.asarray(candidates) > 0)
    log_off = tf.where(cand, tf.math.log_sigmoid(-subset_logits), 0.0)
    first_logits = tf.where(cand, tf.math.cumsum(log_off, -1, exclusive=True)
                            + tf.math.log_sigmoid(subset_logits), _NEVER)
    first = tf.argmax(first_logits + gumbel[:, :e], -1, output_type=tf.int32)[:, None]
    index = tf.range(e)[None]
    later_on = (index > first) & cand & (u[:, e:2 * e] < tf.sigmoid(subset_logits))
    subset = tf.cast((index == first) | later_on, tf.float32)
    if query_logits is None:
        return subset, None
    chosen = tf.argmax(query_logits + gumbel[:, 2 * e:], -1, output_type=tf.int32)
    return subset, tf.one_hot(chosen, q)


def factorised_mode(subset_logits: tf.Tensor, candidates: np.ndarray,
                    query_logits: tf.Tensor | None = None
                    ) -> tuple[tf.Tensor, tf.Tensor | None]:
    """The most probable route of the factorised distribution, per consumer.

    Every candidate with ``phi > 0`` (each raises the route's logit ``sum_e s_e phi_e``);
    with none, the candidate of the largest ``phi`` alone. The query of the largest ``psi``.

    Example:
        >>> subset, _ = factorised_mode(tf.constant([[0.5, -1.0, 2.0], [-1.0, -0.2, -3.0]]),
        ...                             np.ones([2, 3]))
        >>> subset.numpy().tolist()
        [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]
    """
    cand = tf.constant(np.asarray(candidates) > 0)
    on = tf.cast(cand & (subset_logits > 0), tf.float32)
    best = tf.one_hot(tf.argmax(tf.where(cand, subset_logits, _NEVER), -1),
                      candidates.shape[1])
    subset = tf.where(tf.reduce_sum(on, -1, keepdims=True) > 0, on, best)
    if query_logits is None:
        return subset, None
    return subset, tf.one_hot(tf.argmax(query_logits, -1), query_logits.shape[-1])


ROUTE_FORMS = ("auto", "enumerated", "factorised")
# ``routes="auto"`` enumerates while every block has at most this many candidates: 2295
# routes per block at 8 candidates and 9 query options.
AUTO_ENUMERATED_MAX = 8
# Beyond this the route table alone is too large to be a constant in every traced step:
# (2^12 - 1) * 13 = 53k routes of 25 floats per block at 12.
ENUMERATED_MAX = 12


class MTNAS(SearchMethod):
    """Sparse share routing learned by REINFORCE (Chen, Gu, Fu, arXiv 2009.00387).

    Every searched mixer (a block) draws a local route: a non-empty subset of its candidate
    experts and, with ``search_queries``, the query of its gate (the input or a mixer of the
    layer below). Two forms of the route distribution:

    - ``"enumerated"`` (the paper): a categorical over all ``(2^E - 1) * Q`` local routes, one
      logit per route. Exponential in the candidates ``E``: 53k routes per block at 12.
    - ``"factorised"``: a Bernoulli ``sigmoid(phi_e)`` per candidate, conditioned on a
      non-empty subset, and a categorical ``softmax(psi)`` over the ``Q`` queries, i.e.
      ``E + Q`` logits per block. This is a product distribution, not the paper's: it is
      the paper's categorical restricted to log-linear route logits
      ``theta(s, q) = sum_e s_e phi_e + psi_q``, so it cannot express correlations between
      candidates (e.g. "{1, 2} or {3}, but not {1, 3}"). It is sampled exactly (no
      rejection, see :func:`sample_factorised`) and REINFORCE uses the exact
      log-probability of the sampled route, conditioning included, so the estimator is
      unbiased for this family. Both forms start uniform over the routes.

    The architecture step is the same for both: REINFORCE on the sum over blocks of the
    sampled routes' log-probabilities, a moving-average baseline, the validation reward
    averaged across replicas. The final route is each block's most probable route.

    Args:
        spec: a searched spec with softmax mixers (see :func:`search_space` with "mtnas").
        baseline_decay: decay of the moving-average reward baseline.
        search_queries: also choose each gate's query (the input or a mixer of the layer
            below) as part of the route.
        normalize_advantage: divide the advantage by the running standard deviation of the
            reward around the baseline (a moving average of the squared advantage with the
            same decay), so the update size does not depend on the loss scale; default
            ``False`` (the raw advantage, as in the paper).
        cost_weight: the reward is ``-(validation loss + cost_weight * usage)``, usage being
            the fraction of experts the sampled route computes
            (:class:`~tfmtnas.search.usage.ExpertUsage`), as resource-aware searches put
            cost into the reward. Default 0 (the paper's reward); not in the paper.
        routes: ``"enumerated"``, ``"factorised"`` or ``"auto"`` (default): enumerated while
            every block has at most 8 candidates (the paper's distribution, and the variable
            layout of earlier checkpoints), factorised beyond. ``"enumerated"`` is refused
            above 12 candidates. The config records the resolved form.

    Example:
        >>> space = search_space("mtnas", ["click", "like"], num_experts=16)
        >>> method = make_method("mtnas", space)  # 16 candidates: factorised
        >>> method.routes, sum(v.shape.num_elements() for v in method.trainable_variables)
        ('factorised', 322)
    """

    method_name = "mtnas"

    def __init__(self, spec, baseline_decay: float = 0.9, search_queries: bool = True,
                 normalize_advantage: bool = False, cost_weight: float = 0.0,
                 routes: str = "auto", **kwargs):
        super().__init__(spec, **kwargs)
        self._set_cost_weight(cost_weight)
        self.baseline_decay = float(baseline_decay)
        self.search_queries = bool(search_queries)
        self.normalize_advantage = bool(normalize_advantage)
        self.routes = self._resolve_routes(routes)
        self.tables, self.thetas = [], []
        self.subset_logits, self.query_logits = [], []
        for i, g in enumerate(self.groups):
            q = self._num_queries(g)
            if self.routes == "enumerated":
                table = route_table(g.shape[1], q)
                self.tables.append(table)
                self.thetas.append(self.add_weight(name=f"routes_{i}",
                                                   shape=(g.shape[0], len(table)),
                                                   dtype="float32", initializer="zeros"))
                continue
            self.subset_logits.append(self.add_weight(name=f"subsets_{i}", shape=g.shape,
                                                      dtype="float32", initializer="zeros"))
            # One query option leaves nothing to learn: no variable.
            self.query_logits.append(None if q == 1 else self.add_weight(
                name=f"queries_{i}", shape=(g.shape[0], q), dtype="float32",
                initializer="zeros"))
        # Statistics of the (replica-averaged) reward: every replica computes the same value.
        first = tf.VariableAggregation.ONLY_FIRST_REPLICA
        self.baseline = self.add_weight(name="baseline", shape=(), trainable=False,
                                        initializer="zeros", dtype="float32", aggregation=first)
        self.baseline_ready = self.add_weight(name="baseline_ready", shape=(), trainable=False,
                                              initializer="zeros", dtype="float32",
                                              aggregation=first)
        if self.normalize_advantage:
            self.advantage_var = self.add_weight(name="advantage_var", shape=(),
                                                 trainable=False, initializer="zeros",
                                                 dtype="float32", aggregation=first)

    def _num_queries(self, g: MixerGroup) -> int:
        return 1 + g.num_query_mixers if self.search_queries else 1

    def _resolve_routes(self, routes: str) -> str:
        if routes not in ROUTE_FORMS:
            raise ValueError(f"routes must be one of {', '.join(ROUTE_FORMS)}, got {routes!r}.")
        widest = max(g.shape[1] for g in self.groups)
        if routes == "auto":
            return "enumerated" if widest <= AUTO_ENUMERATED_MAX else "factorised"
        if routes == "enumerated" and widest > ENUMERATED_MAX:
            raise ValueError(f"routes='enumerated' lists (2^E - 1) * Q routes per block; "
                             f"E = {widest} candidates is more than {ENUMERATED_MAX}: use "
                             f"routes='factorised'.")
        return routes

    def _choose(self, g_i: int, mode: str, step: tf.Tensor):
        """``(mask [C, E], query [C, Q], log-probability [C])`` of group ``g_i``'s routes."""
        g = self.groups[g_i]
        if self.routes == "factorised":
            phi, psi = self.subset_logits[g_i], self.query_logits[g_i]
            if mode == "eval":
                subset, query = factorised_mode(phi, g.candidates, psi)
            else:
                subset, query = sample_factorised(phi, g.candidates,
                                                  self.noise_seed(mode, step, g_i), psi)
            if query is None:
                query = tf.ones([g.shape[0], 1])
            log_p = factorised_log_prob(phi, g.candidates, subset, psi, query)
            return subset, query, log_p
        theta = self.thetas[g_i]
        if mode == "eval":
            idx = tf.argmax(theta, axis=-1, output_type=tf.int32)
        else:
            seed = self.noise_seed(mode, step, g_i)
            idx = tf.random.stateless_categorical(theta, 1, seed, dtype=tf.int32)[:, 0]
        log_p = tf.gather(tf.nn.log_softmax(theta), idx, batch_dims=1)
        chosen = tf.gather(tf.constant(self.tables[g_i]), idx)
        return chosen[:, :g.shape[1]], chosen[:, g.shape[1]:], log_p

    def sample(self, mode, step):
        routes, logps = [], []
        for g_i, g in enumerate(self.groups):
            subset, query, logp = self._choose(g_i, mode, step)
            searched = tf.constant(g.searched[:, None])
            route = {"mask": tf.where(searched, subset, _fixed(g))}
            if self.search_queries:
                fixed_q = np.eye(self._num_queries(g), dtype=np.float32)[np.array(g.query) + 1]
                route["query"] = tf.where(searched, query, fixed_q)
            routes.append(route)
            logps.append(tf.boolean_mask(logp, g.searched))
        aux = {"log_prob": tf.concat(logps, 0), **self._usage_aux([r["mask"] for r in routes])}
        return routes, aux

    def arch_objective(self, task_loss, aux, step):
        reward = -tf.stop_gradient(task_loss + self._cost(aux))
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            # One reward per step: the replicas' mean (their batches are equal shares), so
            # the baseline moves once per step, the same on every replica.
            reward = context.all_reduce(tf.distribute.ReduceOp.MEAN, reward)
        # First reward initialises the baseline; later ones update its moving average.
        base = tf.where(self.baseline_ready > 0, self.baseline, reward)
        d = self.baseline_decay
        if self.normalize_advantage:
            # The first squared advantage initialises the variance; until then it is 0 (and
            # so is the first advantage, the baseline being the first reward).
            sq = tf.square(reward - base)
            var = tf.where(self.advantage_var > 0, d * self.advantage_var + (1 - d) * sq, sq)
            self.advantage_var.assign(var)
            scale = tf.math.rsqrt(var + 1e-8)
            surrogate = reinforce_surrogate(aux["log_prob"], reward * scale, base * scale)
        else:
            surrogate = reinforce_surrogate(aux["log_prob"], reward, base)
        self.baseline.assign(d * base + (1 - d) * reward)
        self.baseline_ready.assign(1.0)
        return surrogate

    def route_probabilities(self) -> list[np.ndarray]:
        """Per group ``[C, R]``: the probability of every row of ``route_table(E, Q)``.

        The factorised form computes them from :func:`factorised_log_prob` (at most 12
        candidates per block: the table is enumerated).
        """
        if self.routes == "enumerated":
            return [tf.nn.softmax(t).numpy() for t in self.thetas]
        out = []
        for g, phi, psi in zip(self.groups, self.subset_logits, self.query_logits):
            if g.shape[1] > ENUMERATED_MAX:
                raise ValueError(f"route_probabilities enumerates the routes; E = {g.shape[1]} "
                                 f"candidates is more than {ENUMERATED_MAX}.")
            table = route_table(g.shape[1], self._num_queries(g))
            rows = tf.constant(np.repeat(table[:, None], g.shape[0], axis=1))  # [R, C, E + Q]
            log_p = factorised_log_prob(phi, g.candidates, rows[..., :g.shape[1]], psi,
                                        None if psi is None else rows[..., g.shape[1]:])
            out.append(np.exp(log_p.numpy()).T)
        return out

    def probabilities(self):
        if self.routes == "enumerated":
            return [(p @ table[:, :g.shape[1]]) * g.candidates
                    for g, table, p in zip(self.groups, self.tables, self.route_probabilities())]
        out = []
        for g, phi in zip(self.groups, self.subset_logits):
            # P(e on | non-empty) = p_e / P(non-empty): e on makes the subset non-empty.
            p = 1.0 / (1.0 + np.exp(-phi.numpy().astype(np.float64)))
            non_empty = 1.0 - np.prod(np.where(g.candidates > 0, 1.0 - p, 1.0), -1)
            out.append(p / non_empty[:, None] * g.candidates)
        return out

    def final_masks(self):
        routes, _ = self.sample("eval", tf.constant(0))
        return [r["mask"].numpy() for r in routes]

    def final_queries(self):
        if not self.search_queries:
            return [None] * len(self.groups)
        routes, _ = self.sample("eval", tf.constant(0))
        return [[int(c) for c in np.argmax(r["query"].numpy(), -1) - 1] for r in routes]

    def get_config(self):
        return {**super().get_config(), "baseline_decay": self.baseline_decay,
                "search_queries": self.search_queries,
                "normalize_advantage": self.normalize_advantage, "cost_weight": self.cost_weight,
                "routes": self.routes}


_CLASSES = {"mtnas": MTNAS, "gumbel": GumbelStreams, "gumbel_experts": GumbelMatrix,
            "mtlnas": MTLNAS}


def make_method(name: str, spec: RoutingSpec | StreamSpec, **kwargs) -> SearchMethod:
    """The search method ``name`` over the searched ``spec`` (``gumbel``: a stream spec)."""
    if name not in _CLASSES:
        raise ValueError(f"Unknown search method {name!r}; choose one of {', '.join(METHODS)}.")
    return _CLASSES[name](spec, name=f"{name}_architecture", **kwargs)
