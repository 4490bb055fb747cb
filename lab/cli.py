"""`tether lab ...`: the sandbox cluster's command line (registered by tether.helper.user.cli.main)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from typing import Any

from tether.lab import users
from tether.lab.lab import Lab, require_root
from tether.lab.report import INSTALL_MANAGER
from tether.lab.runner import LabError
from tether.lab.topology import WS_NS


def register(subparsers: argparse._SubParsersAction) -> None:
    lab = subparsers.add_parser(
        "lab",
        help="a sandbox Kubernetes cluster made of network namespaces (Linux, root)",
        description="Build, inspect and remove the sandbox cluster: pods are network namespaces on a bridge, "
        "ClusterIPs are nftables DNAT, DNS is dnsmasq, the API is an emulator. Nothing of the host changes.",
    )
    commands = lab.add_subparsers(dest="lab_command", metavar="COMMAND", required=True)

    up = commands.add_parser("up", help="build the lab (idempotent; repairs a crashed one)")
    up.add_argument(
        "--vpn",
        action="append",
        default=[],
        metavar="CIDR",
        help="add a 'VPN' in the workstation routing CIDR to a corporate namespace (repeatable), e.g. 10.0.0.0/8",
    )
    up.add_argument(
        "--resolver",
        choices=["systemd-resolved"],
        default="",
        help="run a real systemd-resolved on the workstation (resolv.conf names its stub 127.0.0.53)",
    )
    up.add_argument(
        "--local",
        action="store_true",
        help="make the workstation one of the nodes: the pod range is reachable directly from it, and the "
        "cluster DNS forwards unknown names to its resolver (a cluster on the same machine)",
    )
    up.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for readiness (default 60)")
    up.add_argument("--json", action="store_true", help="print the status as JSON")
    up.set_defaults(handler=cmd_up)

    down = commands.add_parser("down", help="remove the lab and everything it created")
    down.set_defaults(handler=cmd_down)

    status = commands.add_parser("status", help="show the lab's state, addresses and services")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=cmd_status)

    restart = commands.add_parser(
        "restart",
        help="restart one of the lab's processes (e.g. the cluster DNS: kube-system/coredns-0)",
        description="End one lab process by the PID the lab recorded, start it again and wait until it is ready. "
        "NAME is a pod as NAMESPACE/NAME, or a process name from `tether lab status --json` (e.g. apiserver).",
    )
    restart.add_argument("name", metavar="NAME", help="the process or pod to restart")
    restart.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for readiness (default 60)")
    restart.set_defaults(handler=cmd_restart)

    kubeconfig = commands.add_parser(
        "kubeconfig",
        help="print the path of the lab's kubeconfig",
        description="Print the path of the lab's admin kubeconfig, or with --user that of a restricted user: "
        + "; ".join(f"{u.name}: {u.about}" for u in users.USERS),
    )
    kubeconfig.add_argument("--user", metavar="NAME", help="a restricted lab user's kubeconfig instead")
    kubeconfig.set_defaults(handler=cmd_kubeconfig)

    run = commands.add_parser(
        "run",
        help="run a command in the workstation namespace (or a pod's)",
        description="Run CMD inside the lab's workstation namespace, where the lab's API server is reachable; "
        "KUBECONFIG points at the lab unless already set. The exit code is CMD's.",
    )
    run.add_argument("--pod", metavar="NS/NAME", help="run in this pod's namespace instead (debugging)")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    run.set_defaults(handler=cmd_run)


def _err(message: str) -> None:
    print(f"tether lab: {message}", file=sys.stderr)


def _progress(message: str) -> None:
    print(f"... {message}", file=sys.stderr, flush=True)


def cmd_up(args: argparse.Namespace) -> int:
    lab = Lab(log=_progress, timeout=args.timeout)
    try:
        result = lab.up(args.vpn, args.resolver, local=args.local)
    except LabError as exc:
        _err(str(exc))
        return 1
    except KeyboardInterrupt:
        _err("interrupted; what was created has been removed")
        return 130
    status = lab.status()
    if args.json:
        print(json.dumps({"action": result.action, **status}, indent=2))
    else:
        headline = {"already up": "The lab is already up.", "vpn changed": "The lab's VPN was changed."}
        print(headline.get(result.action, "The lab is up."))
        print(render_status(status))
        print(f"\nThe traffic-manager is not part of the lab: install it as on any cluster:\n  {INSTALL_MANAGER}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    lab = Lab(log=_progress)
    try:
        leftovers = lab.down()
    except LabError as exc:
        _err(str(exc))
        return 1
    if leftovers:
        _err("some things could not be removed:\n  " + "\n  ".join(leftovers))
        return 1
    print("The lab is down; nothing is left.")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = Lab().status()
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(render_status(status))
    return 0 if status["state"] in ("up", "down") else 1


def cmd_restart(args: argparse.Namespace) -> int:
    lab = Lab(log=_progress, timeout=args.timeout)
    try:
        record = lab.restart(args.name)
    except LabError as exc:
        _err(str(exc))
        return 1
    print(f"{record.name} restarted (pid {record.pid})")
    return 0


def cmd_kubeconfig(args: argparse.Namespace) -> int:
    lab = Lab()
    try:
        info = lab.info()
    except LabError as exc:
        _err(str(exc))
        return 1
    if args.user is None:
        print(info.kubeconfig)
        return 0
    try:
        user = users.user_named(args.user)
    except ValueError as exc:
        _err(str(exc))
        return 2
    path = info.paths.user_kubeconfig(user.name)
    if not path.exists():
        _err(f"{path} is missing: the lab was brought up before it had user {user.name} (tether lab down, then up)")
        return 1
    print(path)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        cmd = [os.environ.get("SHELL") or "/bin/sh"]
    lab = Lab()
    try:
        require_root("run")
        netns = lab.netns_for(args.pod)
        kubeconfig = lab.info().kubeconfig
    except LabError as exc:
        _err(str(exc))
        return 1
    env = dict(os.environ)
    if netns == WS_NS:
        env.setdefault("KUBECONFIG", str(kubeconfig))
    argv = lab.run_argv(netns, cmd)
    plain = argv[-len(cmd) - 1] == netns  # a variant's environment has its own PATH (resolvectl)
    if plain and shutil.which(cmd[0]) is None and os.sep not in cmd[0]:
        _err(f"command not found: {cmd[0]}")
        return 127
    code = subprocess.call(argv, env=env)
    return 128 + -code if code < 0 else code


def render_status(status: dict[str, Any]) -> str:
    state = status["state"]
    if state in ("down", "stale"):
        lines = ["The lab is down."]
        if status.get("leftovers"):
            lines.append("Leftovers of an earlier run (tether lab down removes them):")
            lines += [f"  {item}" for item in status["leftovers"]]
        return "\n".join(lines)
    lines = [f"state:       {state}"]
    lines += [f"  problem: {p}" for p in status.get("problems", [])]
    lines += [
        f"API server:  {status['api_url']}  (from the workstation namespace {status['workstation']['netns']})",
        f"kubeconfig:  {status['kubeconfig']}  (context {status['context']})",
        f"service CIDR {status['service_cidr']}; pod CIDRs "
        + ", ".join(f"{n['pod_cidr']} ({n['name']})" for n in status["nodes"]),
        f"cluster DNS  {status['dns']['cluster_dns']} ({status['dns']['domain']}); "
        f"upstream DNS {status['dns']['upstream']} knows " + ", ".join(status["dns"]["upstream_names"]),
        "services:",
    ]
    for svc in status["services"]:
        ports = ", ".join(f"{p['port']}/{p['protocol']} {p['name']}".strip() for p in svc["ports"])
        lines.append(f"  {svc['namespace'] + '/' + svc['name']:<26} {svc['cluster_ip']:<14} {ports}")
    lines.append("pods:")
    for pod in status["pods"]:
        run = "running" if pod["running"] else "NOT RUNNING"
        lines.append(f"  {pod['namespace'] + '/' + pod['name']:<26} {pod['ip']:<14} {pod['node']:<11} {run}")
    local = status.get("local")
    if local:
        lines.append(
            f"Local:       workstation {local['address']} dev {local['interface']} on the cluster bridge; "
            f"{', '.join(local['direct'])} direct; its resolver {local['resolver']}"
        )
    vpn = status.get("vpn")
    if vpn:
        lines.append(
            f"VPN:         {', '.join(vpn['cidrs'])} via {vpn['gateway']} dev {vpn['interface']} (workstation)"
        )
        lines += [f"  corp host {h['address']:<15} {h['where']:<24} {h['url']}" for h in vpn["hosts"]]
    lines += [f"note: {n}" for n in status.get("notes", [])]
    lines.append("Run commands as the workstation: tether lab run -- CMD")
    return "\n".join(lines)
