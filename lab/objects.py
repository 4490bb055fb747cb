"""The Kubernetes objects the lab's API server starts with, and the lab's kubeconfigs. Pure.

Objects are complete (the official client's models validate strictly): metadata with uid and
creationTimestamp, node systemInfo, pod container statuses, and so on.

Every pod belongs to an ``apps/v1`` Deployment and names it in its ownerReferences. The lab has no
ReplicaSet controller (its API server serves no ReplicaSets), so a pod's owner is the Deployment
itself. A workload whose pods run a tether-agent (``web``) has the sidecar in its template and its
pods, exactly as agent injection (by the client, :mod:`tether.manager.api.sidecar`) would have put it there.
"""

from __future__ import annotations

import uuid
from typing import Any

from tether.lab.topology import (
    AGENT_IMAGE,
    APP_LABEL,
    CLUSTER_DOMAIN,
    CONTEXT_NAME,
    SERVICE_CIDR,
    LabPlan,
    Node,
    Pod,
    Service,
    Workload,
)
from tether.manager.api.sidecar import (
    ANNOTATION,
    SidecarConfig,
    annotation_value,
    app_volume_mounts,
    sidecar_container,
    token_volume,
)

Obj = dict[str, Any]

KUBELET_VERSION = "v1.31.0-tether-lab"
#: On a Deployment whose pods the lab starts itself (cluster DNS): the controller leaves them be. The
#: traffic-manager is none of the lab's: `tether manager install` puts it there, and the controller runs it.
STATIC_PODS = "lab.tether.dev/pods"
#: Namespaces an API server creates by itself (the lab's emulator does too): not in the seed.
BUILTIN_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_UID_NAMESPACE = uuid.UUID("6f1c1d52-7d0e-4c8e-9a59-1a2b3c4d5e6f")


def _uid(kind: str, name: str, namespace: str | None = None) -> str:
    return str(uuid.uuid5(_UID_NAMESPACE, f"{kind}/{namespace or ''}/{name}"))


def _meta(kind: str, name: str, now: str, namespace: str | None = None, **extra: Any) -> Obj:
    meta: Obj = {"name": name, "uid": _uid(kind, name, namespace), "creationTimestamp": now}
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


def agent_sidecar(plan: LabPlan, workload: str, app: Obj | None = None) -> Obj:
    """The tether-agent container of a workload's pods: what the lab runs there as the agent process (with
    the ``app`` container's volumes, re-rooted, as an injection gives them)."""
    mounts = app_volume_mounts([app]) if app is not None else []
    return sidecar_container("Deployment", workload, agent_sidecar_config(plan), volume_mounts=mounts)


def agent_sidecar_config(plan: LabPlan) -> SidecarConfig:
    return SidecarConfig(image=AGENT_IMAGE, manager=plan.agent_manager_address)


def _app_container(pod: Pod) -> Obj:
    container: Obj = {
        "name": pod.label_dict.get("app", "app"),
        "image": _image(pod),
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": p.name, "containerPort": p.port, "protocol": p.protocol} for p in pod.ports],
    }
    if pod.kind == "workload":  # run by the lab's controller: arguments and identity as a manifest gives them
        container["args"] = list(pod.args)
        container["env"] = [
            {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}
            for name, path in (("POD_NAME", "metadata.name"), ("POD_IP", "status.podIP"))
        ]
    if pod.volumes:
        container["volumeMounts"] = [{"name": name, "mountPath": path} for name, path in pod.volumes]
    return container


def _containers(plan: LabPlan | None, pod: Pod) -> list[Obj]:
    app = _app_container(pod)
    containers = [app]
    if pod.agent and plan is not None:
        containers.append(agent_sidecar(plan, pod.workload, app))
    return containers


def _volumes(plan: LabPlan | None, pod: Pod) -> dict[str, list[Obj]]:
    """The app's emptyDir volumes, and the agent's projected token volume for a pod that runs one (its
    sidecar mounts it)."""
    volumes: list[Obj] = [{"name": name, "emptyDir": {}} for name, _ in pod.volumes]
    if pod.agent and plan is not None:
        volumes.append(token_volume(agent_sidecar_config(plan)))
    return {"volumes": volumes} if volumes else {}


