"""The agent's lookups for an intercepting client: names resolved as the pod resolves them.

The pod's own /etc/resolv.conf gives the nameservers, the search path and ndots; a single label is a service
in the pod's namespace (its first search domain). The cluster domain is read off that search path
(``<namespace>.svc.<domain>``), as the kubelet writes it; ``cluster.local.`` when the pod's resolv.conf has none.
"""

from __future__ import annotations

from pathlib import Path

from tether.manager.api import manager_pb2 as pb
from tether.manager.dns import ClusterResolver, DNSLookupError, pack_record
from tether.manager.resolvconf import ResolverConfig, parse_resolv_conf

POD_RESOLV_CONF = Path("/etc/resolv.conf")
DEFAULT_CLUSTER_DOMAIN = "cluster.local."


def cluster_domain_of(config: ResolverConfig, namespace: str) -> str:
    """The cluster domain the kubelet put after ``<namespace>.svc.`` in the pod's search path."""
    prefix = f"{namespace}.svc."
    for domain in config.search:
        if domain.startswith(prefix) and len(domain) > len(prefix):
            return domain[len(prefix) :]
    return DEFAULT_CLUSTER_DOMAIN


class PodResolver:
    """Resolves names with the pod's resolv.conf, read at the first lookup (it is fixed for the pod's life)."""

    def __init__(self, namespace: str, path: Path = POD_RESOLV_CONF, port: int = 53) -> None:
        self.namespace = namespace
        self._path = path
        self._port = port
        self._resolver: ClusterResolver | None = None

    def _get(self) -> ClusterResolver:
        if self._resolver is None:
            try:
                config = parse_resolv_conf(self._path.read_text())
            except OSError as exc:
                raise DNSLookupError(f"cannot read the pod's {self._path}: {exc.strerror or exc}") from None
            if not config.nameservers:
                raise DNSLookupError(f"the pod's {self._path} names no nameserver")
            self._resolver = ClusterResolver(config, cluster_domain_of(config, self.namespace), self._port)
        return self._resolver

    async def answer(self, agent_id: str, request: pb.DialRequest) -> pb.AgentDNSAnswer:
        """The answer to a manager's ``dns`` DialRequest, errors included (they travel back as text)."""
        reply = pb.AgentDNSAnswer(agent_id=agent_id, flow_id=request.flow_id)
        try:
            result = await self._get().lookup(request.dns.name, request.dns.qtype, self.namespace)
        except DNSLookupError as exc:
            reply.error = str(exc)
            return reply
        reply.response.rcode = result.rcode
        reply.response.answers.extend(pack_record(record) for record in result.answers)
        return reply
