"""The tunnel mux: connection and stream logic over an in-memory pipe, and real flows over loopback TCP."""

import asyncio
import hashlib
import ipaddress
import logging
import os
import socket

import pytest
from echo_servers import LOOPBACK_ALLOWED

from tether.helper.root.tunnel.mux_client import MuxClient, connect_mux
from tether.helper.root.tunnel.streams import MuxTunnelStream
from tether.helper.root.vif.flowstream import ENDED, EOF, OPENED, DialFailure, Refused
from tether.manager.agents import AgentRegistry
from tether.manager.api import framing
from tether.manager.api import muxframe as mf
from tether.manager.api.framing import Protocol
from tether.manager.api.mux import MuxConnection, MuxStream, MuxStreamError
from tether.manager.sessions import SessionTable, UnknownSessionError
from tether.manager.tunnel.flows import FlowServer
from tether.manager.tunnel.mux_server import MuxListener, MuxServerConnection
from tether.runtime import eventloop

pytestmark = pytest.mark.usefixtures("each_event_loop")

SESSION = "0123456789abcdef"
LOOPBACK = ipaddress.ip_address("127.0.0.1")


def run(coro):
    return eventloop.run(asyncio.wait_for(coro, 20))


# --- an in-memory pipe between two protocols ----------------------------------------------------------


class _Link:
    def __init__(self, a, b):
        self.protocols = (a, b)
        self.down = False

    def close(self):
        if not self.down:
            self.down = True
            loop = asyncio.get_running_loop()
            for protocol in self.protocols:
                loop.call_soon(protocol.connection_lost, None)


class Pipe(asyncio.Transport):
    """One end's transport: what it writes reaches the other protocol on a later turn of the loop, in order."""

    def __init__(self, link, other):
        super().__init__()
        self.link, self.other = link, other
        self.sent = bytearray()

    def write(self, data):
        data = bytes(data)
        self.sent += data
        if not self.link.down:
            asyncio.get_running_loop().call_soon(self._deliver, data)

    def _deliver(self, data):
        self.other.data_received(data)  # written before the close: arrives before connection_lost, as over TCP

    def close(self):
        self.link.close()

    def abort(self):
        self.link.close()

    def is_closing(self):
        return self.link.down

    def get_extra_info(self, name, default=None):
        return ("pipe", 1) if name == "peername" else default


def connect(a, b):
    """Wire protocols a and b together; returns their transports."""
    link = _Link(a, b)
    ta, tb = Pipe(link, b), Pipe(link, a)
    b.connection_made(tb)  # the server first: the client's hello goes out in connection_made
    a.connection_made(ta)
    return ta, tb


class Raw(asyncio.Protocol):
    """A hand-driven peer: records the frames it gets; the test writes bytes as it likes."""

    def __init__(self):
        self.decoder = mf.FrameDecoder()
        self.frames = []
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.frames += self.decoder.feed(data)

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(None)

    def of_type(self, ftype):
        return [(s, p) for s, t, p in self.frames if t == ftype]


async def turns(n=5):
    for _ in range(n):
        await asyncio.sleep(0)


async def opened(tunnel, request):
    """Start a flow on a MuxTunnelStream and return the manager's first answer, as the VIF sees it."""
    tunnel.start(request)
    return await tunnel.opened()


def open_request(session=SESSION, port=7):
    return framing.open_message(session, Protocol.TCP, (LOOPBACK, port))


class Handlers:
    """The server's flow handler, scripted per test: by default it records and waits to be cancelled."""

    def __init__(self, script=None):
        self.script = script
        self.started = []
        self.cancelled = []

    async def __call__(self, first, stream, session_id):
        self.started.append((first, stream, session_id))
        try:
            if self.script is not None:
                await self.script(first, stream)
            else:
                await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.append(stream.id)
            raise


async def dial_then_wait(first, stream):
    """A flow whose destination accepted at once and that then reads nothing."""
    await stream.send(framing.dial_ok())
    await asyncio.Event().wait()


def check_session(session_id):
    if session_id != SESSION:
        raise UnknownSessionError(session_id)


