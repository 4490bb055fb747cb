"""The controller process: ``python -m tether.lab.controller``. Watches Deployments, Pods and Services through
the API server (the official client), and on every change reconciles, level-based, the way the deployment
controller, scheduler, kubelet, endpoints and endpointslice controllers and kube-proxy would (see the package
docstring).

Deployments annotated ``lab.tether.dev/pods: static`` keep the pods the lab itself starts (cluster DNS).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any, NamedTuple

import kubernetes
from kubernetes.client.exceptions import ApiException

from tether.lab import clusterdns, kubeproxy
from tether.lab.apiserver.podnet import pod_netns as netns_of
from tether.lab.controller import endpoints, rollout
from tether.lab.controller.kubelet import Kubelet
from tether.lab.netns import NetnsOps
from tether.lab.objects import STATIC_PODS
from tether.lab.runner import SubprocessRunner
from tether.lab.topology import ROUTER_NS, Node, StatePaths, build_plan
from tether.runtime.atomicfile import write_atomic

log = logging.getLogger("tether.lab.controller")

STATIC_ANNOTATION = STATIC_PODS
Obj = dict[str, Any]


class Snapshot(NamedTuple):
    deployments: list[Obj]
    pods: list[Obj]
    services: list[Obj]
    endpoints: list[Obj]
    slices: list[Obj]


class Api:
    """The few API calls the controller makes, on raw JSON."""

    def __init__(self, client: kubernetes.client.ApiClient) -> None:
        self.core = kubernetes.client.CoreV1Api(client)
        self.apps = kubernetes.client.AppsV1Api(client)
        self.discovery = kubernetes.client.DiscoveryV1Api(client)

    @staticmethod
    def _items(response: Any) -> list[Obj]:
        return list(json.loads(response.data)["items"])

    def snapshot(self) -> Snapshot:
        """Deployments, pods, services, endpoints and endpoint slices of every namespace."""
        # Endpoints and slices are listed before the Services: one whose Service is missing from the list was
        # then written after its Service was deleted (or without one), never before its Service was created.
        endpoints = self._items(self.core.list_endpoints_for_all_namespaces(_preload_content=False))
        slices = self._items(self.discovery.list_endpoint_slice_for_all_namespaces(_preload_content=False))
        return Snapshot(
            self._items(self.apps.list_deployment_for_all_namespaces(_preload_content=False)),
            self._items(self.core.list_pod_for_all_namespaces(_preload_content=False)),
            self._items(self.core.list_service_for_all_namespaces(_preload_content=False)),
            endpoints,
            slices,
        )

    def nodes(self) -> dict[str, Node]:
        found = {}
        for node in self._items(self.core.list_node(_preload_content=False)):
            internal = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
            name = node["metadata"]["name"]
            found[name] = Node(name, IPv4Network(node["spec"]["podCIDR"]), IPv4Address(internal))
        return found

    def token(self, pod: Mapping[str, Any], audience: str, expiration: int) -> str:
        meta = pod["metadata"]
        ref = {"kind": "Pod", "apiVersion": "v1", "name": meta["name"], "uid": meta.get("uid", "")}
        body = {"spec": {"audiences": [audience], "expirationSeconds": expiration, "boundObjectRef": ref}}
        account = pod["spec"].get("serviceAccountName") or "default"
        answer = self.core.create_namespaced_service_account_token(account, meta["namespace"], body)
        return str(answer.status.token)


class Controller:
    def __init__(
        self,
        api: Api,
        kubelet: Kubelet,
        apply_rules: Callable[[str], None],
        write_dns: Callable[[str], None] = lambda _hosts: None,
        known_names: frozenset[str] = frozenset(),
    ) -> None:
        self.api = api
        self.kubelet = kubelet
        self.apply_rules = apply_rules
        #: the cluster DNS's records of Services not in the lab's plan (``known_names`` are), as a hosts file
        self.write_dns = write_dns
        self.known_names = known_names
        self._hosts: str | None = None
        self._rules = ""
        self._seen: dict[tuple[str, str], Obj] = {}

    def reconcile(self) -> bool:
        """One pass over everything; True once every managed Deployment is fully rolled out."""
        deployments, pods, *_ = self.api.snapshot()
        settled = True
        managed = [
            d for d in deployments if (d["metadata"].get("annotations") or {}).get(STATIC_ANNOTATION) != "static"
        ]
        for deployment in managed:
            settled &= self._rollout(deployment, pods)
        for orphan in rollout.orphans(deployments, pods):
            meta = orphan["metadata"]
            log.info("pod %s/%s: its Deployment is gone; deleting it", meta["namespace"], meta["name"])
            with contextlib.suppress(ApiException):
                self.api.core.delete_namespaced_pod(meta["name"], meta["namespace"])
        self._kubelet(self.api.snapshot().pods)
        deployments, pods, services, current_eps, current_slices = self.api.snapshot()
        for deployment in managed:
            fresh = next((d for d in deployments if d["metadata"].get("uid") == deployment["metadata"]["uid"]), None)
            if fresh is not None:
                settled &= self._deployment_status(fresh, pods)
        self._write(
            endpoints.endpoints_changes(services, pods, current_eps),
            "endpoints",
            self.api.core.create_namespaced_endpoints,
            self.api.core.replace_namespaced_endpoints,
            self.api.core.delete_namespaced_endpoints,
        )
        self._write(
            endpoints.slice_changes(services, pods, current_slices),
            "endpointslice",
            self.api.discovery.create_namespaced_endpoint_slice,
            self.api.discovery.replace_namespaced_endpoint_slice,
            self.api.discovery.delete_namespaced_endpoint_slice,
        )
        hosts = clusterdns.service_hosts(
            (
                (svc["metadata"]["namespace"], svc["metadata"]["name"], (svc.get("spec") or {}).get("clusterIP", ""))
                for svc in services
            ),
            self.known_names,
        )
        if hosts != self._hosts:
            self.write_dns(hosts)
            self._hosts = hosts
        rules = kubeproxy.render(endpoints.proxy_entries(services, pods))
        if rules != self._rules:
            self.apply_rules(rules)
            self._rules = rules
        return settled

    def _rollout(self, deployment: Obj, pods: list[Obj]) -> bool:
        decision = rollout.plan(deployment, pods)
        meta = deployment["metadata"]
        hash_ = rollout.template_hash(deployment["spec"]["template"])
        for _ in range(decision.create):
            node = rollout.pick_node(sorted(self.kubelet.nodes), pods)
            pod = rollout.new_pod(deployment, rollout.pod_name(meta["name"], hash_, uuid.uuid4().hex), node)
            log.info(
                "deployment %s/%s: creating pod %s on %s",
                meta["namespace"],
                meta["name"],
                pod["metadata"]["name"],
                node,
            )
            self.api.core.create_namespaced_pod(meta["namespace"], pod, _preload_content=False)
            pods.append(pod)
        for name in decision.delete:
            log.info("deployment %s/%s: deleting pod %s", meta["namespace"], meta["name"], name)
            with contextlib.suppress(ApiException):
                self.api.core.delete_namespaced_pod(name, meta["namespace"])
        return not decision.create and not decision.delete

    def _deployment_status(self, deployment: Obj, pods: list[Obj]) -> bool:
        decision = rollout.plan(deployment, pods)
        if decision.status != {k: deployment.get("status", {}).get(k) for k in decision.status} or (
            set(deployment.get("status") or {}) - set(decision.status)
        ):
            body = dict(deployment, status=decision.status)
            meta = deployment["metadata"]
            with contextlib.suppress(ApiException):  # changed meanwhile: the next pass writes it
                self.api.apps.replace_namespaced_deployment_status(meta["name"], meta["namespace"], body)
        spec_replicas = int(deployment["spec"].get("replicas", 1))
        status = decision.status
        return status["updatedReplicas"] == spec_replicas == status["readyReplicas"] == status["replicas"]

    def _kubelet(self, pods: list[Obj]) -> None:
        keys = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in pods}
        for key, old in self._seen.items():
            if key not in keys or keys[key]["metadata"].get("uid") != old["metadata"].get("uid"):
                if key in self.kubelet.pods:
                    self.kubelet.stop(key)
                elif (netns := netns_of(old)) is not None:
                    self.kubelet.remove_foreign(old, netns)
        self._seen = keys
        used = [str((p.get("status") or {}).get("podIP")) for p in pods if (p.get("status") or {}).get("podIP")]
        used += [run.ip for run in self.kubelet.pods.values() if run.ip]
        for pod in pods:
            status = self.kubelet.sync(pod, used)
            if status is None:
                continue
            if status.get("podIP"):
                used.append(status["podIP"])
            if _differs(pod.get("status") or {}, status):
                meta = pod["metadata"]
                with contextlib.suppress(ApiException):
                    self.api.core.replace_namespaced_pod_status(
                        meta["name"], meta["namespace"], dict(pod, status=status)
                    )

    @staticmethod
    def _write(
        changes: endpoints.Changes,
        what: str,
        create: Callable[..., Any],
        replace: Callable[..., Any],
        delete: Callable[..., Any],
    ) -> None:
        # a conflict or a vanished object means someone wrote meanwhile: the next pass sees it and tries again
        for obj in changes.create:
            with contextlib.suppress(ApiException):
                create(obj["metadata"]["namespace"], obj, _preload_content=False)
        for obj in changes.replace:
            with contextlib.suppress(ApiException):
                replace(obj["metadata"]["name"], obj["metadata"]["namespace"], obj, _preload_content=False)
        for namespace, name in changes.delete:
            log.info("deleting %s %s/%s: its Service is gone, or its pods are in another one", what, namespace, name)
            with contextlib.suppress(ApiException):
                delete(name, namespace, _preload_content=False)


def _differs(have: Mapping[str, Any], want: Mapping[str, Any]) -> bool:
    """Whether writing ``want`` changes anything but timestamps."""

    def strip(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: strip(v) for k, v in value.items() if k not in ("startTime", "startedAt", "lastTransitionTime")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return bool(strip(have) != strip(want))


def _watch(list_call: Callable[..., Any], changed: threading.Event, stop: threading.Event) -> None:
    """Follow one resource's watch, waking the reconcile loop on every event; reopened when it ends."""
    while not stop.is_set():
        try:
            for _event in kubernetes.watch.Watch().stream(list_call, timeout_seconds=30, _request_timeout=60):
                changed.set()
                if stop.is_set():
                    return
        except Exception as exc:  # the API server restarting, a dropped connection: try again shortly
            log.debug("watch ended: %s", exc)
            stop.wait(1.0)


