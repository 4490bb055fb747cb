"""The ``pods/portforward`` subresource: a websocket (``v4.channel.k8s.io``) whose channels carry the
streams of TCP connections the emulator makes to the pod's loopback inside its network namespace, as the kubelet
would (to its IP for a pod outside the lab's namespaces)."""

from __future__ import annotations

import asyncio
import os
from typing import cast

import aiohttp
import aiohttp.web

from tether.lab.apiserver.errors import bad_request
from tether.lab.apiserver.kinds import Obj
from tether.lab.apiserver.podnet import connect_in_pod, pod_netns

_PORTFORWARD_PROTOCOLS = ("v4.channel.k8s.io", "portforward.k8s.io")
_MAX_FRAME = 64 * 1024 * 1024  # largest websocket frame accepted from a client


async def serve_portforward(
    raw: aiohttp.web.BaseRequest, pod: Obj, closing: asyncio.Event
) -> aiohttp.web.StreamResponse:
    """Forward the ports the request names to ``pod`` over a websocket, until either side is done or ``closing``."""
    where = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
    ports: list[int] = []
    for value in raw.query.getall("ports", []):  # "ports=80,443" and "ports=80&ports=443" both occur
        for text in value.split(","):
            if not text.strip().isdigit() or not 0 < int(text) < 65536:
                raise bad_request(f'invalid port {text!r} in the "ports" query parameter')
            ports.append(int(text))
    if not ports:
        raise bad_request('query parameter "ports" is required')
    pod_ip = (pod.get("status") or {}).get("podIP")
    if not pod_ip:
        raise bad_request(f"pod {where} has no IP address (status.podIP is empty)")
    ws = aiohttp.web.WebSocketResponse(
        protocols=_PORTFORWARD_PROTOCOLS, compress=False, max_msg_size=_MAX_FRAME, timeout=2.0
    )
    if not ws.can_prepare(raw).ok:
        raise bad_request("port forwarding needs a websocket upgrade request")
    await ws.prepare(raw)
    await _PortForward(ws, pod_ip, ports, where, pod_netns(pod)).run(closing)
    return ws