async def welcomed_pair(handler=None, **options):
    server = MuxServerConnection(check_session, handler or Handlers(), **options)
    client = MuxClient(SESSION, **options)
    connect(client, server)
    await asyncio.wait_for(client.welcomed, 2)
    return client, server


async def raw_server(handler=None, **options):
    """A server and a raw peer that has said hello."""
    server = MuxServerConnection(check_session, handler or Handlers(), **options)
    peer = Raw()
    connect(peer, server)
    peer.transport.write(mf.hello(SESSION))
    await turns()
    assert peer.of_type(mf.WELCOME)
    return server, peer


# --- the hello ------------------------------------------------------------------------------------


def test_a_hello_with_a_live_session_is_welcomed():
    async def main():
        client, server = await welcomed_pair()
        assert server.session_id == SESSION and client.usable

    run(main())


def test_a_hello_with_an_unknown_session_is_refused_with_the_reason(caplog):
    async def main():
        server = MuxServerConnection(check_session, Handlers())
        client = MuxClient("not-a-session")
        connect(client, server)
        with pytest.raises(ConnectionError, match="unknown or expired session 'not-a-session'"):
            await asyncio.wait_for(client.welcomed, 2)
        assert "unknown or expired session" in await client.closed
        assert server.closed.done() and not client.usable

    with caplog.at_level(logging.WARNING):
        run(main())
    assert "refused: unknown or expired session" in caplog.text


def test_a_hello_of_another_version_is_refused():
    async def main():
        server = MuxServerConnection(check_session, Handlers())
        peer = Raw()
        connect(peer, server)
        peer.transport.write(mf.hello(SESSION, version=9))
        await asyncio.wait_for(peer.lost, 2)
        [(_, reason)] = peer.of_type(mf.GOAWAY)
        assert b"version 9 is not supported" in reason

    run(main())


@pytest.mark.parametrize(
    ("first", "reason"),
    [
        (mf.frame(1, mf.MESSAGE, open_request().SerializeToString()), b"MESSAGE frame before the HELLO"),
        (mf.ping(b"12345678") + mf.welcome(), b"unexpected WELCOME"),
        (mf.hello(SESSION) + mf.hello(SESSION), b"a second HELLO"),
        (b"GET / HTTP/1.1\r\n\r\n", b"unknown frame type"),
    ],
)
def test_frames_out_of_turn_end_the_connection(first, reason, caplog):
    async def main():
        server = MuxServerConnection(check_session, Handlers())
        peer = Raw()
        connect(peer, server)
        peer.transport.write(first)
        await asyncio.wait_for(peer.lost, 2)
        assert any(reason in payload for _, payload in peer.of_type(mf.GOAWAY)), peer.frames
        assert "protocol error" in server.closed.result()

    with caplog.at_level(logging.WARNING):
        run(main())
    assert "broke the protocol" in caplog.text


# --- streams --------------------------------------------------------------------------------------


def test_a_stream_carries_messages_and_data_both_ways_and_ends_cleanly():
    async def echo(first, stream):
        await stream.send(framing.dial_ok())
        async for message in stream.messages():
            if message.WhichOneof("kind") == "eof":
                await stream.send(framing.eof_message())
                return
            await stream.send(message)

    async def main():
        handlers = Handlers(echo)
        client, server = await welcomed_pair(handlers)
        tunnel = MuxTunnelStream(client.open_stream())
        first = await opened(tunnel, open_request())
        assert first is OPENED
        [(first_seen, _, session)] = handlers.started
        assert first_seen == open_request() and session == SESSION
        for payload in (b"x", b"", os.urandom(mf.MAX_DATA)):
            await tunnel.write(payload)
            assert await tunnel.read() == payload
        await tunnel.write_eof()
        assert await tunnel.read() is EOF
        assert await tunnel.read() is ENDED  # the handler returned: END
        tunnel.close()
        await turns()
        assert client.streams == {} and server.streams == {}
        assert handlers.cancelled == []

    run(main())


