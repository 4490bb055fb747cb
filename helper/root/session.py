"""The helper's session: one cluster connection at a time, and the state clients watch.

`connect` builds the pieces in order (credentials, the manager link, the TUN
and its netstack, routes, DNS) and undoes them in reverse on any failure; the
same undo runs on disconnect and when the helper exits. After connect, a
supervisor keeps the manager session alive, applies every cluster-info change
incrementally, and reconnects (keeping routes and DNS in place) when the
manager or the port-forward goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import grpc
import kubernetes

from tether.helper.api import helper_pb2 as pb
from tether.helper.api.proxyvia import ProxyViaSpec
from tether.helper.cluster.manager_dial import ManagerNotFoundError
from tether.helper.cluster.portforward import PortForwardError
from tether.helper.root.dns.resolvers.base import DNS_BYPASS_MARK, ResolverSettings
from tether.helper.root.dns.resolvers.choose import choose
from tether.helper.root.dns.resolvers.probe import probe_host
from tether.helper.root.dns.rules import DEFAULT_EXCLUDE_SUFFIXES, RulesConfig, routing_domains
from tether.helper.root.dns.server import DNSServer
from tether.helper.root.dns.upstream import UpstreamAddress
from tether.helper.root.journal import Journal
from tether.helper.root.kube.credentials import CredentialsError, KubeCredentials, load_credentials
from tether.helper.root.proxyvia import (
    ProxyRule,
    ProxyViaError,
    Rewriter,
    VipTable,
    auto_rules,
    check_workloads,
    combine,
    destination_mapper,
    parse_proxy_vias,
    resolve,
    translated_subnets,
    validate_virtual_subnet,
    virtual_subnets_to_route,
)
from tether.helper.root.proxyvia.vips import VirtualSubnetError
from tether.helper.root.routing import (
    Conflict,
    ConflictError,
    RouteMonitor,
    compute_plan,
    find_conflicts,
    open_applier,
    open_reader,
)
from tether.helper.root.routing.conflicts import OSRoute
from tether.helper.root.routing.table import RoutePlan
from tether.helper.root.server.caller import Caller
from tether.helper.root.server.session_api import SessionConfig, SessionError
from tether.helper.root.tunnel.manager_link import ManagerLink, client_info
from tether.helper.root.tunnel.streams import TunnelOpener
from tether.helper.root.vif.device import TunDevice, open_tun
from tether.helper.root.vif.engine import VifEngine
from tether.helper.root.vif.netstack.config import NetStackConfig
from tether.helper.root.vif.netstack.stack import NetStack
from tether.manager.api import manager_pb2 as mpb
from tether.manager.api.wire import subnets_from_pb

log = logging.getLogger("tether.helper.root.session")

DEFAULT_MANAGER_NAMESPACE = "tether"
DEFAULT_MTU = 65000
# The netstack holds an ACK for received data this long, so a request's ACK rides on its response.
DELAYED_ACK = 0.002
Phase = pb.State.Phase


@dataclass
class _Connection:
    """Everything one connect holds, so that teardown can undo exactly what was built."""

    request: pb.ConnectRequest
    caller: Caller
    credentials: KubeCredentials | None = None
    link: ManagerLink | None = None
    journal: Journal | None = None
    device: TunDevice | None = None
    applier: object | None = None
    plan: RoutePlan | None = None
    engine: VifEngine | None = None
    opener: TunnelOpener = field(default_factory=TunnelOpener)
    dns: DNSServer | None = None
    resolver: object | None = None
    dns_rules: RulesConfig | None = None
    never_route: tuple[str, ...] = ()
    mapped_namespaces: frozenset[str] = frozenset()
    namespace: str = "default"
    info: mpb.ClusterInfo | None = None
    dns_address: str = ""
    conflicts: tuple[Conflict, ...] = ()
    monitor: RouteMonitor | None = None
    proxy_specs: list[ProxyViaSpec] = field(default_factory=list)
    auto_subnets: tuple[object, ...] = ()  # conflicting cluster subnets remapped by --auto-resolve
    vips: VipTable | None = None
    rules: list[ProxyRule] = field(default_factory=list)
    rewriter: Rewriter | None = None


class HelperSession:
    def __init__(self, config: SessionConfig) -> None:
        self._config = config
        self._mtu = int(config.options.get("mtu", DEFAULT_MTU))
        self._tun_name = config.options.get("tun-name", "tether%d")
        self._journal_path = Path(config.options.get("journal", str(config.runtime_dir / "journal.json")))
        self._state = pb.State(phase=pb.State.DISCONNECTED)
        self._watchers: set[asyncio.Queue[pb.State]] = set()
        self._connection: _Connection | None = None
        self._connect_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # --- the Session protocol ---

    def state(self) -> pb.State:
        return self._state

    async def watch(self) -> AsyncIterator[pb.State]:
        mailbox: asyncio.Queue[pb.State] = asyncio.Queue(maxsize=1)
        mailbox.put_nowait(self._state)
        self._watchers.add(mailbox)
        try:
            while True:
                yield await mailbox.get()
        finally:
            self._watchers.discard(mailbox)

    async def connect(self, request: pb.ConnectRequest, caller: Caller) -> AsyncIterator[pb.ConnectProgress]:
        if self._state.phase in (pb.State.CONNECTED, pb.State.CONNECTING, pb.State.RECONNECTING):
            raise SessionError(f"already connected to {self._state.cluster or 'a cluster'}; disconnect first")
        progress: asyncio.Queue[str | None] = asyncio.Queue()
        connection = _Connection(request=request, caller=caller)
        self._connection = connection
        self._publish(pb.State(phase=pb.State.CONNECTING, cluster=request.context))
        self._connect_task = asyncio.ensure_future(self._build(connection, progress.put_nowait))
        self._connect_task.add_done_callback(lambda _: progress.put_nowait(None))
        try:
            while (step := await progress.get()) is not None:
                yield pb.ConnectProgress(step=step)
            await self._connect_task  # raises the failure, if any
        except BaseException as exc:
            await self._teardown(connection)
            error = _explain(exc)
            if isinstance(exc, asyncio.CancelledError | GeneratorExit):
                error = "the connect was cancelled"
            self._publish(
                pb.State(
                    phase=pb.State.DISCONNECTED,
                    cluster=request.context,
                    last_error=error,
                    conflicts=[_conflict_pb(x) for x in connection.conflicts],
                )
            )
            if isinstance(exc, GeneratorExit | asyncio.CancelledError):
                raise
            if isinstance(exc, SessionError):
                raise
            raise SessionError(error) from exc
        finally:
            self._connect_task = None
        yield pb.ConnectProgress(step="connected", state=self._state)

    async def disconnect(self, caller: Caller) -> pb.State:
        task = self._connect_task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        connection, self._connection = self._connection, None
        if connection is not None:
            log.info("disconnecting", extra={"uid": caller.uid, "cluster": connection.request.context})
            await self._teardown(connection)
        self._publish(pb.State(phase=pb.State.DISCONNECTED))
        return self._state

    async def close(self) -> None:
        await self.disconnect(Caller(uid=0, gid=0, pid=os.getpid(), username="root"))

    # --- building and tearing down ---

    async def _build(self, c: _Connection, step: Callable[[str], None]) -> None:
        request = c.request
        step("reading the kubeconfig")
        try:
            c.credentials = await asyncio.to_thread(
                load_credentials, request.kubeconfig, c.caller, dict(request.environment), request.context or None
            )
        except CredentialsError as exc:
            raise SessionError(str(exc), grpc.StatusCode.INVALID_ARGUMENT) from None
        creds = c.credentials
        c.namespace = request.namespace or creds.namespace or "default"
        cluster_name = creds.context
        self._publish(pb.State(phase=pb.State.CONNECTING, cluster=cluster_name, server=creds.server))

        manager_ns = request.manager_namespace or DEFAULT_MANAGER_NAMESPACE
        step(
            f"reaching the traffic-manager at {request.manager_address}"
            if request.manager_address
            else f'finding the traffic-manager in namespace "{manager_ns}"'
        )
        name = f"{c.caller.username or c.caller.uid}@{socket.gethostname()}"
        c.link = ManagerLink(creds.configuration, manager_ns, client_info(name, c.namespace), request.manager_address)
        await c.link.open()
        info = await c.link.first_cluster_info()
        c.info = info
        c.opener.stub, c.opener.session_id, c.opener.mux = c.link.stub, c.link.session_id, c.link.mux

        try:
            c.proxy_specs = parse_proxy_vias(request.proxy_via)
            if c.proxy_specs:
                step("checking the --proxy-via workloads")
                c.proxy_specs = await asyncio.to_thread(
                    check_workloads, c.proxy_specs, c.namespace, _workload_finder(creds)
                )
            c.vips = VipTable(request.virtual_subnet or None)
        except (ProxyViaError, VirtualSubnetError) as exc:
            raise SessionError(str(exc), grpc.StatusCode.INVALID_ARGUMENT) from None

        c.mapped_namespaces = frozenset(request.mapped_namespaces) or await self._namespaces(creds, c.namespace)
        c.never_route = tuple(await asyncio.to_thread(_api_server_ips, creds.server))

        step("checking the routing table for conflicts")
        routes = await asyncio.to_thread(_read_routes)
        conflicts = await self._conflicts(c, info, routes)
        if conflicts and request.auto_resolve:
            c.auto_subnets = tuple(ConflictError(conflicts).subnets)
            log.info("remapping conflicting subnets", extra={"subnets": [str(x) for x in c.auto_subnets]})
            conflicts = await self._conflicts(c, info, routes)
        if conflicts:
            c.conflicts = tuple(conflicts)
            raise ConflictError(conflicts)

        step("creating the network device")
        c.journal = Journal(self._journal_path)
        c.device = await asyncio.to_thread(open_tun, self._tun_name, mtu=self._mtu, journal=c.journal)
        offload = getattr(c.device, "checksum_offload", False)  # the TUN sums TCP/UDP checksums for us (tun_linux)
        stack = NetStack(NetStackConfig(mtu=self._mtu, partial_checksums=offload, delayed_ack=DELAYED_ACK))
        assert c.vips is not None
        c.opener.map_destination = destination_mapper(c.vips)
        c.engine = VifEngine(c.device, stack, c.opener.open, c.opener)
        c.engine.start()

        step("starting the DNS server")
        c.resolver = choose(probe_host())()
        upstreams = c.resolver.upstream_nameservers()  # type: ignore[attr-defined]
        if not upstreams:
            raise SessionError("the host's resolv.conf names no nameserver to forward non-cluster names to")
        c.never_route += tuple(str(ip) for ip in upstreams)
        c.plan = self._plan(c, info)
        c.dns_rules = self._dns_rules(c, info)
        c.rewriter = Rewriter(c.vips, c.rules)
        c.dns = DNSServer(
            self._lookup(c),
            c.dns_rules,
            UpstreamAddress(str(upstreams[0])),
            mark=DNS_BYPASS_MARK,
            rewrite=c.rewriter,
        )
        host, port = await c.dns.listen("127.0.0.1", 0)

        step(f"routing {len(c.plan.routes)} subnets through {c.device.name}")
        c.applier = open_applier(c.device.name, journal=c.journal)
        await c.applier.apply_async(c.plan)  # type: ignore[attr-defined]
        stack.set_refused_sources(subnets_from_pb(info.pod_subnets))

        step("pointing the system resolver at the cluster")
        settings = ResolverSettings(
            server=host, port=port, tun_name=c.device.name, routing_domains=routing_domains(c.dns_rules)
        )
        await asyncio.to_thread(c.resolver.apply, settings)  # type: ignore[attr-defined]
        c.dns_address = f"{host}:{port}"

        c.monitor = RouteMonitor(lambda routes: self._on_routes(c, routes))
        await c.monitor.start()
        c.link.supervise(
            lambda new: self._on_cluster_info(c, new), lambda status, detail: self._on_link(c, status, detail)
        )
        self._publish(self._connected_state(c))
        log.info(
            "connected",
            extra={"uid": c.caller.uid, "cluster": cluster_name, "routes": [str(r) for r in c.plan.routes]},
        )

    async def _teardown(self, c: _Connection) -> None:
        """Undo whatever of `c` exists, in reverse order; every step runs even when an earlier one fails."""
        steps: list[tuple[str, Callable[[], Awaitable[object]]]] = []
        if c.monitor is not None:
            steps.append(("route monitor", c.monitor.stop))
        if c.resolver is not None:
            steps.append(("resolver", lambda: asyncio.to_thread(c.resolver.revert)))  # type: ignore[attr-defined]
        if c.applier is not None:
            steps.append(("routes", c.applier.clear_async))  # type: ignore[attr-defined]
        if c.engine is not None:
            steps.append(("vif", c.engine.stop))
        if c.dns is not None:
            steps.append(("dns", c.dns.close))
        if c.device is not None:
            steps.append(("device", lambda: asyncio.to_thread(c.device.close)))  # type: ignore[union-attr]
        if c.link is not None:
            steps.append(("manager", c.link.close))
        if c.credentials is not None:
            steps.append(("credentials", lambda: asyncio.to_thread(c.credentials.close)))  # type: ignore[union-attr]
        for what, undo in steps:
            try:
                await undo()
            except Exception:
                log.exception("undoing %s failed", what)
        if c.journal is not None:
            c.journal.discard()
        c.resolver = c.applier = c.engine = c.dns = c.device = c.link = c.credentials = c.journal = None
        c.monitor = None

    # --- live changes ---

    async def _on_cluster_info(self, c: _Connection, info: mpb.ClusterInfo) -> None:
        if c.info == info:
            return
        c.info = info
        plan = self._plan(c, info)
        if plan != c.plan:
            await c.applier.apply_async(plan)  # type: ignore[union-attr]
            c.plan = plan
            log.info("routes changed", extra={"routes": [str(r) for r in plan.routes]})
        if c.engine is not None:
            c.engine.stack.set_refused_sources(subnets_from_pb(info.pod_subnets))
        rules = self._dns_rules(c, info)
        if rules != c.dns_rules and c.dns is not None:
            c.dns.set_rules(rules)
            c.dns_rules = rules
        if c.rewriter is not None and c.rewriter.set_rules(c.rules) and c.dns is not None:
            c.dns.flush()
        self._publish(self._connected_state(c))

    def _on_link(self, c: _Connection, status: str, detail: str) -> None:
        if status == "connected":
            link = c.link
            assert link is not None
            c.opener.stub, c.opener.session_id, c.opener.mux = link.stub, link.session_id, link.mux
            self._publish(self._connected_state(c))
        else:
            c.opener.session_id = ""
            c.opener.mux = None
            state = self._connected_state(c)
            state.phase = pb.State.RECONNECTING
            state.last_error = detail
            self._publish(state)

    async def _on_routes(self, c: _Connection, routes: list[OSRoute]) -> None:
        """A route changed while connected (a VPN came up or went away): re-check and report."""
        if c.info is None:
            return
        conflicts = tuple(await self._conflicts(c, c.info, routes))
        if conflicts != c.conflicts:
            c.conflicts = conflicts
            for conflict in conflicts:
                log.warning("route conflict appeared: %s", conflict.describe())
            self._publish(self._connected_state(c))

    async def _conflicts(self, c: _Connection, info: mpb.ClusterInfo, routes: list[OSRoute]) -> list[Conflict]:
        allowed = [*subnets_from_pb(info.routing.allow_conflicting_subnets), *c.request.allow_conflicting_subnets]
        plan = self._plan(c, info)
        own = (c.device.name,) if c.device else ()
        return find_conflicts(plan.routes, routes, own_devices=own, allowed=allowed)

    # --- pure-ish helpers ---

    def _plan(self, c: _Connection, info: mpb.ClusterInfo) -> RoutePlan:
        """The routes for `info`; also refreshes the proxy rules, whose translated subnets are not routed."""
        request = c.request
        service = subnets_from_pb(info.service_subnets) or (
            subnets_from_pb([info.service_subnet]) if info.HasField("service_subnet") else []
        )
        pods = subnets_from_pb(info.pod_subnets)
        also = [
            *subnets_from_pb(info.routing.also_proxy_subnets),
            *(ipaddress.ip_network(a) for a in request.also_proxy),
        ]
        c.rules = combine(
            resolve(c.proxy_specs, service, pods, also, namespace=c.namespace) if c.proxy_specs else [],
            auto_rules(c.auto_subnets) if c.auto_subnets else [],
        )
        translated = translated_subnets(c.rules)
        virtual: list[object] = []
        if c.rules and c.vips is not None:
            for subnet in c.vips.subnets:
                validate_virtual_subnet(subnet, service=service, pods=pods, also=also, proxied=translated)
            virtual = list(virtual_subnets_to_route(c.vips, c.rules))
        return compute_plan(
            service_subnets=service,
            pod_subnets=pods,
            also_proxy=[*also, *virtual],
            never_proxy=[*subnets_from_pb(info.routing.never_proxy_subnets), *request.never_proxy, *translated],
            never_route=c.never_route,
        )

    def _dns_rules(self, c: _Connection, info: mpb.ClusterInfo) -> RulesConfig:
        plan = c.plan
        include, exclude = dns_suffixes(info, c.request)
        return RulesConfig(
            cluster_domain=info.dns.cluster_domain or "cluster.local.",
            namespace=c.namespace,
            mapped_namespaces=c.mapped_namespaces,
            include_suffixes=include,
            exclude_suffixes=exclude,
            routed_subnets=plan.routes if plan else (),
        )

    def _lookup(self, c: _Connection) -> Callable[[str, int], Awaitable[tuple[int, list[object]]]]:
        from dnslib import RR, DNSBuffer

        async def lookup(name: str, qtype: int) -> tuple[int, list[object]]:
            link = c.link
            if link is None or link.stub is None or not link.session_id:
                raise ConnectionError("not connected to the traffic-manager")
            reply = await link.stub.LookupDNS(
                mpb.DNSRequest(session_id=link.session_id, name=name, qtype=qtype), timeout=4
            )
            return reply.rcode, [RR.parse(DNSBuffer(raw)) for raw in reply.answers]

        return lookup

    async def _namespaces(self, creds: KubeCredentials, fallback: str) -> frozenset[str]:
        """Namespaces whose `<svc>.<ns>` names go to the cluster: all the user may list, else their own."""

        def list_names() -> frozenset[str]:
            api = kubernetes.client.ApiClient(creds.configuration)
            try:
                items = kubernetes.client.CoreV1Api(api).list_namespace(_request_timeout=10).items
                return frozenset(ns.metadata.name for ns in items)
            finally:
                api.close()

        try:
            return await asyncio.to_thread(list_names) | {fallback}
        except Exception as exc:
            log.info("cannot list namespaces (%s); mapping only %s", exc, fallback)
            return frozenset({fallback})

    def _connected_state(self, c: _Connection) -> pb.State:
        info = c.info
        routes = [
            pb.Subnet(cidr=str(r), via=c.device.name if c.device else "tun") for r in (c.plan.routes if c.plan else ())
        ]
        return pb.State(
            phase=pb.State.CONNECTED,
            cluster=c.credentials.context if c.credentials else c.request.context,
            server=c.credentials.server if c.credentials else "",
            namespace=c.namespace,
            manager_version=c.link.version if c.link else "",
            routed_subnets=routes,
            dns_mode=getattr(c.resolver, "mode", ""),
            dns_server=c.dns_address,
            tun_device=c.device.name if c.device else "",
            cluster_domain=info.dns.cluster_domain if info else "",
            connected_since_unix=int(time.time()),
            never_proxy=list(c.request.never_proxy),
            conflicts=[_conflict_pb(x) for x in c.conflicts],
            remapped=[_remap_pb(rule) for rule in c.rules],
            virtual_subnet=str(c.vips.subnet) if c.vips is not None and c.rules else "",
            dns_include_suffixes=list(c.dns_rules.include_suffixes) if c.dns_rules else [],
            dns_exclude_suffixes=list(c.dns_rules.exclude_suffixes) if c.dns_rules else [],
        )

    def _publish(self, state: pb.State) -> None:
        self._state = state
        for mailbox in self._watchers:
            if mailbox.full():
                mailbox.get_nowait()
            mailbox.put_nowait(state)


def dns_suffixes(info: mpb.ClusterInfo, request: pb.ConnectRequest) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The include and exclude suffixes: the manager's (or the default exclusions) joined with the client's.

    Joining, not replacing, is enough for the client to win: an include-suffix at least as long as a
    matching exclude-suffix sends the name to the cluster (see dns.rules)."""
    include = [*info.dns.include_suffixes, *request.dns_include_suffixes]
    exclude = [*(info.dns.exclude_suffixes or DEFAULT_EXCLUDE_SUFFIXES), *request.dns_exclude_suffixes]
    return tuple(dict.fromkeys(include)), tuple(dict.fromkeys(exclude))


