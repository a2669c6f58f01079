"""Turn a trained search into a fixed, cheaper child model.

:func:`derive_child` takes the search method's decision (:meth:`SearchMethod.derive`), prunes
it to the experts that reach a task, builds a :class:`~tfmtnas.models.MultiTaskModel` on it,
and either copies the supernet's weights into it (``inherit=True``: the child then computes
exactly what the supernet computes under its final routes, as MTL-NAS evaluates without
retraining) or leaves it freshly initialised for retraining.

Example:
    >>> child = derive_child(search_model, inherit=True)
    >>> child.compile(keras.optimizers.Adam(1e-3))
"""

from __future__ import annotations

import numpy as np

from tfmtnas.models.multitask import MultiTaskModel
from tfmtnas.search.network import RoutingNetwork

MixerParams = dict[str, dict]


def mixer_params(net: RoutingNetwork) -> list[MixerParams]:
    """Per group, per mixer name: its gate parameters as numpy arrays over the producers."""
    out = []
    for g, gates in zip(net.groups, net.group_gates):
        producers = g.producers
        below = [m.name for m in net.spec.layers[g.producer_layer].mixers]
        params: MixerParams = {n: {"producers": producers} for n in g.names}
        soft = list(gates.softmax)
        if soft:
            bias = gates.bias.numpy()
            k_in = None if gates.kernel_input is None else gates.kernel_input.numpy()
            k_mq = None if gates.kernel_mixer is None else gates.kernel_mixer.numpy()
            for j, c in enumerate(soft):
                p = params[g.names[c]]
                p["bias"] = bias[j]
                if net.search_queries:
                    p["k_input"] = k_in[j]
                    if k_mq is not None:
                        h = k_mq.shape[1] // len(below)
                        p["k_mixer"] = {b: k_mq[j, i * h:(i + 1) * h] for i, b in enumerate(below)}
                else:
                    if j in gates.input_rows:
                        p["k_input"] = k_in[list(gates.input_rows).index(j)]
                    else:
                        r = list(gates.mixer_rows).index(j)
                        p["k_mixer"] = {below[gates.query_mixers[r]]: k_mq[r]}
        if len(gates.static):
            static = gates.static_weights.numpy()
            for j, c in enumerate(gates.static):
                params[g.names[c]]["static"] = static[j]
        if len(gates.nddr):
            w = gates.nddr_weights.numpy()
            bn = [x.numpy().reshape(len(gates.nddr), -1) for x in gates.nddr_bn.weights]
            for j, c in enumerate(gates.nddr):
                params[g.names[c]].update(nddr=w[j], bn=[x[j] for x in bn])
        out.append(params)
    return out


def _columns(p: dict, producers: list[str]) -> list[int]:
    return [p["producers"].index(n) for n in producers]


def inherit_network(child: RoutingNetwork, parent: RoutingNetwork) -> None:
    """Copy ``parent``'s weights into the (pruned) ``child``, matching experts by name."""
    for bank, child_layer, parent_layer, pbank in zip(child.banks, child.spec.layers,
                                                      parent.spec.layers, parent.banks):
        parent_names = [e.name for e in parent_layer.experts]
        rows = [parent_names.index(e.name) for e in child_layer.experts]
        bank.set_weights([w[rows] for w in pbank.get_weights()])
    parent_params = mixer_params(parent)
    for g, gates, src in zip(child.groups, child.group_gates, parent_params):
        producers = g.producers
        below = [m.name for m in child.spec.layers[g.producer_layer].mixers]
        p = [src[n] for n in g.names]
        cols = [_columns(q, producers) for q in p]
        soft = list(gates.softmax)
        if soft:
            gates.bias.assign(np.stack([p[c]["bias"][cols[c]] for c in soft]))
            if gates.kernel_input is not None:
                rows = [soft[j] for j in gates.input_rows]
                gates.kernel_input.assign(np.stack([p[c]["k_input"][:, cols[c]] for c in rows]))
            if gates.kernel_mixer is not None:
                rows = [soft[j] for j in gates.mixer_rows]
                gates.kernel_mixer.assign(np.stack(
                    [p[c]["k_mixer"][below[g.query[c]]][:, cols[c]] for c in rows]))
        if len(gates.static):
            gates.static_weights.assign(
                np.stack([p[c]["static"][cols[c]] for c in gates.static]))
        if len(gates.nddr):
            gates.nddr_weights.assign(np.stack([p[c]["nddr"][cols[c]] for c in gates.nddr]))
            for i, weight in enumerate(gates.nddr_bn.weights):
                weight.assign(np.concatenate([p[c]["bn"][i] for c in gates.nddr]))


def derive_child(search_model, inherit: bool = True) -> MultiTaskModel:
    """The fixed child of a trained :class:`~tfmtnas.search.model.SearchModel`.

    Args:
        search_model: the trained search model.
        inherit: copy the supernet's weights (embedding, experts, gates, towers) into the
            child; ``False`` leaves it freshly initialised for retraining from scratch.
    """
    method = search_model.method
    fixed = method.derive()
    network = method.child_network(fixed, name="child")
    child = MultiTaskModel(search_model.spec, search_model.tasks, sharing=network,
                           embedding_dim=search_model.embedding_dim,
                           tower_units=search_model.tower_units)
    child(child.dummy_features())
    if inherit:
        child.embedding.set_weights(search_model.embedding.get_weights())
        child.towers.set_weights(search_model.towers.get_weights())
        copy_weights = getattr(method, "inherit", inherit_network)
        copy_weights(network, search_model.sharing)
    return child
