"""`tether-agent`: dials flows for Tether clients from inside a workload's pod (--proxy-via)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from tether.manager.agent.agent import AgentRefusedError, AgentSettings, TetherAgent
from tether.manager.agent.intercept import parse_port_pairs
from tether.manager.agent.sftp import start_sftp
from tether.manager.agent.token import DEFAULT_TOKEN_FILE, default_token_file
from tether.manager.agents import AgentError, check_workload
from tether.manager.api.version import __version__
from tether.manager.api.volumes import SFTP_PORT, VOLUMES_ROOT
from tether.runtime import eventloop, logs

log = logging.getLogger("tether.agent")

KINDS = ("Deployment", "StatefulSet", "ReplicaSet")


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="tether-agent",
        description="Tether's agent: runs next to a workload (a sidecar in its pod), connects to the "
        "traffic-manager and dials the TCP/UDP flows that Tether clients send through this workload "
        "(tether connect --proxy-via CIDR=WORKLOAD), so they leave from the pod's own network, loopback included.",
        epilog="Every option can come from the environment (in brackets), as a sidecar gets POD_NAME, "
        "POD_NAMESPACE and POD_IP from the downward API. The agent reconnects with backoff when the manager "
        "goes away.",
    )
    parser.add_argument("--version", action="version", version=f"tether-agent {__version__}")
    parser.add_argument(
        "--manager",
        default=env("TETHER_MANAGER", ""),
        metavar="HOST:PORT",
        help="the manager's gRPC address, e.g. tether-manager.tether.svc.cluster.local:8081 (TETHER_MANAGER)",
    )
    parser.add_argument(
        "--namespace", default=env("POD_NAMESPACE", ""), help="the workload's namespace (POD_NAMESPACE)"
    )
    parser.add_argument("--workload", default=env("TETHER_WORKLOAD", ""), help="the workload's name (TETHER_WORKLOAD)")
    parser.add_argument(
        "--kind",
        default=env("TETHER_WORKLOAD_KIND", "Deployment"),
        choices=KINDS,
        help="the workload's kind (TETHER_WORKLOAD_KIND; default Deployment)",
    )
    parser.add_argument("--pod-name", default=env("POD_NAME", ""), help="this pod's name (POD_NAME)")
    parser.add_argument("--pod-ip", default=env("POD_IP", ""), help="this pod's IP (POD_IP)")
    parser.add_argument(
        "--token-file",
        type=Path,
        default=default_token_file(),
        help="this pod's projected service-account token (audience tether-manager), sent with every call so the "
        f"manager can check the agent runs in the pod it claims; re-read when it changes (TETHER_TOKEN_FILE; "
        f"default {DEFAULT_TOKEN_FILE})",
    )
    parser.add_argument(
        "--intercept-port",
        action="append",
        default=[env("TETHER_INTERCEPT_PORTS", "")],
        metavar="AGENT_PORT:APP_PORT",
        help="listen on AGENT_PORT, where the workload's Service now sends the app's traffic, and pass it to the "
        "app's APP_PORT on loopback, or to the client that intercepts it (repeatable; TETHER_INTERCEPT_PORTS, "
        "comma-separated)",
    )
    parser.add_argument(
        "--app-env",
        default=env("TETHER_APP_ENV", ""),
        metavar="JSON",
        help="JSON list of the app container's variable names copied into this container, reported as the "
        "app's environment to intercepting clients (TETHER_APP_ENV)",
    )
    parser.add_argument(
        "--volumes",
        type=Path,
        default=Path(env("TETHER_VOLUMES", str(VOLUMES_ROOT))),
        help="the app's volumes as the injector mounted them here, served with SFTP on 127.0.0.1 for clients "
        f"that mount them (tether intercept --mount) (TETHER_VOLUMES; default {VOLUMES_ROOT})",
    )
    parser.add_argument(
        "--sftp-port",
        type=int,
        default=int(env("TETHER_SFTP_PORT", str(SFTP_PORT))),
        help=f"the loopback port of that SFTP service; 0 turns it off (TETHER_SFTP_PORT; default {SFTP_PORT})",
    )
    parser.add_argument("--ready-file", type=Path, help="write this file once the agent has arrived at the manager")
    parser.add_argument("--remain-interval", type=float, default=5.0, help=argparse.SUPPRESS)
    parser.add_argument("--log-format", choices=("json", "text"), default=env("TETHER_LOG_FORMAT", "json"))
    parser.add_argument("--log-level", default=env("TETHER_LOG_LEVEL", "info"))
    return parser


def settings_from(args: argparse.Namespace) -> AgentSettings:
    """Checked settings; raises ValueError naming the offending option and value."""
    if not args.manager:
        raise ValueError("--manager (or TETHER_MANAGER) is required: the manager's HOST:PORT")
    host, sep, port = args.manager.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f'--manager "{args.manager}" is not HOST:PORT')
    for option, value in (
        ("--namespace", args.namespace),
        ("--workload", args.workload),
        ("--pod-name", args.pod_name),
    ):
        if not value:
            raise ValueError(f"{option} is required")
    try:
        check_workload(args.namespace, args.workload, args.kind)
    except AgentError as exc:
        raise ValueError(str(exc).replace("agent ", "", 1)) from None
    if not 0 <= args.sftp_port < 65536:
        raise ValueError(f'--sftp-port "{args.sftp_port}" is not a port number (0 turns SFTP off)')
    if args.pod_ip:
        try:
            ipaddress.ip_address(args.pod_ip)
        except ValueError:
            raise ValueError(f'--pod-ip "{args.pod_ip}" is not an IP address') from None
    intercept_ports = parse_port_pairs(args.intercept_port)
    return AgentSettings(
        intercept_ports=intercept_ports,
        app_env_names=args.app_env,
        manager=args.manager,
        namespace=args.namespace,
        workload=args.workload,
        kind=args.kind,
        pod_name=args.pod_name,
        pod_ip=args.pod_ip,
        remain_interval=args.remain_interval,
        ready_file=args.ready_file,
        token_file=args.token_file,
    )


async def serve(settings: AgentSettings, volumes: Path = VOLUMES_ROOT, sftp_port: int = 0) -> int:
    agent = TetherAgent(settings)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, agent.stop)
    log.info(
        "starting",
        extra={
            "version": __version__,
            "manager": settings.manager,
            "workload": f"{settings.kind} {settings.namespace}/{settings.workload}",
            "pod": settings.pod_name,
            "pod_ip": settings.pod_ip,
        },
    )
    sftp = await start_sftp(volumes, sftp_port)
    try:
        await agent.run()
    except AgentRefusedError as exc:
        log.error("the manager refused this agent", extra={"error": str(exc)})
        return 2
    finally:
        if sftp is not None:
            await sftp.close()
    log.info("stopped", extra={"dials": agent.stats.dials, "dialed": agent.stats.dialed})
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    try:
        settings = settings_from(args)
    except ValueError as exc:
        print(f"tether-agent: {exc}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        return eventloop.run(serve(settings, args.volumes, args.sftp_port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
