"""The kubelet's side effects: a pod's network namespace on its node's bridge, its projected token files, its
containers' processes (restarted when they exit), readiness checks, and tearing all of it down by PID.

The decisions are in :mod:`.podspec`; this module only carries them out.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from tether.lab import clusterdns, network, probes, procs
from tether.lab.controller import podspec
from tether.lab.controller.images import ImageError
from tether.lab.journal import ProcessRecord
from tether.lab.netns import NetnsOps
from tether.lab.specs import Probe
from tether.lab.topology import PREFIX, ROUTER_NS, Node, StatePaths, pod_netns
from tether.runtime.atomicfile import write_atomic

log = logging.getLogger("tether.lab.controller.kubelet")

Obj = dict[str, Any]
#: (pod, audience, expirationSeconds) -> a token bound to the pod (the API's TokenRequest)
TokenSource = Callable[[Mapping[str, Any], str, int], str]
#: Under a pod's volume directory: the containers' views (not a volume name: those are DNS labels).
VIEWS = "_views"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class PodRun:
    namespace: str
    name: str
    uid: str
    netns: str = ""
    ip: str = ""
    host_ip: str = ""
    started: str = ""
    processes: dict[str, podspec.Process] = field(default_factory=dict)
    records: dict[str, ProcessRecord] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    ready: dict[str, bool] = field(default_factory=dict)
    waiting: dict[str, tuple[str, str]] = field(default_factory=dict)
    checks: dict[str, list[podspec.Check]] = field(default_factory=dict)


class Kubelet:
    def __init__(
        self, ops: NetnsOps, paths: StatePaths, python: str, nodes: Mapping[str, Node], tokens: TokenSource
    ) -> None:
        self.ops = ops
        self.paths = paths
        self.python = python
        self.nodes = dict(nodes)
        self.tokens = tokens
        self.pods: dict[tuple[str, str], PodRun] = {}

    # -- one pod ----------------------------------------------------------------------------------

    def sync(self, pod: Mapping[str, Any], used_ips: list[str]) -> Obj | None:
        """Bring the pod's sandbox to what the pod says; its status, or None for pods this kubelet leaves be
        (another's, not scheduled, or already running from before)."""
        meta, spec = pod["metadata"], pod.get("spec") or {}
        key = (meta["namespace"], meta["name"])
        run = self.pods.get(key)
        if run is not None and run.uid != meta.get("uid"):
            self.stop(key)  # same name, new pod
            run = None
        if run is None:
            if spec.get("nodeName") not in self.nodes or (pod.get("status") or {}).get("phase") not in (
                None,
                "Pending",
            ):
                return None
            if (pod.get("status") or {}).get("containerStatuses") and any(
                "containerID" in s for s in pod["status"]["containerStatuses"]
            ):
                return None  # started by someone else (the lab's static pods)
            run = self.pods[key] = self._start(pod, used_ips)
        else:
            self._tend(run)
        return podspec.status(
            pod, ip=run.ip, host_ip=run.host_ip, netns=run.netns, started=run.started,
            ready=run.ready, waiting=run.waiting, restarts=run.restarts,
        )  # fmt: skip

    def _start(self, pod: Mapping[str, Any], used_ips: list[str]) -> PodRun:
        meta, spec = pod["metadata"], pod["spec"]
        node = self.nodes[spec["nodeName"]]
        run = PodRun(
            meta["namespace"], meta["name"], meta.get("uid", ""), host_ip=str(node.internal_ip), started=_now()
        )
        missing = podspec.missing_images(pod)
        if missing:
            for container in pod["spec"].get("containers") or []:
                name = container.get("name", "")
                message = f'Back-off pulling image "{container.get("image")}"'
                run.waiting[name] = ("ImagePullBackOff", message) if name in missing else ("PodInitializing", "")
            return run
        ip = (pod.get("status") or {}).get("podIP") or str(podspec.allocate_ip(node.pod_cidr, used_ips))
        run.ip, run.netns = ip, pod_netns(run.namespace, run.name)
        self._sandbox(run, node)
        try:
            volumes = self._volumes(pod)
            extra = {"KUBECONFIG": str(self.paths.pod_kubeconfig)}  # the lab's in-cluster credentials
            views = self._volume_root(run.namespace, run.name) / VIEWS
            found = podspec.processes(dict(pod, status={"podIP": ip}), self.python, run.host_ip, volumes, extra, views)
            for process in found:
                for bind in process.binds:  # mount points; the mounts themselves are made in the container
                    Path(bind.target).mkdir(mode=0o755, parents=True, exist_ok=True)
        except (ImageError, OSError) as exc:
            for container in spec.get("containers") or []:
                run.waiting[container.get("name", "")] = ("CreateContainerConfigError", str(exc))
            return run
        for container in spec.get("containers") or []:
            run.checks[container.get("name", "")] = podspec.readiness(container)
        for process in found:
            run.processes[process.container] = process
            self._launch(run, process)
        return run

    def _sandbox(self, run: PodRun, node: Node) -> None:
        resolv = self.paths.resolv_conf(run.netns)
        resolv.parent.mkdir(parents=True, exist_ok=True)
        resolv.write_text(clusterdns.pod_resolv_conf(run.namespace))
        network.add_pod(
            self.ops, run.netns, podspec.veth_name(run.namespace, run.name), IPv4Address(run.ip), node.gateway
        )
        # the address may have been another pod's a moment ago: forget that pod's MAC, as a CNI plugin does
        self.ops.runner.run(["ip", "-n", ROUTER_NS, "neigh", "flush", "to", run.ip], check=False)

    def _volume_root(self, namespace: str, name: str) -> Path:
        return self.paths.tokens / f"{namespace}_{name}"

    def _volumes(self, pod: Mapping[str, Any]) -> dict[str, Path]:
        """Each volume as a directory: projected service-account tokens requested from the API server (only
        root reads them), anything else an empty directory."""
        meta = pod["metadata"]
        root = self._volume_root(meta["namespace"], meta["name"])
        dirs = {}
        for volume in pod["spec"].get("volumes") or []:
            directory = root / volume["name"]
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            for source in (volume.get("projected") or {}).get("sources") or []:
                wanted = source.get("serviceAccountToken")
                if wanted:
                    token = self.tokens(
                        pod, str(wanted.get("audience", "")), int(wanted.get("expirationSeconds", 3600))
                    )
                    write_atomic(directory / wanted.get("path", "token"), token + "\n", mode=0o600, fsync=False)
            dirs[volume["name"]] = directory
        return dirs

    def _launch(self, run: PodRun, process: podspec.Process) -> None:
        label = f"{run.namespace}_{run.name}_{process.container}"
        record = procs.start(
            f"pod/{run.namespace}/{run.name}/{process.container}", run.netns, podspec.launch_argv(process),
            self.paths.logs / f"{label}.log", dict(process.env),
        )  # fmt: skip
        run.records[process.container] = record
        run.ready[process.container] = False

    def _tend(self, run: PodRun) -> None:
        """Restart exited processes; update readiness."""
        for name, record in list(run.records.items()):
            if not procs.is_running(record.pid, record.start_time):
                log.warning("%s/%s container %s exited; restarting", run.namespace, run.name, name)
                run.restarts[name] = run.restarts.get(name, 0) + 1
                self._launch(run, run.processes[name])
                continue
            if not run.ready.get(name):
                run.ready[name] = all(self._check(run, c) for c in run.checks.get(name, []))

    def _check(self, run: PodRun, check: podspec.Check) -> bool:
        return probes.check(Probe(ROUTER_NS, check.kind, run.ip, check.port, name=check.path))

    # -- teardown ---------------------------------------------------------------------------------

    def stop(self, key: tuple[str, str]) -> None:
        """End the pod's processes (by PID) and remove its namespace and files."""
        run = self.pods.pop(key, None)
        if run is None:
            return
        self._remove(run.netns, [r.pid for r in run.records.values()], run.namespace, run.name)

    def remove_foreign(self, pod: Mapping[str, Any], netns: str) -> None:
        """A deleted pod this kubelet did not start (one the lab seeded): its namespace's processes and all."""
        meta = pod["metadata"]
        if netns.startswith(PREFIX + "pod-") and (meta["namespace"], meta["name"]) not in self.pods:
            self._remove(netns, [], meta["namespace"], meta["name"])

    def _remove(self, netns: str, pids: list[int], namespace: str, name: str) -> None:
        if netns and netns in self.ops.list(netns):
            pids = pids + self.ops.pids(netns)
        stuck = procs.terminate(pids)
        if stuck:
            log.warning("pod %s/%s: processes %s did not exit", namespace, name, stuck)
        if netns:
            with contextlib.suppress(Exception):
                if netns in self.ops.list(netns):
                    self.ops.delete(netns)
            shutil.rmtree(self.paths.resolv_conf(netns).parent, ignore_errors=True)
        shutil.rmtree(self._volume_root(namespace, name), ignore_errors=True)

    def stop_all(self) -> None:
        for key in list(self.pods):
            self.stop(key)

    def pending(self) -> bool:
        """Whether a pod still waits for its processes to be ready."""
        return any(not all(run.ready.values()) for run in self.pods.values() if run.records)
