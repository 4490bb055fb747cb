"""The kubelet's decisions about one pod, pure: its IP, each container's process (argv and environment, with
the downward API and mounted volumes resolved), what readiness is checked, and the pod's status.

The lab's processes run on the host's filesystem, so a volume is a host directory, and a container's mounts
are made real in a *view*: a directory of its own where each volume is bind-mounted at view + ``mountPath``,
in the container's private mount namespace (``ip netns exec`` gives each process one; the binds are made
there just before the container's program starts, so the host never sees them and they end with the
container). Arguments and environment values under a ``mountPath``, or leading to one (``/tether/volumes``
when ``/tether/volumes/data`` is mounted), are rewritten to the view, so two containers that mount one
volume share it as they would in a real pod, and a directory holding several mounts exists as one tree
(the tether-agent serves the app's volumes from such a tree). Without a view (``views=None``) values are
rewritten to the volume directories themselves.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from tether.lab.controller.images import ImageError, container_argv, lookup
from tether.lab.topology import FIRST_POD_HOST, KUBERNETES_IP

Obj = dict[str, Any]

#: downward API fieldRef paths -> how to read them from (pod, host IP)
_FIELDS = {
    "metadata.name": lambda pod, _host: pod["metadata"]["name"],
    "metadata.namespace": lambda pod, _host: pod["metadata"]["namespace"],
    "metadata.uid": lambda pod, _host: pod["metadata"].get("uid", ""),
    "spec.nodeName": lambda pod, _host: pod["spec"].get("nodeName", ""),
    "spec.serviceAccountName": lambda pod, _host: pod["spec"].get("serviceAccountName", "default"),
    "status.podIP": lambda pod, _host: (pod.get("status") or {}).get("podIP", ""),
    "status.hostIP": lambda _pod, host: host,
}


@dataclass(frozen=True)
class Bind:
    """A volume directory bind-mounted at ``target`` (in the container's view)."""

    source: str
    target: str
    read_only: bool = False


@dataclass(frozen=True)
class Process:
    container: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    #: mounts made in the process's own mount namespace before argv runs
    binds: tuple[Bind, ...] = ()


@dataclass(frozen=True)
class Check:
    """A readiness check from the router: "tcp" connect or "http" GET path, at the pod's IP."""

    kind: str
    port: int
    path: str = "/"


def allocate_ip(cidr: IPv4Network, used: Iterable[str]) -> IPv4Address:
    """The first free pod address of a node's range (the gateway and a few below FIRST_POD_HOST stay free)."""
    taken = set(used)
    for offset in range(FIRST_POD_HOST, cidr.num_addresses - 1):
        address = cidr.network_address + offset
        if str(address) not in taken:
            return address
    raise RuntimeError(f"no free pod address left in {cidr}")


def veth_name(namespace: str, name: str) -> str:
    """A router-side interface name (at most 15 characters) unique to the pod."""
    return "vc" + hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:10]


def _env(container: Mapping[str, Any], pod: Mapping[str, Any], host_ip: str) -> list[tuple[str, str]]:
    out = [("KUBERNETES_SERVICE_HOST", str(KUBERNETES_IP)), ("KUBERNETES_SERVICE_PORT", "443")]
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var or "valueFrom" not in var:
            out.append((name, str(var.get("value", ""))))
            continue
        ref = (var["valueFrom"] or {}).get("fieldRef") or {}
        read = _FIELDS.get(ref.get("fieldPath", ""))
        if read is None:
            raise ImageError(f"env {name}: the lab resolves only fieldRef ({', '.join(sorted(_FIELDS))})")
        out.append((name, str(read(pod, host_ip))))
    return out


def _rewrite(value: str, mounts: Sequence[tuple[str, str]], view: str = "") -> str:
    for mount_path, host_dir in mounts:
        root = mount_path.rstrip("/")
        if value == root or value.startswith(root + "/"):
            return (view + value) if view else host_dir + value[len(root) :]
    if (
        view
        and value.startswith("/")
        and value.rstrip("/")
        and any(m.startswith(value.rstrip("/") + "/") for m, _ in mounts)
    ):
        return view + value  # a directory that holds mounts: the view has it
    return value


def _binds(container: Mapping[str, Any], volume_dirs: Mapping[str, Path], view: str) -> tuple[Bind, ...]:
    found = []
    for mount in container.get("volumeMounts") or []:
        directory = volume_dirs.get(mount.get("name", ""))
        if directory is not None:
            source = directory / mount["subPath"] if mount.get("subPath") else directory
            target = view + "/" + str(mount["mountPath"]).strip("/")
            found.append(Bind(str(source), target, bool(mount.get("readOnly"))))
    return tuple(sorted(found, key=lambda b: len(b.target)))  # parents first: a deeper mount lands inside


