"""Reach a pod's port through the API server's pods/portforward websocket.

A local listener (a unix socket, so it does not depend on the caller's network
namespace, or loopback TCP) accepts connections; each one becomes its own
websocket to the API server speaking the v4.channel.k8s.io framing: every
message starts with a channel byte (0 data, 1 error for the first port), and
the server's first message on each channel carries the port number.

Every byte between the helper and the manager passes here, so each forwarded
connection is two asyncio protocols spliced together rather than two streams
and two tasks: what one side reads is framed (or unframed) and written to the
other side in the same callback, without queues, task switches or copies in
between. The websocket client is a small RFC 6455 implementation of its own
(upgrade, masking, fragmented messages, ping/pong, close), all a port-forward
needs. Back-pressure is the transports' own: a side whose write buffer fills
up pauses reading on the other side until it drains. When the Configuration
names a proxy (``configuration.proxy``, not exempted by its ``no_proxy``), the
websocket's connection goes through it (``proxydial``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import ssl
import struct
from collections.abc import Callable
from pathlib import Path
from typing import cast
from urllib.parse import quote, urlsplit

import kubernetes

from tether.helper.api.proxies import ProxyError, ProxyURL, bypasses, parse_proxy_url
from tether.helper.cluster.proxydial import connect_via_proxy

try:  # RFC 6455 masking in C: in pure Python it would cost ~1.5 ms per 256 KB frame on the upload path
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a platform without websockets' compiled wheel
    from websockets.utils import apply_mask

log = logging.getLogger("tether.helper.portforward")

DATA_CHANNEL = 0
ERROR_CHANNEL = 1
PROTOCOL = "v4.channel.k8s.io"
# Connecting, the upgrade and both port announcements must be done within this many seconds.
OPEN_TIMEOUT = 30.0
# Error-channel text kept per message at most; the HTTP head of the upgrade's answer at most.
_MAX_TEXT = 64 * 1024
_MAX_RESPONSE_HEAD = 64 * 1024
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

_OP_CONTINUATION, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")


class PortForwardError(ConnectionError):
    """The API server refused or broke a port-forward; the text says which pod and why."""


def _ssl_context(configuration: kubernetes.client.Configuration) -> ssl.SSLContext | None:
    if not configuration.host.startswith("https"):
        return None
    if configuration.verify_ssl:
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if configuration.cert_file:  # a client certificate authenticates whether or not we verify the server
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    return context


def _auth_headers(configuration: kubernetes.client.Configuration) -> dict[str, str]:
    token = configuration.get_api_key_with_prefix("authorization")
    return {"Authorization": token} if token else {}


def client_frame(opcode: int, payload: bytes | bytearray | memoryview, channel: int | None = None) -> bytearray:
    """One final, masked client frame carrying ``channel`` (one byte, if given) and ``payload``."""
    body = bytearray() if channel is None else bytearray((channel,))
    body += payload
    size = len(body)
    key = os.urandom(4)
    if size < 126:
        frame = bytearray((0x80 | opcode, 0x80 | size))
    elif size < 65536:
        frame = bytearray(_LEN16.pack(0x80 | opcode, 0x80 | 126, size))
    else:
        frame = bytearray(_LEN64.pack(0x80 | opcode, 0x80 | 127, size))
    frame += key
    frame += apply_mask(body, key)
    return frame


def _status_message(body: bytes) -> str:
    """The ``message`` of the Kubernetes Status that starts a refused upgrade's body, if it is there."""
    start = body.find(b"{")
    if start < 0:
        return ""
    with contextlib.suppress(ValueError, AttributeError):
        message = json.loads(body[start:].decode(errors="replace")).get("message")
        return message if isinstance(message, str) else ""
    return ""


