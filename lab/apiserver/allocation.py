"""Addresses and ports a Service is given: its ClusterIP from the service range and its node ports, refused
with kube-apiserver's own messages (Tether learns the service CIDR by parsing the out-of-range one)."""

from __future__ import annotations

import ipaddress
from typing import Any

from tether.lab.apiserver.errors import FieldError, brief, error
from tether.lab.apiserver.kinds import Obj

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def assign_cluster_ip(spec: Obj, old: Obj | None, others: list[Obj], cidr: Network, errors: list[FieldError]) -> None:
    """Give a Service spec its address: the one asked for if it is free and inside ``cidr``, the one it had
    (on updates, where it cannot change), or the first free one; "None" is headless. ``others`` are the
    other stored Services. Refusals go to ``errors``; a full range raises, as it does in kube-apiserver."""
    field = "spec.clusterIPs[0]"
    listed = spec.get("clusterIPs")
    requested = spec.get("clusterIP") or (listed[0] if isinstance(listed, list) and listed else "")
    previous = (old or {}).get("spec", {}).get("clusterIP")
    if not isinstance(requested, str):
        errors.append(FieldError.invalid(field, brief(requested), "must be a string"))
        return
    if previous:  # an update: the address is kept, never changed
        if requested not in ("", previous):
            errors.append(FieldError.invalid(field, [requested], "may not change once set"))
            return
        requested = previous
    elif requested == "None":
        pass  # headless: no address
    elif requested:
        try:
            ip = ipaddress.ip_address(requested)
        except ValueError:
            errors.append(
                FieldError.invalid(field, requested, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)")
            )
            return
        if ip not in cidr or ip == cidr.network_address or (cidr.version == 4 and ip == cidr.broadcast_address):
            errors.append(
                FieldError.invalid(
                    field,
                    requested,
                    f"failed to allocate IP {requested}: the provided IP ({requested}) is not in "
                    f"the valid range. The range of valid IPs is {cidr}",
                )
            )
            return
        if any(svc.get("spec", {}).get("clusterIP") == requested for svc in others):
            errors.append(
                FieldError.invalid(
                    field, requested, f"failed to allocate IP {requested}: provided IP is already allocated"
                )
            )
            return
    else:
        used = {svc.get("spec", {}).get("clusterIP") for svc in others}
        free = next((str(ip) for ip in cidr.hosts() if str(ip) not in used), None)
        if free is None:
            raise error(500, "InternalError", "Internal error occurred: failed to allocate a serviceIP: range is full")
        requested = free
    spec["clusterIP"] = requested
    spec["clusterIPs"] = [requested]
    if requested != "None":
        family = f"IPv{ipaddress.ip_address(requested).version}"
        spec.setdefault("ipFamilies", [family])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")


def assign_node_ports(
    ports: list[Any], old: Obj | None, others: list[Obj], port_range: tuple[int, int], errors: list[FieldError]
) -> None:
    """Give each port of a NodePort or LoadBalancer Service a node port from ``port_range``, keeping those
    asked for or held before when they are free; refusals go to ``errors``."""
    low, high = port_range
    used = {p.get("nodePort") for svc in others for p in svc.get("spec", {}).get("ports") or []}
    # An update that leaves nodePort out keeps the one allocated before.
    old_ports = (old or {}).get("spec", {}).get("ports") or []
    kept = {(p.get("port"), p.get("protocol")): p.get("nodePort") for p in old_ports}
    for i, port in enumerate(ports):
        node_port = port.get("nodePort") or kept.get((port.get("port"), port.get("protocol")))
        if node_port is None:
            node_port = next((p for p in range(low, high + 1) if p not in used), None)
            if node_port is None:
                raise error(
                    500, "InternalError", "Internal error occurred: failed to allocate a nodePort: range is full"
                )
            port["nodePort"] = node_port
        elif not isinstance(node_port, int):
            continue  # the model check reports it
        elif not low <= node_port <= high:
            errors.append(
                FieldError.invalid(
                    f"spec.ports[{i}].nodePort",
                    node_port,
                    f"provided port is not in the valid range. The range of valid ports is {low}-{high}",
                )
            )
        elif node_port in used:
            errors.append(
                FieldError.invalid(f"spec.ports[{i}].nodePort", node_port, "provided port is already allocated")
            )
        used.add(node_port)
