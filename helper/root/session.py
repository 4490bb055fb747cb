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
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path

import grpc
from dnslib import RCODE, RR, DNSBuffer, DNSError

from tether.helper.api import helper_pb2 as pb
from tether.helper.api import validate
from tether.helper.root.connection import Connection
from tether.helper.root.dns.resolvers.base import DNS_BYPASS_MARK, ResolverSettings, listen_address
from tether.helper.root.dns.resolvers.choose import Choice, decide, implementation
from tether.helper.root.dns.resolvers.probe import probe_host
from tether.helper.root.dns.rules import RulesConfig, routing_domains
from tether.helper.root.dns.server import DNSServer
from tether.helper.root.dns.upstream import UpstreamAddress
from tether.helper.root.intercept.origin import (
    choose_origin,
    cluster_subnets,
    dns_via,
    manager_addresses,
    rules_namespace,
)
from tether.helper.root.intercept.pod_volumes import PodVolumes
from tether.helper.root.intercept.service import InterceptService
from tether.helper.root.journal import Journal
from tether.helper.root.kube import cluster, inject
from tether.helper.root.kube.credentials import CredentialsError, KubeCredentials, load_credentials
from tether.helper.root.plan import Plan, Remapping, allowed_conflicts, plan_dns, plan_routes, suggested_conflicts
from tether.helper.root.policy import (
    DEFAULT_POLICY_PATH,
    PolicyError,
    check_manager_address,
    forbidden_ranges,
    host_ranges,
    mappable_namespaces,
)
from tether.helper.root.policy_file import load_policy
from tether.helper.root.proxyvia import (
    ProxyViaError,
    ProxyViaSpec,
    Rewriter,
    VipTable,
    check_workloads,
    destination_mapper,
    parse_proxy_vias,
)
from tether.helper.root.proxyvia.vips import VirtualSubnetError
from tether.helper.root.recursion import (
    direct_route_candidates,
    dns_recursion_mode,
    local_cluster,
    own_addresses,
    probe_name,
    probe_target,
    refused_sources,
)
from tether.helper.root.routing import Conflict, ConflictError, RouteMonitor, find_conflicts, open_applier, open_reader
from tether.helper.root.routing.conflicts import OSRoute
from tether.helper.root.routing.table import IPAddress
from tether.helper.root.server.caller import Caller
from tether.helper.root.server.session_api import SessionConfig, SessionError
from tether.helper.root.state import connected_state, explain, failed_state
from tether.helper.root.tunnel.manager_link import ManagerLink, client_info
from tether.helper.root.vif.device import open_tun
from tether.helper.root.vif.engine import VifEngine
from tether.helper.root.vif.netstack.config import NetStackConfig
from tether.helper.root.vif.netstack.stack import NetStack
from tether.helper.root.volumes.sshfs import Owner
from tether.manager.api import manager_pb2 as mpb
from tether.manager.api.wire import subnets_from_pb

log = logging.getLogger("tether.helper.root.session")

DEFAULT_MANAGER_NAMESPACE = "tether"
DEFAULT_MTU = 65000
# How long the recursion probes may take: a TCP connect to the manager's pod, a DNS lookup through the manager.
DIRECT_PROBE_TIMEOUT = 1.5
DNS_PROBE_TIMEOUT = 3.0
# The netstack holds an ACK for received data this long, so a request's ACK rides on its response.
DELAYED_ACK = 0.002
Phase = pb.State.Phase