class _Side(asyncio.Protocol):
    """What both ends of a forwarded connection share: a transport, a peer, and back-pressure towards it."""

    transport: asyncio.Transport | None = None
    peer: _Side | None = None
    closed = False
    tunnel_owner: object = None  # through a proxy: what must live as long as the transport (proxydial)

    def pause_writing(self) -> None:
        peer = self.peer
        if peer is not None:
            peer.hold()

    def resume_writing(self) -> None:
        peer = self.peer
        if peer is not None and not peer.closed:
            peer.release()

    # What the other side calls: take these bytes; stop sending me more (my write buffer is full); go on.

    def receive(self, data: bytes | memoryview) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def hold(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()

    def release(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def close(self) -> None:
        raise NotImplementedError


class _WebSocket(_Side):
    """The API server's end: a websocket client speaking v4.channel.k8s.io for one port."""

    def __init__(self, pod: str, port: int, request: bytes, key: str) -> None:
        self.pod, self.port = pod, port
        self._request = request
        self._accept = base64.b64encode(hashlib.sha1(key.encode() + _WS_GUID).digest()).decode()
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()  # upgraded, and the port announced on both channels
        self._upgraded = False
        self._sent_close = False
        self._buffer = bytearray()  # the HTTP head of the answer, later a frame header split between reads
        self._announced: set[int] = set()
        self._early: list[bytes] = []  # data before there was a peer to write it to
        # The frame being read.
        self._remaining = 0  # its payload bytes still to come
        self._opcode = 0
        self._final = False
        self._control = bytearray()  # a control frame's payload
        # The message being read: data messages may be fragmented, and their first byte is the channel.
        self._in_message = False
        self._skip = False  # a text message: not part of this protocol
        self._channel = -1  # -1: the message's next payload byte is its channel
        self._message = bytearray()  # port announcements and error text

    # --- transport events ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, though they are one in all but name
        self.transport = cast(asyncio.Transport, transport)
        transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            reason = f": {exc}" if exc else ""
            self.ready.set_exception(
                PortForwardError(f"port-forward to pod {self.pod}: the API server closed the connection{reason}")
            )
        if self.peer is not None:
            self.peer.close()

    def eof_received(self) -> bool:
        return False  # the server has finished: close our side too

    def data_received(self, data: bytes) -> None:
        try:
            if not self._upgraded:
                data = self._response_head(data)
                if not data:
                    return
            self._frames(data)
        except PortForwardError as exc:
            self._fail(exc)

    # --- the upgrade ---

    def _response_head(self, data: bytes) -> bytes:
        head = self._buffer
        head += data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) > _MAX_RESPONSE_HEAD:
                raise PortForwardError(f"port-forward to pod {self.pod}: the API server's answer has no end")
            return b""
        lines = head[:end].decode("latin-1").split("\r\n")
        rest = bytes(head[end + 4 :])
        head.clear()
        status_line = lines[0].split(" ", 2)
        code = status_line[1] if len(status_line) > 1 else ""
        # Compared as text: int() would raise on "³01" (the latin-1 reading of byte 0xb3 is a digit to isdigit()).
        if code != "101":
            reason = status_line[2] if len(status_line) > 2 else ""
            text = f"port-forward to pod {self.pod} refused by the API server: {code[:16]} {reason}".rstrip()
            detail = _status_message(rest)
            raise PortForwardError(f"{text}: {detail}" if detail else text)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("upgrade", "").lower() != "websocket" or headers.get("sec-websocket-accept") != self._accept:
            raise PortForwardError(f"port-forward to pod {self.pod}: the API server's websocket upgrade is invalid")
        if headers.get("sec-websocket-extensions"):
            raise PortForwardError(f"port-forward to pod {self.pod}: websocket extensions that were not asked for")
        self._upgraded = True
        return rest

    # --- frames from the server ---

    def _frames(self, data: bytes) -> None:
        if self._buffer:
            self._buffer += data
            data = bytes(self._buffer)
            self._buffer.clear()
        view = memoryview(data)
        size = len(data)
        pos = 0
        while pos < size:
            remaining = self._remaining
            if remaining:
                end = pos + remaining if pos + remaining < size else size
                self._payload(view[pos:end])
                self._remaining = remaining - (end - pos)
                pos = end
                if not self._remaining:
                    self._end_of_frame()
                continue
            # A frame header: 2 bytes, then 2 or 8 bytes of length; a server does not mask.
            if size - pos < 2:
                self._buffer += view[pos:]
                return
            first, second = data[pos], data[pos + 1]
            if first & 0x70:
                raise PortForwardError(f"port-forward to pod {self.pod}: a websocket frame with reserved bits set")
            if second & 0x80:
                raise PortForwardError(f"port-forward to pod {self.pod}: a masked websocket frame from the server")
            length = second & 0x7F
            header = 4 if length == 126 else 10 if length == 127 else 2
            if size - pos < header:
                self._buffer += view[pos:]
                return
            if header != 2:
                length = int.from_bytes(view[pos + 2 : pos + header], "big")
            pos += header
            self._start_frame(first & 0x0F, bool(first & 0x80), length)
            if not length:
                self._end_of_frame()

    def _start_frame(self, opcode: int, final: bool, length: int) -> None:
        if opcode >= _OP_CLOSE:
            if length > 125 or not final:
                raise PortForwardError(f"port-forward to pod {self.pod}: a malformed websocket control frame")
            self._control.clear()
        elif opcode == _OP_CONTINUATION:
            if not self._in_message:
                raise PortForwardError(f"port-forward to pod {self.pod}: a websocket continuation without a message")
        elif opcode in (_OP_TEXT, _OP_BINARY):
            if self._in_message:
                raise PortForwardError(f"port-forward to pod {self.pod}: a websocket message inside another one")
            self._in_message = True
            self._skip = opcode == _OP_TEXT
        else:
            raise PortForwardError(f"port-forward to pod {self.pod}: unknown websocket opcode {opcode}")
        self._opcode = opcode
        self._final = final
        self._remaining = length

    def _payload(self, chunk: memoryview) -> None:
        if self._opcode >= _OP_CLOSE:
            self._control += chunk
            return
        if self._skip:
            return
        if self._channel < 0:
            self._channel = chunk[0]
            chunk = chunk[1:]
            if not chunk:
                return
        if self._channel == DATA_CHANNEL and DATA_CHANNEL in self._announced:
            peer = self.peer
            if peer is None:
                self._early.append(bytes(chunk))
            elif not peer.closed:
                peer.receive(chunk)
        elif len(self._message) < _MAX_TEXT:
            self._message += chunk[: _MAX_TEXT - len(self._message)]

    def _end_of_frame(self) -> None:
        if self._opcode >= _OP_CLOSE:
            self._control_frame(self._opcode, bytes(self._control))
            return
        if not self._final:
            return
        channel, message = self._channel, self._message
        self._in_message = self._skip = False
        self._channel = -1
        if channel in (DATA_CHANNEL, ERROR_CHANNEL) and channel not in self._announced:
            if len(message) != 2:
                raise PortForwardError(f"port-forward to pod {self.pod}: unexpected opening frame on channel {channel}")
            self._announced.add(channel)
            if len(self._announced) == 2 and not self.ready.done():
                self.ready.set_result(None)
        elif channel == ERROR_CHANNEL and message:
            log.warning("port-forward to %s:%d: %s", self.pod, self.port, message.decode(errors="replace"))
        message.clear()

    def _control_frame(self, opcode: int, payload: bytes) -> None:
        if opcode == _OP_PING:
            self._send(client_frame(_OP_PONG, payload))
        elif opcode == _OP_CLOSE:
            self.close()
        # a pong answers nothing we asked

    # --- towards the server ---

    def send_data(self, data: bytes) -> None:
        self._send(client_frame(_OP_BINARY, data, DATA_CHANNEL))

    def _send(self, frame: bytearray) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(frame)

    def close(self) -> None:
        """Send a close frame (once), then close the connection when what is queued has been written."""
        if self.closed or self.transport is None:
            return
        if self._upgraded and not self._sent_close:
            self._sent_close = True
            self.transport.write(client_frame(_OP_CLOSE, b"\x03\xe8"))  # 1000: normal closure
        self.closed = True
        self.transport.close()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, exc: PortForwardError) -> None:
        if self.ready.done():
            log.warning("%s", exc)
        else:
            self.ready.set_exception(exc)
        self.abort()

    def attach(self, peer: _Side) -> None:
        """From now on, data goes to ``peer`` (which is ready to receive)."""
        self.peer = peer
        for data in self._early:
            peer.receive(data)
        self._early.clear()


