"""Learn the sharing structure: the routing-graph and stream spaces, search methods, children."""

from tfmtnas.search.network import RoutingNetwork, forward_flops, mixer_groups
from tfmtnas.search.spec import (
    Expert,
    Layer,
    Mixer,
    RoutingSpec,
    SpecError,
    preset,
    prune,
    reachable,
)
from tfmtnas.search.streams import StreamNetwork, StreamSpec, stream_flops, stream_space

__all__ = ["Expert", "Layer", "Mixer", "RoutingNetwork", "RoutingSpec", "SpecError",
           "StreamNetwork", "StreamSpec", "forward_flops", "mixer_groups", "preset", "prune",
           "reachable", "stream_flops", "stream_space"]
