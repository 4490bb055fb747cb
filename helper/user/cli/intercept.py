"""`tether list|intercept|leave|uninstall`: intercepts through the helper.

``intercept`` writes the pod's environment where ``--env-file``/``--env-json`` say (as the user, never the
root helper) and, given ``-- CMD``, runs CMD with that environment and leaves the intercept when CMD exits
(its exit status is the command's).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from tether.helper.api import helper_pb2 as pb
from tether.helper.api import intercepts
from tether.helper.api.intercepts import PortSpecError
from tether.helper.user.cli import exitcodes
from tether.helper.user.cli.control import client, socket_options
from tether.helper.user.client import HelperError


def register(commands: argparse._SubParsersAction) -> None:
    common = socket_options()
    list_ = commands.add_parser("list", parents=[common], help="list workloads and their intercepts")
    list_.add_argument("--namespace", "-n", default="", help="default: the connection's namespace")
    list_.add_argument("--json", action="store_true", help="machine-readable output")
    list_.set_defaults(handler=cmd_list)

    intercept = commands.add_parser(
        "intercept",
        parents=[common],
        help="send all traffic for a workload's port to a local port",
        usage="tether intercept NAME [--port LOCAL[:SERVICE_PORT]] [--service S] [--env-file F] [--env-json F] "
        "[--mount DIR|false] [-- CMD...]",
        description="A global intercept: every connection to the workload's Service port goes to "
        "localhost:LOCAL on this machine until `tether leave NAME` (or, with -- CMD, until CMD exits).",
    )
    intercept.add_argument("name", metavar="NAME", help="the Deployment, StatefulSet or ReplicaSet")
    intercept.add_argument("--namespace", "-n", default="", help="default: the connection's namespace")
    intercept.add_argument(
        "--port",
        default="",
        metavar="LOCAL[:SERVICE_PORT]",
        help="the local port, and the Service port by number or name (default: the Service's only port, "
        "and the same number locally)",
    )
    intercept.add_argument("--service", default="", help="the Service (default: the only one selecting NAME)")
    intercept.add_argument("--env-file", type=Path, help="write the pod's environment here (KEY=VALUE, shell-quoted)")
    intercept.add_argument("--env-json", type=Path, help="write the pod's environment here as a JSON object")
    intercept.add_argument(
        "--mount",
        default="",
        metavar="DIR|false",
        help="where to mount the pod's volumes (default: a new temporary directory; false: do not); they stay "
        "mounted until the intercept ends",
    )
    intercept.set_defaults(handler=cmd_intercept)

    leave = commands.add_parser("leave", parents=[common], help="end an intercept")
    leave.add_argument("name", metavar="NAME")
    leave.add_argument("--namespace", "-n", default="")
    leave.set_defaults(handler=cmd_leave)

    uninstall = commands.add_parser(
        "uninstall", parents=[common], help="take the tether-agent out of workloads (and their Services back)"
    )
    which = uninstall.add_mutually_exclusive_group(required=True)
    which.add_argument("--agent", action="append", metavar="NAME", help="a workload (repeatable)")
    which.add_argument("--all-agents", action="store_true", help="every workload with an agent, all namespaces")
    uninstall.add_argument("--namespace", "-n", default="")
    uninstall.set_defaults(handler=cmd_uninstall)


def cmd_list(args: argparse.Namespace) -> int:
    with client(args) as helper:
        try:
            listing = helper.list_workloads(args.namespace)
        except HelperError as exc:
            return exitcodes.report(exc)
    if args.json:
        out = [
            {
                "namespace": w.namespace,
                "name": w.name,
                "kind": w.kind,
                "agent": w.agent,
                "intercepts": [intercepts.describe(i) for i in w.intercepts],
            }
            for w in listing.workloads
        ]
        print(json.dumps(out, indent=2))
        return exitcodes.OK
    for w in listing.workloads:
        state = "; ".join(intercepts.line(i) for i in w.intercepts) or "not intercepted"
        agent = "agent" if w.agent else "no agent"
        print(f"{w.namespace}/{w.name} ({w.kind}, {agent}): {state}")
    return exitcodes.OK


def cmd_intercept(args: argparse.Namespace) -> int:
    try:
        port = intercepts.parse_port(args.port)
    except PortSpecError as exc:
        print(f"tether: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    request = pb.InterceptRequest(
        name=args.name,
        namespace=args.namespace,
        local_port=port.local,
        port=port.service_port,
        service=args.service,
        mount=args.mount,
    )
    with client(args) as helper:
        try:
            reply = helper.intercept(request)
        except HelperError as exc:
            return exitcodes.report(exc)
        state = reply.intercept
        print(f"intercepting {intercepts.line(state)}")
        environment = dict(reply.environment)
        for path, text in ((args.env_file, intercepts.env_file_text), (args.env_json, intercepts.env_json_text)):
            if path is not None:
                path.write_text(text(environment))
                print(f"wrote the pod's environment ({len(environment)} variables) to {path}")
        print(intercepts.volumes_line(state, args.mount))
        if not args.command_argv:
            print(f"end it with: tether leave {args.name}")
            return exitcodes.OK
        try:
            code = _run(args.command_argv, environment)
        finally:
            try:
                helper.leave(pb.LeaveRequest(name=args.name, namespace=args.namespace))
                print(f"left the intercept of {state.namespace}/{state.workload}")
            except HelperError as exc:
                exitcodes.report(exc)
        return code


def _run(argv: list[str], environment: dict[str, str]) -> int:
    """Run the command with the pod's environment over ours; its exit status (128+N for a signal)."""
    try:
        process = subprocess.Popen(argv, env={**os.environ, **environment})
    except OSError as exc:
        print(f"tether: cannot run {argv[0]}: {exc}", file=sys.stderr)
        return exitcodes.FAILURE
    try:
        code = process.wait()
    except KeyboardInterrupt:
        process.terminate()
        code = process.wait()
    return 128 - code if code < 0 else code


def cmd_leave(args: argparse.Namespace) -> int:
    with client(args) as helper:
        try:
            helper.leave(pb.LeaveRequest(name=args.name, namespace=args.namespace))
        except HelperError as exc:
            return exitcodes.report(exc)
    print(f"left the intercept of {args.name}")
    return exitcodes.OK


def cmd_uninstall(args: argparse.Namespace) -> int:
    request = pb.UninstallAgentsRequest(names=args.agent or [], namespace=args.namespace, all=args.all_agents)
    with client(args) as helper:
        try:
            reply = helper.uninstall_agents(request)
        except HelperError as exc:
            return exitcodes.report(exc)
    for line in reply.removed:
        print(f"removed the tether-agent from {line}")
    if not reply.removed:
        print("no agent to remove")
    return exitcodes.OK