class _Local(_Side):
    """A local client's connection (the manager's gRPC channel), spliced to a websocket of its own."""

    def __init__(self, forward: PodPortForward) -> None:
        self.forward = forward
        self.websocket: _WebSocket | None = None
        self._opening: asyncio.Task[None] | None = None
        # What the client sent before the websocket was open: pausing in connection_made does not stop
        # every loop from delivering a first read (uvloop's does), and those bytes must not be lost.
        self._early = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, though they are one in all but name
        self.transport = cast(asyncio.Transport, transport)
        transport.pause_reading()  # nowhere to send to before the websocket is open
        self.forward._live.add(self)
        self._opening = asyncio.ensure_future(self._open())

    async def _open(self) -> None:
        try:
            websocket = await self.forward._open_websocket()
        except PortForwardError as exc:
            log.warning("%s", exc)
            self.close()
            return
        if self.closed:
            websocket.close()
            return
        self.websocket = websocket
        self.peer = websocket
        websocket.attach(self)
        if websocket.closed:
            self.close()
            return
        if self._early:
            websocket.send_data(bytes(self._early))
            self._early.clear()
        assert self.transport is not None
        self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        websocket = self.websocket
        if websocket is not None:
            websocket.send_data(data)
        else:
            self._early += data

    def eof_received(self) -> bool:
        return False  # v4 framing has no half-close: when either side ends, the connection ends

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.forward._live.discard(self)
        if self._opening is not None and not self._opening.done():
            self._opening.cancel()
        if self.websocket is not None:
            self.websocket.close()

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.close()


