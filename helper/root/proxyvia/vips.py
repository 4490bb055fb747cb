"""Virtual IPs: the virtual subnets and the table of VIPs handed out in one session (pure: no I/O).

The virtual subnet (IPv4) defaults by platform, a plain table (``VIRTUAL_SUBNETS``):

* Linux and macOS: ``246.246.0.0/16``, in the class E range (240.0.0.0/4) that no network uses;
* Windows: ``211.55.48.0/20``; Windows does not route class E.

It is configurable (``cluster.virtualIPSubnet``); ``validate_virtual_subnet`` checks a value and that it
does not overlap the cluster's service, pod, also-proxy or proxied subnets (an error naming both).

IPv6: AAAA answers are mapped too, into ``DEFAULT_VIRTUAL_SUBNET6`` = ``fd74:6574:6865:7276::/64``, a unique
local /64 under the same ``fd74:6574:6865:72..`` prefix as the TUN's own IPv6 address (whose global ID
spells "tether"; subnet 0x7276, "rv" for "virtual"); the TUN's address, ``fd74:6574:6865:7200::1``, is
outside it. A table built with ``subnet6=None`` has no IPv6 VIPs: ``assign`` of an IPv6 address raises
``VipExhausted`` and the rewriter drops such AAAA records (the name then has no IPv6 address locally).
A VIP always has the family of the real address, since an A record can only carry IPv4 and AAAA IPv6.

Allocation: in order from the first address after the subnet's network address up to the one before its
last address (the IPv4 broadcast address; in IPv6 the first and last are skipped alike), so a /16 holds
65534 VIPs and a /29 six. No address is reserved for the TUN: the route plan gives the TUN a link-local
address (``169.254.116.1``, ``fd74:6574:6865:7200::1``) outside every routed subnet, the virtual ones
included. The same (real address, workload) pair always gets the same VIP within a session, and a VIP,
once given, is never reassigned: the table lives as long as the session (not the DNS cache, which is
flushed on config changes), so an app holding an old answer still reaches the same destination. Running
out raises ``VipExhausted`` naming the subnet and its size.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Iterable

from tether.helper.api.proxyvia import IPNetwork, WorkloadRef
from tether.helper.root.vif.device import platform_key

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

VIRTUAL_SUBNETS: dict[str, str] = {
    "linux": "246.246.0.0/16",
    "darwin": "246.246.0.0/16",
    "windows": "211.55.48.0/20",
}
FALLBACK_VIRTUAL_SUBNET = "246.246.0.0/16"
DEFAULT_VIRTUAL_SUBNET6 = "fd74:6574:6865:7276::/64"

# Ranges a virtual subnet must stay out of: packets to them never reach a route of ours (or must not).
_UNUSABLE: tuple[tuple[str, IPNetwork], ...] = tuple(
    (what, ipaddress.ip_network(cidr))
    for what, cidr in (
        ("the unspecified/this-network range", "0.0.0.0/8"),
        ("the loopback range", "127.0.0.0/8"),
        ("the link-local range", "169.254.0.0/16"),
        ("the multicast range", "224.0.0.0/4"),
        ("the broadcast address", "255.255.255.255/32"),
        ("the unspecified/loopback addresses", "::/127"),
        ("the link-local range", "fe80::/10"),
        ("the multicast range", "ff00::/8"),
    )
)


class VirtualSubnetError(ValueError):
    """A virtual subnet that cannot be used; the message names it."""


class VipExhausted(RuntimeError):
    """Every VIP of the virtual subnet is in use (or there is no virtual subnet for that family)."""


def default_virtual_subnet(platform: str = sys.platform) -> ipaddress.IPv4Network:
    """The IPv4 virtual subnet for a ``sys.platform`` value (other platforms get the class E default)."""
    return ipaddress.IPv4Network(VIRTUAL_SUBNETS.get(platform_key(platform), FALLBACK_VIRTUAL_SUBNET))


def _parse(value: str | IPNetwork, what: str) -> IPNetwork:
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        network = value
    else:
        text = str(value).strip()
        address_text, slash, _ = text.partition("/")
        if not slash:
            raise VirtualSubnetError(f'invalid {what} "{value}": expected a CIDR such as 246.246.0.0/16')
        try:
            network = ipaddress.ip_network(text, strict=False)
            address = ipaddress.ip_address(address_text)
        except ValueError as exc:
            raise VirtualSubnetError(f'invalid {what} "{value}": {exc}') from None
        if network.network_address != address:
            raise VirtualSubnetError(f'invalid {what} "{value}": host bits are set; did you mean {network}?')
    if network.num_addresses < 3:
        raise VirtualSubnetError(
            f'invalid {what} "{value}": too small for any virtual IP (at least a /{network.max_prefixlen - 2})'
        )
    for reason, reserved in _UNUSABLE:
        if reserved.version == network.version and reserved.overlaps(network):  # type: ignore[arg-type]
            raise VirtualSubnetError(f'invalid {what} "{value}": it overlaps {reason} {reserved}')
    return network


def validate_virtual_subnet(
    value: str | IPNetwork,
    *,
    service: Iterable[IPNetwork] = (),
    pods: Iterable[IPNetwork] = (),
    also: Iterable[IPNetwork] = (),
    proxied: Iterable[IPNetwork] = (),
    what: str = "virtual IP subnet",
) -> IPNetwork:
    """A virtual subnet, checked: a CIDR (host bits clear), room for a VIP, no loopback/link-local/multicast
    range, and no overlap with the cluster's subnets (``service``, ``pods``, ``also``) nor the subnets it
    stands in for (``proxied``, the --proxy-via and remapped ones). Run it again when those change."""
    network = _parse(value, what)
    for label, others in (
        ("the cluster's service subnet", service),
        ("the cluster's pod subnet", pods),
        ("the also-proxy subnet", also),
        ("the proxied subnet", proxied),
    ):
        for other in others:
            if other.version == network.version and other.overlaps(network):  # type: ignore[arg-type]
                raise VirtualSubnetError(
                    f"{what} {network} overlaps {label} {other}; configure another one (cluster.virtualIPSubnet)"
                )
    return network


class _Pool:
    """The VIPs of one virtual subnet, handed out in order."""

    def __init__(self, network: IPNetwork) -> None:
        self.network = network
        self.size = network.num_addresses - 2
        self.used = 0

    def take(self) -> IPAddress:
        if self.used >= self.size:
            raise VipExhausted(
                f"the virtual IP subnet {self.network} is exhausted: all {self.size} virtual IPs are in use; "
                "configure a larger one (cluster.virtualIPSubnet)"
            )
        self.used += 1
        vip: IPAddress = self.network.network_address + self.used
        return vip


class VipTable:
    """The session's VIPs: (real address, workload or None) <-> VIP, stable and never reassigned."""

    def __init__(
        self,
        subnet: str | IPNetwork | None = None,
        subnet6: str | IPNetwork | None = DEFAULT_VIRTUAL_SUBNET6,
        *,
        platform: str = sys.platform,
    ) -> None:
        network4 = _parse(subnet, "virtual IP subnet") if subnet is not None else default_virtual_subnet(platform)
        if network4.version != 4:
            raise VirtualSubnetError(f"the virtual IP subnet {network4} must be IPv4 (the IPv6 one is separate)")
        self._pools: dict[int, _Pool] = {4: _Pool(network4)}
        if subnet6 is not None:
            network6 = _parse(subnet6, "IPv6 virtual IP subnet")
            if network6.version != 6:
                raise VirtualSubnetError(f"the IPv6 virtual IP subnet {network6} must be IPv6")
            self._pools[6] = _Pool(network6)
        self._by_real: dict[tuple[IPAddress, WorkloadRef | None], IPAddress] = {}
        self._by_vip: dict[IPAddress, tuple[IPAddress, WorkloadRef | None]] = {}

    @property
    def subnet(self) -> IPNetwork:
        return self._pools[4].network

    @property
    def subnet6(self) -> IPNetwork | None:
        pool = self._pools.get(6)
        return pool.network if pool else None

    @property
    def subnets(self) -> list[IPNetwork]:
        """The virtual subnets to route into the TUN."""
        return [pool.network for pool in self._pools.values()]

    def __len__(self) -> int:
        return len(self._by_vip)

    def contains(self, address: IPAddress) -> bool:
        """Whether the address lies in a virtual subnet (assigned or not)."""
        pool = self._pools.get(address.version)
        return pool is not None and address in pool.network

    def assign(self, real: IPAddress | str, workload: WorkloadRef | None) -> IPAddress:
        """The VIP for (real, workload): the one given before, else the next free one of real's family."""
        address = ipaddress.ip_address(real) if isinstance(real, str) else real
        key = (address, workload)
        vip = self._by_real.get(key)
        if vip is not None:
            return vip
        pool = self._pools.get(address.version)
        if pool is None:
            raise VipExhausted(f"there is no IPv{address.version} virtual IP subnet for {address}")
        vip = pool.take()
        self._by_real[key] = vip
        self._by_vip[vip] = key
        return vip

    def lookup(self, vip: IPAddress | str) -> tuple[IPAddress, WorkloadRef | None] | None:
        """The (real address, workload) behind a VIP, or None if it was never given."""
        address = ipaddress.ip_address(vip) if isinstance(vip, str) else vip
        return self._by_vip.get(address)

    def items(self) -> list[tuple[IPAddress, IPAddress, WorkloadRef | None]]:
        """(vip, real, workload) for every VIP given, in the order they were given (for status)."""
        return [(vip, real, workload) for vip, (real, workload) in self._by_vip.items()]
