"""The sandbox cluster's address plan and object model. Pure: no I/O.

Everything here is deterministic, so the plan for a set of options can be recomputed at any
time (``status``, ``down``, tests) from the options stored in the journal.

Address plan (all cluster ranges inside 10.0.0.0/8)::

    service CIDR        10.96.0.0/16   kubernetes 10.96.0.1:443, kube-dns 10.96.0.10:53
    cluster (pod) CIDR  10.244.0.0/16  lab-node-1 10.244.1.0/24, lab-node-2 10.244.2.0/24
    node addresses      10.250.0.11, 10.250.0.12 (on the router's lo)
    workstation link    172.30.0.0/24  router ws0 172.30.0.1 (API server :6443), workstation eth0 .2
    "internet" link     203.0.113.0/24 router inet0 .1, inet eth0 .2, upstream DNS .53, web host .80
    VPN link            100.64.0.0/30  corp eth0 .1 (gateway), workstation vpn0 .2
    --local             workstation node0 10.250.0.13/24 on the cluster bridge (a node of its own), the pod
                        CIDR via 10.244.1.1 over it; its resolver (dnsmasq on 10.250.0.13) is the cluster
                        DNS's upstream
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from tether.manager.api.sidecar import DEFAULT_MANAGER_PORT, manager_address

PREFIX = "tether-lab-"
ROUTER_NS = PREFIX + "router"
WS_NS = PREFIX + "ws"
INET_NS = PREFIX + "inet"
CORP_NS = PREFIX + "corp"
POD_NS_PREFIX = PREFIX + "pod-"

CLUSTER_DOMAIN = "cluster.local"
CONTEXT_NAME = "tether-lab"

SERVICE_CIDR = IPv4Network("10.96.0.0/16")
CLUSTER_CIDR = IPv4Network("10.244.0.0/16")
NODE_NETWORK = IPv4Network("10.250.0.0/24")
KUBERNETES_IP = IPv4Address("10.96.0.1")
DNS_IP = IPv4Address("10.96.0.10")

BRIDGE = "cbr0"
#: The bridge's own MAC, set when it is made: a Linux bridge without one takes the lowest MAC among its ports,
#: so a pod's veth coming or going would change it, and every other pod's neighbour entry for its gateway would
#: point at a MAC the router no longer answers to (for 30 s or more). CNI's bridge plugin pins it too.
BRIDGE_MAC = "02:00:0a:f4:00:01"  # locally administered; the rest is the cluster range's first address
WS_LINK = IPv4Network("172.30.0.0/24")
API_IP = IPv4Address("172.30.0.1")
API_PORT = 6443
WS_IP = IPv4Address("172.30.0.2")
ROUTER_WS_IF = "ws0"

INET_LINK = IPv4Network("203.0.113.0/24")
ROUTER_INET_IP = IPv4Address("203.0.113.1")
INET_IP = IPv4Address("203.0.113.2")
UPSTREAM_DNS_IP = IPv4Address("203.0.113.53")
INET_WEB_IP = IPv4Address("203.0.113.80")
ROUTER_INET_IF = "inet0"

#: Names the upstream ("public") DNS server knows; everything else is NXDOMAIN there.
UPSTREAM_NAMES: dict[str, IPv4Address] = {
    "example.test": INET_WEB_IP,
    "www.example.com": INET_WEB_IP,
    "upstream.lab": UPSTREAM_DNS_IP,
}
UPSTREAM_TXT: dict[str, str] = {"example.test": "tether lab upstream"}
#: A TXT record served by the cluster DNS, for tests of non-address queries.
CLUSTER_TXT: dict[str, str] = {f"web.default.svc.{CLUSTER_DOMAIN}": "tether lab web service"}
#: Cluster names that answer a loopback address, as a service mesh's do: only a dial from inside a pod
#: (a tether-agent's, --proxy-via) reaches what listens there (the web pods' 127.0.0.1:9090).
LOOPBACK_NAMES: dict[str, IPv4Address] = {f"mesh.default.svc.{CLUSTER_DOMAIN}": IPv4Address("127.0.0.1")}

#: --local: the workstation is one of the nodes, on the cluster bridge, and the host resolver of the cluster.
WS_NODE_IF = "node0"
ROUTER_WS_NODE_IF = "wsnode0"
WS_NODE_IP = IPv4Address("10.250.0.13")

VPN_IF = "vpn0"
#: /30 links tried in order for the VPN; the first one outside every VPN CIDR wins.
VPN_LINK_CANDIDATES = (
    IPv4Network("100.64.0.0/30"),
    IPv4Network("198.18.0.0/30"),
    IPv4Network("192.168.255.252/30"),
)
VPN_HOST_PORT = 80
#: Never used as host addresses: "this network", loopback, link-local, multicast and reserved.
SPECIAL_RANGES = (
    IPv4Network("0.0.0.0/8"),
    IPv4Network("127.0.0.0/8"),
    IPv4Network("169.254.0.0/16"),
    IPv4Network("224.0.0.0/3"),
)
#: Preferred corp host addresses inside the cluster ranges, when the VPN CIDR covers them.
VPN_SERVICE_HOST = IPv4Address("10.96.200.200")
VPN_POD_HOST_OFFSET = 200

MASQUERADE_MARK = 0x4000
APP_LABEL = "app"
MANAGER_PORT = DEFAULT_MANAGER_PORT
#: Where the README and the tests install the manager (`tether manager install`'s default namespace); the lab
#: itself neither creates nor starts it.
MANAGER_NAMESPACE = "tether"
#: The image the lab's objects name for the tether-agent sidecar; the agent itself runs from this checkout.
AGENT_IMAGE = "tether-lab/tether-agent:latest"


@dataclass(frozen=True)
class StatePaths:
    """Where the lab keeps its state on the host."""

    root: Path = Path("/run/tether-lab")
    netns_etc: Path = Path("/etc/netns")

    @property
    def journal(self) -> Path:
        return self.root / "journal.json"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig.yaml"

    @property
    def pod_kubeconfig(self) -> Path:
        return self.root / "kubeconfig-pod.yaml"

    @property
    def seed(self) -> Path:
        return self.root / "seed.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def ready(self) -> Path:
        return self.root / "ready"

    @property
    def conf(self) -> Path:
        return self.root / "conf"

    @property
    def cluster_hosts(self) -> Path:
        """The cluster DNS's hosts directory: the controller's records of Services created through the API."""
        return self.conf / "cluster-hosts"

    @property
    def tokens(self) -> Path:
        """Service-account tokens: one file per agent pod (its projected volume) and the API server's list."""
        return self.root / "tokens"

    @property
    def service_account_tokens(self) -> Path:
        return self.tokens / "apiserver.json"

    @property
    def users(self) -> Path:
        """The API server's users: their tokens and rights (see lab/users.py)."""
        return self.tokens / "users.json"

    def user_kubeconfig(self, user: str) -> Path:
        return self.root / f"kubeconfig-{user}.yaml"

    def token_file(self, namespace: str, pod: str) -> Path:
        return self.tokens / f"{namespace}_{pod}"

    def resolv_conf(self, netns: str) -> Path:
        return self.netns_etc / netns / "resolv.conf"


