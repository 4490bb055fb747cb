"""The VIF engine: packets from the TUN through the netstack, each flow a Tunnel stream to the manager.

One asyncio loop owns the TUN fd, the netstack and every flow's gRPC stream.
Flow control is end to end: bytes the app sent are `consumed()` (reopening its
TCP window) only after the gRPC stream accepted them, and bytes from the
cluster are pulled from the stream only while the app's side has room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import grpc

from tether.helper.vif.device import TunDevice
from tether.helper.vif.netstack.events import Closed, Data, Datagram, DialRequested, PeerClosed, Writable
from tether.helper.vif.netstack.stack import NetStack
from tether.helper.vif.netstack.tcp import TcpFlow
from tether.manager.rpc import manager_pb2 as pb
from tether.manager.tunnel import framing
from tether.manager.tunnel.framing import Protocol
from tether.manager.wire import IPAddress

log = logging.getLogger("tether.helper.vif")

READ_BATCH = 64
# A flow keeps at most this many unsent app bytes queued for its stream before it stops consuming.
STREAM_QUEUE_BYTES = 1 << 20
_EOF = object()

# Optional hook (--proxy-via): (destination ip, port) -> (ip, port, via) to open the tunnel to, or None to keep
# the destination. ``via`` is (namespace, name, kind) of the workload whose agent dials, or None (the manager).
# Raising LookupError refuses the flow as unreachable (a virtual IP nobody handed out). The app's side of the
# flow keeps the original addresses: the netstack terminates it locally.
DestinationMapper = Callable[[IPAddress, int], tuple[IPAddress, int, tuple[str, str, str] | None] | None]


class TunnelOpener:
    """Where streams come from: the manager stub and the current session (both change on reconnect).

    One Tunnel stream is kept opened ahead (its headers sent, the manager's handler waiting for the Open), so
    a new connection's dial does not also wait for a stream to be set up at both ends: the next one is opened
    once the current flow has its dial answer, off the new connection's path.
    """

    def __init__(self) -> None:
        self.stub: Any = None
        self.session_id = ""
        self.dial_timeout = 5.0
        self.open_ahead = True
        self._spare: tuple[Any, grpc.aio.StreamStreamCall] | None = None  # (stub, call) opened ahead on that stub

    def ready(self) -> bool:
        return self.stub is not None and bool(self.session_id)

    def tunnel(self) -> tuple[grpc.aio.StreamStreamCall, bool]:
        """A Tunnel stream for a new flow, and whether it was opened ahead (and so may have died meanwhile)."""
        spare, self._spare = self._spare, None
        if spare is not None:
            stub, call = spare
            if stub is self.stub and not call.done():
                return call, True
            call.cancel()
        return self.stub.Tunnel(), False

    def prepare(self) -> None:
        """Open the next flow's stream ahead, if there is none (and the session is up)."""
        if self.open_ahead and self._spare is None and self.ready():
            self._spare = (self.stub, self.stub.Tunnel())

    def discard(self) -> None:
        spare, self._spare = self._spare, None
        if spare is not None:
            spare[1].cancel()


class _FlowBridge:
    """One app flow and its Tunnel stream."""

    def __init__(self, engine: VifEngine, flow: Any, protocol: Protocol) -> None:
        self.engine = engine
        self.flow = flow
        self.protocol = protocol
        self.call: grpc.aio.StreamStreamCall | None = None
        self.outbound: asyncio.Queue[object] = asyncio.Queue()
        self.queued_bytes = 0
        self.writable = asyncio.Event()
        self.cluster_done = False
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        engine = self.engine
        opener = engine.opener
        try:
            if not opener.ready():
                self._refuse(pb.DialResult.UNREACHABLE)
                return
            destination, via = self.flow.dst, None
            if engine.map_destination is not None:
                try:
                    mapped = engine.map_destination(*destination)
                except LookupError as exc:
                    log.debug("refusing %r: %s", self.flow, exc)
                    self._refuse(pb.DialResult.UNREACHABLE)
                    return
                if mapped is not None:
                    destination, via = (mapped[0], mapped[1]), mapped[2]
            request = framing.open_message(
                opener.session_id, self.protocol, destination, self.flow.src, dial_timeout=opener.dial_timeout, via=via
            )
            self.call, ahead = opener.tunnel()
            try:
                await self.call.write(request)
                first = await self.call.read()
                if ahead and first is grpc.aio.EOF:
                    raise ConnectionError("the stream opened ahead was closed")
            except (grpc.aio.AioRpcError, ConnectionError):
                if not ahead or not opener.ready():
                    raise
                # The stream opened ahead died with its connection, or the manager let it go: once more, anew.
                self.call.cancel()
                self.call = opener.stub.Tunnel()
                await self.call.write(request)
                first = await self.call.read()
            opener.prepare()
            if first is grpc.aio.EOF or first.WhichOneof("kind") != "dial":
                self._refuse(pb.DialResult.UNREACHABLE)
                return
            if not first.dial.ok:
                log.debug("dial %r failed: %s", self.flow, first.dial.error)
                self._refuse(first.dial.reason)
                return
            self.flow.accept()
            engine.kick()
            sender = asyncio.ensure_future(self._app_to_cluster())
            try:
                await self._cluster_to_app()
                if self.cluster_done:
                    # A clean end: the manager closes the stream only after our eof, so the sender is done.
                    await sender
            finally:
                sender.cancel()
        except asyncio.CancelledError:
            raise
        except grpc.aio.AioRpcError as exc:
            log.debug("tunnel for %r ended: %s", self.flow, exc.code().name)
            self._abort()
        except Exception:
            log.exception("tunnel for %r failed", self.flow)
            self._abort()
        finally:
            if self.call is not None:
                self.call.cancel()
            engine.forget(self.flow)

    def _refuse(self, reason: int) -> None:
        if reason in (pb.DialResult.UNREACHABLE, pb.DialResult.TIMEOUT):
            self.flow.unreachable()
        else:
            self.flow.refuse()
        self.engine.kick()

    def _abort(self) -> None:
        if not self.flow.closed:
            self.flow.abort() if self.protocol is Protocol.TCP else self.flow.close()
            self.engine.kick()

    async def _cluster_to_app(self) -> None:
        assert self.call is not None
        tcp = self.protocol is Protocol.TCP
        while True:
            message = await self.call.read()
            if message is grpc.aio.EOF:
                if not self.cluster_done:
                    self._abort()
                return
            kind = message.WhichOneof("kind")
            if kind == "data":
                if tcp:
                    await self._deliver(message.data)
                else:
                    self.flow.send(message.data)
                    self.engine.kick()
            elif kind == "eof":
                self.cluster_done = True
                if tcp:
                    self.flow.close()
                    self.engine.kick()
                # keep reading: the app may still be sending, and the stream ends when both sides are done
            elif kind == "dial" and not message.dial.ok:
                # A UDP destination answered ICMP unreachable after the fact: tell the app the same way.
                self._refuse(message.dial.reason)
                return
            elif kind == "abort":
                log.debug("manager ended %r: %s", self.flow, message.abort)
                self._abort()
                return

    async def _deliver(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            taken = self.flow.send(view)
            if taken:
                view = view[taken:]
                self.engine.kick()
                continue
            if self.flow.closed:
                return
            self.writable.clear()
            await self.writable.wait()

    async def _app_to_cluster(self) -> None:
        assert self.call is not None
        flow = self.flow
        stack = self.engine.stack
        tcp = self.protocol is Protocol.TCP
        while True:
            item = await self.outbound.get()
            if item is _EOF:
                await self.call.write(framing.eof_message())
                return
            assert isinstance(item, bytes)
            for piece in framing.chunks(item) if tcp else (item,):
                await self.call.write(framing.data_message(piece))
            if tcp:
                self.queued_bytes -= len(item)
                # The app's window reopens only now that gRPC has taken the bytes.
                flow.consumed(len(item))
                if stack.has_output:  # a window update is owed (small reads usually owe none)
                    self.engine.kick()

    def app_data(self, data: bytes) -> None:
        self.queued_bytes += len(data)
        self.outbound.put_nowait(data)

    def app_eof(self) -> None:
        self.outbound.put_nowait(_EOF)


class VifEngine:
    def __init__(
        self,
        device: TunDevice,
        stack: NetStack,
        opener: TunnelOpener,
        map_destination: DestinationMapper | None = None,
    ) -> None:
        self.device = device
        self.stack = stack
        self.opener = opener
        self.map_destination = map_destination  # --proxy-via: VIPs to real destinations (settable)
        self._bridges: dict[int, _FlowBridge] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._kick_pending = False
        # Checksum offload: a device that offers it (see tun_linux) and a stack that builds partial checksums.
        self._offload = bool(getattr(device, "checksum_offload", False)) and stack.config.partial_checksums
        self._write = device.write_partial if self._offload else device.write  # type: ignore[attr-defined]
        self.dropped_writes = 0
        self.on_error: Callable[[BaseException], None] | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.device.fileno(), self._on_readable)

    async def stop(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.device.fileno())
        if self._timer is not None:
            self._timer.cancel()
        self.opener.discard()
        self.stack.abort_all()
        self._flush()
        bridges = list(self._bridges.values())
        for bridge in bridges:
            bridge.task.cancel()
        if bridges:
            await asyncio.gather(*(b.task for b in bridges), return_exceptions=True)
        self._bridges.clear()

    @property
    def flow_count(self) -> int:
        return len(self._bridges)

    def forget(self, flow: Any) -> None:
        self._bridges.pop(id(flow), None)

    def kick(self) -> None:
        """Flow methods were called: write what the stack produced, soon, once for the whole burst."""
        if not self._kick_pending and self._loop is not None:
            self._kick_pending = True
            self._loop.call_soon(self._after_kick)

    def _after_kick(self) -> None:
        self._kick_pending = False
        self._process()

    def _on_readable(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        stack = self.stack
        try:
            if self._offload:
                for packet, verified in self.device.read_batch_offload(READ_BATCH):  # type: ignore[attr-defined]
                    stack.input(packet, now, verified)
            else:
                for packet in self.device.read_batch(READ_BATCH):
                    stack.input(packet, now)
        except OSError as exc:
            log.error("reading the TUN failed: %s", exc)
            if self.on_error:
                self.on_error(exc)
            return
        self._process()

    def _on_timer(self) -> None:
        assert self._loop is not None
        self._timer = None
        self.stack.on_timer(self._loop.time())
        self._process()

    def _process(self) -> None:
        """Hand events to their flows, write the output, and re-arm the timer."""
        stack = self.stack
        while True:
            events = stack.events()
            if not events:
                break
            for event in events:
                self._dispatch(event)
        self._flush()
        self._arm_timer()

    def _flush(self) -> None:
        now = self._loop.time() if self._loop is not None else 0.0
        write = self._write
        for packet in self.stack.output(now):
            if not write(packet):
                self.dropped_writes += 1  # TCP retransmits; a full TUN queue is congestion like any other

    def _arm_timer(self) -> None:
        deadline = self.stack.next_deadline()
        if self._loop is None or deadline is None:
            return
        if self._timer is not None:
            if self._timer.when() <= deadline:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _dispatch(self, event: object) -> None:
        flow = event.flow  # type: ignore[attr-defined]
        if isinstance(event, DialRequested):
            protocol = Protocol.TCP if isinstance(flow, TcpFlow) else Protocol.UDP
            self._bridges[id(flow)] = _FlowBridge(self, flow, protocol)
            return
        bridge = self._bridges.get(id(flow))
        if bridge is None:
            return
        if isinstance(event, Data | Datagram):
            bridge.app_data(event.data)
        elif isinstance(event, PeerClosed):
            bridge.app_eof()
        elif isinstance(event, Writable):
            bridge.writable.set()
        elif isinstance(event, Closed):
            bridge.writable.set()
            if event.reason != "done":
                # The app reset or the flow timed out: end the stream now. A clean close ends by itself.
                bridge.task.cancel()
                self._bridges.pop(id(flow), None)
