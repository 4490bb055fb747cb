import ipaddress

import pytest

from tether.manager.api import framing
from tether.manager.api import manager_pb2 as pb
from tether.manager.api.framing import Protocol, TunnelError

ECHO = (ipaddress.ip_address("10.96.0.7"), 7)


def test_open_round_trip():
    message = framing.open_message(
        "s1", Protocol.UDP, ECHO, (ipaddress.ip_address("fd00::5"), 40000), dial_timeout=2.5, idle_timeout=30
    )
    wire = pb.TunnelMessage.FromString(message.SerializeToString())
    spec = framing.parse_open(wire)
    assert spec.session_id == "s1"
    assert spec.protocol is Protocol.UDP
    assert spec.destination == ECHO
    assert spec.source == (ipaddress.ip_address("fd00::5"), 40000)
    assert spec.dial_timeout == 2.5
    assert spec.idle_timeout == 30
    assert spec.describe() == "udp://10.96.0.7:7"


def test_defaults_and_caps():
    spec = framing.parse_open(framing.open_message("s", Protocol.TCP, ECHO, dial_timeout=3600))
    assert spec.source is None
    assert spec.dial_timeout == framing.MAX_DIAL_TIMEOUT
    assert spec.idle_timeout == framing.DEFAULT_UDP_IDLE_TIMEOUT


@pytest.mark.parametrize(
    ("message", "complaint"),
    [
        (pb.TunnelMessage(data=b"x"), "first tunnel message must be open, got data"),
        (pb.TunnelMessage(), "got an empty message"),
        (pb.TunnelMessage(open=pb.TunnelOpen(protocol=pb.TCP)), "no destination"),
        (
            pb.TunnelMessage(open=pb.TunnelOpen(protocol=7, destination=pb.Endpoint(ip=bytes(4), port=1))),
            "unsupported tunnel protocol 7",
        ),
        (
            pb.TunnelMessage(open=pb.TunnelOpen(protocol=pb.TCP, destination=pb.Endpoint(ip=b"\x01\x02", port=1))),
            "4 or 16 bytes, got 2",
        ),
        (
            pb.TunnelMessage(open=pb.TunnelOpen(protocol=pb.TCP, destination=pb.Endpoint(ip=bytes(4), port=70000))),
            "port 70000 is out of range",
        ),
        (
            pb.TunnelMessage(open=pb.TunnelOpen(protocol=pb.TCP, destination=pb.Endpoint(ip=b"\n\0\0\1", port=0))),
            "port 0 is not dialable (10.0.0.1)",
        ),
        (
            pb.TunnelMessage(open=pb.TunnelOpen(protocol=pb.UDP, destination=pb.Endpoint(ip=bytes(4), port=53))),
            "0.0.0.0 is not a unicast",
        ),
        (
            pb.TunnelMessage(open=pb.TunnelOpen(protocol=pb.UDP, destination=pb.Endpoint(ip=b"\xe0\0\0\1", port=5))),
            "224.0.0.1 is not a unicast",
        ),
    ],
)
def test_bad_first_messages_name_the_problem(message, complaint):
    with pytest.raises(TunnelError) as raised:
        framing.parse_open(message)
    assert complaint in str(raised.value)


def test_chunks_split_large_payloads_and_keep_small_ones():
    payload = bytes(range(256)) * 4096  # 1 MiB
    pieces = framing.chunks(payload, limit=300_000)
    assert [len(p) for p in pieces] == [300_000, 300_000, 300_000, 148_576]
    assert b"".join(pieces) == payload
    assert framing.chunks(b"abc") == [b"abc"]


def test_dial_reasons():
    assert framing.dial_reason_for(ConnectionRefusedError()) == pb.DialResult.REFUSED
    assert framing.dial_reason_for(TimeoutError()) == pb.DialResult.TIMEOUT
    assert framing.dial_reason_for(OSError(113, "No route to host")) == pb.DialResult.UNREACHABLE
    failed = framing.dial_failed(pb.DialResult.REFUSED, "dial tcp://10.96.0.7:9: refused")
    assert not failed.dial.ok and failed.dial.error.endswith("refused")
