"""What clients see of a connection: the State message, and the words for why a connect failed."""

from __future__ import annotations

import time

import grpc

from tether.helper.api import helper_pb2 as pb
from tether.helper.cluster.manager_dial import ManagerNotFoundError
from tether.helper.cluster.portforward import PortForwardError
from tether.helper.root.connection import Connection
from tether.helper.root.dns.resolvers.choose import UnsupportedHost
from tether.helper.root.kube.credentials import CredentialsError, KubeCredentials
from tether.helper.root.kube.unreachable import describe_unreachable
from tether.helper.root.policy import PolicyError
from tether.helper.root.proxyvia import ProxyRule
from tether.helper.root.routing import Conflict, ConflictError
from tether.helper.root.server.session_api import SessionError
from tether.helper.root.tunnel.manager_link import VersionSkewError
from tether.manager.api.version import API_LEVEL, __version__


def connected_state(c: Connection, phase: pb.State.Phase = pb.State.CONNECTED, last_error: str = "") -> pb.State:
    info = c.info
    device = c.device.name if c.device else ""
    routes = [pb.Subnet(cidr=str(r), via=device or "tun") for r in (c.plan.routes if c.plan else ())]
    return pb.State(
        phase=phase,
        cluster=c.credentials.context if c.credentials else c.request.context,
        server=c.credentials.server if c.credentials else "",
        namespace=c.namespace,
        manager_version=c.link.version if c.link else "",
        manager_api_level=c.link.api_level if c.link else 0,
        client_version=__version__,
        client_api_level=API_LEVEL,
        routed_subnets=routes,
        dns_mode=c.resolver.mode if c.resolver else "",
        dns_crash_safety=c.resolver.crash_safety if c.resolver else "",
        dns_server=c.dns_address,
        tun_device=device,
        cluster_domain=info.dns.cluster_domain if info else "",
        connected_since_unix=int(time.time()),
        never_proxy=list(c.request.never_proxy),
        conflicts=[conflict_pb(x) for x in c.conflicts],
        remapped=[remap_pb(rule) for rule in c.rules],
        virtual_subnet=str(c.remap.vips.subnet) if c.remap.vips is not None and c.rules else "",
        dns_include_suffixes=list(c.dns_rules.include_suffixes) if c.dns_rules else [],
        dns_exclude_suffixes=list(c.dns_rules.exclude_suffixes) if c.dns_rules else [],
        policy_notes=[*c.route_notes, *c.namespace_notes],
        **dns_choice_fields(c),
        dns_recursion=c.dns_recursion,
        connect_recursion=c.local.mode,
        direct_subnets=[str(s) for s in c.local.direct],
        refused_sources=[str(s) for s in c.refused_sources],
    )


def dns_choice_fields(c: Connection) -> dict[str, object]:
    """The State fields that say why the resolver mode is what it is."""
    choice = c.dns_choice
    if choice is None:
        return {}
    return {
        "dns_mode_reason": choice.reason,
        "dns_probes": [f"{name}: {value}" for name, value in choice.probes.summary()],
        "dns_mode_forced": choice.forced,
    }


def failed_state(c: Connection, error: str) -> pb.State:
    """Back to disconnected after a connect failed; the conflicts found are kept for the conflict dialog."""
    return pb.State(
        phase=pb.State.DISCONNECTED,
        cluster=c.request.context,
        last_error=error,
        conflicts=[conflict_pb(x) for x in c.conflicts],
    )


def remap_pb(rule: ProxyRule) -> pb.Remap:
    workload = f"{rule.workload.namespace}/{rule.workload.name}" if rule.workload else ""
    return pb.Remap(
        subnet=str(rule.network), workload=workload, reason="proxy-via" if rule.workload else "auto-resolve"
    )


def conflict_pb(conflict: Conflict) -> pb.Conflict:
    route = conflict.route
    return pb.Conflict(
        subnet=str(conflict.subnet),
        route=str(route.destination),
        device=route.device or "",
        gateway=str(route.gateway) if route.gateway else "",
        description=conflict.describe(),
    )


_SPEAKS_TO_USER = (
    ManagerNotFoundError,
    PortForwardError,
    SessionError,
    CredentialsError,
    ConflictError,
    PolicyError,
    VersionSkewError,
    UnsupportedHost,
)


def explain(exc: BaseException, credentials: KubeCredentials | None = None) -> str:
    """One line for a client: errors that already speak to the user pass through; others are named.

    ``credentials``, once read, name the API server and the proxy when the Kubernetes client could not reach it."""
    if credentials is not None and (words := describe_unreachable(exc, credentials.server, credentials.proxy)):
        return words
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"the traffic-manager did not answer: {exc.code().name}: {exc.details()}"
    if isinstance(exc, _SPEAKS_TO_USER):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timed out waiting for the traffic-manager"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