class HelperSession:
    def __init__(self, config: SessionConfig) -> None:
        self._config = config
        self._mtu = int(config.options.get("mtu", DEFAULT_MTU))
        self._tun_name = config.options.get("tun-name", "tether%d")
        self._journal_path = Path(config.options.get("journal", str(config.runtime_dir / "journal.json")))
        self._policy_path = Path(config.options.get("policy", DEFAULT_POLICY_PATH))
        self._state = pb.State(phase=pb.State.DISCONNECTED, previous_session=config.recovered)
        self._recovered = config.recovered  # told once, as the first connect's first step
        self._watchers: set[asyncio.Queue[pb.State]] = set()
        self._connection: Connection | None = None
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
        connection = Connection(request=request, caller=caller)
        self._connection = connection
        self._publish(pb.State(phase=pb.State.CONNECTING, cluster=request.context))
        self._connect_task = asyncio.ensure_future(self._build(connection, progress.put_nowait))
        self._connect_task.add_done_callback(lambda _: progress.put_nowait(None))
        try:
            if self._recovered:
                recovered, self._recovered = self._recovered, ""
                yield pb.ConnectProgress(step=f"recovered: {recovered}")
            while (step := await progress.get()) is not None:
                yield pb.ConnectProgress(step=step)
            await self._connect_task  # raises the failure, if any
        except BaseException as exc:
            credentials = connection.credentials  # the teardown forgets them; the error names their server and proxy
            await self._teardown(connection)
            error = explain(exc, credentials)
            if isinstance(exc, asyncio.CancelledError | GeneratorExit):
                error = "the connect was cancelled"
            self._publish(failed_state(connection, error))
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

    async def _build(self, c: Connection, step: Callable[[str], None]) -> None:
        request = c.request
        try:
            # Read at every connect, so that an admin's edit applies without restarting the helper.
            c.policy = await asyncio.to_thread(load_policy, self._policy_path)
            check_manager_address(c.caller.uid, request.manager_address, c.policy)
        except PolicyError as exc:
            raise SessionError(str(exc), grpc.StatusCode.PERMISSION_DENIED) from None
        step("reading the kubeconfig")
        try:
            c.credentials = await asyncio.to_thread(
                partial(load_credentials, proxy_environment=validate.proxy_environment(request.proxy_environment)),
                request.kubeconfig,
                c.caller,
                dict(request.environment),
                request.context or None,
            )
        except (CredentialsError, validate.ValidationError) as exc:
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
        c.intercepts = InterceptService(
            c.link, creds.configuration, inject.sidecar_config(info, manager_ns), c.namespace, name,
            on_change=lambda: self._intercepts_changed(c),
            volumes=PodVolumes(c.opener, Owner(c.caller.uid, c.caller.gid), lambda: c.journal),
        )  # fmt: skip

        try:
            specs = parse_proxy_vias(request.proxy_via)
            if specs:
                step("checking the --proxy-via workloads")
                find = partial(cluster.workload_kind, creds.configuration)
                specs = await asyncio.to_thread(check_workloads, specs, c.namespace, find)
                await self._inject_agents(c, specs, manager_ns, step)
            c.remap = Remapping(VipTable(request.virtual_subnet or None), specs, namespace=c.namespace)
        except (ProxyViaError, VirtualSubnetError) as exc:
            raise SessionError(str(exc), grpc.StatusCode.INVALID_ARGUMENT) from None

        if request.mapped_namespaces:
            c.mapped_namespaces = frozenset(request.mapped_namespaces)
        else:
            c.mapped_namespaces, left_out = mappable_namespaces(await self._namespaces(creds, c.namespace), ())
            c.namespace_notes = tuple(
                f'namespace "{ns}" is not mapped as a DNS suffix: "{ns}" is a public suffix '
                "(name it in --mapped-namespaces to map it anyway)"
                for ns in left_out
            )
        c.never_route = tuple(await asyncio.to_thread(cluster.api_server_addresses, creds.server, creds.proxy))

        step("checking the routing table for conflicts")
        routes = await asyncio.to_thread(_read_routes)
        manager_ips = await asyncio.to_thread(_manager_addresses, request.manager_address)
        c.forbidden = tuple(forbidden_ranges(host_ranges(routes), c.policy, manager_ips))
        c.own_addresses = tuple(own_addresses(routes))
        await self._check_local_cluster(c, info, routes, step)
        try:
            self._planned(c, info)  # the policy's refusals, before anything is built
        except PolicyError as exc:
            raise SessionError(str(exc)) from None
        conflicts = await self._conflicts(c, info, routes)
        if conflicts and request.auto_resolve:
            c.remap.auto_subnets = tuple(ConflictError(conflicts).subnets)
            log.info("remapping conflicting subnets", extra={"subnets": [str(x) for x in c.remap.auto_subnets]})
            conflicts = await self._conflicts(c, info, routes)
        if conflicts:
            c.conflicts = tuple(conflicts)
            raise ConflictError(conflicts, suggested=suggested_conflicts(info))

        step("creating the network device")
        c.journal = Journal(self._journal_path)
        c.device = await asyncio.to_thread(open_tun, self._tun_name, mtu=self._mtu, journal=c.journal)
        offload = getattr(c.device, "checksum_offload", False)  # the TUN sums TCP/UDP checksums for us (tun_linux)
        stack = NetStack(NetStackConfig(mtu=self._mtu, partial_checksums=offload, delayed_ack=DELAYED_ACK))
        assert c.remap.vips is not None
        c.origin.inner = destination_mapper(c.remap.vips)  # VIPs first, then the intercept's origin
        c.origin.cluster, c.origin.manager = cluster_subnets(info), manager_addresses(info)
        c.opener.map_destination = c.origin
        c.engine = VifEngine(c.device, stack, c.opener.open, c.opener)
        c.engine.start()

        step("starting the DNS server")
        c.dns_choice = await _choose_resolver(c.request.dns_mode)
        c.resolver = implementation(c.dns_choice.mode)(journal=c.journal)
        upstreams = c.resolver.upstream_nameservers()
        if not upstreams:
            raise SessionError("the host's resolv.conf names no nameserver to forward non-cluster names to")
        c.never_route += tuple(str(ip) for ip in upstreams)
        planned, c.dns_rules = self._planned(c, info)
        c.plan, c.rules, c.route_notes = planned.routes, planned.rules, planned.notes
        c.rewriter = Rewriter(c.remap.vips, c.rules)
        c.dns = DNSServer(
            partial(_lookup, c),
            c.dns_rules,
            UpstreamAddress(str(upstreams[0])),
            mark=DNS_BYPASS_MARK,
            rewrite=c.rewriter,
        )
        host, port = await c.dns.listen(*listen_address(c.resolver))  # NRPT needs port 53, see windows_nrpt

        step(f"routing {len(c.plan.routes)} subnets through {c.device.name}")
        c.applier = open_applier(c.device.name, journal=c.journal)
        await c.applier.apply_async(c.plan)
        self._refuse_loops(c, info)

        step("pointing the system resolver at the cluster")
        settings = ResolverSettings(
            server=host,
            port=port,
            tun_name=c.device.name,
            routing_domains=routing_domains(c.dns_rules),
            search_domain=c.dns_rules.search_domain,
        )
        await asyncio.to_thread(c.resolver.apply, settings)
        c.dns_address = f"{host}:{port}"
        # Only now: a cluster that loops reaches us through the system resolver just pointed at us.
        step("checking whether the cluster's DNS forwards to this machine")
        await self._check_dns_recursion(c)

        c.monitor = RouteMonitor(lambda routes: self._on_routes(c, routes))
        await c.monitor.start()
        c.link.supervise(
            lambda new: self._on_cluster_info(c, new), lambda status, detail: self._on_link(c, status, detail)
        )
        self._publish(connected_state(c))
        log.info(
            "connected",
            extra={"uid": c.caller.uid, "cluster": cluster_name, "routes": [str(r) for r in c.plan.routes]},
        )

    async def _teardown(self, c: Connection) -> None:
        """Undo whatever of `c` exists, in reverse order; every step runs even when an earlier one fails."""

        def threaded(blocking: Callable[[], object]) -> Callable[[], Awaitable[object]]:
            return partial(asyncio.to_thread, blocking)

        steps: list[tuple[str, Callable[[], Awaitable[object]] | None]] = [
            ("route monitor", c.monitor.stop if c.monitor else None),
            ("resolver", threaded(c.resolver.revert) if c.resolver else None),
            ("routes", c.applier.clear_async if c.applier else None),
            ("vif", c.engine.stop if c.engine else None),
            ("dns", c.dns.close if c.dns else None),
            ("device", threaded(c.device.close) if c.device else None),
            ("intercepts", c.intercepts.close if c.intercepts else None),
            ("manager", c.link.close if c.link else None),
            ("credentials", threaded(c.credentials.close) if c.credentials else None),
        ]
        for what, undo in steps:
            if undo is None:
                continue
            try:
                await undo()
            except Exception:
                log.exception("undoing %s failed", what)
        if c.journal is not None:
            c.journal.discard()
        c.resolver = c.applier = c.engine = c.dns = c.device = c.link = c.credentials = c.journal = None
        c.intercepts = None
        c.monitor = None

    # --- live changes ---

    async def _on_cluster_info(self, c: Connection, info: mpb.ClusterInfo) -> None:
        if c.info == info:
            return
        try:
            planned, rules = self._planned(c, info)
        except PolicyError as exc:
            # Keep what is applied: the change is refused as a whole, never half-applied.
            log.warning("a cluster change breaks the policy and was not applied: %s", exc)
            self._publish(connected_state(c, last_error=f"the cluster's new settings were not applied: {exc}"))
            return
        c.info = info
        c.origin.cluster, c.origin.manager = cluster_subnets(info), manager_addresses(info)
        plan = planned.routes
        c.rules, c.route_notes = planned.rules, planned.notes
        if plan != c.plan and c.applier is not None:
            await c.applier.apply_async(plan)
            c.plan = plan
            log.info("routes changed", extra={"routes": [str(r) for r in plan.routes]})
        if c.engine is not None:
            self._refuse_loops(c, info)
        if rules != c.dns_rules and c.dns is not None:
            c.dns.set_rules(rules)
            c.dns_rules = rules
        if c.rewriter is not None and c.rewriter.set_rules(c.rules) and c.dns is not None:
            c.dns.flush()
        self._publish(connected_state(c))

    def _on_link(self, c: Connection, status: str, detail: str) -> None:
        if status == "connected":
            link = c.link
            assert link is not None
            c.opener.stub, c.opener.session_id, c.opener.mux = link.stub, link.session_id, link.mux
            self._publish(connected_state(c))
        else:
            c.opener.session_id = ""
            c.opener.mux = None
            self._publish(connected_state(c, pb.State.RECONNECTING, detail))

    async def _on_routes(self, c: Connection, routes: list[OSRoute]) -> None:
        """A route changed while connected (a VPN came up or went away): re-check and report."""
        if c.info is None:
            return
        conflicts = tuple(await self._conflicts(c, c.info, routes))
        if conflicts != c.conflicts:
            c.conflicts = conflicts
            for conflict in conflicts:
                log.warning("route conflict appeared: %s", conflict.describe())
            self._publish(connected_state(c))

    async def _conflicts(self, c: Connection, info: mpb.ClusterInfo, routes: list[OSRoute]) -> list[Conflict]:
        plan = self._planned(c, info)[0].routes
        own = (c.device.name,) if c.device else ()
        return find_conflicts(plan.routes, routes, own_devices=own, allowed=allowed_conflicts(c.request, c.policy))

    # --- recursion checks (decisions in recursion.py) ---

    async def _check_local_cluster(
        self, c: Connection, info: mpb.ClusterInfo, routes: list[OSRoute], step: Callable[[str], None]
    ) -> None:
        """Is the cluster on this machine? A route to its pods on another device than the default route's,
        and the manager's pod answering a TCP connect over it, say so; then its pod subnets stay off the TUN."""
        candidates = direct_route_candidates(subnets_from_pb(info.pod_subnets), routes)
        manager_ip = ipaddress.ip_address(info.manager_pod_ip) if info.manager_pod_ip else None
        target = probe_target(manager_ip, candidates)
        reached = None
        if target is not None and info.manager_port:
            step(f"checking whether the cluster's pods are reachable directly ({target})")
            if await _tcp_reachable(str(target), info.manager_port, DIRECT_PROBE_TIMEOUT):
                reached = target
        c.local = local_cluster(candidates, routes, reached=reached)
        log.info(
            "connect recursion check",
            extra={
                "candidates": {str(k): v.describe() for k, v in candidates.items()},
                "probed": str(target) if target else "",
                "reached": reached is not None,
                "mode": c.local.mode,
            },
        )

    def _refuse_loops(self, c: Connection, info: mpb.ClusterInfo) -> None:
        c.refused_sources = tuple(refused_sources(subnets_from_pb(info.pod_subnets), c.local, c.own_addresses))
        if c.engine is not None:
            c.engine.stack.set_refused_sources(c.refused_sources)

    async def _check_dns_recursion(self, c: Connection) -> None:
        """Ask the cluster for a name only we know; if it reaches our own DNS server, the cluster's DNS loops."""
        assert c.link is not None and c.dns is not None
        name = probe_name()
        answered = False
        try:
            async with asyncio.timeout(DNS_PROBE_TIMEOUT):
                await c.link.lookup_dns(name, 1)  # type A
            answered = True
        except (TimeoutError, grpc.aio.AioRpcError, ConnectionError) as exc:
            log.info("the DNS recursion probe got no answer: %s", exc)
        came_back = c.dns.probe_came_back(name)
        c.dns_recursion = c.dns.recursion = dns_recursion_mode(answered=answered, came_back=came_back)
        log.info(
            "dns recursion check",
            extra={"probe": name, "answered": answered, "came_back": came_back, "mode": c.dns_recursion},
        )

    # --- planning (pure, in plan.py) with the connection's choices ---

    def _planned(self, c: Connection, info: mpb.ClusterInfo) -> tuple[Plan, RulesConfig]:
        """The routes and DNS rules for `info`; PolicyError (nothing changed) when `info` breaks the policy."""
        planned = plan_routes(
            info, c.request, c.remap, c.never_route, policy=c.policy, forbidden=c.forbidden, direct=c.local.direct
        )
        namespace = rules_namespace(c.origin.origin, c.namespace)  # an intercepted pod's, while intercepting
        rules = plan_dns(
            info, c.request, namespace=namespace, mapped_namespaces=c.mapped_namespaces, routes=planned.routes
        )
        return planned, rules

    async def _inject_agents(
        self, c: Connection, specs: list[ProxyViaSpec], manager_ns: str, step: Callable[[str], None]
    ) -> None:
        """Give each --proxy-via workload a tether-agent, patching it with the caller's own credentials.

        Done here, not by the manager: the manager cannot tell which user a port-forwarded client is, so
        the API server is left to decide, with the user's RBAC (patch on the workload).
        """
        assert c.credentials is not None and c.info is not None
        sidecar = inject.sidecar_config(c.info, manager_ns)
        workloads = [spec.ref(c.namespace) for spec in specs]
        try:
            for line in await asyncio.to_thread(inject.ensure_agents, c.credentials.configuration, workloads, sidecar):
                log.info(line, extra={"uid": c.caller.uid})
                step(line)
        except inject.InjectionForbiddenError as exc:
            raise SessionError(str(exc), grpc.StatusCode.PERMISSION_DENIED) from None
        except inject.InjectionError as exc:
            raise SessionError(str(exc), grpc.StatusCode.FAILED_PRECONDITION) from None

    async def _namespaces(self, creds: KubeCredentials, fallback: str) -> frozenset[str]:
        """Namespaces whose `<svc>.<ns>` names go to the cluster: all the user may list, else their own."""
        try:
            return await asyncio.to_thread(cluster.list_namespaces, creds.configuration) | {fallback}
        except Exception as exc:
            log.info("cannot list namespaces (%s); mapping only %s", exc, fallback)
            return frozenset({fallback})

    # --- intercepts (see tether.helper.root.intercept.service) ---

    def _intercepts(self) -> InterceptService:
        c = self._connection
        if c is None or c.intercepts is None or self._state.phase not in (pb.State.CONNECTED, pb.State.RECONNECTING):
            raise SessionError("not connected: tether connect first", grpc.StatusCode.FAILED_PRECONDITION)
        return c.intercepts

    async def intercept(self, request: pb.InterceptRequest, caller: Caller) -> pb.InterceptReply:
        return await self._intercepts().intercept(request)

    async def leave(self, request: pb.LeaveRequest, caller: Caller) -> pb.State:
        await self._intercepts().leave(request)
        return self._state

    async def list_workloads(self, request: pb.ListWorkloadsRequest, caller: Caller) -> pb.WorkloadList:
        return await self._intercepts().list_workloads(request.namespace)

    async def uninstall_agents(self, request: pb.UninstallAgentsRequest, caller: Caller) -> pb.UninstallAgentsReply:
        return pb.UninstallAgentsReply(removed=await self._intercepts().uninstall_agents(request))

    def _intercepts_changed(self, c: Connection) -> None:
        """An intercept started, became active or ended: the machine's new cluster flows and cluster names
        now go through the first active intercept's pod, or (none left) the manager again."""
        if c.intercepts is None:
            return
        origin = choose_origin(c.intercepts.table.all())
        if origin != c.origin.origin:
            c.origin.origin = origin
            log.info("connection origin", extra={"origin": origin.describe() if origin else "the traffic-manager"})
            if c.dns is not None and c.info is not None:
                with contextlib.suppress(PolicyError):  # the policy was checked with these routes already
                    c.dns_rules = self._planned(c, c.info)[1]
                    c.dns.set_rules(c.dns_rules)
                c.dns.flush()  # answers cached from the other resolver are not this pod's
        if self._connection is c:
            self._publish(self._state)

    def _publish(self, state: pb.State) -> None:
        c = self._connection
        if c is not None and c.intercepts is not None and state.phase != pb.State.DISCONNECTED:
            state = c.intercepts.stamp(state)
            origin = c.origin.origin
            state.origin = origin.describe() if origin is not None else ""
        self._state = state
        for mailbox in self._watchers:
            if mailbox.full():
                mailbox.get_nowait()
            mailbox.put_nowait(state)


