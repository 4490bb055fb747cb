"""Conversions between Python network values and their protobuf messages."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from tether.manager.api import manager_pb2 as pb

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def ip_from_bytes(raw: bytes) -> IPAddress:
    if len(raw) not in (4, 16):
        raise ValueError(f"an IP address is 4 or 16 bytes, got {len(raw)}")
    return ipaddress.ip_address(raw)


def subnet_to_pb(network: IPNetwork) -> pb.Subnet:
    return pb.Subnet(ip=network.network_address.packed, prefix_len=network.prefixlen)


def subnet_from_pb(subnet: pb.Subnet) -> IPNetwork:
    address = ip_from_bytes(subnet.ip)
    return ipaddress.ip_network(f"{address}/{subnet.prefix_len}")


def subnets_to_pb(networks: Iterable[IPNetwork]) -> list[pb.Subnet]:
    return [subnet_to_pb(n) for n in networks]


def subnets_from_pb(subnets: Iterable[pb.Subnet]) -> list[IPNetwork]:
    return [subnet_from_pb(s) for s in subnets]


def endpoint_to_pb(address: IPAddress, port: int) -> pb.Endpoint:
    return pb.Endpoint(ip=address.packed, port=port)


def endpoint_from_pb(endpoint: pb.Endpoint) -> tuple[IPAddress, int]:
    if not 0 <= endpoint.port <= 65535:
        raise ValueError(f"port {endpoint.port} is out of range")
    return ip_from_bytes(endpoint.ip), endpoint.port