class _PortForward:
    """One port-forward websocket (v4.channel.k8s.io): per port i, data on channel 2i, errors on 2i+1.

    What a pod sends is written to the websocket's transport within the pod connection's own callback (a
    frame is a header, the channel byte and the data; a server does not mask), and what the client sends is
    written to the pod's transport as aiohttp hands over each message, without streams or tasks in between.
    Each side's back-pressure pauses the other.
    """

    class _Pod(asyncio.Protocol):
        """One forwarded port's connection to the pod."""

        def __init__(self, forward: _PortForward, channel: int) -> None:
            self.forward = forward
            self.prefix = bytes((channel,))
            self.transport: asyncio.Transport | None = None
            self.lost = asyncio.get_running_loop().create_future()
            self.writable = asyncio.Event()
            self.writable.set()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

        def data_received(self, data: bytes) -> None:
            self.forward._to_client(self.prefix, data)

        def eof_received(self) -> bool:
            return False  # v4 framing has no half-close: the pod is done with this port

        def connection_lost(self, exc: Exception | None) -> None:
            self.writable.set()
            if not self.lost.done():
                self.lost.set_result(None)

        def pause_writing(self) -> None:
            self.writable.clear()

        def resume_writing(self) -> None:
            self.writable.set()

    def __init__(
        self, ws: aiohttp.web.WebSocketResponse, host: str, ports: list[int], pod: str, netns: str | None = None
    ) -> None:
        self.ws, self.host, self.ports, self.pod, self.netns = ws, host, ports, pod, netns
        self.pods: dict[int, _PortForward._Pod] = {}  # by data channel
        self._draining: asyncio.Task[None] | None = None
        # aiohttp keeps the prepared websocket's transport (and the protocol that knows when it drains) in its
        # writer; our frames go there directly.
        writer = getattr(ws, "_writer", None)
        transport = getattr(writer, "transport", None)
        if transport is None or not hasattr(transport, "write"):  # uvloop's are not asyncio.Transport subclasses
            raise RuntimeError("the port-forward needs a prepared websocket whose transport aiohttp exposes")
        self._transport = transport
        self._protocol = getattr(writer, "protocol", None)

    async def run(self, closing: asyncio.Event) -> None:
        # Like the kubelet, first announce each port on both of its channels (the client checks them).
        for i, port in enumerate(self.ports):
            for channel in (2 * i, 2 * i + 1):
                await self.ws.send_bytes(bytes([channel]) + port.to_bytes(2, "little"))
        inbound: asyncio.Task[None] | None = None
        try:
            dials = await asyncio.gather(
                *(self._dial(port, 2 * i) for i, port in enumerate(self.ports)), return_exceptions=True
            )
            for i, (port, dialed) in enumerate(zip(self.ports, dials, strict=True)):
                if isinstance(dialed, BaseException):
                    reason = os.strerror(dialed.errno).lower() if getattr(dialed, "errno", None) else str(dialed)
                    message = f"error forwarding port {port} to pod {self.pod}: dial tcp {self.host}:{port}: {reason}"
                    await self.ws.send_bytes(bytes([2 * i + 1]) + message.encode())
                    continue
                self.pods[2 * i] = dialed
            if self.pods:
                # The session ends when the client hangs up, when every pod connection has closed, or at
                # server shutdown.
                inbound = asyncio.create_task(self._client_to_pod())
                pods_gone = asyncio.gather(*(pod.lost for pod in self.pods.values()))
                shutdown = asyncio.create_task(closing.wait())
                await asyncio.wait([inbound, pods_gone, shutdown], return_when=asyncio.FIRST_COMPLETED)
                shutdown.cancel()
        finally:
            for pod in self.pods.values():
                if pod.transport is not None:
                    pod.transport.close()
            if self._draining is not None:
                self._draining.cancel()
            await self.ws.close()
            if inbound is not None:
                inbound.cancel()
                await asyncio.gather(inbound, return_exceptions=True)

    async def _dial(self, port: int, channel: int) -> _PortForward._Pod:
        loop = asyncio.get_running_loop()

        def protocol() -> _PortForward._Pod:
            return _PortForward._Pod(self, channel)

        if self.netns is not None:
            sock = await connect_in_pod(self.netns, port)
            _, pod = await loop.create_connection(protocol, sock=sock)
            return pod
        try:
            async with asyncio.timeout(10):
                _, pod = await loop.create_connection(protocol, self.host, port)
        except TimeoutError:
            raise OSError("i/o timeout") from None
        return pod

    def _to_client(self, prefix: bytes, data: bytes) -> None:
        transport = self._transport
        if transport.is_closing():
            return
        size = len(data) + 1
        if size < 126:
            header = bytes((0x82, size))
        elif size < 65536:
            header = bytes((0x82, 126)) + size.to_bytes(2, "big")
        else:
            header = bytes((0x82, 127)) + size.to_bytes(8, "big")
        if size < 65536:
            transport.write(header + prefix + data)
        else:  # no copy of a big chunk: the header, then the data as it came
            transport.write(header + prefix)
            transport.write(data)
        if self._draining is None and transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]:
            # The client reads slower than the pods send: stop reading them until the websocket has drained.
            for pod in self.pods.values():
                if pod.transport is not None:
                    pod.transport.pause_reading()
            self._draining = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        transport = self._transport
        drain = getattr(self._protocol, "_drain_helper", None)  # aiohttp's: returns once the transport resumed
        try:
            if drain is not None:
                await drain()
            else:
                while transport.get_write_buffer_size() > transport.get_write_buffer_limits()[0]:
                    await asyncio.sleep(0.001)
        except ConnectionError:
            return
        finally:
            self._draining = None
        for pod in self.pods.values():
            if pod.transport is not None:
                pod.transport.resume_reading()

    async def _client_to_pod(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.BINARY or len(message.data) < 2:
                continue  # pings are answered by aiohttp; empty frames carry nothing
            pod = self.pods.get(message.data[0])
            if pod is None or pod.transport is None or pod.transport.is_closing():
                continue  # error channels and failed ports take no data
            pod.transport.write(memoryview(message.data)[1:])
            if not pod.writable.is_set():
                await pod.writable.wait()  # back-pressure: stop reading the websocket while the pod is slow