def test_the_client_resetting_a_stream_cancels_its_flow():
    async def main():
        handlers = Handlers()
        client, server = await welcomed_pair(handlers)
        stream = client.open_stream()
        await stream.send_message(open_request())
        await turns()
        assert len(handlers.started) == 1
        stream.finish("the app went away")
        await turns()
        assert handlers.cancelled == [stream.id]
        assert server.streams == {} and client.streams == {}
        # Late frames for the finished stream are ignored, not a protocol error.
        client.write(mf.window(stream.id, 1000))
        await turns()
        assert not server.closed.done()

    run(main())


def test_a_flow_handler_failing_resets_its_stream(caplog):
    async def broken(first, stream):
        raise RuntimeError("boom")

    async def main():
        client, _ = await welcomed_pair(Handlers(broken))
        stream = client.open_stream()
        await stream.send_message(open_request())
        with pytest.raises(MuxStreamError, match="the manager failed to run the flow"):
            await asyncio.wait_for(stream.read(), 2)

    with caplog.at_level(logging.ERROR):
        run(main())
    assert "stream 1 failed" in caplog.text


def test_credit_holds_a_sender_back_until_the_receiver_takes_data():
    async def main():
        client, server = await welcomed_pair(Handlers(dial_then_wait))
        stream = client.open_stream()
        await stream.send_message(open_request())
        assert (await stream.read()).dial.ok  # the full window comes with the dial answer
        chunk = b"z" * mf.MAX_DATA
        for _ in range(mf.STREAM_WINDOW // mf.MAX_DATA):
            await asyncio.wait_for(stream.send_data(chunk), 1)
        assert stream.credit == 0
        blocked = asyncio.ensure_future(stream.send_data(b"one more"))
        await turns(20)
        assert not blocked.done()
        remote: MuxStream = server.streams[stream.id]
        assert remote._outstanding == mf.STREAM_WINDOW  # everything sent is waiting there, and no more
        assert await remote.read() == chunk  # a quarter window taken: its credit goes back
        await asyncio.wait_for(blocked, 1)
        assert stream.credit == mf.WINDOW_UPDATE_STEP - len(b"one more")

    run(main())


def test_small_reads_return_credit_in_steps_not_per_frame():
    async def main():
        client, server = await welcomed_pair(Handlers(dial_then_wait))
        stream = client.open_stream()
        await stream.send_message(open_request())
        assert (await stream.read()).dial.ok
        remote = server.streams[stream.id]
        for _ in range(100):
            await stream.send_data(b"q" * 64)
            await turns()
            assert await remote.read() == b"q" * 64
        await turns()
        windows = [p for _, t, p in mf.FrameDecoder().feed(bytes(server.transport.sent)) if t == mf.WINDOW]
        assert [mf.parse_window(p) for p in windows] == [mf.STREAM_WINDOW - mf.INITIAL_WINDOW]  # the grant only
        assert stream.credit == mf.STREAM_WINDOW - 6400

    run(main())


def test_a_peer_sending_beyond_its_window_is_cut_off(caplog):
    async def main():
        server, peer = await raw_server(Handlers(dial_then_wait))
        peer.transport.write(mf.frame(1, mf.MESSAGE, open_request().SerializeToString()))
        await turns()
        assert peer.of_type(mf.WINDOW) == [(1, mf.window(1, mf.STREAM_WINDOW - mf.INITIAL_WINDOW)[8:])]
        chunk = b"d" * mf.MAX_DATA
        for _ in range(mf.STREAM_WINDOW // mf.MAX_DATA):
            peer.transport.write(mf.frame(1, mf.DATA, chunk))
        await turns()
        assert not server.closed.done()  # exactly the window is fine
        peer.transport.write(mf.frame(1, mf.DATA, b"!"))
        await asyncio.wait_for(peer.lost, 2)
        assert b"beyond its window" in peer.of_type(mf.GOAWAY)[0][1]

    with caplog.at_level(logging.WARNING):
        run(main())


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([mf.frame(3, mf.DATA, b"x")], b"DATA frame for stream 3, never opened"),
        ([mf.window(2, 5)], b"WINDOW frame for stream 2, never opened"),
        ([mf.frame(1, mf.MESSAGE, b"\xff\xff\xff")], b"no TunnelMessage"),
        ([mf.frame(1, mf.MESSAGE, b"")], b"an empty MESSAGE"),
        ([mf.frame(1, mf.MESSAGE, framing.data_message(b"x").SerializeToString())], b"data travels in DATA frames"),
        (
            [mf.frame(1, mf.MESSAGE, open_request().SerializeToString())]
            + [mf.frame(1, mf.MESSAGE, framing.eof_message().SerializeToString())] * 17,
            b"messages waiting unread",
        ),
        (
            [mf.frame(1, mf.MESSAGE, open_request().SerializeToString()), mf.window(1, mf.MAX_CREDIT)],
            b"bytes of credit",
        ),
    ],
)
def test_malformed_stream_frames_end_the_connection(frames, reason, caplog):
    async def main():
        _server, peer = await raw_server()
        for frame in frames:
            peer.transport.write(frame)
        await asyncio.wait_for(peer.lost, 2)
        assert any(reason in payload for _, payload in peer.of_type(mf.GOAWAY)), peer.frames

    with caplog.at_level(logging.WARNING):
        run(main())