def _annotations(plan: LabPlan | None, pod: Pod) -> dict[str, str]:
    return {ANNOTATION: annotation_value(agent_sidecar_config(plan))} if pod.agent and plan is not None else {}


def _owner(pod: Pod) -> list[Obj]:
    if not pod.workload:
        return []
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": pod.workload,
            "uid": _uid("Deployment", pod.workload, pod.namespace),
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def pod_object(pod: Pod, node: Node, now: str, running: bool = True, plan: LabPlan | None = None) -> Obj:
    """The pod as the API server holds it; with the plan, a pod that runs an agent lists its sidecar."""
    ready = "True" if running else "False"
    conditions = [
        {"type": t, "status": "True" if t in ("PodScheduled", "Initialized") else ready, "lastTransitionTime": now}
        for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
    ]
    state: Obj = {"running": {"startedAt": now}} if running else {"waiting": {"reason": "ContainerCreating"}}
    containers = _containers(plan, pod)
    statuses = [
        {
            "name": c["name"],
            "image": c["image"],
            "imageID": f"{c['image']}@sha256:{uuid.uuid5(_UID_NAMESPACE, c['image']).hex * 2}",
            **({"containerID": f"netns://{pod.netns}/{c['name']}"} if running else {}),
            "ready": running,
            "started": running,
            "restartCount": 0,
            "state": state,
        }
        for c in containers
    ]
    meta = _meta(
        "Pod",
        pod.name,
        now,
        pod.namespace,
        labels=pod.label_dict,
        annotations=_annotations(plan, pod),
        ownerReferences=_owner(pod),
    )
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "containers": containers,
            **_volumes(plan, pod),
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
            "containerStatuses": statuses,
        },
    }


def deployment_object(plan: LabPlan, workload: Workload, now: str) -> Obj:
    """The apps/v1 Deployment of a workload's pods, fully rolled out."""
    pod = workload.pods[0]
    replicas = len(workload.pods)
    template_meta: Obj = {"labels": pod.label_dict}
    if _annotations(plan, pod):
        template_meta["annotations"] = _annotations(plan, pod)
    conditions = [
        {
            "type": kind,
            "status": "True",
            "reason": reason,
            "message": message,
            "lastUpdateTime": now,
            "lastTransitionTime": now,
        }
        for kind, reason, message in (
            ("Available", "MinimumReplicasAvailable", "Deployment has minimum availability."),
            ("Progressing", "NewReplicaSetAvailable", f'Deployment "{workload.name}" has successfully progressed.'),
        )
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(
            "Deployment",
            workload.name,
            now,
            workload.namespace,
            labels={APP_LABEL: pod.label_dict[APP_LABEL]},
            annotations={} if pod.kind == "workload" else {STATIC_PODS: "static"},
        ),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": workload.selector},
            "template": {
                "metadata": template_meta,
                "spec": {
                    "containers": _containers(plan, pod),
                    **_volumes(plan, pod),
                    "restartPolicy": "Always",
                    "dnsPolicy": "ClusterFirst",
                    "terminationGracePeriodSeconds": 5,
                },
            },
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
        },
        "status": {
            "observedGeneration": 1,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
            "conditions": conditions,
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
    objects.append(
        configmap_object(
            "kube-system",
            "cluster-info",
            {"clusterDomain": CLUSTER_DOMAIN, "serviceCIDR": str(SERVICE_CIDR)},
            now,
        )
    )
    objects += [service_object(s, now) for s in plan.services]
    objects += [deployment_object(plan, w, now) for w in plan.workloads]
    # the workloads' pods are scheduled, with their addresses, but not started: the controller runs them
    objects += [pod_object(p, nodes[p.node], now, running=p.kind != "workload", plan=plan) for p in plan.pods]
    return objects


#: The bearer token of the lab's admin kubeconfigs (no secret: lab/users.py makes it the all-powerful user).
ADMIN_TOKEN = "tether-lab"


def kubeconfig(server: str, namespace: str = "default", context: str = CONTEXT_NAME, token: str = ADMIN_TOKEN) -> Obj:
    """A kubeconfig for the lab's plain-HTTP API server, as the user ``token`` names (see lab/users.py)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": context, "cluster": {"server": server}}],
        "users": [{"name": context, "user": {"token": token}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context, "namespace": namespace}}],
        "current-context": context,
    }
