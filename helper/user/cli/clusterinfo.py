"""`tether cluster-info`: ask a cluster's traffic-manager what it discovered."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import grpc
import kubernetes

from tether.helper.cluster.manager_dial import ManagerConnection, ManagerNotFoundError
from tether.helper.cluster.portforward import PortForwardError
from tether.manager.api import manager_pb2 as pb
from tether.manager.api import manager_pb2_grpc as pb_grpc
from tether.manager.api.version import API_LEVEL, __version__
from tether.manager.api.wire import ip_from_bytes, subnet_from_pb, subnets_from_pb


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("cluster-info", help="show what a cluster's traffic-manager discovered")
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    parser.add_argument("--manager-namespace", default="tether", help="where the traffic-manager runs")
    parser.add_argument("--namespace", default="default", help="namespace for single-label names")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=run)


def describe(info: pb.ClusterInfo, version: pb.VersionInfo) -> dict[str, object]:
    return {
        "manager_version": version.version,
        "service_subnet": str(subnet_from_pb(info.service_subnet)) if info.HasField("service_subnet") else None,
        "service_subnets": [str(s) for s in subnets_from_pb(info.service_subnets)],
        "pod_subnets": [str(s) for s in subnets_from_pb(info.pod_subnets)],
        "manager_pod_ip": str(ip_from_bytes(info.manager_pod_ip)) if info.manager_pod_ip else None,
        "cluster_domain": info.dns.cluster_domain,
        "dns_include_suffixes": list(info.dns.include_suffixes),
        "dns_exclude_suffixes": list(info.dns.exclude_suffixes),
        "also_proxy_subnets": [str(s) for s in subnets_from_pb(info.routing.also_proxy_subnets)],
        "never_proxy_subnets": [str(s) for s in subnets_from_pb(info.routing.never_proxy_subnets)],
        "allow_conflicting_subnets": [str(s) for s in subnets_from_pb(info.routing.allow_conflicting_subnets)],
    }


async def fetch(configuration: kubernetes.client.Configuration, manager_ns: str, namespace: str) -> dict[str, object]:
    connection = ManagerConnection(configuration, manager_ns)
    try:
        stub = pb_grpc.ManagerStub(await connection.open())
        version = await stub.Version(pb.Empty(), timeout=10)
        session = await stub.ArriveAsClient(
            pb.ClientInfo(name="tether cluster-info", namespace=namespace, version=__version__, api_level=API_LEVEL),
            timeout=10,
        )
        try:
            watch = stub.WatchClusterInfo(session, timeout=30)
            info = await watch.read()
            watch.cancel()
        finally:
            await stub.Depart(session, timeout=5)
        result = describe(info, version)
        assert connection.pod is not None
        result["manager_pod"] = f"{connection.pod.namespace}/{connection.pod.name}"
        return result
    finally:
        await connection.close()


def run(args: argparse.Namespace) -> int:
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_kube_config(
            config_file=args.kubeconfig, context=args.context, client_configuration=configuration
        )
    except (kubernetes.config.ConfigException, OSError) as exc:
        print(f"tether: cannot use kubeconfig: {exc}", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(fetch(configuration, args.manager_namespace, args.namespace))
    except (ManagerNotFoundError, PortForwardError) as exc:
        print(f"tether: {exc}", file=sys.stderr)
        return 3
    except grpc.aio.AioRpcError as exc:
        print(f"tether: the traffic-manager did not answer: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 3
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        width = max(len(k) for k in result)
        for key, value in result.items():
            shown = ", ".join(value) if isinstance(value, list) else value
            print(f"{key.replace('_', ' '):<{width}}  {shown if shown not in (None, '') else '-'}")
    return 0