def test_too_many_streams_are_reset(caplog):
    async def main():
        handlers = Handlers()
        server = MuxServerConnection(check_session, handlers, max_streams=2)
        client = MuxClient(SESSION)
        connect(client, server)
        await asyncio.wait_for(client.welcomed, 2)
        streams = [client.open_stream() for _ in range(3)]
        for stream in streams:
            await stream.send_message(open_request())
        await turns()
        with pytest.raises(MuxStreamError, match="more than 2 streams"):
            await asyncio.wait_for(streams[2].read(), 1)
        assert len(handlers.started) == 2

    with caplog.at_level(logging.WARNING):
        run(main())
    assert "more than 2 streams open; resetting new ones" in caplog.text


def test_losing_the_connection_fails_every_stream_and_cancels_every_flow():
    async def main():
        handlers = Handlers()
        client, server = await welcomed_pair(handlers)
        streams = [client.open_stream() for _ in range(3)]
        for stream in streams:
            await stream.send_message(open_request())
        await turns()
        reading = asyncio.ensure_future(streams[0].read())
        await turns()
        client.transport.close()
        with pytest.raises(MuxStreamError, match="connection ended"):
            await asyncio.wait_for(reading, 1)
        with pytest.raises(MuxStreamError):
            await streams[1].send_data(b"x")
        await turns()
        assert sorted(handlers.cancelled) == [1, 2, 3]
        assert server.closed.done() and client.closed.done()
        with pytest.raises(MuxStreamError, match="connection ended"):
            client.open_stream()

    run(main())


def test_a_full_write_buffer_holds_senders_until_it_drains():
    async def main():
        client, _server = await welcomed_pair()
        stream = client.open_stream()
        await stream.send_message(open_request())
        client.pause_writing()
        sending = asyncio.ensure_future(stream.send_data(b"later"))
        await turns()
        assert not sending.done()
        client.resume_writing()
        await asyncio.wait_for(sending, 1)

    run(main())


def test_goaway_ends_the_connection_with_the_peers_reason():
    async def main():
        client, server = await welcomed_pair()
        server.close("the traffic-manager is stopping")
        assert await asyncio.wait_for(client.closed, 2) == "the peer went away: the traffic-manager is stopping"

    run(main())


# --- keep-alive -----------------------------------------------------------------------------------


def test_pings_keep_a_quiet_connection_up():
    async def main():
        client, server = await welcomed_pair(ping_interval=0.05, idle_timeout=0.2)
        await asyncio.sleep(0.6)
        assert not client.closed.done() and not server.closed.done()

    run(main())


def test_a_silent_peer_is_given_up(caplog):
    async def main():
        server, peer = await raw_server(ping_interval=0.05, idle_timeout=0.2)
        await asyncio.wait_for(peer.lost, 2)
        assert peer.of_type(mf.PING)  # it was asked
        assert "nothing received" in server.closed.result()

    with caplog.at_level(logging.WARNING):
        run(main())


def test_a_ping_is_answered_with_its_bytes():
    async def main():
        _, peer = await raw_server()
        peer.transport.write(mf.ping(b"abcdefgh"))
        await turns()
        assert peer.of_type(mf.PONG) == [(0, b"abcdefgh")]

    run(main())