async def _lookup(c: Connection, name: str, qtype: int) -> tuple[int, list[RR]]:
    """The DNS server's cluster lookups, over whatever link the connection has now (it changes on reconnect)."""
    if c.link is None:
        raise ConnectionError("not connected to the traffic-manager")
    rcode, answers = await c.link.lookup_dns(name, qtype, dns_via(c.origin.origin))
    try:
        return rcode, [RR.parse(DNSBuffer(raw)) for raw in answers]
    except DNSError as exc:
        # The manager's bytes, not our failure: a clear line and SERVFAIL, not a traceback.
        log.warning("the traffic-manager answered %s with a malformed record: %s", name, exc)
        return RCODE.SERVFAIL, []


def _manager_addresses(address: str) -> list[IPAddress]:
    """The addresses a --manager-address names (none without one): they must stay off the TUN."""
    if not address:
        return []
    host = address.rpartition(":")[0].strip("[]")
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return []  # dialing it will fail with a clearer message
    return sorted({ipaddress.ip_address(str(i[4][0]).partition("%")[0]) for i in infos}, key=lambda a: (a.version, a))


async def _tcp_reachable(host: str, port: int, timeout: float) -> bool:
    """Whether a TCP connect to host:port succeeds over the OS's routes (the TUN does not exist yet)."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _read_routes() -> list[OSRoute]:
    with open_reader() as reader:
        return reader.read()


def create_session(config: SessionConfig) -> HelperSession:
    return HelperSession(config)


async def _choose_resolver(forced: str) -> Choice:
    """Probe the host and pick its resolver mode (or take the forced one); the probes are logged either way."""
    probes = await probe_host()
    log.info("resolver probes", extra={"probes": dict(probes.summary()), "forced": forced})
    choice = decide(probes, forced)
    log.info("resolver mode %s: %s", choice.mode, choice.reason)
    return choice
