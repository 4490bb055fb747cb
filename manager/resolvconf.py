"""The pod's resolver configuration and the names a query expands to (pure)."""

from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import dataclass, field

from tether.manager.api.wire import IPAddress


@dataclass(frozen=True)
class ResolverConfig:
    nameservers: tuple[IPAddress, ...]
    search: tuple[str, ...] = ()
    ndots: int = 1
    options: tuple[str, ...] = field(default=())


def parse_resolv_conf(text: str) -> ResolverConfig:
    nameservers: list[IPAddress] = []
    search: tuple[str, ...] = ()
    ndots = 1
    options: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        keyword, *values = line.split()
        if keyword == "nameserver" and values:
            try:
                nameservers.append(ipaddress.ip_address(values[0].split("%", 1)[0]))
            except ValueError:
                continue  # glibc skips unparsable servers too
        elif keyword in ("search", "domain"):
            # The last search/domain line wins, as in glibc.
            search = tuple(_absolute(v) for v in values)
        elif keyword == "options":
            for option in values:
                if option.startswith("ndots:"):
                    with contextlib.suppress(ValueError):
                        ndots = max(0, min(15, int(option[6:])))
                else:
                    options.append(option)
    return ResolverConfig(tuple(nameservers), search, ndots, tuple(options))


def _absolute(name: str) -> str:
    return name if name.endswith(".") else name + "."


def candidate_names(name: str, client_namespace: str, config: ResolverConfig, cluster_domain: str) -> list[str]:
    """The absolute names to try, in order, for a client's query.

    A single label is a service in the client's namespace (the way a pod in that
    namespace sees it); other relative names follow the resolver's search list
    and ndots, like the pod's own libc; a name ending in a dot is tried as is.
    """
    if not name or name == ".":
        return ["."]
    if name.endswith("."):
        return [name]
    labels = name.split(".")
    if len(labels) == 1 and client_namespace:
        return [f"{name}.{client_namespace}.svc.{_absolute(cluster_domain)}"]
    search = _namespace_first_search(client_namespace, config.search, cluster_domain)
    absolute = name + "."
    expanded = [f"{name}.{domain}" for domain in search]
    if name.count(".") >= config.ndots:
        return [absolute, *expanded]
    return [*expanded, absolute]


def _namespace_first_search(namespace: str, search: tuple[str, ...], cluster_domain: str) -> tuple[str, ...]:
    """The pod's search list, but with the client's namespace in place of the manager's."""
    if not namespace:
        return search
    domain = _absolute(cluster_domain)
    own = f"{namespace}.svc.{domain}"
    rest = tuple(s for s in search if not s.endswith(f".svc.{domain}") or s == f"svc.{domain}")
    return (own, *(s for s in rest if s != own))
