"""Connection origin while intercepting (pure): whose pod the machine's cluster traffic comes from.

While this connection intercepts a workload W, the machine acts as if it were W's pod:

* new flows to the cluster's pod and service subnets are opened with ``via`` = W, so one of W's
  tether-agents dials them from inside W's pod (the peer sees W's pod IP). The manager's own pod is left
  to the manager: it is the manager the helper talks to, not a cluster destination like the others;
* the cluster names the helper's DNS server forwards are resolved by W's agent with W's pod's own
  resolv.conf, and single labels are completed in W's namespace (``rules_namespace``), as inside W's pod.

With several intercepts, the first started (the intercept table keeps start order) that is active is the
origin (:func:`choose_origin`); with none, the manager dials and resolves as before. The choice is made
when a flow opens: flows opened before a change keep the path they were opened on.

:class:`OriginMapper` is the tunnel opener's ``map_destination`` hook, wrapped around the --proxy-via VIP
mapper: a VIP of an explicit --proxy-via workload keeps that workload; a VIP of the automatic remap (which
the manager would dial) and a plain cluster address go through the origin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tether.helper.api import helper_pb2 as pb
from tether.helper.api.intercepts import ACTIVE
from tether.manager.api import manager_pb2 as mpb
from tether.manager.api.wire import IPAddress, IPNetwork, ip_from_bytes, subnets_from_pb

#: (namespace, name, kind) of the workload whose agent dials, as ``TunnelOpen.via`` wants it
Via = tuple[str, str, str]
DestinationMapper = Callable[[IPAddress, int], tuple[IPAddress, int, Via | None] | None]


@dataclass(frozen=True)
class Origin:
    """The intercepted workload whose pod the machine's cluster traffic originates from."""

    namespace: str
    workload: str
    kind: str = ""

    @property
    def via(self) -> Via:
        return self.namespace, self.workload, self.kind

    def describe(self) -> str:
        return f"{self.namespace}/{self.workload}"


def choose_origin(intercepts: Iterable[pb.InterceptState]) -> Origin | None:
    """The first of this connection's intercepts (in the order they were started) that is active; None when
    none is (waiting for its agents, failed, or none at all): the manager dials then."""
    for state in intercepts:
        if state.ours and state.phase == ACTIVE:
            return Origin(state.namespace, state.workload, state.kind)
    return None


def origin_via(
    address: IPAddress, origin: Origin | None, cluster: Iterable[IPNetwork], manager: Iterable[IPAddress] = ()
) -> Via | None:
    """The ``via`` a new flow to ``address`` is opened with: the origin's for an address in the cluster's
    pod and service subnets other than the manager's own; None (the manager dials) otherwise."""
    if origin is None or address in set(manager):
        return None
    if any(net.version == address.version and address in net for net in cluster):
        return origin.via
    return None


def rules_namespace(origin: Origin | None, connection_namespace: str) -> str:
    """The namespace single-label cluster names are completed in: the origin's, else the connection's."""
    return origin.namespace if origin is not None else connection_namespace


def dns_via(origin: Origin | None) -> Via | None:
    """Who resolves the cluster names the DNS server forwards: the origin's agent, or (None) the manager."""
    return origin.via if origin is not None else None


def cluster_subnets(info: mpb.ClusterInfo) -> tuple[IPNetwork, ...]:
    """The pod and service subnets of the cluster (what an origin's agent dials), each once."""
    service = [info.service_subnet] if info.HasField("service_subnet") else []
    found = subnets_from_pb([*info.pod_subnets, *info.service_subnets, *service])
    return tuple(dict.fromkeys(found))


def manager_addresses(info: mpb.ClusterInfo) -> tuple[IPAddress, ...]:
    """The manager's pod address: flows to it stay the manager's."""
    return (ip_from_bytes(info.manager_pod_ip),) if info.manager_pod_ip else ()


class OriginMapper:
    """The tunnel opener's ``map_destination``: the VIP mapper's answer, then the origin for cluster addresses.

    ``origin``, ``cluster`` and ``manager`` are set by the session as intercepts and cluster info change.
    """

    def __init__(self, inner: DestinationMapper | None = None) -> None:
        self.inner = inner
        self.origin: Origin | None = None
        self.cluster: tuple[IPNetwork, ...] = ()
        self.manager: tuple[IPAddress, ...] = ()

    def __call__(self, address: IPAddress, port: int) -> tuple[IPAddress, int, Via | None] | None:
        mapped = self.inner(address, port) if self.inner is not None else None  # LookupError refuses the flow
        if mapped is not None and mapped[2] is not None:
            return mapped  # an explicit --proxy-via workload dials its VIPs
        real, real_port = (mapped[0], mapped[1]) if mapped is not None else (address, port)
        via = origin_via(real, self.origin, self.cluster, self.manager)
        if via is None:
            return mapped
        return real, real_port, via
