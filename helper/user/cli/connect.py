"""`tether connect`: read the kubeconfig as the user, check the request, and drive the helper's connect.

Apart from ``control`` because only this command needs the kubeconfig reader and the resolution store.
"""

from __future__ import annotations

import argparse
import json
import sys

from tether.helper.api import helper_pb2 as pb
from tether.helper.api import validate
from tether.helper.api.dnsmodes import Mode
from tether.helper.user.cli import exitcodes
from tether.helper.user.cli.control import client, describe_state, socket_options
from tether.helper.user.client import HelperError, build_connect_request
from tether.helper.user.kubeconfig import KubeconfigError
from tether.helper.user.resolutions import Resolution, ResolutionStore, connect_remembering

CLIENT_NAME = "tether"


def register(commands: argparse._SubParsersAction) -> None:
    common = socket_options()
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
        "--dns-mode",
        default="",
        metavar="MODE",
        help="use this resolver mode instead of the one the helper's probes choose "
        f"({', '.join(m.value for m in Mode)}; see tether status)",
    )
    connect.add_argument(
        "--forget-resolution",
        action="store_true",
        help="do not reuse (and forget) the VPN-conflict resolution remembered for this cluster",
    )
    connect.add_argument("--json", action="store_true", help="print the final state as JSON")
    connect.set_defaults(handler=cmd_connect)


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
    validate.dns_suffixes(args.dns_include_suffix, "--dns-include-suffix", allow_public=False)
    validate.dns_suffixes(args.dns_exclude_suffix, "--dns-exclude-suffix")
    validate.dns_mode(args.dns_mode, field="--dns-mode")
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
            dns_mode=args.dns_mode,
        )
    except (validate.ValidationError, KubeconfigError) as exc:
        print(f"tether: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    out = sys.stderr if args.json else sys.stdout

    def announce(remembered: Resolution) -> None:
        print(f"  using the resolution remembered for {request.context}: {remembered.describe()}", file=out)

    def run(request: pb.ConnectRequest) -> pb.State:
        with client(args) as helper:
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
