"""Reach a pod's port through the API server's pods/portforward websocket.

A local listener (a unix socket, so it does not depend on the caller's network
namespace, or loopback TCP) accepts connections; each one becomes its own
websocket to the API server speaking the v4.channel.k8s.io framing: every
frame starts with a channel byte (0 data, 1 error for the first port), and the
server's first frame on each channel carries the port number.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from pathlib import Path
from urllib.parse import quote

import aiohttp
import kubernetes

log = logging.getLogger("tether.helper.portforward")

DATA_CHANNEL = 0
ERROR_CHANNEL = 1
READ_CHUNK = 256 * 1024
PROTOCOL = "v4.channel.k8s.io"


class PortForwardError(ConnectionError):
    """The API server refused or broke a port-forward; the text says which pod and why."""


def _ssl_context(configuration: kubernetes.client.Configuration) -> ssl.SSLContext | bool:
    if not configuration.host.startswith("https"):
        return False
    if not configuration.verify_ssl:
        return False
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    return context


def _auth_headers(configuration: kubernetes.client.Configuration) -> dict[str, str]:
    token = configuration.get_api_key_with_prefix("authorization")
    return {"Authorization": token} if token else {}


class PodPortForward:
    """Forward connections on a local endpoint to port `remote_port` of one pod."""

    def __init__(
        self, configuration: kubernetes.client.Configuration, namespace: str, pod: str, remote_port: int
    ) -> None:
        self._configuration = configuration
        self._remote_port = remote_port
        self._pod = f"{namespace}/{pod}"
        base = configuration.host.rstrip("/")
        self._url = (
            f"{base}/api/v1/namespaces/{quote(namespace)}/pods/{quote(pod)}/portforward?ports={int(remote_port)}"
        )
        self._session: aiohttp.ClientSession | None = None
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def listen_unix(self, path: Path) -> str:
        self._server = await asyncio.start_unix_server(self._serve, path=str(path))
        return f"unix:{path}"

    async def listen_tcp(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._server = await asyncio.start_server(self._serve, host, port)
        bound = self._server.sockets[0].getsockname()
        return f"{bound[0]}:{bound[1]}"

    def _client(self) -> aiohttp.ClientSession:
        # Created lazily, inside the running loop and the caller's network namespace.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=_auth_headers(self._configuration),
                connector=aiohttp.TCPConnector(ssl=_ssl_context(self._configuration)),
            )
        return self._session

    async def probe(self) -> None:
        """Open and close one forwarded connection, so a wrong pod or port fails early and clearly."""
        websocket = await self._connect()
        await websocket.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        try:
            websocket = await self._client().ws_connect(
                self._url, protocols=(PROTOCOL,), max_msg_size=0, autoping=True, heartbeat=None
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise PortForwardError(
                f"port-forward to pod {self._pod} refused by the API server: {exc.status} {exc.message}"
            ) from None
        except aiohttp.ClientError as exc:
            raise PortForwardError(
                f"cannot reach the API server for a port-forward to pod {self._pod}: {exc}"
            ) from None
        # The server announces the port on both channels before any data.
        for _ in range(2):
            frame = await websocket.receive()
            if frame.type != aiohttp.WSMsgType.BINARY or len(frame.data) != 3:
                await websocket.close()
                raise PortForwardError(f"port-forward to pod {self._pod}: unexpected opening frame {frame.type!r}")
        return websocket

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            websocket = await self._connect()
        except PortForwardError as exc:
            log.warning("%s", exc)
            writer.close()
            self._connections.discard(task)
            return
        try:
            await _splice(reader, writer, websocket, self._pod, self._remote_port)
        except asyncio.CancelledError:
            # close() cancels live connections; this task is the top of its connection, so ending
            # quietly is right (asyncio's stream server would otherwise log the cancellation as an error).
            pass
        finally:
            self._connections.discard(task)
            await websocket.close()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _splice(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    websocket: aiohttp.ClientWebSocketResponse,
    pod: str,
    port: int,
) -> None:
    async def local_to_pod() -> None:
        while payload := await reader.read(READ_CHUNK):
            await websocket.send_bytes(bytes((DATA_CHANNEL,)) + payload)

    async def pod_to_local() -> None:
        async for frame in websocket:
            if frame.type != aiohttp.WSMsgType.BINARY or not frame.data:
                continue
            channel, payload = frame.data[0], frame.data[1:]
            if channel == DATA_CHANNEL:
                writer.write(payload)
                await writer.drain()
            elif channel == ERROR_CHANNEL and payload:
                log.warning("port-forward to %s:%d: %s", pod, port, payload.decode(errors="replace"))

    tasks = [asyncio.ensure_future(local_to_pod()), asyncio.ensure_future(pod_to_local())]
    try:
        # v4 framing has no half-close: when either side ends, the connection ends.
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
