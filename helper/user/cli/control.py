"""`tether connect|disconnect|status|quit|version`: drive the helper (exit codes: see ``exitcodes``)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from tether.helper.api import helper_pb2 as pb
from tether.helper.api import validate
from tether.helper.api.paths import SOCKET_ENV
from tether.helper.user.cli import exitcodes
from tether.helper.user.client import HelperClient, HelperError, build_connect_request
from tether.helper.user.kubeconfig import KubeconfigError
from tether.helper.user.resolutions import Resolution, ResolutionStore, connect_remembering
from tether.manager.api.version import __version__

CLIENT_NAME = "tether"


def _socket_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--socket",
        type=Path,
        default=None,
        help=f"the helper's socket (default: ${SOCKET_ENV} or /run/tether/helper.sock)",
    )
    return common


def register(commands: argparse._SubParsersAction) -> None:
    common = _socket_options()
    connect = commands.add_parser(
        "connect",
        parents=[common],
        help="connect this workstation to a cluster",
        description="Ask the helper to connect to a cluster: it routes the cluster's subnets and resolves its "
        "names. The kubeconfig is read here, as you, and sent to the helper flattened; exec credential "
        "plugins run as you.",
    )
    connect.add_argument("--context", help="kubeconfig context (default: the current one)")
    connect.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    connect.add_argument("--namespace", default="", help="namespace for single-label names (default: the context's)")
    connect.add_argument("--manager-namespace", default="", help='where the traffic-manager runs (default: "tether")')
    connect.add_argument("--manager-address", default="", metavar="HOST:PORT", help="reach the manager directly")
    connect.add_argument("--also-proxy", action="append", default=[], metavar="CIDR", help="also route this subnet")
    connect.add_argument("--never-proxy", action="append", default=[], metavar="CIDR", help="never route this subnet")
    connect.add_argument(
        "--allow-conflicting-subnets",
        action="append",
        default=[],
        metavar="CIDR",
        help="route cluster subnets inside CIDR even when they overlap an existing route",
    )
    connect.add_argument(
        "--proxy-via",
        action="append",
        default=[],
        metavar="CIDR=WORKLOAD",
        help="hide CIDR (or also/service/pods/all) behind virtual IPs, dialed from WORKLOAD's pod (repeatable)",
    )
    connect.add_argument(
        "--auto-resolve",
        action="store_true",
        help="hide cluster subnets that conflict with existing routes behind virtual IPs",
    )
    connect.add_argument(
        "--virtual-subnet", default="", metavar="CIDR", help="where virtual IPs come from (default 246.246.0.0/16)"
    )
    connect.add_argument(
        "--dns-include-suffix",
        action="append",
        default=[],
        metavar="SUFFIX",
        help="resolve names under SUFFIX (e.g. .corp.example) in the cluster (repeatable)",
    )
    connect.add_argument(
        "--dns-exclude-suffix",
        action="append",
        default=[],
        metavar="SUFFIX",
        help="resolve names under SUFFIX with the normal resolver, never the cluster (repeatable)",
    )
    connect.add_argument(
        "--mapped-namespaces",
        action="append",
        default=[],
        metavar="NS,...",
        help="namespaces whose services resolve by <service>.<namespace> (comma-separated, repeatable)",
    )
    connect.add_argument(
        "--forget-resolution",
        action="store_true",
        help="do not reuse (and forget) the VPN-conflict resolution remembered for this cluster",
    )
    connect.add_argument("--json", action="store_true", help="print the final state as JSON")
    connect.set_defaults(handler=cmd_connect)

    disconnect = commands.add_parser("disconnect", parents=[common], help="disconnect from the cluster")
    disconnect.set_defaults(handler=cmd_disconnect)

    status = commands.add_parser("status", parents=[common], help="show the connection's state")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=cmd_status)

    quit_ = commands.add_parser("quit", parents=[common], help="disconnect and stop the helper")
    quit_.set_defaults(handler=cmd_quit)

    version = commands.add_parser("version", parents=[common], help="show the client's and the helper's versions")
    version.set_defaults(handler=cmd_version)


# --- state rendering ---------------------------------------------------------------------------------


def phase_name(state: pb.State) -> str:
    return pb.State.Phase.Name(state.phase).lower()


def describe_state(state: pb.State) -> dict[str, Any]:
    connected = state.phase != pb.State.DISCONNECTED
    since = (
        dt.datetime.fromtimestamp(state.connected_since_unix, dt.UTC).isoformat()
        if state.connected_since_unix
        else None
    )
    return {
        "phase": phase_name(state),
        "cluster": state.cluster,
        "server": state.server,
        "namespace": state.namespace,
        "manager_version": state.manager_version,
        "routed_subnets": [{"cidr": s.cidr, "via": s.via} for s in state.routed_subnets],
        "never_proxy": list(state.never_proxy),
        "dns_mode": state.dns_mode,
        "dns_server": state.dns_server,
        "cluster_domain": state.cluster_domain,
        "dns_include_suffixes": list(state.dns_include_suffixes),
        "dns_exclude_suffixes": list(state.dns_exclude_suffixes),
        "conflicts": [
            {field: getattr(c, field) for field in ("subnet", "route", "device", "gateway", "description")}
            for c in state.conflicts
        ],
        "remapped": [{"subnet": r.subnet, "workload": r.workload, "reason": r.reason} for r in state.remapped],
        "virtual_subnet": state.virtual_subnet,
        "tun_device": state.tun_device,
        "owner_uid": state.owner_uid if connected else None,
        "connected_since": since,
        "last_error": state.last_error,
    }


def format_state(state: pb.State) -> str:
    info = describe_state(state)
    rows: list[tuple[str, str]] = [("phase", info["phase"])]
    if info["cluster"]:
        rows.append(("cluster", info["cluster"] + (f" ({info['server']})" if info["server"] else "")))
    if info["namespace"]:
        rows.append(("namespace", info["namespace"]))
    if info["manager_version"]:
        rows.append(("manager version", info["manager_version"]))
    if state.phase != pb.State.DISCONNECTED:
        subnets = ", ".join(f"{s['cidr']} ({s['via']})" if s["via"] else s["cidr"] for s in info["routed_subnets"])
        rows.append(("routed subnets", subnets or "-"))
        if info["never_proxy"]:
            rows.append(("never proxied", ", ".join(info["never_proxy"])))
        dns = info["dns_mode"] or "-"
        if info["dns_server"]:
            dns += f", server {info['dns_server']}"
        if info["cluster_domain"]:
            dns += f", domain {info['cluster_domain']}"
        rows.append(("dns", dns))
        if info["dns_include_suffixes"]:
            rows.append(("dns include", " ".join(info["dns_include_suffixes"])))
        if info["dns_exclude_suffixes"]:
            rows.append(("dns exclude", " ".join(info["dns_exclude_suffixes"])))
        if info["tun_device"]:
            rows.append(("device", info["tun_device"]))
        rows.append(("conflicts", "-" if not state.conflicts else ""))
        for conflict in state.conflicts:
            rows.append(("", conflict.description or f"{conflict.subnet} overlaps {conflict.route}"))
        for remap in info["remapped"]:
            dialer = f"dialed from {remap['workload']}" if remap["workload"] else "dialed by the traffic-manager"
            rows.append(("remapped", f"{remap['subnet']} -> {info['virtual_subnet']} ({remap['reason']}, {dialer})"))
        rows.append(("owner", f"uid {info['owner_uid']}"))
        if info["connected_since"]:
            rows.append(("connected since", info["connected_since"]))
    rows.append(("last error", info["last_error"] or "-"))
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key:<{width}}  {value}".rstrip() for key, value in rows)


def _client(args: argparse.Namespace) -> HelperClient:
    return HelperClient(args.socket)


# --- commands ----------------------------------------------------------------------------------------


def _check_connect_args(args: argparse.Namespace) -> list[str]:
    """Client-side checks with the same messages as the helper's; returns the mapped namespaces."""
    for flag in ("also_proxy", "never_proxy", "allow_conflicting_subnets"):
        for value in getattr(args, flag):
            validate.cidr(value, "--" + flag.replace("_", "-"))
    validate.namespace(args.namespace, "--namespace")
    validate.namespace(args.manager_namespace, "--manager-namespace")
    if args.manager_address:
        validate.manager_address(args.manager_address, "--manager-address")
    validate.proxy_vias(args.proxy_via)
    if args.virtual_subnet:
        validate.cidr(args.virtual_subnet, "--virtual-subnet")
    validate.dns_suffixes(args.dns_include_suffix, "--dns-include-suffix")
    validate.dns_suffixes(args.dns_exclude_suffix, "--dns-exclude-suffix")
    mapped = [ns.strip() for item in args.mapped_namespaces for ns in item.split(",") if ns.strip()]
    return validate.namespaces(mapped, "--mapped-namespaces")


