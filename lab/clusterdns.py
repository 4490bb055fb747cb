"""DNS in the lab: the cluster DNS (dnsmasq in kube-system/coredns-0, service kube-dns) and the
upstream "public" DNS server in the internet namespace. Config generation is pure.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address
from pathlib import Path

from tether.lab.topology import (
    CLUSTER_DOMAIN,
    CLUSTER_TXT,
    DNS_IP,
    LOOPBACK_NAMES,
    UPSTREAM_DNS_IP,
    UPSTREAM_NAMES,
    UPSTREAM_TXT,
    LabPlan,
)

#: TTL of the cluster's own records, as CoreDNS's kubernetes plugin uses.
CLUSTER_TTL = 5


def _reverse_zone(cidr_prefix: str) -> str:
    """'10.96' -> '96.10.in-addr.arpa'."""
    return ".".join(reversed(cidr_prefix.split("."))) + ".in-addr.arpa"


def cluster_conf(plan: LabPlan, listen: IPv4Address, hosts_dir: Path, upstream: IPv4Address | None = None) -> str:
    """dnsmasq config answering for cluster.local, forwarding the rest upstream. The plan's Services are
    fixed records; Services created through the API (the traffic-manager's) are the controller's hosts files
    in ``hosts_dir``, which dnsmasq follows as they change (as CoreDNS follows Services). With --local it
    forwards to the workstation's resolver and logs every query, so tests can count what loops."""
    upstream = upstream or plan.cluster_dns_upstream
    lines = [
        "# tether lab: cluster DNS (service kube-system/kube-dns)",
        "no-resolv",
        "no-hosts",
        "bind-interfaces",
        f"listen-address={listen}",
        f"local-ttl={CLUSTER_TTL}",
        "cache-size=1000",
        f"server={upstream}",
        # names under the cluster domain that are not below are NXDOMAIN, never forwarded
        f"local=/{CLUSTER_DOMAIN}/",
        f"local=/{_reverse_zone('10.96')}/",
        f"local=/{_reverse_zone('10.244')}/",
        f"hostsdir={hosts_dir}",
    ]
    if plan.local:
        lines.append("log-queries")
    for svc in plan.services:
        # host-record gives the A record and the PTR record of the ClusterIP
        lines.append(f"host-record={svc.fqdn},{svc.cluster_ip}")
        for port in svc.ports:
            if port.name:
                srv = f"_{port.name}._{port.protocol.lower()}.{svc.fqdn}"
                lines.append(f"srv-host={srv},{svc.fqdn},{port.port}")
    for pod in plan.pods:
        lines.append(f"host-record={pod.dns_name},{pod.ip}")
    for name, text in CLUSTER_TXT.items():
        lines.append(f'txt-record={name},"{text}"')
    # host-record, not address=: only the name itself, and AAAA gets NOERROR with no data (not NXDOMAIN)
    for name, ip in LOOPBACK_NAMES.items():
        lines.append(f"host-record={name},{ip}")
    return "\n".join(lines) + "\n"


def service_hosts(services: Iterable[tuple[str, str, str]], known: Iterable[str]) -> str:
    """A hosts file of Services given as (namespace, name, ClusterIP), leaving out headless ones and the
    names in ``known`` (the plan's, which the config holds already)."""
    skip = set(known)
    lines = []
    for namespace, name, cluster_ip in sorted(services):
        fqdn = f"{name}.{namespace}.svc.{CLUSTER_DOMAIN}"
        if cluster_ip and cluster_ip != "None" and fqdn not in skip:
            lines.append(f"{cluster_ip} {fqdn}")
    return "".join(line + "\n" for line in lines)


def upstream_conf(listen: IPv4Address = UPSTREAM_DNS_IP) -> str:
    """dnsmasq config for the made-up public DNS: a few names, NXDOMAIN for everything else.
    It never forwards anything to the real internet."""
    lines = [
        "# tether lab: upstream (public) DNS",
        "no-resolv",
        "no-hosts",
        "bind-interfaces",
        f"listen-address={listen}",
        "local-ttl=60",
        "local=/#/",
    ]
    lines += [f"host-record={name},{ip}" for name, ip in UPSTREAM_NAMES.items()]
    lines += [f'txt-record={name},"{text}"' for name, text in UPSTREAM_TXT.items()]
    return "\n".join(lines) + "\n"


def workstation_resolver_conf(listen: IPv4Address, upstream: IPv4Address = UPSTREAM_DNS_IP) -> str:
    """--local: the workstation's own resolver, which the cluster DNS forwards to (as a local cluster's DNS
    uses its host's). It forwards to the workstation's resolv.conf nameserver from the workstation itself, so
    a connected Tether's resolver takes its queries like any local program's. No cache: every loop shows."""
    lines = [
        "# tether lab --local: the workstation's resolver, upstream of the cluster DNS",
        "no-resolv",
        "no-hosts",
        "bind-interfaces",
        f"listen-address={listen}",
        "cache-size=0",
        f"server={upstream}",
        "log-queries",
    ]
    return "\n".join(lines) + "\n"


def dnsmasq_argv(conf: Path) -> list[str]:
    """dnsmasq in the foreground, logging to stderr, with only the generated config."""
    return [
        "dnsmasq",
        "--keep-in-foreground",
        f"--conf-file={conf}",
        "--pid-file=",
        "--user=root",
        "--log-facility=-",
    ]


def pod_resolv_conf(namespace: str) -> str:
    return (
        f"search {namespace}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}\n"
        f"nameserver {DNS_IP}\n"
        "options ndots:5\n"
    )


def upstream_resolv_conf() -> str:
    return f"nameserver {UPSTREAM_DNS_IP}\n"