@dataclass(frozen=True)
class Node:
    name: str
    pod_cidr: IPv4Network
    internal_ip: IPv4Address

    @property
    def gateway(self) -> IPv4Address:
        """The router's address in this node's pod range: every pod's default gateway."""
        return self.pod_cidr.network_address + 1


@dataclass(frozen=True)
class Port:
    name: str
    port: int
    target_port: int
    protocol: str = "TCP"


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    node: str
    ip: IPv4Address
    labels: tuple[tuple[str, str], ...]
    #: container ports: name, port (target_port unused), protocol
    ports: tuple[Port, ...]
    #: "workload" (tether.lab.workloads) or "dns" (dnsmasq)
    kind: str
    #: arguments for `python -m tether.lab.workloads` when kind == "workload"
    args: tuple[str, ...] = ()
    #: router-side veth name (interface names are limited to 15 characters)
    veth: str = ""
    #: only-loopback listeners inside the pod (port numbers), for status and tests
    loopback_ports: tuple[int, ...] = ()
    #: the Deployment that owns the pod
    workload: str = ""
    #: whether a tether-agent runs in the pod (the workload's sidecar)
    agent: bool = False
    #: emptyDir volumes the app container mounts: (volume name, mountPath)
    volumes: tuple[tuple[str, str], ...] = ()

    @property
    def netns(self) -> str:
        return pod_netns(self.namespace, self.name)

    @property
    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)

    @property
    def dns_name(self) -> str:
        return f"{str(self.ip).replace('.', '-')}.{self.namespace}.pod.{CLUSTER_DOMAIN}"