class _Attached(_Side, asyncio.Transport):
    """A websocket to a pod port as an asyncio transport for a protocol in this process (no local socket).

    The protocol writes with ``write`` (each call one websocket message on the data channel) and gets the
    pod's bytes in ``data_received``; ``pause_writing``/``resume_writing`` follow the websocket connection's
    write buffer, and ``pause_reading`` stops reading from the API server.
    """

    def __init__(self, websocket: _WebSocket, protocol: asyncio.Protocol, forward: PodPortForward) -> None:
        asyncio.Transport.__init__(self)
        self.websocket = websocket
        self.peer = websocket
        self.protocol = protocol
        self._forward = forward
        self._lost = False

    # the websocket's side (_Side)

    def receive(self, data: bytes | memoryview) -> None:
        self.protocol.data_received(data if isinstance(data, bytes) else bytes(data))

    def hold(self) -> None:
        self.protocol.pause_writing()

    def release(self) -> None:
        self.protocol.resume_writing()

    def close(self) -> None:
        """Close the websocket (once what is queued is written) and tell the protocol."""
        self.closed = True
        self.websocket.close()
        self._connection_lost(None)

    def _connection_lost(self, exc: Exception | None) -> None:
        if not self._lost:
            self._lost = True
            self._forward._live.discard(self)
            self.protocol.connection_lost(exc)

    # the protocol's side (asyncio.Transport)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self.closed and data:
            self.websocket.send_data(data)  # type: ignore[arg-type]

    def is_closing(self) -> bool:
        return self.closed or self.websocket.closed

    def abort(self) -> None:
        self.closed = True
        self.websocket.abort()
        self._connection_lost(None)

    def pause_reading(self) -> None:
        if self.websocket.transport is not None:
            self.websocket.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.websocket.transport is not None and not self.closed:
            self.websocket.transport.resume_reading()

    def is_reading(self) -> bool:
        transport = self.websocket.transport
        return transport is not None and transport.is_reading()

    def get_write_buffer_size(self) -> int:
        transport = self.websocket.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        if name == "peername":
            return f"{self.websocket.pod}:{self.websocket.port}"
        transport = self.websocket.transport
        return transport.get_extra_info(name, default) if transport is not None else default


def _server_port(server: str, netloc: str) -> int | None:
    """The port in the API server's URL (None when it names none); a clear error for one that is not a port,
    where urllib would raise a bare ValueError."""
    after_host = netloc.rpartition("@")[2].rpartition("]")[2]  # past an IPv6 literal's colons
    _, colon, text = after_host.rpartition(":")
    if not colon or not text:
        return None
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise PortForwardError(f'the API server "{server}" has port "{text}", not a number from 1 to 65535')
    return int(text)


def _proxy_for(configuration: kubernetes.client.Configuration, host: str, port: int) -> ProxyURL | None:
    """The proxy the Configuration's REST calls use for this server, so the websocket takes the same way."""
    url = getattr(configuration, "proxy", None)
    if not url:
        return None
    no_proxy = getattr(configuration, "no_proxy", None)
    if no_proxy and bypasses(host, port, no_proxy, loopback=False):
        return None
    try:
        return parse_proxy_url(url, "the proxy")
    except ProxyError as exc:
        raise PortForwardError(str(exc)) from None