def launch_argv(process: Process) -> list[str]:
    """The process's argv, preceded by its binds (a shell that mounts, then execs argv) when it has any."""
    if not process.binds:
        return list(process.argv)
    steps = []
    for bind in process.binds:
        source, target = shlex.quote(bind.source), shlex.quote(bind.target)
        steps.append(f"mount --bind {source} {target}")
        if bind.read_only:
            steps.append(f"mount -o remount,bind,ro {target}")
    return ["sh", "-c", " && ".join([*steps, 'exec "$@"']), "sh", *process.argv]


def mounts(container: Mapping[str, Any], volume_dirs: Mapping[str, Path]) -> list[tuple[str, str]]:
    """(mountPath, host directory) of the container's mounts of volumes the kubelet prepared."""
    found = []
    for mount in container.get("volumeMounts") or []:
        directory = volume_dirs.get(mount.get("name", ""))
        if directory is not None:
            found.append((str(mount["mountPath"]), str(directory)))
    return sorted(found, key=lambda m: -len(m[0]))  # the deepest mount wins


def processes(
    pod: Mapping[str, Any],
    python: str,
    host_ip: str,
    volume_dirs: Mapping[str, Path],
    extra_env: Mapping[str, str],
    views: Path | None = None,
) -> list[Process]:
    """Every container's process (with ``views``, each container's view is ``views/<container>``); an
    ImageError names the first container that cannot start and why."""
    out = []
    for container in pod["spec"].get("containers") or []:
        name = container.get("name", "")
        image = lookup(container.get("image", ""))
        if image is None:
            raise ImageError(f"container {name}: image {container.get('image')!r} not found")
        bound = mounts(container, volume_dirs)
        view = str(views / name) if views is not None and bound else ""
        argv = [_rewrite(word, bound, view) for word in container_argv(image, container, python)]
        env = [*extra_env.items(), *((k, _rewrite(v, bound, view)) for k, v in _env(container, pod, host_ip))]
        binds = _binds(container, volume_dirs, view) if view else ()
        out.append(Process(name, tuple(argv), tuple(env), binds))
    return out


def missing_images(pod: Mapping[str, Any]) -> list[str]:
    """Names of containers whose image no registry has."""
    return [c.get("name", "") for c in pod["spec"].get("containers") or [] if lookup(c.get("image", "")) is None]


def _port(value: Any, container: Mapping[str, Any]) -> int | None:
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    for port in container.get("ports") or []:
        if port.get("name") == value:
            return int(port["containerPort"])
    return None


def readiness(container: Mapping[str, Any]) -> list[Check]:
    """The container's readinessProbe, else a connect to each TCP port it declares (it listens), else none
    (started is ready)."""
    probe = container.get("readinessProbe") or {}
    if "httpGet" in probe:
        port = _port(probe["httpGet"].get("port"), container)
        return [Check("http", port, probe["httpGet"].get("path", "/"))] if port else []
    if "tcpSocket" in probe:
        port = _port(probe["tcpSocket"].get("port"), container)
        return [Check("tcp", port)] if port else []
    return [
        Check("tcp", int(p["containerPort"])) for p in container.get("ports") or [] if p.get("protocol", "TCP") == "TCP"
    ]


def status(
    pod: Mapping[str, Any],
    *,
    ip: str,
    host_ip: str,
    netns: str,
    started: str,
    ready: Mapping[str, bool],
    waiting: Mapping[str, tuple[str, str]],
    restarts: Mapping[str, int],
) -> Obj:
    """The pod's status: per container running (ready or not) or waiting (reason, message)."""
    statuses = []
    for container in pod["spec"].get("containers") or []:
        name = container.get("name", "")
        entry: Obj = {
            "name": name,
            "image": container.get("image", ""),
            "imageID": "",
            "ready": bool(ready.get(name)),
            "restartCount": restarts.get(name, 0),
            "started": name not in waiting,
        }
        if name in waiting:
            reason, message = waiting[name]
            entry["state"] = {"waiting": {"reason": reason, "message": message}}
        else:
            entry["state"] = {"running": {"startedAt": started}}
            entry["containerID"] = f"netns://{netns}/{name}"
        statuses.append(entry)
    all_ready = bool(statuses) and all(s["ready"] for s in statuses)
    running = not waiting
    flag = "True" if all_ready else "False"
    conditions = [
        {"type": "PodScheduled", "status": "True"},
        {"type": "Initialized", "status": "True"},
        {"type": "ContainersReady", "status": flag},
        {"type": "Ready", "status": flag},
    ]
    out: Obj = {
        "phase": "Running" if running else "Pending",
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": started,
        "qosClass": "BestEffort",
        "conditions": conditions,
        "containerStatuses": statuses,
    }
    if ip:
        out["podIP"] = ip
        out["podIPs"] = [{"ip": ip}]
    return out