@dataclass(frozen=True)
class Endpoint:
    ip: IPv4Address
    port: int


@dataclass(frozen=True)
class Workload:
    """A Deployment: the pods that carry its name, selected by their app label."""

    namespace: str
    name: str
    pods: tuple[Pod, ...]
    kind: str = "Deployment"

    @property
    def selector(self) -> dict[str, str]:
        return {APP_LABEL: self.pods[0].label_dict[APP_LABEL]}

    @property
    def agent(self) -> bool:
        """Whether the workload's pods run a tether-agent sidecar."""
        return any(p.agent for p in self.pods)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Service:
    namespace: str
    name: str
    cluster_ip: IPv4Address
    ports: tuple[Port, ...]
    selector: tuple[tuple[str, str], ...] = ()

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.namespace}.svc.{CLUSTER_DOMAIN}"

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class VpnHost:
    address: IPv4Address
    cidr: IPv4Network
    where: str  # "service CIDR", "pod CIDR 10.244.1.0/24", "outside cluster ranges"


@dataclass(frozen=True)
class VpnPlan:
    cidrs: tuple[IPv4Network, ...]
    link: IPv4Network

    hosts: tuple[VpnHost, ...] = ()

    @property
    def gateway(self) -> IPv4Address:
        return self.link.network_address + 1

    @property
    def ws_ip(self) -> IPv4Address:
        return self.link.network_address + 2


