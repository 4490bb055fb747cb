"""`tether disconnect|status|quit|version`: drive the helper, and render its state (exit codes: ``exitcodes``).

Kept light: these commands load no kubeconfig reader and no Kubernetes client (``connect`` lives apart).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

from tether.helper.api import helper_pb2 as pb
from tether.helper.api import intercepts
from tether.helper.api.paths import SOCKET_ENV, journal_for
from tether.helper.user.cli import exitcodes
from tether.helper.user.client import HelperClient, HelperError, HelperNotInstalledError, HelperNotRunningError


def socket_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--socket",
        type=Path,
        default=None,
        help=f"the helper's socket (default: ${SOCKET_ENV} or /run/tether/helper.sock)",
    )
    return common


def register(commands: argparse._SubParsersAction) -> None:
    common = socket_options()
    disconnect = commands.add_parser("disconnect", parents=[common], help="disconnect from the cluster")
    disconnect.set_defaults(fast_exit=True, handler=cmd_disconnect)

    status = commands.add_parser("status", parents=[common], help="show the connection's state")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(fast_exit=True, handler=cmd_status)

    quit_ = commands.add_parser("quit", parents=[common], help="disconnect and stop the helper")
    quit_.set_defaults(fast_exit=True, handler=cmd_quit)

    version = commands.add_parser("version", parents=[common], help="show the client's and the helper's versions")
    version.set_defaults(fast_exit=True, handler=cmd_version)


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
        "manager_api_level": state.manager_api_level if state.manager_version else None,
        # The helper's: it is the client that spoke to the manager (this CLI may be another build).
        "client_version": state.client_version,
        "client_api_level": state.client_api_level if state.client_version else None,
        "routed_subnets": [{"cidr": s.cidr, "via": s.via} for s in state.routed_subnets],
        "never_proxy": list(state.never_proxy),
        "dns_mode": state.dns_mode,
        "dns_server": state.dns_server,
        "dns_mode_reason": state.dns_mode_reason,
        "dns_mode_forced": state.dns_mode_forced,
        "dns_crash_safety": state.dns_crash_safety,
        "previous_session": state.previous_session,
        "dns_probes": list(state.dns_probes),
        "cluster_domain": state.cluster_domain,
        "dns_include_suffixes": list(state.dns_include_suffixes),
        "dns_exclude_suffixes": list(state.dns_exclude_suffixes),
        "conflicts": [
            {field: getattr(c, field) for field in ("subnet", "route", "device", "gateway", "description")}
            for c in state.conflicts
        ],
        "remapped": [{"subnet": r.subnet, "workload": r.workload, "reason": r.reason} for r in state.remapped],
        "virtual_subnet": state.virtual_subnet,
        "policy_notes": list(state.policy_notes),
        "dns_recursion": state.dns_recursion,
        "connect_recursion": state.connect_recursion,
        "direct_subnets": list(state.direct_subnets),
        "refused_sources": list(state.refused_sources),
        "tun_device": state.tun_device,
        "owner_uid": state.owner_uid if connected else None,
        "connected_since": since,
        "last_error": state.last_error,
        "intercepts": [intercepts.describe(i) for i in state.intercepts],
        "intercept_error": state.intercept_error,
        "origin": state.origin or None,
    }


def format_state(state: pb.State) -> str:
    info = describe_state(state)
    rows: list[tuple[str, str]] = [("phase", info["phase"])]
    if info["previous_session"]:
        rows.append(("previous session", info["previous_session"]))
    if info["cluster"]:
        rows.append(("cluster", info["cluster"] + (f" ({info['server']})" if info["server"] else "")))
    if info["namespace"]:
        rows.append(("namespace", info["namespace"]))
    if info["client_version"]:
        rows.append(("client version", f"{info['client_version']} (API level {info['client_api_level']})"))
    if info["manager_version"]:
        rows.append(("manager version", f"{info['manager_version']} (API level {info['manager_api_level']})"))
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
        if info["dns_mode_reason"]:
            rows.append(("dns mode", info["dns_mode_reason"]))  # a forced mode's reason says so
        if info["dns_crash_safety"]:
            rows.append(("dns on crash", info["dns_crash_safety"]))
        for i, probe in enumerate(info["dns_probes"]):
            rows.append(("dns probes" if i == 0 else "", probe))
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
        for note in info["policy_notes"]:
            rows.append(("policy", note))
        if info["dns_recursion"]:
            rows.append(("dns recursion", info["dns_recursion"]))
        if info["connect_recursion"]:
            rows.append(("flow recursion", info["connect_recursion"]))
        for i, intercept in enumerate(state.intercepts):
            rows.append(("intercepts" if i == 0 else "", intercepts.line(intercept)))
        if state.intercept_error:
            rows.append(("intercept error", state.intercept_error))
        if state.origin:
            rows.append(("origin", f"cluster flows and names go through the pod of {state.origin} (intercepted)"))
        rows.append(("owner", f"uid {info['owner_uid']}"))
        if info["connected_since"]:
            rows.append(("connected since", info["connected_since"]))
    rows.append(("last error", info["last_error"] or "-"))
    width = max(len(key) for key, _ in rows)
    return "\n".join(f"{key:<{width}}  {value}".rstrip() for key, value in rows)


def unclean_end(exc: HelperError, socket_path: Path) -> str:
    """When the helper is not running and its journal is still there: words saying its session ended uncleanly."""
    if not isinstance(exc, HelperNotRunningError | HelperNotInstalledError):
        return ""
    try:
        left = journal_for(socket_path).exists()
    except OSError:
        return ""
    if not left:
        return ""
    return (
        "the last session ended uncleanly: the helper was killed or crashed while connected "
        f"({journal_for(socket_path)} is left); starting it again undoes whatever it left"
    )


def client(args: argparse.Namespace) -> HelperClient:
    return HelperClient(args.socket)


# --- commands ----------------------------------------------------------------------------------------


def cmd_disconnect(args: argparse.Namespace) -> int:
    with client(args) as helper:
        try:
            state = helper.disconnect()
        except HelperError as exc:
            return exitcodes.report(exc)
    print("disconnected" if state.phase == pb.State.DISCONNECTED else f"state: {phase_name(state)}")
    return exitcodes.OK if state.phase == pb.State.DISCONNECTED else exitcodes.FAILURE


def cmd_status(args: argparse.Namespace) -> int:
    with client(args) as helper:
        try:
            state = helper.status()
        except HelperError as exc:
            unclean = unclean_end(exc, helper.socket_path)
            if args.json:
                info = {"phase": "unavailable", "error": exc.message, "fix": exc.fix, "last_session": unclean}
                print(json.dumps(info, indent=2))
            code = exitcodes.report(exc)
            if unclean and not args.json:
                print(f"tether: {unclean}", file=sys.stderr)
            return code
    info = describe_state(state)
    remembered = None
    if state.cluster:
        from tether.helper.user.resolutions import ResolutionStore  # platformdirs: only once connected

        remembered = ResolutionStore().get(state.cluster)
    info["remembered_resolution"] = remembered.describe() if remembered else None
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(format_state(state))
        if remembered:
            print(f"remembered resolution for {state.cluster}: {remembered.describe()}")
    return exitcodes.OK


def cmd_quit(args: argparse.Namespace) -> int:
    with client(args) as helper:
        try:
            helper.quit()
        except HelperError as exc:
            return exitcodes.report(exc)
    print("the helper is stopping")
    return exitcodes.OK


def cmd_version(args: argparse.Namespace) -> int:
    from tether.manager.api.version import __version__

    print(f"tether {__version__}")
    with client(args) as helper:
        try:
            info = helper.version()
        except HelperError as exc:
            # The client's version is still printed; the status says the helper is missing (scripts wait on it).
            return exitcodes.report(exc)
    print(f"{info.name or 'tether-helper'} {info.version} (api level {info.api_level})")
    return exitcodes.OK
