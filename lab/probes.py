"""Readiness checks, run from inside a lab namespace on a helper thread (see netns.call_in)."""

from __future__ import annotations

import http.client
import os
import socket

from dnslib import QTYPE, DNSError, DNSRecord

from tether.lab.netns import call_in
from tether.lab.specs import Probe


def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def udp_echo(host: str, port: int, timeout: float = 0.5) -> bool:
    payload = os.urandom(8)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.sendto(payload, (host, port))
            return s.recvfrom(2048)[0] == payload
        except OSError:
            return False


def http_get(host: str, port: int, path: str = "/", timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def dns_query(server: str, name: str, qtype: str = "A", port: int = 53, timeout: float = 1.0) -> tuple[int, list[str]]:
    """(rcode, answers as text) for one UDP query."""
    reply = DNSRecord.parse(DNSRecord.question(name, qtype).send(server, port, timeout=timeout))
    answers = [str(rr.rdata) for rr in reply.rr if rr.rtype == getattr(QTYPE, qtype)]
    return reply.header.rcode, answers


def check(probe: Probe) -> bool:
    """Run the probe once inside its namespace."""

    def attempt() -> bool:
        try:
            if probe.kind == "tcp":
                return tcp_open(probe.host, probe.port)
            if probe.kind == "udp":
                return udp_echo(probe.host, probe.port)
            if probe.kind == "http":
                return http_get(probe.host, probe.port, probe.name or "/")[0] == 200
            if probe.kind == "dns":
                rcode, answers = dns_query(probe.host, probe.name, port=probe.port)
                return rcode == 0 and (not probe.expect or probe.expect in answers)
        except (OSError, http.client.HTTPException, ValueError, DNSError):
            return False
        raise ValueError(f"unknown probe kind {probe.kind!r}")

    return call_in(probe.netns, attempt, timeout=10)
