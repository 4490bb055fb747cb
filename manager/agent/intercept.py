"""The agent's side of intercepts: it listens where the Service now sends the app's traffic, and passes each
connection to the app (not intercepted) or to the intercepting client through the manager.

How the agent takes over a port without changing the app: the injector points the Service's targetPort at a
port the agent listens on (``--intercept-port AGENT_PORT:APP_PORT``), and the agent forwards what it accepts
there to the app's own port on the pod's loopback. This needs no privilege in the pod (no NET_ADMIN for an
iptables redirect, no init container), leaves the app's own port reachable by pod IP as before, and is undone
by putting the targetPort back. Traffic that reaches the app by pod IP and app port, not through the
Service, is not intercepted (the price of needing no privileges; the reference accepts the same).

An intercepted connection is an ``Agents.Tunnel`` stream whose first message is ``intercepted``; the manager
answers with the client's dial result (the client dialed its local port), and from then on the accepted
socket is piped with :func:`tether.manager.api.dialer.pipe_tcp`, the same pump (flow control, half-close,
aborts) as every other flow.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tether.manager.api import framing
from tether.manager.api import manager_pb2 as pb
from tether.manager.api.dialer import pipe_tcp
from tether.manager.api.framing import FlowSpec, Protocol
from tether.manager.api.wire import endpoint_to_pb

log = logging.getLogger("tether.agent")

#: (agent port, app port)
PortPair = tuple[int, int]
#: Opens an Agents.Tunnel call for an intercepted connection: returns (write, read-iterator, finish).
OpenTunnel = Callable[[], Awaitable["TunnelCall"]]
LOOPBACK = ipaddress.ip_address("127.0.0.1")
# Service-link variables the kubelet puts into every container: the app sees them as the agent does.
_SERVICE_LINK = re.compile(r"[A-Z0-9_]+_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT(_[0-9]+_(TCP|UDP|SCTP).*)?)")


class TunnelCall:
    """What the interceptor needs of an Agents.Tunnel call (a gRPC stream-stream call, or a test double)."""

    async def write(self, message: pb.TunnelMessage) -> None:
        raise NotImplementedError

    async def read(self) -> pb.TunnelMessage | None:
        raise NotImplementedError

    async def finish(self) -> None:
        raise NotImplementedError


def parse_port_pairs(values: Sequence[str]) -> tuple[PortPair, ...]:
    """``AGENT_PORT:APP_PORT`` values (also comma-separated); ValueError naming a bad one."""
    pairs: list[PortPair] = []
    for value in (v.strip() for item in values for v in item.split(",")):
        if not value:
            continue
        agent, sep, app = value.partition(":")
        if not sep or not agent.isdigit() or not app.isdigit():
            raise ValueError(f'--intercept-port "{value}" is not AGENT_PORT:APP_PORT')
        pair = (int(agent), int(app))
        if not all(0 < p < 65536 for p in pair) or pair[0] == pair[1]:
            raise ValueError(f'--intercept-port "{value}": ports must be 1-65535 and differ')
        if any(p[0] == pair[0] or p[1] == pair[1] for p in pairs):
            raise ValueError(f'--intercept-port "{value}" repeats a port')
        pairs.append(pair)
    return tuple(pairs)


def app_environment(environ: Mapping[str, str], names_json: str) -> dict[str, str]:
    """The app container's environment as the agent sees it: the variables the injector copied from the app
    container (their names in ``names_json``, a JSON list) and the kubelet's service-link variables."""
    try:
        names = json.loads(names_json) if names_json else []
    except ValueError:
        names = []
    wanted = {n for n in names if isinstance(n, str)}
    return {k: v for k, v in sorted(environ.items()) if k in wanted or _SERVICE_LINK.fullmatch(k)}


@dataclass
class InterceptStats:
    forwarded: int = 0  # connections passed to the app
    intercepted: int = 0  # connections sent to a client
    refused: int = 0  # intercepted connections the client could not take