class PodPortForward:
    """Forward connections on a local endpoint to port `remote_port` of one pod."""

    def __init__(
        self, configuration: kubernetes.client.Configuration, namespace: str, pod: str, remote_port: int
    ) -> None:
        self._configuration = configuration
        self._remote_port = remote_port
        self._pod = f"{namespace}/{pod}"
        url = urlsplit(configuration.host.rstrip("/"))
        self._tls = url.scheme == "https"
        self._host = url.hostname or "localhost"
        self._port = _server_port(configuration.host, url.netloc) or (443 if self._tls else 80)
        self._host_header = url.netloc.rpartition("@")[2]
        self._path = (
            f"{url.path}/api/v1/namespaces/{quote(namespace)}/pods/{quote(pod)}/portforward?ports={int(remote_port)}"
        )
        self._ssl: ssl.SSLContext | None = None
        self._ssl_made = False
        self._proxy = _proxy_for(configuration, self._host, self._port)
        self._server: asyncio.AbstractServer | None = None
        self._live: set[_Local | _Attached] = set()

    async def listen_unix(self, path: Path) -> str:
        self._server = await asyncio.get_running_loop().create_unix_server(lambda: _Local(self), path=str(path))
        return f"unix:{path}"

    async def listen_tcp(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._server = await asyncio.get_running_loop().create_server(lambda: _Local(self), host, port)
        bound = self._server.sockets[0].getsockname()
        return f"{bound[0]}:{bound[1]}"

    async def connect(
        self, protocol_factory: Callable[[], asyncio.Protocol]
    ) -> tuple[asyncio.Transport, asyncio.Protocol]:
        """One forwarded connection, in this process: ``protocol_factory()``'s protocol talks to the pod port
        through a transport that writes straight into the websocket (no local listener, no second hop)."""
        websocket = await self._open_websocket()
        protocol = protocol_factory()
        attached = _Attached(websocket, protocol, self)
        self._live.add(attached)
        protocol.connection_made(attached)
        websocket.attach(attached)
        if websocket.closed:
            attached.close()
        return attached, protocol

    async def probe(self) -> None:
        """Open and close one forwarded connection, so a wrong pod or port fails early and clearly."""
        websocket = await self._open_websocket()
        websocket.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for local in list(self._live):
            local.close()
            if local.websocket is not None:
                local.websocket.abort()
        self._live.clear()

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self._ssl_made:  # made once, in the caller's thread (loading a CA bundle takes a while)
            self._ssl = _ssl_context(self._configuration)
            self._ssl_made = True
        return self._ssl

    def _request(self) -> tuple[bytes, str]:
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {self._path} HTTP/1.1",
            f"Host: {self._host_header}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            f"Sec-WebSocket-Protocol: {PROTOCOL}",
            *(f"{name}: {value}" for name, value in _auth_headers(self._configuration).items()),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode(), key

    async def _open_websocket(self) -> _WebSocket:
        """Connect, upgrade, and wait until the server has announced the port on both channels."""
        request, key = self._request()
        loop = asyncio.get_running_loop()
        context = self._ssl_context()
        server_hostname = None
        if context is not None:
            server_hostname = getattr(self._configuration, "tls_server_name", None) or self._host
        websocket: _WebSocket | None = None

        def factory() -> _WebSocket:
            nonlocal websocket
            websocket = _WebSocket(self._pod, self._remote_port, request, key)
            return websocket

        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                if self._proxy is None:
                    await loop.create_connection(
                        factory, self._host, self._port, ssl=context, server_hostname=server_hostname
                    )
                else:
                    _, owner = await connect_via_proxy(
                        self._proxy,
                        self._host,
                        self._port,
                        factory(),
                        ssl_context=context,
                        server_hostname=server_hostname,
                        timeout=OPEN_TIMEOUT,
                    )
                    assert websocket is not None
                    websocket.tunnel_owner = owner
                assert websocket is not None
                await websocket.ready
        except BaseException as exc:
            if websocket is not None:
                websocket.abort()
            if isinstance(exc, PortForwardError) or not isinstance(exc, OSError | ssl.SSLError | TimeoutError):
                raise
            detail = str(exc) or type(exc).__name__
            raise PortForwardError(
                f"cannot reach the API server for a port-forward to pod {self._pod}: {detail}"
            ) from None
        return websocket