# --- real flows over loopback TCP -----------------------------------------------------------------


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


class _UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(b"echo:" + data, addr)


class Loopback:
    """A FlowServer behind a MuxListener on loopback, a TCP and a UDP echo, and a connected client."""

    async def __aenter__(self):
        loop = asyncio.get_running_loop()
        self.sessions = SessionTable(idle_timeout=30)
        self.session = self.sessions.arrive("test", "default", "0").session_id
        flows = FlowServer(self.sessions, AgentRegistry(idle_timeout=30), destinations=LOOPBACK_ALLOWED)
        self.listener = MuxListener(flows.check_session, flows.serve_stream)
        port = await self.listener.start("127.0.0.1", 0)
        self.echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
        self.echo_port = self.echo.sockets[0].getsockname()[1]
        self.udp, _ = await loop.create_datagram_endpoint(_UdpEcho, local_addr=("127.0.0.1", 0))
        self.udp_port = self.udp.get_extra_info("sockname")[1]

        def opener(factory):
            return loop.create_connection(factory, "127.0.0.1", port)

        self.client = await connect_mux(opener, self.session)
        return self

    async def __aexit__(self, *exc):
        self.client.close("done")
        self.listener.close()
        self.echo.close()
        self.udp.close()

    def stream(self):
        return MuxTunnelStream(self.client.open_stream())


def test_tcp_flows_over_a_real_mux_connection_are_byte_exact():
    async def main():
        async with Loopback() as h:
            payload = os.urandom(8 << 20)

            async def one(data):
                tunnel = h.stream()
                first = await opened(tunnel, framing.open_message(h.session, Protocol.TCP, (LOOPBACK, h.echo_port)))
                assert first is OPENED, first

                async def send():
                    await tunnel.write(data)  # split into frames by the stream
                    await tunnel.write_eof()

                sender = asyncio.ensure_future(send())
                received = bytearray()
                while True:
                    item = await tunnel.read()
                    if isinstance(item, bytes):
                        received += item
                    elif item is ENDED:
                        break
                    else:
                        assert item is EOF
                await sender
                tunnel.close()
                return hashlib.sha256(received).digest() == hashlib.sha256(data).digest()

            results = await asyncio.gather(one(payload), *(one(os.urandom(50_000)) for _ in range(20)))
            assert all(results)
            assert h.client.streams == {}

    run(main())


def test_a_closed_port_is_refused_and_a_udp_flow_keeps_datagrams():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]

    async def main():
        async with Loopback() as h:
            tunnel = h.stream()
            first = await opened(tunnel, framing.open_message(h.session, Protocol.TCP, (LOOPBACK, closed)))
            assert type(first) is Refused and first.reason is DialFailure.REFUSED
            assert await tunnel.read() is ENDED
            tunnel.close()

            udp = h.stream()
            first = await opened(udp, framing.open_message(h.session, Protocol.UDP, (LOOPBACK, h.udp_port)))
            assert first is OPENED
            for datagram in (b"one", b"two", b"three" * 1000):
                await udp.write(datagram)
                assert await asyncio.wait_for(udp.read(), 2) == b"echo:" + datagram
            udp.close()

    run(main())


def test_an_open_naming_another_session_is_invalid():
    async def main():
        async with Loopback() as h:
            other = h.sessions.arrive("other", "default", "0").session_id
            tunnel = h.stream()
            first = await opened(tunnel, framing.open_message(other, Protocol.TCP, (LOOPBACK, h.echo_port)))
            assert type(first) is Refused and first.reason is DialFailure.INVALID
            assert "another session" in first.detail

    run(main())


def test_the_listener_says_goodbye_to_its_clients_when_it_closes():
    async def main():
        async with Loopback() as h:
            h.listener.close("the traffic-manager is stopping")
            reason = await asyncio.wait_for(h.client.closed, 2)
            assert reason == "the peer went away: the traffic-manager is stopping"

    run(main())


def test_mux_connections_share_the_base_class():
    assert issubclass(MuxClient, MuxConnection) and issubclass(MuxServerConnection, MuxConnection)