@dataclass(frozen=True)
class LabPlan:
    nodes: tuple[Node, ...]
    namespaces: tuple[str, ...]
    pods: tuple[Pod, ...]
    services: tuple[Service, ...]
    vpn: VpnPlan | None = None
    #: --local: the workstation is a node (see WS_NODE_IP) and the cluster DNS forwards to its resolver
    local: bool = False

    @property
    def cluster_dns_upstream(self) -> IPv4Address:
        """Where the cluster DNS sends the names it does not hold: the workstation's resolver with --local."""
        return WS_NODE_IP if self.local else UPSTREAM_DNS_IP

    @property
    def api_url(self) -> str:
        return f"http://{API_IP}:{API_PORT}"

    @property
    def pod_api_url(self) -> str:
        return f"http://{KUBERNETES_IP}:443"

    def pod(self, namespace: str, name: str) -> Pod:
        for pod in self.pods:
            if (pod.namespace, pod.name) == (namespace, name):
                return pod
        raise KeyError(f"no pod {namespace}/{name} in the lab")

    def service(self, namespace: str, name: str) -> Service:
        for svc in self.services:
            if (svc.namespace, svc.name) == (namespace, name):
                return svc
        raise KeyError(f"no service {namespace}/{name} in the lab")

    def pods_of(self, kind: str) -> list[Pod]:
        return [p for p in self.pods if p.kind == kind]

    @property
    def workloads(self) -> tuple[Workload, ...]:
        """Every pod's Deployment, in the order of their first pods."""
        owners: dict[tuple[str, str], list[Pod]] = {}
        for pod in self.pods:
            owners.setdefault((pod.namespace, pod.workload), []).append(pod)
        return tuple(Workload(ns, name, tuple(pods)) for (ns, name), pods in owners.items())

    def workload(self, namespace: str, name: str) -> Workload:
        for workload in self.workloads:
            if (workload.namespace, workload.name) == (namespace, name):
                return workload
        raise KeyError(f"no workload {namespace}/{name} in the lab")

    @property
    def agent_pods(self) -> list[Pod]:
        """Pods that run a tether-agent next to their workload."""
        return [p for p in self.pods if p.agent]

    @property
    def agent_manager_address(self) -> str:
        """Where the lab's agents reach the manager: its Service's cluster DNS name (which the cluster DNS
        answers once `tether manager install` has created the Service) and gRPC port, as on a real cluster."""
        return manager_address(MANAGER_NAMESPACE, CLUSTER_DOMAIN, MANAGER_PORT)

    def selected_pods(self, service: Service) -> list[Pod]:
        if not service.selector:
            return []
        want = dict(service.selector)
        return [
            p
            for p in self.pods
            if p.namespace == service.namespace and all(p.label_dict.get(k) == v for k, v in want.items())
        ]

    def endpoints(self, service: Service, port: Port) -> list[Endpoint]:
        """Where a service port leads. `kubernetes` leads to the API server on the router."""
        if (service.namespace, service.name) == ("default", "kubernetes"):
            return [Endpoint(API_IP, API_PORT)]
        return [Endpoint(p.ip, port.target_port) for p in self.selected_pods(service)]

    def netns_names(self) -> list[str]:
        names = [ROUTER_NS, WS_NS, INET_NS]
        if self.vpn is not None:
            names.append(CORP_NS)
        names.extend(p.netns for p in self.pods)
        return names


def pod_netns(namespace: str, name: str) -> str:
    return f"{POD_NS_PREFIX}{namespace}-{name}"


NODES = (
    Node("lab-node-1", IPv4Network("10.244.1.0/24"), IPv4Address("10.250.0.11")),
    Node("lab-node-2", IPv4Network("10.244.2.0/24"), IPv4Address("10.250.0.12")),
)

HTTP = Port("http", 8080, 8080)


@dataclass(frozen=True)
class _PodTemplate:
    namespace: str
    name: str
    node: str
    app: str
    kind: str
    ports: tuple[Port, ...]
    args: tuple[str, ...] = ()
    loopback_ports: tuple[int, ...] = ()
    extra_labels: tuple[tuple[str, str], ...] = ()
    #: the owning Deployment's name; "" = the app label
    workload: str = ""
    agent: bool = False
    volumes: tuple[tuple[str, str], ...] = ()


#: The web pods' emptyDir volume, and the file their app writes into it as it starts (the volumes test reads it).
WEB_VOLUME = ("data", "/data")
WEB_VOLUME_FILE = "/data/written-by-pod.txt"


def _web(name: str, node: str) -> _PodTemplate:
    return _PodTemplate(
        "default", name, node, "web", "workload", (HTTP,),
        ("http", "--port", "8080", "--app", "web", "--loopback-port", "9090", "--write-file", WEB_VOLUME_FILE),
        (9090,), agent=True, volumes=(WEB_VOLUME,),
    )  # fmt: skip