def _api_server_ips(server: str) -> list[str]:
    """The API server's addresses: routing them into the TUN would cut off the port-forward we ride on."""
    host = urlparse(server).hostname or ""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, None)})
    except OSError:
        return []


def _remap_pb(rule: ProxyRule) -> pb.Remap:
    workload = f"{rule.workload.namespace}/{rule.workload.name}" if rule.workload else ""
    return pb.Remap(
        subnet=str(rule.network), workload=workload, reason="proxy-via" if rule.workload else "auto-resolve"
    )


def _workload_finder(creds: KubeCredentials) -> Callable[[str, str], str | None]:
    """find(namespace, name) -> the workload's kind, or None: what --proxy-via names must exist."""

    def find(namespace: str, name: str) -> str | None:
        api = kubernetes.client.ApiClient(creds.configuration)
        try:
            apps = kubernetes.client.AppsV1Api(api)
            for kind, read in (
                ("Deployment", apps.read_namespaced_deployment),
                ("StatefulSet", apps.read_namespaced_stateful_set),
                ("ReplicaSet", apps.read_namespaced_replica_set),
            ):
                try:
                    read(name, namespace, _request_timeout=10)
                    return kind
                except kubernetes.client.ApiException as exc:
                    if exc.status != 404:
                        raise
            return None
        finally:
            api.close()

    return find


def _read_routes() -> list[OSRoute]:
    with open_reader() as reader:
        return reader.read()


def _conflict_pb(conflict: Conflict) -> pb.Conflict:
    route = conflict.route
    return pb.Conflict(
        subnet=str(conflict.subnet),
        route=str(route.destination),
        device=route.device or "",
        gateway=str(route.gateway) if route.gateway else "",
        description=conflict.describe(),
    )


def _explain(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"the traffic-manager did not answer: {exc.code().name}: {exc.details()}"
    if isinstance(exc, ManagerNotFoundError | PortForwardError | SessionError | CredentialsError | ConflictError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "timed out waiting for the traffic-manager"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def create_session(config: SessionConfig) -> HelperSession:
    return HelperSession(config)
