"""The tunnel mux in the lab: the manager serves it on the port it advertises, the helper's flows take it, and
without it (tunnelMuxPort 0) they fall back to gRPC Tunnel streams and work the same."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import os
import re
import socket
from pathlib import Path
from typing import Any

import pytest
from helper_fixture import RunningHelper, running_helper
from manager_client import ManagerClient, manager_log, manager_pod, restart_manager, set_manager_config

from tether.helper.root.tunnel.mux_client import MuxClient, connect_mux
from tether.helper.root.tunnel.streams import MuxTunnelStream
from tether.helper.root.vif.flowstream import ENDED, EOF, OPENED
from tether.manager.api import framing
from tether.manager.api import manager_pb2 as pb
from tether.manager.api.framing import Protocol
from tether.manager.config import DEFAULT_TUNNEL_MUX_PORT

pytestmark = pytest.mark.lab

FLOWS = re.compile(r"tunnel flows: (\d+) on the tunnel mux, (\d+) on gRPC Tunnel streams")


# --- the manager's mux, from a client of our own -----------------------------------------------------


@pytest.fixture
def manager(lab, workstation):
    client = ManagerClient(lab, workstation, name="mux-test")
    yield client
    client.close()


async def _echo_through(mux: MuxClient, session: str, address: str, payload: bytes) -> bytes:
    tunnel = MuxTunnelStream(mux.open_stream())
    tunnel.start(framing.open_message(session, Protocol.TCP, (ipaddress.ip_address(address), 7)))
    first = await tunnel.opened()
    assert first is OPENED, first
    await tunnel.write(payload)  # split into frames by the stream
    await tunnel.write_eof()
    received = bytearray()
    while isinstance(item := await tunnel.read(), bytes):
        received += item
    assert item is EOF, item
    assert await tunnel.read() is ENDED  # the manager ends the stream once both sides are done
    tunnel.close()
    return bytes(received)


def test_the_manager_serves_the_tunnel_mux_it_advertises(lab, manager):
    version = manager.run(lambda: manager.stub.Version(pb.Empty()))
    assert version.tunnel_mux_port == DEFAULT_TUNNEL_MUX_PORT

    async def exchange() -> bytes:
        opener = lambda factory: manager.connection.connect_port(version.tunnel_mux_port, factory)  # noqa: E731
        mux = await connect_mux(opener, manager.session)
        try:
            return await _echo_through(mux, manager.session, lab.service_ip("echo"), payload)
        finally:
            mux.close("done")

    payload = os.urandom(4 * 1024 * 1024)
    echoed = manager.run(exchange, 120)
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()


def test_the_manager_refuses_a_mux_for_an_unknown_session(lab, manager):
    async def refused() -> str:
        opener = lambda factory: manager.connection.connect_port(DEFAULT_TUNNEL_MUX_PORT, factory)  # noqa: E731
        with pytest.raises(ConnectionError) as raised:
            await connect_mux(opener, "not-a-session")
        return str(raised.value)

    assert "unknown or expired session 'not-a-session'" in manager.run(refused)


# --- the helper's flows -------------------------------------------------------------------------------


def _traffic(lab: Any, lab_run: Any, workstation: Any) -> None:
    """An HTTP request, a TCP echo of 1 MB and a UDP echo, through the helper: three flows."""
    out = lab_run("curl", "-sS", "-f", "-m", "15", "http://web.default", timeout=30)
    assert out.returncode == 0 and out.stdout.startswith("hello from web"), out.stderr
    payload = os.urandom(1024 * 1024)
    with workstation(), socket.create_connection((lab.service_ip("echo"), 7), timeout=10) as tcp:
        tcp.sendall(payload)
        tcp.shutdown(socket.SHUT_WR)
        received = bytearray()
        while data := tcp.recv(65536):
            received += data
    assert bytes(received) == payload
    target = (lab.service_ip("udp-echo"), 7)
    with workstation(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(5)
        for size in (1, 1400, 30000):
            datagram = os.urandom(size)
            udp.sendto(datagram, target)
            assert udp.recvfrom(65535) == (datagram, target)


def _flow_counts(helper: RunningHelper) -> tuple[int, int]:
    """(flows on the mux, flows on gRPC streams) from the helper's log line at disconnect."""
    counts = FLOWS.findall(helper.log_text())
    assert counts, helper.tail()
    mux, grpc = counts[-1]
    return int(mux), int(grpc)


def _manager_log(lab: Any) -> Path:
    return manager_log(lab, manager_pod(lab))


def _manager_events(lab: Any, since: int, message: str) -> list[dict[str, Any]]:
    with open(_manager_log(lab), "rb") as log:
        log.seek(since)
        lines = log.read().decode(errors="replace").splitlines()
    events = []
    for line in lines:
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict) and entry.get("msg") == message:
                events.append(entry)
    return events


def test_the_helpers_flows_take_the_tunnel_mux(lab, lab_run, workstation, tmp_path):
    since = _manager_log(lab).stat().st_size
    with running_helper(lab.ws_netns, lab.kubeconfig, tmp_path, "mux") as helper:
        helper.start()
        helper.connect()
        assert "tunnel mux connected" in helper.log_text(), helper.tail()
        _traffic(lab, lab_run, workstation)
        helper.disconnect()
        mux, grpc = _flow_counts(helper)
        assert mux >= 3 and grpc == 0, helper.tail()
        assert helper.quit() == 0, helper.tail()
    # The manager saw them as streams of one mux connection, which ended with the session.
    [ended] = _manager_events(lab, since, "tunnel mux connection ended")
    assert ended["streams"] >= mux


def test_without_a_mux_port_the_helpers_flows_use_grpc_streams(lab, lab_control, lab_run, workstation, tmp_path):
    original = set_manager_config(lab, workstation, {"tunnelMuxPort": "0"})
    assert not (original or {}).get("tunnelMuxPort"), original
    try:
        restart_manager(lab)
        with running_helper(lab.ws_netns, lab.kubeconfig, tmp_path, "grpc") as helper:
            helper.start()
            helper.connect()
            assert "offers no tunnel mux; flows use gRPC Tunnel streams" in helper.log_text(), helper.tail()
            _traffic(lab, lab_run, workstation)
            helper.disconnect()
            mux, grpc = _flow_counts(helper)
            assert mux == 0 and grpc >= 3, helper.tail()
            assert helper.quit() == 0, helper.tail()
    finally:
        set_manager_config(lab, workstation, original)
        restart_manager(lab)
    manager = ManagerClient(lab, workstation, name="mux-test-after")
    try:
        assert manager.run(lambda: manager.stub.Version(pb.Empty())).tunnel_mux_port == DEFAULT_TUNNEL_MUX_PORT
    finally:
        manager.close()