class Interceptor:
    """Listens on the agent ports; routes each connection by the current intercepts."""

    def __init__(self, pairs: Sequence[PortPair], open_tunnel: OpenTunnel, host: str = "0.0.0.0") -> None:
        self.pairs = tuple(pairs)
        self._open_tunnel = open_tunnel
        self._host = host
        self._listeners: list[socket.socket] = []
        self._tasks: set[asyncio.Task[None]] = set()
        #: app port -> the intercepting client's name
        self.intercepted: dict[int, str] = {}
        self.agent_id = ""
        self.stats = InterceptStats()

    async def start(self) -> None:
        """Listen on every agent port (OSError if one cannot be had), then accept in the background."""
        for agent_port, app_port in self.pairs:
            listener = socket.create_server((self._host, agent_port), backlog=1024, reuse_port=False)
            listener.setblocking(False)
            self._listeners.append(listener)
            self._spawn(self._accept(listener, app_port))
            log.info("listening for the app's traffic", extra={"port": agent_port, "app_port": app_port})

    async def _accept(self, listener: socket.socket, app_port: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as exc:
                log.warning("accepting on port %d failed: %s", listener.getsockname()[1], exc)
                await asyncio.sleep(0.1)
                continue
            sock.setblocking(False)
            self.take(sock, app_port)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for listener in self._listeners:
            listener.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)

    def update(self, intercepts: pb.AgentIntercepts) -> None:
        ours = {p[1] for p in self.pairs}
        now = {p.port: p.intercepted_by for p in intercepts.ports if p.port in ours}
        if now != self.intercepted:
            log.info("intercepts changed", extra={"intercepted": {str(k): v for k, v in sorted(now.items())}})
        self.intercepted = now

    def ports(self) -> list[pb.PortState]:
        return [
            pb.PortState(port=app, agent_port=agent, intercepted_by=self.intercepted.get(app, ""))
            for agent, app in self.pairs
        ]

    def take(self, sock: socket.socket, app_port: int) -> None:
        client = self.intercepted.get(app_port)
        self._spawn(
            self._intercept(sock, app_port, client) if client and self.agent_id else self._forward(sock, app_port)
        )

    async def _forward(self, sock: socket.socket, app_port: int) -> None:
        self.stats.forwarded += 1
        await _relay(sock, app_port)

    async def _intercept(self, sock: socket.socket, app_port: int, client: str) -> None:
        self.stats.intercepted += 1
        peer = sock.getpeername()
        source = (ipaddress.ip_address(peer[0]), int(peer[1]))
        spec = FlowSpec("", Protocol.TCP, (LOOPBACK, app_port), source, framing.DEFAULT_DIAL_TIMEOUT, 0.0)
        try:
            call = await self._open_tunnel()
        except Exception as exc:
            log.warning("cannot pass an intercepted connection to the manager: %s", exc)
            sock.close()
            return
        try:
            first = pb.InterceptedFlow(agent_id=self.agent_id, port=app_port, source=endpoint_to_pb(*source))
            await call.write(pb.TunnelMessage(intercepted=first))
            answer = await call.read()
            if answer is None or answer.WhichOneof("kind") != "dial" or not answer.dial.ok:
                self.stats.refused += 1
                why = answer.dial.error if answer is not None and answer.WhichOneof("kind") == "dial" else "no answer"
                log.info("intercepted connection refused: %s", why, extra={"client": client, "port": app_port})
                _reset(sock)
                return
            await pipe_tcp(spec, sock, _messages(call), call.write)
        except (ConnectionError, OSError) as exc:
            log.debug("intercepted connection ended: %r", exc)
        finally:
            sock.close()
            await call.finish()


async def _messages(call: TunnelCall) -> AsyncIterator[pb.TunnelMessage]:
    while (message := await call.read()) is not None:
        yield message


def _reset(sock: socket.socket) -> None:
    """Close with a RST, as a port nobody listens on answers: the caller sees the refusal."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()


async def _relay(sock: socket.socket, app_port: int) -> None:
    """Pass a connection to the app on the pod's loopback, both ways, half-close included."""
    try:
        app_reader, app_writer = await asyncio.open_connection("127.0.0.1", app_port)
    except OSError as exc:
        log.info("the app does not answer on port %d: %s", app_port, exc)
        _reset(sock)
        return
    reader, writer = await asyncio.open_connection(sock=sock)

    async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await source.read(256 * 1024):
                sink.write(data)
                await sink.drain()
            if sink.can_write_eof():
                sink.write_eof()

    try:
        await asyncio.gather(pump(reader, app_writer), pump(app_reader, writer))
    finally:
        for w in (writer, app_writer):
            w.close()