def run(args: argparse.Namespace) -> int:
    kubernetes.config.load_kube_config(config_file=str(args.kubeconfig))
    api = Api(kubernetes.client.ApiClient())
    ops = NetnsOps(SubprocessRunner())
    paths = StatePaths(root=args.state_root)
    kubelet = Kubelet(ops, paths, args.python, api.nodes(), api.token)
    controller = Controller(
        api,
        kubelet,
        lambda script: ops.nft(ROUTER_NS, script),
        # atomic: dnsmasq re-reads the file when it is moved into place
        lambda hosts: write_atomic(paths.cluster_hosts / "services", hosts, fsync=False),
        frozenset(svc.fqdn for svc in build_plan().services),
    )
    stop, changed = threading.Event(), threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: (stop.set(), changed.set()))
    for call in (
        api.apps.list_deployment_for_all_namespaces,
        api.core.list_pod_for_all_namespaces,
        api.core.list_service_for_all_namespaces,
    ):
        threading.Thread(target=_watch, args=(call, changed, stop), daemon=True).start()
    announced = False
    while not stop.is_set():
        changed.clear()
        try:
            settled = controller.reconcile()
        except Exception:
            log.exception("reconcile failed; trying again")
            settled = False
        if settled and not announced and args.ready_file:
            write_atomic(args.ready_file, "ready\n", fsync=False)
            announced = True
        # pods starting are checked for readiness often; a settled cluster waits for the next change
        changed.wait(0.2 if kubelet.pending() or not settled else 5.0)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tether.lab.controller", description=__doc__.split("\n")[0])
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--state-root", type=Path, default=StatePaths().root, help="the lab's state directory")
    parser.add_argument("--python", default=sys.executable, help="the interpreter pods' programs run with")
    parser.add_argument("--ready-file", type=Path, help="written once every Deployment is first rolled out")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    return run(args)
