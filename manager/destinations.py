"""Which destinations the manager itself may dial for a client: never its own pod (loopback, its own pod IP)
nor link-local addresses (the cloud metadata service at 169.254.169.254 among them), unless a setting allows them.

Pure logic: the flow server asks :meth:`DestinationPolicy.refusal` before the manager dials. Flows an agent
dials (``--proxy-via``) are not checked here: reaching its own pod's loopback is what an agent is for (a mesh).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from tether.manager.api.wire import IPAddress

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class DestinationPolicy:
    #: the manager pod's own IP (its other services listen there); None when unknown
    pod_ip: IPAddress | None = None
    #: CIDRs the manager may dial even though they are loopback, link-local or its own pod IP
    allowed: tuple[IPNetwork, ...] = ()

    def refusal(self, address: IPAddress) -> str | None:
        """Why the manager refuses to dial ``address``, or None when it may."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if any(address in net for net in self.allowed):
            return None
        if address.is_loopback:
            what = "a loopback address (the manager's own pod)"
        elif address.is_link_local:
            what = "a link-local address (such as the cloud metadata service)"
        elif self.pod_ip is not None and address == self.pod_ip:
            what = "the manager's own pod IP"
        else:
            return None
        return (
            f"the traffic-manager does not dial {address}: it is {what}; an admin may allow it with the "
            "manager setting tunnel.allowDestinations"
        )
