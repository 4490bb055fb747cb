"""The two ends of the intercept tests' traffic, run as programs: a local server in the workstation namespace
(``serve http|bulk PORT RESULTS``) and a client in a pod (``bulk HOST PORT UP DOWN CONNECTIONS``).

The bulk protocol: the client sends one line with how many bytes it wants back, then its payload, then
half-closes; the server sends that many bytes while it reads the payload to its end, then closes. Both ends
hash what they send and receive; the server appends its digests per connection to RESULTS (JSON lines), the
client prints its own (a JSON list), and the test compares them.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys

CHUNK = 256 * 1024
HELLO = b"hello from the workstation\n"


async def _send(writer: asyncio.StreamWriter, size: int) -> str:
    digest = hashlib.sha256()
    left = size
    while left:
        piece = os.urandom(min(CHUNK, left))
        digest.update(piece)
        writer.write(piece)
        await writer.drain()
        left -= len(piece)
    return digest.hexdigest()


async def _receive(reader: asyncio.StreamReader) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while data := await reader.read(CHUNK):
        digest.update(data)
        size += len(data)
    return digest.hexdigest(), size


async def serve(mode: str, port: int, results: str) -> None:
    async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:  # a probe that only connects (tether intercept checks the port)
            writer.close()
            return
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(HELLO), HELLO))
        await writer.drain()
        writer.close()

    async def bulk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        if not line:  # a probe that only connects (tether intercept checks the port)
            writer.close()
            return
        wanted = int(line.strip())
        sent, (received, size) = await asyncio.gather(_send(writer, wanted), _receive(reader))
        writer.write_eof()
        await writer.drain()
        writer.close()
        with open(results, "a") as out:
            out.write(json.dumps({"sent": sent, "sent_bytes": wanted, "received": received, "received_bytes": size}))
            out.write("\n")

    server = await asyncio.start_server(http if mode == "http" else bulk, "127.0.0.1", port, backlog=1024)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


async def client(host: str, port: int, up: int, down: int, connections: int) -> None:
    async def one() -> dict[str, object]:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"%d\n" % down)

        async def send() -> str:
            digest = await _send(writer, up)
            writer.write_eof()
            return digest

        sent, (received, size) = await asyncio.gather(send(), _receive(reader))
        writer.close()
        return {"sent": sent, "sent_bytes": up, "received": received, "received_bytes": size}

    results = await asyncio.gather(*(one() for _ in range(connections)), return_exceptions=True)
    print(json.dumps([r if isinstance(r, dict) else {"error": repr(r)} for r in results]))


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        asyncio.run(serve(sys.argv[2], int(sys.argv[3]), sys.argv[4]))
    else:
        asyncio.run(client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])))