def cmd_connect(args: argparse.Namespace) -> int:
    try:
        mapped = _check_connect_args(args)
        request = build_connect_request(
            context=args.context,
            kubeconfig=args.kubeconfig,
            namespace=args.namespace,
            manager_namespace=args.manager_namespace,
            manager_address=args.manager_address,
            also_proxy=args.also_proxy,
            never_proxy=args.never_proxy,
            allow_conflicting_subnets=args.allow_conflicting_subnets,
            proxy_via=args.proxy_via,
            auto_resolve=args.auto_resolve,
            virtual_subnet=args.virtual_subnet,
            dns_include_suffixes=args.dns_include_suffix,
            dns_exclude_suffixes=args.dns_exclude_suffix,
            mapped_namespaces=mapped,
            client_name=CLIENT_NAME,
        )
    except (validate.ValidationError, KubeconfigError) as exc:
        print(f"tether: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    out = sys.stderr if args.json else sys.stdout

    def announce(remembered: Resolution) -> None:
        print(f"  using the resolution remembered for {request.context}: {remembered.describe()}", file=out)

    def run(request: pb.ConnectRequest) -> pb.State:
        with _client(args) as helper:
            state: pb.State | None = None
            for progress in helper.connect(request):
                if progress.step:
                    print(f"  {progress.step}", file=out, flush=True)
                if progress.HasField("state"):
                    state = progress.state
            return state if state is not None else helper.status()

    try:
        state = connect_remembering(
            request, run, ResolutionStore(), forget=args.forget_resolution, on_remembered=announce
        )
    except HelperError as exc:
        return exitcodes.report(exc)
    except KeyboardInterrupt:
        print("tether: interrupted; the helper abandons the connect", file=sys.stderr)
        return exitcodes.INTERRUPTED
    if args.json:
        print(json.dumps(describe_state(state), indent=2))
    else:
        subnets = ", ".join(s.cidr for s in state.routed_subnets) or "none"
        print(f"connected to {state.cluster or request.context} ({state.server or 'unknown server'})")
        print(f"  namespace {state.namespace or '-'}; routed subnets: {subnets}")
        for conflict in state.conflicts:
            print(f"  warning: {conflict.description or conflict.subnet}")
    return exitcodes.OK if state.phase == pb.State.CONNECTED else exitcodes.FAILURE


def cmd_disconnect(args: argparse.Namespace) -> int:
    with _client(args) as helper:
        try:
            state = helper.disconnect()
        except HelperError as exc:
            return exitcodes.report(exc)
    print("disconnected" if state.phase == pb.State.DISCONNECTED else f"state: {phase_name(state)}")
    return exitcodes.OK if state.phase == pb.State.DISCONNECTED else exitcodes.FAILURE


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as helper:
        try:
            state = helper.status()
        except HelperError as exc:
            if args.json:
                print(json.dumps({"phase": "unavailable", "error": exc.message, "fix": exc.fix}, indent=2))
            return exitcodes.report(exc)
    info = describe_state(state)
    remembered = ResolutionStore().get(state.cluster) if state.cluster else None
    info["remembered_resolution"] = remembered.describe() if remembered else None
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(format_state(state))
        if remembered:
            print(f"remembered resolution for {state.cluster}: {remembered.describe()}")
    return exitcodes.OK


def cmd_quit(args: argparse.Namespace) -> int:
    with _client(args) as helper:
        try:
            helper.quit()
        except HelperError as exc:
            return exitcodes.report(exc)
    print("the helper is stopping")
    return exitcodes.OK


def cmd_version(args: argparse.Namespace) -> int:
    print(f"tether {__version__}")
    with _client(args) as helper:
        try:
            info = helper.version()
        except HelperError as exc:
            # The client's version is still printed; the status says the helper is missing (scripts wait on it).
            return exitcodes.report(exc)
    print(f"{info.name or 'tether-helper'} {info.version} (api level {info.api_level})")
    return exitcodes.OK
