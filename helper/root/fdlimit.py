"""The helper's file descriptors: its limit raised at start, and how many its DNS server may spend.

The default soft limit (often 1024) is easy to exhaust from outside: every local user can open TCP connections
to the DNS port or make the helper forward queries upstream (one socket each). Once it is exhausted the helper
can accept no API call and cannot even tear its routes down. So the limit is raised towards the hard one, and
the DNS server's connections and upstream sockets are capped so that a reserve always stays free for the API,
the port-forward to the manager and teardown (netlink sockets, nft's pipes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

try:
    import resource
except ImportError:  # Windows: no RLIMIT_NOFILE; sockets are handles, limited only by memory
    resource = None  # type: ignore[assignment]

log = logging.getLogger("tether.helper.root")

# Raised to the hard limit, but no higher than this: beyond it nothing of ours needs more, and select()-era
# libraries a dependency might still use degrade with huge fd numbers.
SOFT_LIMIT_CAP = 65536
# Kept free whatever the DNS server does: the API's connections, the port-forward, teardown.
RESERVE = 256
# What the DNS server needs at most, whatever the limit: more connections or sockets only serve an attacker.
MAX_DNS_TCP_CONNECTIONS = 128
MAX_UPSTREAM_SOCKETS = 512
# Fds the helper holds before the DNS server's share: TUN, epoll, the API's and DNS server's listeners, logs.
BASELINE = 64


@dataclass(frozen=True)
class DnsFdCaps:
    tcp_connections: int
    upstream_sockets: int


def raise_nofile(cap: int = SOFT_LIMIT_CAP) -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (at most ``cap``); return the soft limit now in force."""
    if resource is None:
        return cap
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, target, exc)
    return soft


def current_limit() -> int:
    if resource is None:
        return SOFT_LIMIT_CAP
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return SOFT_LIMIT_CAP if soft == resource.RLIM_INFINITY else soft


def dns_caps(limit: int | None = None) -> DnsFdCaps:
    """The DNS server's share of ``limit`` (default: the current soft limit), leaving ``RESERVE`` free."""
    available = max(0, (current_limit() if limit is None else limit) - BASELINE - RESERVE)
    return DnsFdCaps(
        tcp_connections=max(4, min(MAX_DNS_TCP_CONNECTIONS, available // 4)),
        upstream_sockets=max(8, min(MAX_UPSTREAM_SOCKETS, available // 2)),
    )
