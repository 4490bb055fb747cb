"""What runs where in the lab, and how to tell it is ready. Pure: builds command lines only."""

from __future__ import annotations

from dataclasses import dataclass

from tether.lab import clusterdns
from tether.lab.topology import (
    API_IP,
    API_PORT,
    CORP_NS,
    INET_NS,
    INET_WEB_IP,
    KUBERNETES_IP,
    ROUTER_NS,
    SERVICE_CIDR,
    UPSTREAM_DNS_IP,
    VPN_HOST_PORT,
    WS_NODE_IP,
    WS_NS,
    LabPlan,
    Pod,
    StatePaths,
)

APISERVER_MODULE = "tether.lab.apiserver"
WORKLOADS_MODULE = "tether.lab.workloads"
CONTROLLER_MODULE = "tether.lab.controller"
MANAGER_MODULE = "tether.manager.main"
#: `tether-manager` through its entry point (tether.manager.main:main), with this interpreter.
MANAGER_BOOT = "import sys; from tether.manager.main import main; sys.exit(main())"
#: `tether-agent` through its entry point (tether.manager.agent.main:main), with this interpreter.
AGENT_BOOT = "import sys; from tether.manager.agent.main import main; sys.exit(main())"


@dataclass(frozen=True)
class Probe:
    """A check run from inside `netns`: "tcp" connect, "udp" echo, "http" GET path -> 200,
    or "dns" query for `name` expecting `expect` among the A records."""

    netns: str
    kind: str
    host: str
    port: int
    name: str = ""
    expect: str = ""


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    netns: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()
    ready_file: str = ""
    probe: Probe | None = None
    #: start only once the API server answers
    after_api: bool = False
    #: keep the host's mount namespace (see netns.exec_argv): for a process that creates namespaces
    host_mounts: bool = False


def _pod_env(pod: Pod) -> tuple[tuple[str, str], ...]:
    return (
        ("POD_NAME", pod.name),
        ("POD_NAMESPACE", pod.namespace),
        ("POD_IP", str(pod.ip)),
        ("NODE_NAME", pod.node),
        ("KUBERNETES_SERVICE_HOST", str(KUBERNETES_IP)),
        ("KUBERNETES_SERVICE_PORT", "443"),
    )


def _ready(paths: StatePaths, name: str) -> str:
    return str(paths.ready / name.replace("/", "_"))


def process_name(pod: Pod) -> str:
    return f"pod/{pod.namespace}/{pod.name}"


def apiserver_spec(paths: StatePaths, python: str, module: str = APISERVER_MODULE) -> ProcessSpec:
    ready = _ready(paths, "apiserver")
    argv = (
        python, "-m", module,
        "--listen", f"{API_IP}:{API_PORT}",
        "--service-cidr", str(SERVICE_CIDR),
        "--seed", str(paths.seed),
        "--service-account-tokens", str(paths.service_account_tokens),
        "--users", str(paths.users),
        "--ready-file", ready,
    )  # fmt: skip
    # probed from the workstation: the path users and the helper take
    probe = Probe(WS_NS, "http", str(API_IP), API_PORT, name="/api/v1/namespaces/default")
    return ProcessSpec("apiserver", ROUTER_NS, argv, ready_file=ready, probe=probe)


def pod_spec(plan: LabPlan, pod: Pod, paths: StatePaths, python: str) -> ProcessSpec:
    name = process_name(pod)
    env = _pod_env(pod)
    if pod.kind == "dns":
        argv = tuple(clusterdns.dnsmasq_argv(paths.conf / "cluster-dns.conf"))
        # asked from the router (the lab starts no other pod before the controller runs the workloads'),
        # for a name of the lab's own plan
        kubernetes = plan.service("default", "kubernetes")
        probe = Probe(ROUTER_NS, "dns", str(pod.ip), 53, name=kubernetes.fqdn, expect=str(kubernetes.cluster_ip))
        return ProcessSpec(name, pod.netns, argv, env, "", probe)
    raise ValueError(f"the lab's controller runs {process_name(pod)}, not the lab")


