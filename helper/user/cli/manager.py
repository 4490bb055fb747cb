"""`tether manager install|upgrade|uninstall|status`: the traffic-manager's Helm chart in a cluster, applied
with the user's own credentials (logic in :mod:`tether.helper.user.release`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from tether.helper.user.kubeconfig import KubeconfigError
from tether.helper.user.release import kube as kubeapi
from tether.helper.user.release import ops, probe
from tether.helper.user.release.chart import DEFAULT_NAMESPACE
from tether.helper.user.release.plan import ObjectRef, PlanError
from tether.helper.user.release.render import ChartUnavailableError, render
from tether.helper.user.release.values import ValuesError, combine, parse_set, parse_values_file

OK, FAILURE, USAGE = 0, 1, 2


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("manager", help="install, upgrade, uninstall or show the cluster's traffic-manager")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (
        ("install", "install the traffic-manager (its Helm chart) into a namespace"),
        ("upgrade", "apply this tether's chart and the given values to the installed release"),
        ("uninstall", "remove the release's objects and every tether-agent injected for it"),
        ("status", "show the release and whether the manager answers"),
    ):
        sub = actions.add_parser(name, help=text, description=text)
        sub.add_argument("--namespace", "-n", default=DEFAULT_NAMESPACE, help="the release's namespace (tether)")
        sub.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
        sub.add_argument("--context", help="kubeconfig context (default: the current one)")
        if name in ("install", "upgrade"):
            sub.add_argument(
                "--set", action="append", default=[], metavar="KEY=VALUE", help="a chart value (repeatable)"
            )
            sub.add_argument("--values", "-f", action="append", default=[], type=Path, metavar="FILE",
                             help="a YAML file of chart values (repeatable; --set wins)")  # fmt: skip
            sub.add_argument(
                "--wait", action="store_true", help="wait until the manager answers through a port-forward"
            )
            sub.add_argument("--timeout", type=float, default=300, help="seconds --wait waits (300)")
        if name == "install":
            sub.add_argument("--create-namespace", action="store_true", help="create the namespace if it is missing")
        if name == "status":
            sub.add_argument("--json", action="store_true", help="print JSON")
        sub.set_defaults(handler=run)


def _values(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    sources: dict[str, dict[str, Any]] = {}
    files = []
    for path in args.values:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ValuesError(f"--values {path}: {exc.strerror or exc}") from None
        files.append(parse_values_file(text, str(path)))
        sources[f"--values {path}"] = files[-1]
    sets = []
    for expression in args.set:
        sets.append(parse_set(expression))
        sources[f'--set "{expression}"'] = sets[-1]
    return combine(files, sets), sources


def run(args: argparse.Namespace) -> int:
    def say(text: str) -> None:
        print(text, flush=True)

    try:
        rendered = None
        if args.action in ("install", "upgrade"):
            values, sources = _values(args)
            rendered = render(values, args.namespace, sources)  # everything checked before the first call
        config, _ = kubeapi.configuration(args.context, args.kubeconfig)
        kube = kubeapi.Kube(config)
        try:
            if args.action == "install":
                assert rendered is not None
                release = ops.install(kube, rendered, args.namespace, create_namespace=args.create_namespace, say=say)
                say(f"installed the traffic-manager {release.app_version} in namespace {args.namespace}")
            elif args.action == "upgrade":
                assert rendered is not None
                release = ops.upgrade(kube, rendered, args.namespace, say=say)
                say(f"upgraded the traffic-manager in namespace {args.namespace} to revision {release.revision}")
            elif args.action == "uninstall":
                removed = ops.uninstall(kube, args.namespace, say=say)
                say(f"removed {len(removed.objects)} objects and the tether-agent from {len(removed.agents)} workloads")
                return OK
            else:
                return _status(kube, config, args)
        finally:
            kube.close()
        if args.wait:
            answers, text = asyncio.run(probe.wait_until_answers(config, args.namespace, args.timeout))
            say(f"the traffic-manager {text}")
            return OK if answers else FAILURE
        return OK
    except (ValuesError, PlanError, KubeconfigError) as exc:
        print(f"tether: {exc}", file=sys.stderr)
        return USAGE
    except (kubeapi.KubeError, ChartUnavailableError) as exc:
        print(f"tether: {exc}", file=sys.stderr)
        return FAILURE


def _status(kube: kubeapi.Kube, config: Any, args: argparse.Namespace) -> int:
    release = ops.read_release(kube, args.namespace)
    if release is None:
        print(
            f"tether: no traffic-manager release in namespace {args.namespace}; "
            f"install one with: tether manager install --namespace {args.namespace}",
            file=sys.stderr,
        )
        return FAILURE
    present: dict[ObjectRef, bool] = {ref: kube.get(ref) is not None for ref in release.objects}
    _, answers = asyncio.run(probe.ask(config, args.namespace))
    report = ops.describe(release, present, answers)
    if args.json:
        print(json.dumps(report, indent=2))
        return OK
    print(f"namespace   {report['namespace']}  (revision {report['revision']}, {report['status']})")
    print(f"chart       tether-manager {report['chart_version']}, app {report['app_version']}")
    print(f"values      {json.dumps(report['values']) if report['values'] else '(chart defaults)'}")
    print(f"manager     {answers}")
    print("objects")
    for item in report["objects"]:
        print(f"  {item['object']}{'' if item['present'] else '  (missing)'}")
    return OK
