"""The VIF engine against a stream creator of the test's own: a plain function, typed events, no manager.

The app's side is played through a FakeTun; each flow's stream is a FakeStream the test answers by hand.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable

import pytest

from tests.doubles.fake_tun import FakeTun
from tether.helper.root.vif import flowstream as fs
from tether.helper.root.vif.engine import VifEngine
from tether.helper.root.vif.netstack import NetStack, NetStackConfig
from tether.helper.root.vif.netstack.packets import ACK, FIN, PSH, RST, SYN, Decoded, build_tcp, build_udp, decode
from tether.runtime import eventloop

pytestmark = pytest.mark.usefixtures("each_event_loop")

APP, SVC = "10.1.0.2", "10.96.0.10"
ip = ipaddress.ip_address


class FakeStream:
    """One flow's stream: the test resolves ``answer`` and puts what the far side sends into ``incoming``."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.answer: asyncio.Future[fs.Opened | fs.Refused] = loop.create_future()
        self.incoming: asyncio.Queue[bytes | fs.StreamEvent] = asyncio.Queue()
        self.sent: list[bytes | fs.StreamEvent] = []
        self.on_open: Callable[[], None] | None = None
        self.closed = False

    def on_opened(self, callback: Callable[[], None]) -> None:
        self.on_open = callback

    async def opened(self) -> fs.Opened | fs.Refused:
        return await self.answer

    def read(self) -> asyncio.Future[bytes | fs.StreamEvent]:
        return asyncio.ensure_future(self.incoming.get())

    async def write(self, data: bytes) -> None:
        self.sent.append(bytes(data))

    async def write_eof(self) -> None:
        self.sent.append(fs.EOF)

    def try_write(self, data: bytes) -> bool:
        self.sent.append(bytes(data))
        return True

    def try_write_eof(self) -> bool:
        self.sent.append(fs.EOF)
        return True

    def set_sink(self, sink: Callable[[bytes], int]) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class Streams:
    """The stream creator (a plain function: ``open``) and a carrier that counts what it is told."""

    def __init__(self, refuse: fs.StreamRefusedError | None = None) -> None:
        self.refuse = refuse
        self.opened: list[tuple[fs.FlowProtocol, fs.Endpoint, fs.Endpoint, FakeStream]] = []
        self.flushes = 0
        self.after_receive: Callable[[], None] | None = None
        self.carrier_closed = False

    def open(self, protocol: fs.FlowProtocol, source: fs.Endpoint, destination: fs.Endpoint) -> FakeStream:
        if self.refuse is not None:
            raise self.refuse
        stream = FakeStream()
        self.opened.append((protocol, source, destination, stream))
        return stream

    def flush(self) -> None:
        self.flushes += 1

    def set_after_receive(self, callback: Callable[[], None]) -> None:
        self.after_receive = callback

    def close(self) -> None:
        self.carrier_closed = True


async def until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("the condition never held")
        await asyncio.sleep(0.005)


async def packet_from(tun: FakeTun, predicate: Callable[[Decoded], object]) -> Decoded:
    """The next packet the engine wrote that ``predicate`` accepts (the ones before it are dropped)."""
    found: list[Decoded] = []

    def seen() -> bool:
        while not found and not tun.written.empty():
            packet = decode(tun.take_written())
            if predicate(packet):
                found.append(packet)
        return bool(found)

    await until(seen)
    return found[0]


Scenario = Callable[[VifEngine, FakeTun, Streams], Awaitable[None]]


def run(scenario: Scenario, refuse: fs.StreamRefusedError | None = None) -> Streams:
    streams = Streams(refuse)

    async def main() -> None:
        tun = FakeTun(mtu=1500)
        engine = VifEngine(tun, NetStack(NetStackConfig(mtu=1500)), streams.open, streams)
        engine.start()
        try:
            await asyncio.wait_for(scenario(engine, tun, streams), 10)
        finally:
            await engine.stop()
            tun.close()

    eventloop.run(main())
    return streams


def syn(port: int = 40000) -> bytes:
    return build_tcp(APP, SVC, port, 80, seq=1000, flags=SYN)


def test_a_tcp_flow_end_to_end_through_typed_events():
    async def scenario(engine: VifEngine, tun: FakeTun, streams: Streams) -> None:
        tun.inject(syn())
        await until(lambda: streams.opened)
        protocol, source, destination, stream = streams.opened[0]
        assert (protocol, source, destination) == (fs.FlowProtocol.TCP, (ip(APP), 40000), (ip(SVC), 80))
        stream.answer.set_result(fs.OPENED)
        synack = await packet_from(tun, lambda p: p.flags == SYN | ACK)
        iss = synack.seq
        tun.inject(build_tcp(APP, SVC, 40000, 80, seq=1001, ack=iss + 1, flags=ACK | PSH, payload=b"hello"))
        await until(lambda: stream.sent == [b"hello"])
        stream.incoming.put_nowait(b"world")
        reply = await packet_from(tun, lambda p: p.payload)
        assert reply.payload == b"world" and reply.seq == iss + 1
        tun.inject(build_tcp(APP, SVC, 40000, 80, seq=1006, ack=iss + 6, flags=ACK | FIN))
        await until(lambda: stream.sent == [b"hello", fs.EOF])
        stream.incoming.put_nowait(fs.EOF)
        fin = await packet_from(tun, lambda p: p.flags & FIN)
        assert fin.seq == iss + 6
        tun.inject(build_tcp(APP, SVC, 40000, 80, seq=1007, ack=iss + 7, flags=ACK))
        stream.incoming.put_nowait(fs.ENDED)
        await until(lambda: engine.flow_count == 0)
        assert stream.closed
        assert streams.flushes > 0 and streams.after_receive is not None

    streams = run(scenario)
    assert streams.carrier_closed


