"""`tether-manager`: the traffic-manager process that runs inside the cluster."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import kubernetes

from tether.manager.agentauth import AGENT_TOKEN_AUDIENCE, AgentAuthenticator
from tether.manager.agents import AgentRegistry, expire_agents
from tether.manager.api import manager_pb2_grpc as pb_grpc
from tether.manager.api.grpcopts import GrpcOptions, server_options
from tether.manager.api.sidecar import DEFAULT_AGENT_IMAGE, SidecarConfig, manager_address
from tether.manager.api.skew import Side
from tether.manager.api.version import API_LEVEL, __version__
from tether.manager.api.wire import IPAddress
from tether.manager.clusterinfo import ClusterInfoHub, build_cluster_info
from tether.manager.config import ConfigError, ManagerConfig, load_config, read_configmap
from tether.manager.destinations import DestinationPolicy
from tether.manager.discovery.tracker import ClusterNetwork
from tether.manager.discovery.watcher import ClusterDiscovery
from tether.manager.dns import ClusterResolver
from tether.manager.kubereview import KubePodReader, KubeTokenReviewer
from tether.manager.server import AgentService, ManagerService, expire_sessions
from tether.manager.sessions import SessionTable
from tether.manager.tunnel.mux_server import MuxListener
from tether.runtime import eventloop, logs
from tether.runtime.atomicfile import write_atomic

log = logging.getLogger("tether.manager")


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="tether-manager",
        description="Tether's traffic-manager: discovers the cluster's subnets, resolves cluster names "
        "and dials TCP/UDP flows for Tether clients. Runs inside the cluster.",
        epilog="Client settings (Helm values) come from the ConfigMap and from environment variables such as "
        "CLIENT_ROUTING_ALSO_PROXY_SUBNETS, CLIENT_ROUTING_NEVER_PROXY_SUBNETS, "
        "CLIENT_ROUTING_ALLOW_CONFLICTING_SUBNETS, CLIENT_DNS_INCLUDE_SUFFIXES, CLIENT_DNS_EXCLUDE_SUFFIXES, "
        "POD_CIDR_STRATEGY, POD_CIDRS, SERVICE_CIDR and CLUSTER_DOMAIN; the environment wins.",
    )
    parser.add_argument("--version", action="version", version=f"tether-manager {__version__}")
    parser.add_argument(
        "--address",
        default=env("TETHER_MANAGER_ADDRESS", "127.0.0.1"),
        help="where the client API and the tunnel mux listen (TETHER_MANAGER_ADDRESS; default 127.0.0.1: the pod's "
        "loopback, reached only through the API server's port-forward, so only a user allowed to create "
        "pods/portforward in the manager's namespace gets in; another address exposes them without authentication)",
    )
    parser.add_argument(
        "--agent-address",
        default=env("TETHER_AGENT_LISTEN_ADDRESS", ""),
        help="where the agent API listens for tether-agents in other pods (TETHER_AGENT_LISTEN_ADDRESS; default: "
        "--pod-ip, on --port)",
    )
    parser.add_argument(
        "--port", type=int, default=int(env("TETHER_MANAGER_PORT", "8081")), help="gRPC port (default 8081)"
    )
    parser.add_argument(
        "--namespace", default=env("MANAGER_NAMESPACE", "tether"), help="the manager's namespace (MANAGER_NAMESPACE)"
    )
    parser.add_argument("--pod-ip", default=env("POD_IP", ""), help="the manager pod's IP (POD_IP)")
    parser.add_argument(
        "--kubeconfig", default=env("KUBECONFIG"), help="kubeconfig to use; in-cluster config when absent"
    )
    parser.add_argument("--config-map", default="tether-manager", help="ConfigMap holding client settings")
    parser.add_argument("--resolv-conf", type=Path, default=Path("/etc/resolv.conf"), help=argparse.SUPPRESS)
    parser.add_argument("--session-idle-timeout", type=float, default=60.0, help="seconds before an idle session ends")
    parser.add_argument(
        "--agent-image",
        default=env("AGENT_IMAGE", DEFAULT_AGENT_IMAGE),
        help=f"the image of the tether-agent sidecar clients inject (AGENT_IMAGE; default {DEFAULT_AGENT_IMAGE})",
    )
    parser.add_argument(
        "--agent-manager-address",
        default=env("AGENT_MANAGER_ADDRESS", ""),
        metavar="HOST:PORT",
        help="where injected sidecars reach this manager (AGENT_MANAGER_ADDRESS; default: the Service "
        "tether-manager in the manager's namespace, by its cluster DNS name, on --port)",
    )
    parser.add_argument(
        "--agent-token-audience",
        default=env("AGENT_TOKEN_AUDIENCE", AGENT_TOKEN_AUDIENCE),
        help="the audience of the service-account tokens tether-agents prove their pod with, checked by "
        f"TokenReview (AGENT_TOKEN_AUDIENCE; default {AGENT_TOKEN_AUDIENCE})",
    )
    parser.add_argument("--ready-file", type=Path, help="write this file once serving")
    parser.add_argument("--log-format", choices=("json", "text"), default=env("TETHER_LOG_FORMAT", "json"))
    parser.add_argument("--log-level", default=env("TETHER_LOG_LEVEL", "info"))
    return parser


def kube_api_client(kubeconfig: str | None) -> kubernetes.client.ApiClient:
    configuration = kubernetes.client.Configuration()
    if kubeconfig:
        kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    else:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    return kubernetes.client.ApiClient(configuration)


def load_settings(api: kubernetes.client.ApiClient, namespace: str, config_map: str) -> ManagerConfig:
    core = kubernetes.client.CoreV1Api(api)
    deadline = time.monotonic() + 30
    while True:
        try:
            data = read_configmap(core, namespace, config_map)
            break
        except kubernetes.client.ApiException:
            raise
        except Exception as exc:  # the API server may still be starting
            if time.monotonic() > deadline:
                raise SystemExit(f"tether-manager: cannot reach the Kubernetes API: {exc}") from None
            time.sleep(1)
    return load_config(os.environ, data)


async def serve(
    args: argparse.Namespace, config: ManagerConfig, api: kubernetes.client.ApiClient, resolver: ClusterResolver
) -> int:
    loop = asyncio.get_running_loop()
    hub = ClusterInfoHub()
    limits = config.limits()
    sessions = SessionTable(idle_timeout=args.session_idle_timeout, per_address=limits.sessions_per_address)
    sidecar = SidecarConfig(
        image=args.agent_image,
        manager=args.agent_manager_address or manager_address(args.namespace, config.cluster_domain, args.port),
        token_audience=args.agent_token_audience,
    )
    if os.environ.get("AGENT_INJECTION"):
        # The manager cannot tell which user a port-forwarded client is, so it patches no workload for one.
        log.warning("AGENT_INJECTION is ignored: clients inject the tether-agent with their users' own credentials")
    agents = AgentRegistry(idle_timeout=args.session_idle_timeout)

    def publish(network: ClusterNetwork) -> None:
        if hub.publish(build_cluster_info(network, config, args.pod_ip, args.port, sidecar)):
            log.info(
                "cluster subnets",
                extra={
                    "service_subnet": str(network.service_subnet),
                    "pod_subnets": [str(s) for s in network.pod_subnets],
                },
            )

    discovery = ClusterDiscovery(
        api, config, args.namespace, args.pod_ip, lambda network: loop.call_soon_threadsafe(publish, network)
    )
    destinations = DestinationPolicy(pod_ip=_pod_address(args.pod_ip), allowed=config.tunnel_allow_destinations)
    identity = config.identity()
    service = ManagerService(
        sessions,
        hub,
        resolver,
        agents,
        destinations=destinations,
        limits=limits,
        identity=identity,
        min_client_api_level=config.min_client_level(),
    )
    if identity != Side(__version__, API_LEVEL):
        log.warning(
            "test hook: reporting another version", extra={"version": identity.version, "api_level": identity.api_level}
        )
    authenticator = AgentAuthenticator(KubeTokenReviewer(api), KubePodReader(api), args.agent_token_audience)
    agent_service = AgentService(agents, authenticator, service.intercepts)
    servers = _grpc_servers(service, agent_service, args, server_options(limits.flows_per_session))
    if servers is None:
        return 1
    bound = args.port
    mux = await _start_mux(service, args, config)
    discovery.start()
    for server in servers:
        await server.start()
    expiry = asyncio.ensure_future(expire_sessions(sessions, max(1.0, args.session_idle_timeout / 4)))
    agent_expiry = asyncio.ensure_future(expire_agents(agents, max(1.0, args.session_idle_timeout / 4)))
    log.info(
        "serving",
        extra={
            "address": args.address,
            "agent_address": args.agent_address or args.pod_ip,
            "port": bound,
            "tunnel_mux_port": service.tunnel_mux_port,
            "version": __version__,
            "api_level": API_LEVEL,
            "min_client_api_level": service.min_client_api_level,
        },
    )
    if args.ready_file:
        # Atomic, so whoever polls for the file never reads it empty; a marker of this run only: no fsync.
        write_atomic(args.ready_file, f"{bound}\n", fsync=False)

    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("stopping")
    expiry.cancel()
    agent_expiry.cancel()
    if mux is not None:
        mux.close()
    await asyncio.gather(*(server.stop(grace=2) for server in servers))
    discovery.stop()
    return 0


def _grpc_servers(
    service: ManagerService, agent_service: AgentService, args: argparse.Namespace, options: GrpcOptions
) -> list[Any] | None:
    """The client API on --address and the agent API on the pod network; one server when both are one address.

    They are apart because they are reached differently: clients through the API server's port-forward to the
    pod's loopback (the API server checks who may), agents directly from other pods (their token says who).
    """
    agent_address = args.agent_address or args.pod_ip
    if not agent_address:
        log.warning("no --pod-ip nor --agent-address: tether-agents in other pods cannot reach this manager")
        agent_address = args.address
    client_server = grpc.aio.server(options=options)
    pb_grpc.add_ManagerServicer_to_server(service, client_server)
    listening = [(client_server, args.address)]
    if agent_address == args.address:
        pb_grpc.add_AgentsServicer_to_server(agent_service, client_server)
    else:
        agent_server = grpc.aio.server(options=options)
        pb_grpc.add_AgentsServicer_to_server(agent_service, agent_server)
        listening.append((agent_server, agent_address))
    for server, address in listening:
        host = f"[{address}]" if ":" in address else address
        if server.add_insecure_port(f"{host}:{args.port}") == 0:
            log.error("cannot listen", extra={"address": address, "port": args.port})
            return None
    return [server for server, _ in listening]


async def _start_mux(service: ManagerService, args: argparse.Namespace, config: ManagerConfig) -> MuxListener | None:
    """Serve the tunnel mux when configured; without it (or when its port is taken) clients use the gRPC Tunnel."""
    port = config.tunnel_mux_port
    if not port:
        return None
    if port == args.port:
        log.error("the tunnel mux port is the gRPC port; serving no tunnel mux", extra={"port": port})
        return None
    flows = service.flows
    listener = MuxListener(flows.check_session, flows.serve_stream, limits=flows.limits)
    try:
        service.tunnel_mux_port = await listener.start(args.address, port)
    except OSError as exc:
        log.error("cannot listen for the tunnel mux; clients will use the gRPC Tunnel: %s", exc, extra={"port": port})
        return None
    return listener


def _pod_address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text) if text else None
    except ValueError:
        raise SystemExit(f'tether-manager: --pod-ip "{text}" is not an IP address') from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    try:
        api = kube_api_client(args.kubeconfig)
        config = load_settings(api, args.namespace, args.config_map)
    except ConfigError as exc:
        print(f"tether-manager: invalid configuration: {exc}", file=sys.stderr)
        return 2
    except (kubernetes.config.ConfigException, OSError) as exc:
        print(f"tether-manager: cannot load Kubernetes credentials: {exc}", file=sys.stderr)
        return 2
    try:
        resolver = ClusterResolver.from_resolv_conf(args.resolv_conf, config.cluster_domain)
    except (OSError, ValueError) as exc:
        print(f"tether-manager: cannot use {args.resolv_conf}: {exc}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        return eventloop.run(serve(args, config, api, resolver))
    return 0


if __name__ == "__main__":
    sys.exit(main())
