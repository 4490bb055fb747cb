"""The VIF engine: packets from the TUN through the netstack, each flow a stream of its own.

One asyncio loop owns the TUN fd, the netstack and every flow's stream. The
streams come from the stream creator the engine is given (``vif.flowstream``:
the helper's is ``tunnel.streams.TunnelOpener``, over the tunnel mux or gRPC
Tunnel streams); the engine knows nothing of what carries them. Flow control
is end to end: bytes the app sent are `consumed()` (reopening its TCP window)
only after the stream accepted them, and bytes from the cluster are pulled
from the stream only while the app's side has room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from tether.helper.root.vif.device import TunDevice
from tether.helper.root.vif.flowstream import (
    ENDED,
    EOF,
    Aborted,
    Carrier,
    DialFailure,
    FlowProtocol,
    FlowStream,
    Refused,
    StreamCreator,
    StreamRefusedError,
)
from tether.helper.root.vif.memreport import report_dir, resident_mb, write_report
from tether.helper.root.vif.memtrim import CHECK_INTERVAL, TrimPolicy, release_to_os
from tether.helper.root.vif.netstack.events import Closed, Data, Datagram, DialRequested, Event, PeerClosed, Writable
from tether.helper.root.vif.netstack.stack import NetStack
from tether.helper.root.vif.netstack.tcp import TcpFlow
from tether.helper.root.vif.udpbudget import UdpQueueBudget, UdpQueueLimits

log = logging.getLogger("tether.helper.root.vif")

__all__ = ["VifEngine"]

READ_BATCH = 64
_EOF = object()
# Refusals the app hears as "host unreachable" (ICMP); the others as "connection refused" (RST).
_UNREACHABLE = frozenset((DialFailure.UNREACHABLE, DialFailure.TIMEOUT))


class _FlowBridge:
    """One app flow and the stream that carries it (see ``vif.flowstream``)."""

    def __init__(self, engine: VifEngine, flow: Any, protocol: FlowProtocol) -> None:
        self.engine = engine
        self.flow = flow
        self.protocol = protocol
        self.stream: FlowStream | None = None
        # App data and eof go straight to the stream while it takes them without waiting; otherwise (no credit,
        # a full connection, a gRPC stream) through this queue and a sender task, both made when first needed.
        self.outbound: asyncio.Queue[object] | None = None
        self.sender: asyncio.Future[None] | None = None  # started once the dial has been answered
        self.sender_idle = False  # the sender task waits for the queue: app data may go straight to the stream
        self.accepted = False
        self.queued_bytes = 0
        # UDP datagrams held in ``outbound`` and what they cost the engine's budget (TCP is bounded by its window).
        self.udp_held = 0
        self.udp_cost = 0
        self.writable: asyncio.Event | None = None  # made when a delivery first waits for room
        self.cluster_done = False
        # The open goes out now, in the batch that brought the SYN; what it raises is the task's to handle.
        self._begun: bool | BaseException
        try:
            self._begun = self._begin()
        except Exception as exc:
            self._begun = exc
        self.task = asyncio.ensure_future(self._run())

    def _begin(self) -> bool:
        """Open the flow's stream (False: the flow was refused at once)."""
        flow = self.flow
        try:
            self.stream = self.engine.open_stream(self.protocol, flow.src, flow.dst)
        except StreamRefusedError as exc:
            log.debug("refusing %r: %s", flow, exc)
            self._refuse(exc.reason)
            return False
        self.stream.on_opened(self._opened_early)
        return True

    def _opened_early(self) -> None:
        """The destination accepted, and the carrier said so the moment it heard: the app gets its SYN-ACK now
        (the carrier's after-receive hook has it written); the rest waits for the task."""
        self.flow.accept()
        self.engine.kick()

    async def _run(self) -> None:
        engine = self.engine
        try:
            if isinstance(self._begun, BaseException):
                raise self._begun
            if not self._begun:
                return
            assert self.stream is not None
            answer = await self.stream.opened()
            if type(answer) is Refused:
                log.debug("dial %r failed: %s", self.flow, answer.detail)
                self._refuse(answer.reason)
                return
            self.flow.accept()
            engine.process_now()  # the app's connect waits for the SYN-ACK
            self.stream.set_sink(self._sink_tcp if self.protocol is FlowProtocol.TCP else self._sink_udp)
            self.accepted = True
            if self.outbound is not None:  # datagrams that came with the first one (UDP)
                self.sender = asyncio.ensure_future(self._app_to_cluster())
            try:
                await self._cluster_to_app()
                if self.cluster_done and self.sender is not None:
                    # A clean end: the far side ends the stream only after our eof, so the sender is done.
                    await self.sender
            finally:
                if self.sender is not None:
                    self.sender.cancel()
        except asyncio.CancelledError:
            raise
        except ConnectionError as exc:
            log.debug("tunnel for %r ended: %s", self.flow, exc)
            self._abort()
        except Exception:
            log.exception("tunnel for %r failed", self.flow)
            self._abort()
        finally:
            if self.stream is not None:
                self.stream.close()
            engine.forget(self.flow)

    def _refuse(self, reason: DialFailure) -> None:
        if reason in _UNREACHABLE:
            self.flow.unreachable()
        else:
            self.flow.refuse()
        self.engine.kick()

    def _abort(self) -> None:
        if not self.flow.closed:
            self.flow.abort() if self.protocol is FlowProtocol.TCP else self.flow.close()
            self.engine.kick()

    async def _cluster_to_app(self) -> None:
        stream = self.stream
        assert stream is not None
        tcp = self.protocol is FlowProtocol.TCP
        while True:
            item = await stream.read()
            if type(item) is bytes:
                if tcp:
                    await self._deliver(item)
                else:
                    self.flow.send(item)
                    self.engine.kick()
                continue
            if item is EOF:
                self.cluster_done = True
                if tcp:
                    self.flow.close()
                    self.engine.kick()
                # keep reading: the app may still be sending, and the stream ends when both sides are done
            elif item is ENDED:
                if not self.cluster_done:
                    self._abort()
                return
            elif type(item) is Refused:
                # A UDP destination answered ICMP unreachable after the fact: tell the app the same way.
                self._refuse(item.reason)
                return
            elif type(item) is Aborted:
                log.debug("the far side ended %r: %s", self.flow, item.detail)
                self._abort()
                return

    def _sink_tcp(self, data: bytes) -> int:
        """Cluster data as it arrives, while nothing waits before it: what the app's side has room for."""
        taken = self.flow.send(data)
        if taken:
            self.engine.kick()
        return taken

    def _sink_udp(self, data: bytes) -> int:
        self.flow.send(data)
        self.engine.kick()
        return len(data)

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
            if self.writable is None:
                self.writable = asyncio.Event()
            self.writable.clear()
            await self.writable.wait()

    async def _app_to_cluster(self) -> None:
        stream, outbound = self.stream, self.outbound
        assert stream is not None and outbound is not None
        flow = self.flow
        stack = self.engine.stack
        tcp = self.protocol is FlowProtocol.TCP
        while True:
            self.sender_idle = True
            item = await outbound.get()
            self.sender_idle = False
            if item is _EOF:
                await stream.write_eof()
                return
            assert isinstance(item, bytes)
            if not tcp:
                self._udp_released(len(item))
            await stream.write(item)
            if tcp:
                self.queued_bytes -= len(item)
                # The app's window reopens only now that the stream has taken the bytes.
                flow.consumed(len(item))
                if stack.has_output:  # a window update is owed (small reads usually owe none)
                    self.engine.kick()

    def _nothing_queued(self) -> bool:
        """Nothing waits to be sent before what comes now (so it may go straight to the stream)."""
        return (self.outbound is None or self.outbound.empty()) and (self.sender is None or self.sender_idle)

    def app_data(self, data: bytes) -> None:
        stream = self.stream
        if stream is not None and self._nothing_queued() and stream.try_write(data):
            # Written without a task switch; the window reopens as the sender would have reopened it.
            if self.protocol is FlowProtocol.TCP:
                self.flow.consumed(len(data))
            return
        if self.protocol is FlowProtocol.UDP:
            if not self.engine.udp_budget.take(self.udp_held, self.udp_cost, len(data)):
                return  # dropped (counted): UDP may lose datagrams, the helper may not grow without bound
            self.udp_held += 1
            self.udp_cost += UdpQueueBudget.cost(len(data))
        else:
            self.queued_bytes += len(data)
        self._queue(data)

    def _udp_released(self, size: int) -> None:
        """A held datagram left the queue: its cost goes back to the budget (unless the bridge already gave
        back everything it held, on its end)."""
        if self.udp_held:
            cost = UdpQueueBudget.cost(size)
            self.udp_held -= 1
            self.udp_cost -= cost
            self.engine.udp_budget.give_back(cost)

    def release(self) -> None:
        """The bridge is gone from the engine: what its queue still holds no longer counts."""
        self.engine.udp_budget.give_back(self.udp_cost)
        self.udp_held = self.udp_cost = 0

    def app_eof(self) -> None:
        stream = self.stream
        if stream is not None and self._nothing_queued() and stream.try_write_eof():
            return
        self._queue(_EOF)

    def _queue(self, item: object) -> None:
        if self.outbound is None:
            self.outbound = asyncio.Queue()
        self.outbound.put_nowait(item)
        # Before the dial is answered a gRPC stream is still being written its open: the sender waits till then.
        if self.sender is None and self.accepted:
            self.sender = asyncio.ensure_future(self._app_to_cluster())