def test_a_carrier_that_hears_the_answer_early_gets_the_syn_ack_out_at_once():
    async def scenario(engine: VifEngine, tun: FakeTun, streams: Streams) -> None:
        tun.inject(syn())
        await until(lambda: streams.opened)
        stream = streams.opened[0][3]
        assert stream.on_open is not None
        stream.on_open()  # as a carrier does from its receive path, before opened() has returned
        assert streams.after_receive is not None
        streams.after_receive()
        assert decode(tun.take_written(timeout=0)).flags == SYN | ACK  # written within the call, no loop turn
        assert not stream.answer.done()

    run(scenario)


@pytest.mark.parametrize(
    ("reason", "answer"),
    [
        (fs.DialFailure.REFUSED, "rst"),
        (fs.DialFailure.INVALID, "rst"),
        (fs.DialFailure.UNREACHABLE, "icmp"),
        (fs.DialFailure.TIMEOUT, "icmp"),
    ],
)
def test_a_refused_dial_answers_the_app_as_the_reason_says(reason, answer):
    async def scenario(engine: VifEngine, tun: FakeTun, streams: Streams) -> None:
        tun.inject(syn())
        await until(lambda: streams.opened)
        stream = streams.opened[0][3]
        stream.answer.set_result(fs.Refused(reason, "no"))
        packet = await packet_from(tun, lambda p: p.proto == 1 or p.flags & RST)
        assert ("icmp" if packet.proto == 1 else "rst") == answer
        if answer == "icmp":
            assert (packet.icmp_type, packet.icmp_code) == (3, 1)  # host unreachable
        await until(lambda: engine.flow_count == 0)
        assert stream.closed and stream.sent == []

    run(scenario)


def test_a_flow_the_creator_cannot_carry_is_refused_at_once():
    async def scenario(engine: VifEngine, tun: FakeTun, streams: Streams) -> None:
        tun.inject(syn())
        packet = await packet_from(tun, lambda p: p.proto == 1)
        assert (packet.icmp_type, packet.icmp_code) == (3, 1)
        await until(lambda: engine.flow_count == 0)

    streams = run(scenario, refuse=fs.StreamRefusedError(fs.DialFailure.UNREACHABLE, "no session"))
    assert streams.opened == []


def test_an_abort_from_the_far_side_resets_the_app():
    async def scenario(engine: VifEngine, tun: FakeTun, streams: Streams) -> None:
        tun.inject(syn())
        await until(lambda: streams.opened)
        stream = streams.opened[0][3]
        stream.answer.set_result(fs.OPENED)
        synack = await packet_from(tun, lambda p: p.flags == SYN | ACK)
        tun.inject(build_tcp(APP, SVC, 40000, 80, seq=1001, ack=synack.seq + 1, flags=ACK))
        stream.incoming.put_nowait(fs.Aborted("the pod went away"))
        await packet_from(tun, lambda p: p.flags & RST)
        await until(lambda: engine.flow_count == 0)
        assert stream.closed

    run(scenario)


def test_udp_datagrams_both_ways_and_a_late_refusal():
    async def scenario(engine: VifEngine, tun: FakeTun, streams: Streams) -> None:
        tun.inject(build_udp(APP, SVC, 40002, 53, b"query"))
        await until(lambda: streams.opened)
        protocol, _, destination, stream = streams.opened[0]
        assert protocol is fs.FlowProtocol.UDP and destination == (ip(SVC), 53)
        stream.answer.set_result(fs.OPENED)
        await until(lambda: stream.sent == [b"query"])  # the first datagram waited for the answer
        stream.incoming.put_nowait(b"answer")
        reply = await packet_from(tun, lambda p: p.proto == 17)
        assert (reply.src, reply.sport, reply.payload) == (ip(SVC), 53, b"answer")
        stream.incoming.put_nowait(fs.Refused(fs.DialFailure.REFUSED, "ICMP port unreachable"))
        icmp = await packet_from(tun, lambda p: p.proto == 1)
        assert (icmp.icmp_type, icmp.icmp_code) == (3, 3)  # port unreachable
        await until(lambda: engine.flow_count == 0)

    run(scenario)