POD_TEMPLATES = (
    _PodTemplate(
        "kube-system", "coredns-0", "lab-node-1", "kube-dns", "dns",
        (Port("dns", 53, 53, "UDP"), Port("dns-tcp", 53, 53, "TCP")),
        extra_labels=(("k8s-app", "kube-dns"),), workload="coredns",
    ),
    _web("web-0", "lab-node-1"),
    _web("web-1", "lab-node-2"),
    _PodTemplate("default", "echo-0", "lab-node-2", "echo", "workload", (Port("echo", 7, 7),), ("echo", "--port", "7")),
    _PodTemplate(
        "default", "udp-echo-0", "lab-node-1", "udp-echo", "workload", (Port("echo", 7, 7, "UDP"),),
        ("udp-echo", "--port", "7"),
    ),
    _PodTemplate(
        "default", "bulk-0", "lab-node-2", "bulk", "workload",
        (HTTP, Port("source", 9000, 9000), Port("sink", 9001, 9001)),
        ("bulk", "--port", "8080", "--source-port", "9000", "--sink-port", "9001"),
    ),
    _PodTemplate(
        "webshop", "catalog-0", "lab-node-1", "catalog", "workload", (HTTP,),
        ("http", "--port", "8080", "--app", "catalog"),
    ),
    # Tells each connection where it came from: the pod a workstation's flow was dialed from.
    _PodTemplate(
        "webshop", "whoami-0", "lab-node-2", "whoami", "workload", (Port("whoami", 7070, 7070),),
        ("whoami", "--port", "7070"),
    ),
)  # fmt: skip

#: namespace, name, ClusterIP, ports (name, port, targetPort, protocol), app selector ("" = none)
SERVICE_TEMPLATES: tuple[tuple[str, str, str, tuple[Port, ...], str], ...] = (
    ("default", "kubernetes", str(KUBERNETES_IP), (Port("https", 443, API_PORT),), ""),
    (
        "kube-system", "kube-dns", str(DNS_IP),
        (Port("dns", 53, 53, "UDP"), Port("dns-tcp", 53, 53, "TCP")), "kube-dns",
    ),
    ("default", "web", "10.96.1.10", (Port("http", 80, 8080),), "web"),
    ("default", "echo", "10.96.1.11", (Port("echo", 7, 7),), "echo"),
    ("default", "udp-echo", "10.96.1.12", (Port("echo", 7, 7, "UDP"),), "udp-echo"),
    (
        "default", "bulk", "10.96.1.13",
        (Port("http", 80, 8080), Port("source", 9000, 9000), Port("sink", 9001, 9001)), "bulk",
    ),
    ("webshop", "catalog", "10.96.1.14", (Port("http", 80, 8080),), "catalog"),
    ("webshop", "whoami", "10.96.1.15", (Port("whoami", 80, 7070),), "whoami"),
)  # fmt: skip

K8S_NAMESPACES = ("default", "kube-system", "kube-public", "webshop", "tether")
FIRST_POD_HOST = 10


def build_plan(vpn: Sequence[str] = (), local: bool = False) -> LabPlan:
    """The whole lab for the given options."""
    nodes = {n.name: n for n in NODES}
    next_host = {n.name: FIRST_POD_HOST for n in NODES}
    pods = []
    for index, t in enumerate(POD_TEMPLATES):
        node = nodes[t.node]
        ip = node.pod_cidr.network_address + next_host[t.node]
        next_host[t.node] += 1
        labels = ((APP_LABEL, t.app), *t.extra_labels)
        pods.append(
            Pod(
                t.namespace, t.name, t.node, ip, labels, t.ports, t.kind, t.args, f"vp{index}", t.loopback_ports,
                t.workload or t.app, t.agent, t.volumes,
            )
        )  # fmt: skip
    services = tuple(
        Service(ns, name, IPv4Address(ip), ports, ((APP_LABEL, app),) if app else ())
        for ns, name, ip, ports, app in SERVICE_TEMPLATES
    )
    return LabPlan(
        nodes=NODES,
        namespaces=K8S_NAMESPACES,
        pods=tuple(pods),
        services=services,
        vpn=vpn_plan(vpn) if vpn else None,
        local=local,
    )


# --- VPN ------------------------------------------------------------------------------------------