class VifEngine:
    """The TUN's packets through the netstack; each new flow gets a stream from ``open_stream``. A ``carrier``
    (optional) hears where batches end, and tells when it has handed on what it received."""

    def __init__(
        self,
        device: TunDevice,
        stack: NetStack,
        open_stream: StreamCreator,
        carrier: Carrier | None = None,
        udp_limits: UdpQueueLimits | None = None,
    ) -> None:
        self.device = device
        self.stack = stack
        self.open_stream = open_stream
        self.carrier = carrier
        self._bridges: dict[int, _FlowBridge] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        # The armed timer and when it fires: uvloop's call_at hands back a plain Handle (no when()) for a
        # deadline already past.
        self._timer: asyncio.Handle | None = None
        self._timer_at = 0.0
        self._kick_pending = False
        self._kick_handle: asyncio.Handle | None = None
        self._processing = False  # within _process's dispatch (flows may call back)
        if carrier is not None:
            carrier.set_after_receive(self._after_receive)
        # Checksum offload: a device that offers it (see tun_linux) and a stack that builds partial checksums.
        self._offload = bool(getattr(device, "checksum_offload", False)) and stack.config.partial_checksums
        self._write = device.write_partial if self._offload else device.write  # type: ignore[attr-defined]
        self.dropped_writes = 0
        self.udp_budget = UdpQueueBudget(udp_limits)
        self.on_error: Callable[[BaseException], None] | None = None
        self.trim_policy = TrimPolicy()
        self._trim_check: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.device.fileno(), self._on_readable)
        self._trim_check = self._loop.call_later(CHECK_INTERVAL, self._check_trim)

    def _check_trim(self) -> None:
        assert self._loop is not None
        flows = len(self._bridges)
        if self.trim_policy.observe(flows):
            before = resident_mb()
            release_to_os()
            log.info("memory given back after a burst: %d flows, resident %s -> %s MB", flows, before, resident_mb())
            directory = report_dir()
            if directory is not None and not self.trim_policy.follow_up:  # the burst's last trim
                try:
                    log.info("memory report after a burst: %s", write_report(directory, "after the follow-up trim"))
                except OSError as exc:
                    log.warning("memory report to %s failed: %s", directory, exc)
        self._trim_check = self._loop.call_later(CHECK_INTERVAL, self._check_trim)

    async def stop(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self.device.fileno())
        if self._timer is not None:
            self._timer.cancel()
        if self._trim_check is not None:
            self._trim_check.cancel()
        if self.carrier is not None:
            self.carrier.close()
        self.stack.abort_all()
        self._flush()
        bridges = list(self._bridges.values())
        for bridge in bridges:
            bridge.task.cancel()
        if bridges:
            await asyncio.gather(*(b.task for b in bridges), return_exceptions=True)
        for bridge in bridges:
            bridge.release()
        self._bridges.clear()
        drops = self.udp_budget.counters
        if drops:
            log.info("UDP datagrams dropped over the queue budget: %s", dict(drops))

    @property
    def flow_count(self) -> int:
        return len(self._bridges)

    def forget(self, flow: Any) -> None:
        bridge = self._bridges.pop(id(flow), None)
        if bridge is not None:
            bridge.release()

    def kick(self) -> None:
        """Flow methods were called: write what the stack produced, soon, once for the whole burst."""
        if not self._kick_pending and self._loop is not None:
            self._kick_pending = True
            self._kick_handle = self._loop.call_soon(self._after_kick)

    def _after_kick(self) -> None:
        self._kick_pending = False
        self._kick_handle = None
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
        self._processing = True
        try:
            while True:
                events = stack.events()
                if not events:
                    break
                if len(events) > 1:
                    events = _dials_first(events)
                for event in events:
                    self._dispatch(event)
        finally:
            self._processing = False
        if self.carrier is not None:
            self.carrier.flush()  # what the flows wrote to the cluster goes first: it is on the latency path
        self._flush()
        self._arm_timer()

    def _after_receive(self) -> None:
        """The carrier handed on what it read: write what the flows gave the netstack now, not a turn later."""
        if self._kick_pending:
            self.process_now()

    def process_now(self) -> None:
        """What ``kick`` does, without waiting for the next turn of the loop (for what an app waits on)."""
        if self._processing:
            self.kick()  # called from within _process: its own flush follows
            return
        self._kick_pending = False
        if self._kick_handle is not None:
            self._kick_handle.cancel()
            self._kick_handle = None
        self._process()

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
            if self._timer_at <= deadline:
                return
            self._timer.cancel()
        self._timer = self._loop.call_at(deadline, self._on_timer)
        self._timer_at = deadline

    def _dispatch(self, event: Event) -> None:
        flow = event.flow
        if isinstance(event, DialRequested):
            protocol = FlowProtocol.TCP if isinstance(flow, TcpFlow) else FlowProtocol.UDP
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
            if bridge.writable is not None:
                bridge.writable.set()
        elif isinstance(event, Closed):
            if bridge.writable is not None:
                bridge.writable.set()
            if event.reason != "done":
                # The app reset or the flow timed out: end the stream now. A clean close ends by itself.
                bridge.task.cancel()
                self.forget(flow)


def _dials_first(events: list[Event]) -> list[Event]:
    """New flows' opens go out ahead of other flows' data and ends that came in the same batch: a connection
    being set up waits for its dial, while the end of another one waits for nobody. A flow's own events keep
    their order (its DialRequested is its first)."""
    dials = [event for event in events if type(event) is DialRequested]
    if not dials or len(dials) == len(events):
        return events
    return dials + [event for event in events if type(event) is not DialRequested]