def infrastructure_specs(plan: LabPlan, paths: StatePaths, python: str) -> list[ProcessSpec]:
    """The upstream DNS and web host in the internet namespace, and the corp hosts of the VPN."""
    specs = [
        ProcessSpec(
            "dns-upstream",
            INET_NS,
            tuple(clusterdns.dnsmasq_argv(paths.conf / "upstream-dns.conf")),
            probe=Probe(ROUTER_NS, "dns", str(UPSTREAM_DNS_IP), 53, name="example.test", expect=str(INET_WEB_IP)),
        )
    ]
    ready = _ready(paths, "inet-web")
    argv = (
        python, "-m", WORKLOADS_MODULE, "http", "--host", str(INET_WEB_IP), "--port", "80",
        "--app", "internet", "--greeting", "hello from the internet ({local})", "--ready-file", ready,
    )  # fmt: skip
    probe = Probe(ROUTER_NS, "tcp", str(INET_WEB_IP), 80)
    specs.append(ProcessSpec("inet-web", INET_NS, argv, ready_file=ready, probe=probe))
    if plan.vpn is not None and plan.vpn.hosts:
        specs.append(corp_spec(plan, paths, python))
    if plan.local:
        specs.append(workstation_resolver_spec(paths))
    return specs


def workstation_resolver_spec(paths: StatePaths) -> ProcessSpec:
    """--local: the workstation's resolver on its cluster-bridge address, the cluster DNS's upstream."""
    argv = tuple(clusterdns.dnsmasq_argv(paths.conf / "ws-resolver.conf"))
    probe = Probe(WS_NS, "dns", str(WS_NODE_IP), 53, name="example.test", expect=str(INET_WEB_IP))
    return ProcessSpec("ws-resolver", WS_NS, argv, probe=probe)


def corp_spec(plan: LabPlan, paths: StatePaths, python: str) -> ProcessSpec:
    assert plan.vpn is not None
    ready = _ready(paths, "corp-web")
    argv = (
        python, "-m", WORKLOADS_MODULE, "http", "--port", str(VPN_HOST_PORT), "--app", "corp",
        "--greeting", "hello from corp host {local}", "--ready-file", ready,
    )  # fmt: skip
    # Probed from the workstation through vpn0, the way tests and users reach it, at a host outside the
    # cluster ranges: a connected Tether may route the cluster ranges elsewhere (allowed or while the VPN
    # comes up), and that must not make the lab look broken.
    outside = [h for h in plan.vpn.hosts if h.where == "outside cluster ranges"]
    probe = (
        Probe(WS_NS, "tcp", str(outside[0].address), VPN_HOST_PORT)
        if outside
        else Probe(CORP_NS, "tcp", str(plan.vpn.hosts[0].address), VPN_HOST_PORT)
    )
    return ProcessSpec("corp-web", CORP_NS, argv, ready_file=ready, probe=probe)


def process_specs(
    plan: LabPlan,
    paths: StatePaths,
    python: str,
    *,
    apiserver_module: str = APISERVER_MODULE,
) -> list[ProcessSpec]:
    specs = [apiserver_spec(paths, python, apiserver_module), *infrastructure_specs(plan, paths, python)]
    specs += [pod_spec(plan, pod, paths, python) for pod in plan.pods if pod.kind != "workload"]
    specs.append(controller_spec(paths, python))
    return specs


def controller_spec(paths: StatePaths, python: str) -> ProcessSpec:
    """The lab's controller (kubelet, deployment and endpoints controllers, kube-proxy): in the router
    namespace, where the API server and the pods' bridge are; ready once every Deployment is rolled out,
    so the workloads' pods (which it runs) are up when `tether lab up` returns."""
    ready = _ready(paths, "controller")
    argv = (
        python, "-m", CONTROLLER_MODULE, "--kubeconfig", str(paths.kubeconfig),
        "--state-root", str(paths.root), "--python", python, "--ready-file", ready,
    )  # fmt: skip
    return ProcessSpec("controller", ROUTER_NS, argv, ready_file=ready, after_api=True, host_mounts=True)