def parse_cidrs(values: Iterable[str]) -> tuple[IPv4Network, ...]:
    """Parse --vpn values; host bits are cleared (10.1.2.3/8 means 10.0.0.0/8). Duplicates are dropped."""
    out: list[IPv4Network] = []
    for value in values:
        try:
            net = ipaddress.ip_network(value.strip(), strict=False)
        except ValueError as exc:
            raise ValueError(f"--vpn {value!r}: not an IPv4 CIDR ({exc})") from None
        if not isinstance(net, IPv4Network):
            raise ValueError(f"--vpn {value!r}: only IPv4 ranges are supported")
        for lab_net in (WS_LINK, INET_LINK):
            if net.subnet_of(lab_net):
                raise ValueError(f"--vpn {value!r}: inside the lab's own link {lab_net}; use a wider range")
        if net not in out:
            out.append(net)
    return tuple(sorted(out))


def cluster_ranges() -> list[IPv4Network]:
    return [SERVICE_CIDR, CLUSTER_CIDR, NODE_NETWORK]


def first_outside(cidr: IPv4Network, excluded: Iterable[IPv4Network]) -> IPv4Address | None:
    """The first usable address of cidr that is in none of the excluded ranges."""
    excluded = list(excluded)
    usable = cidr.num_addresses > 2
    candidate = int(cidr.network_address) + (1 if usable else 0)
    last = int(cidr.broadcast_address) - (1 if usable else 0)
    while candidate <= last:
        hit = next((e for e in excluded if IPv4Address(candidate) in e), None)
        if hit is None:
            return IPv4Address(candidate)
        candidate = int(hit.broadcast_address) + 1
    return None


def _inside(cidr: IPv4Network, area: IPv4Network, preferred: IPv4Address) -> IPv4Address | None:
    """An address in both cidr and area: preferred if possible, else the last usable of the overlap."""
    if not cidr.overlaps(area):
        return None
    overlap = cidr if cidr.prefixlen >= area.prefixlen else area
    if preferred in overlap:
        return preferred
    if overlap.num_addresses <= 2:
        return overlap.network_address
    return overlap.broadcast_address - 1


def vpn_hosts(cidrs: Sequence[IPv4Network], nodes: Sequence[Node] = NODES) -> tuple[VpnHost, ...]:
    """The corp hosts for the VPN: per CIDR one in the service CIDR, one in a pod CIDR, one outside
    the cluster ranges, each only where the CIDR covers such an address."""
    hosts: list[VpnHost] = []
    seen: set[IPv4Address] = set()

    def add(address: IPv4Address | None, cidr: IPv4Network, where: str) -> None:
        if address is not None and address not in seen:
            seen.add(address)
            hosts.append(VpnHost(address, cidr, where))

    excluded = [*cluster_ranges(), WS_LINK, INET_LINK, *VPN_LINK_CANDIDATES, *SPECIAL_RANGES]
    for cidr in cidrs:
        add(_inside(cidr, SERVICE_CIDR, VPN_SERVICE_HOST), cidr, "service CIDR")
        for node in nodes:
            preferred = node.pod_cidr.network_address + VPN_POD_HOST_OFFSET
            address = _inside(cidr, node.pod_cidr, preferred)
            if address is not None:
                add(address, cidr, f"pod CIDR {node.pod_cidr}")
                break
        add(first_outside(cidr, excluded), cidr, "outside cluster ranges")
    return tuple(hosts)


def vpn_plan(values: Sequence[str]) -> VpnPlan:
    cidrs = parse_cidrs(values)
    link = next(
        (c for c in VPN_LINK_CANDIDATES if not any(c.overlaps(v) for v in cidrs)),
        VPN_LINK_CANDIDATES[0],  # every candidate is claimed (e.g. 0.0.0.0/0): the /30 still wins
    )
    return VpnPlan(cidrs=cidrs, link=link, hosts=vpn_hosts(cidrs))


def plan_fingerprint(plan: LabPlan) -> str:
    """A short digest of the plan: a lab built from another plan (another version) is rebuilt by `up`."""
    return hashlib.sha256(repr(plan).encode()).hexdigest()[:16]


def vpn_options(values: Sequence[str]) -> list[str]:
    """The canonical form of --vpn values, as stored in the journal and compared by `up`."""
    return [str(c) for c in parse_cidrs(values)]
