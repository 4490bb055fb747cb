"""Everything one connect holds, so that teardown can undo exactly what was built and state can be shown."""

from __future__ import annotations

from dataclasses import dataclass, field

from tether.helper.api import helper_pb2 as pb
from tether.helper.root.dns.resolvers.base import ResolverConfigurator
from tether.helper.root.dns.resolvers.choose import Choice
from tether.helper.root.dns.rules import RulesConfig
from tether.helper.root.dns.server import DNSServer
from tether.helper.root.intercept.origin import OriginMapper
from tether.helper.root.intercept.service import InterceptService
from tether.helper.root.journal import Journal
from tether.helper.root.kube.credentials import KubeCredentials
from tether.helper.root.plan import Remapping
from tether.helper.root.policy import Forbidden, Policy
from tether.helper.root.proxyvia import ProxyRule, Rewriter
from tether.helper.root.recursion import DNS_NOT_CHECKED, LocalCluster
from tether.helper.root.routing import Conflict, RouteApplier, RouteMonitor
from tether.helper.root.routing.table import IPAddress, IPNetwork, RoutePlan
from tether.helper.root.server.caller import Caller
from tether.helper.root.tunnel.manager_link import ManagerLink
from tether.helper.root.tunnel.streams import TunnelOpener
from tether.helper.root.vif.device import TunDevice
from tether.helper.root.vif.engine import VifEngine
from tether.manager.api import manager_pb2 as mpb


@dataclass
class Connection:
    request: pb.ConnectRequest
    caller: Caller
    credentials: KubeCredentials | None = None
    link: ManagerLink | None = None
    intercepts: InterceptService | None = None
    journal: Journal | None = None
    device: TunDevice | None = None
    applier: RouteApplier | None = None
    plan: RoutePlan | None = None
    engine: VifEngine | None = None
    opener: TunnelOpener = field(default_factory=TunnelOpener)
    dns: DNSServer | None = None
    resolver: ResolverConfigurator | None = None
    dns_choice: Choice | None = None  # the resolver mode, why, and the probes it was chosen from
    dns_rules: RulesConfig | None = None
    never_route: tuple[str, ...] = ()
    mapped_namespaces: frozenset[str] = frozenset()
    namespace: str = "default"
    info: mpb.ClusterInfo | None = None
    dns_address: str = ""
    conflicts: tuple[Conflict, ...] = ()
    monitor: RouteMonitor | None = None
    remap: Remapping = field(default_factory=Remapping)
    rules: list[ProxyRule] = field(default_factory=list)
    rewriter: Rewriter | None = None
    policy: Policy = field(default_factory=Policy)
    forbidden: tuple[Forbidden, ...] = ()
    # What the policy kept out, for the state: namespaces not mapped (fixed at connect), carve-outs (per plan).
    namespace_notes: tuple[str, ...] = ()
    route_notes: tuple[str, ...] = ()
    # The recursion checks' results (recursion.py): fixed at connect.
    local: LocalCluster = field(default_factory=LocalCluster)
    own_addresses: tuple[IPAddress, ...] = ()
    refused_sources: tuple[IPNetwork, ...] = ()
    dns_recursion: str = DNS_NOT_CHECKED
    # While intercepting: whose pod dials new cluster flows and resolves cluster names (intercept/origin.py).
    origin: OriginMapper = field(default_factory=OriginMapper)
