"""The Kubernetes objects the lab's API server starts with, and the lab's kubeconfigs. Pure.

Objects are complete (the official client's models validate strictly): metadata with uid and
creationTimestamp, node systemInfo, pod container statuses, and so on.
"""

from __future__ import annotations

import uuid
from typing import Any

from tether.manager.lab.topology import (
    CLUSTER_DOMAIN,
    CONTEXT_NAME,
    SERVICE_CIDR,
    LabPlan,
    Node,
    Pod,
    Service,
)

Obj = dict[str, Any]

KUBELET_VERSION = "v1.31.0-tether-lab"
#: Namespaces an API server creates by itself (the lab's emulator does too): not in the seed.
BUILTIN_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_UID_NAMESPACE = uuid.UUID("6f1c1d52-7d0e-4c8e-9a59-1a2b3c4d5e6f")


def _meta(kind: str, name: str, now: str, namespace: str | None = None, **extra: Any) -> Obj:
    meta: Obj = {
        "name": name,
        "uid": str(uuid.uuid5(_UID_NAMESPACE, f"{kind}/{namespace or ''}/{name}")),
        "creationTimestamp": now,
    }
    if namespace is not None:
        meta["namespace"] = namespace
    meta.update({k: v for k, v in extra.items() if v})
    return meta


def namespace_object(name: str, now: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": _meta("Namespace", name, now, labels={"kubernetes.io/metadata.name": name}),
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def node_object(node: Node, now: str) -> Obj:
    labels = {
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
    }
    resources = {"cpu": "2", "memory": "4Gi", "pods": "110", "ephemeral-storage": "20Gi"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": _meta("Node", node.name, now, labels=labels),
        "spec": {"podCIDR": str(node.pod_cidr), "podCIDRs": [str(node.pod_cidr)]},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": str(node.internal_ip)},
                {"type": "Hostname", "address": node.name},
            ],
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }
            ],
            "nodeInfo": {
                "architecture": "amd64",
                "bootID": str(uuid.uuid5(_UID_NAMESPACE, f"boot/{node.name}")),
                "containerRuntimeVersion": "netns://tether-lab",
                "kernelVersion": "linux",
                "kubeProxyVersion": KUBELET_VERSION,
                "kubeletVersion": KUBELET_VERSION,
                "machineID": uuid.uuid5(_UID_NAMESPACE, f"machine/{node.name}").hex,
                "operatingSystem": "linux",
                "osImage": "tether lab",
                "systemUUID": str(uuid.uuid5(_UID_NAMESPACE, f"system/{node.name}")),
            },
        },
    }


def _image(pod: Pod) -> str:
    return f"tether-lab/{pod.label_dict.get('app', pod.name)}:latest"


def pod_object(pod: Pod, node: Node, now: str, running: bool = True) -> Obj:
    container = pod.label_dict.get("app", "app")
    image = _image(pod)
    ready = "True" if running else "False"
    conditions = [
        {"type": t, "status": "True" if t in ("PodScheduled", "Initialized") else ready, "lastTransitionTime": now}
        for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
    ]
    state: Obj = {"running": {"startedAt": now}} if running else {"waiting": {"reason": "NotStarted"}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": _meta("Pod", pod.name, now, pod.namespace, labels=pod.label_dict),
        "spec": {
            "containers": [
                {
                    "name": container,
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "ports": [{"name": p.name, "containerPort": p.port, "protocol": p.protocol} for p in pod.ports],
                }
            ],
            "nodeName": node.name,
            "restartPolicy": "Always",
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "terminationGracePeriodSeconds": 5,
        },
        "status": {
            "phase": "Running" if running else "Pending",
            "podIP": str(pod.ip),
            "podIPs": [{"ip": str(pod.ip)}],
            "hostIP": str(node.internal_ip),
            "hostIPs": [{"ip": str(node.internal_ip)}],
            "startTime": now,
            "qosClass": "BestEffort",
            "conditions": conditions,
            "containerStatuses": [
                {
                    "name": container,
                    "image": image,
                    "imageID": f"{image}@sha256:{uuid.uuid5(_UID_NAMESPACE, image).hex * 2}",
                    "containerID": f"netns://{pod.netns}",
                    "ready": running,
                    "started": running,
                    "restartCount": 0,
                    "state": state,
                }
            ],
        },
    }


def service_object(svc: Service, now: str) -> Obj:
    labels = {"component": "apiserver", "provider": "kubernetes"} if svc.name == "kubernetes" else {}
    spec: Obj = {
        "type": "ClusterIP",
        "clusterIP": str(svc.cluster_ip),
        "clusterIPs": [str(svc.cluster_ip)],
        "ipFamilies": ["IPv4"],
        "ipFamilyPolicy": "SingleStack",
        "internalTrafficPolicy": "Cluster",
        "sessionAffinity": "None",
        "ports": [
            {"name": p.name, "port": p.port, "targetPort": p.target_port, "protocol": p.protocol} for p in svc.ports
        ],
    }
    if svc.selector:
        spec["selector"] = dict(svc.selector)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta("Service", svc.name, now, svc.namespace, labels=labels),
        "spec": spec,
        "status": {"loadBalancer": {}},
    }


def configmap_object(namespace: str, name: str, data: dict[str, str], now: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta("ConfigMap", name, now, namespace),
        "data": dict(data),
    }


def seed_objects(plan: LabPlan, now: str) -> list[Obj]:
    """What the API server holds at start besides its built-in namespaces; namespaces first."""
    nodes = {n.name: n for n in plan.nodes}
    objects = [namespace_object(ns, now) for ns in plan.namespaces if ns not in BUILTIN_NAMESPACES]
    objects += [node_object(n, now) for n in plan.nodes]
    objects.append(configmap_object("tether", "tether-manager", {}, now))
    objects.append(
        configmap_object(
            "kube-system",
            "cluster-info",
            {"clusterDomain": CLUSTER_DOMAIN, "serviceCIDR": str(SERVICE_CIDR)},
            now,
        )
    )
    objects += [service_object(s, now) for s in plan.services]
    objects += [pod_object(p, nodes[p.node], now) for p in plan.pods]
    return objects


def kubeconfig(server: str, namespace: str = "default", context: str = CONTEXT_NAME) -> Obj:
    """A kubeconfig for the lab's plain-HTTP API server (the token is not checked)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": context, "cluster": {"server": server}}],
        "users": [{"name": context, "user": {"token": "tether-lab"}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context, "namespace": namespace}}],
        "current-context": context,
    }
