"""A tunnel stream stand-in over a plain TCP connection (the agent's SFTP service on this machine's loopback),
with the interface :func:`tether.helper.root.volumes.mount.mount_pod_volumes` uses: opened, read, write,
write_eof, close. Lets the mount and its crash cleanup run without a cluster."""

from __future__ import annotations

import asyncio

from tether.helper.root.vif.flowstream import ENDED, OPENED, DialFailure, Opened, Refused, StreamEvent


class SocketStream:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def opened(self) -> Opened | Refused:
        try:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            return Refused(DialFailure.REFUSED, str(exc))
        return OPENED

    async def read(self) -> bytes | StreamEvent:
        assert self._reader is not None
        data = await self._reader.read(65536)
        return data or ENDED

    async def write(self, data: bytes) -> None:
        assert self._writer is not None
        self._writer.write(data)
        await self._writer.drain()

    async def write_eof(self) -> None:
        assert self._writer is not None
        self._writer.write_eof()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
