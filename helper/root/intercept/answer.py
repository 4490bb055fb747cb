"""Answer one intercepted connection: dial the user's local port and carry the flow to the manager, which
splices it to the agent that accepted the connection in the pod.

Why the helper dials (not the CLI): it holds the manager session and its tunnel (the mux), and an intercept
outlives the ``tether intercept`` command that made it. What it dials is fixed here, not by the manager: only
loopback, and only the local port the user named for that workload and port (:meth:`InterceptTable.local_port`);
a dial request for anything else is refused. Both carriers of outbound flows serve (the tunnel mux, else a
gRPC Tunnel stream), and the byte pump is the one every flow uses (``dialer.run_flow``): same flow control,
half-close and refusal.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
from collections.abc import AsyncIterator, Callable

import grpc

from tether.helper.root.tunnel.mux_client import MuxClient
from tether.manager.api import framing
from tether.manager.api import manager_pb2 as mpb
from tether.manager.api.dialer import run_flow
from tether.manager.api.framing import TunnelError
from tether.manager.api.streamwriter import StreamWriter, incoming_messages

log = logging.getLogger("tether.helper.root.intercept")

LOCALHOST = ipaddress.ip_address("127.0.0.1")
CLOSE_TIMEOUT = 10.0
#: (namespace, workload, container port) -> the local port, or None when this helper does not intercept it
LocalPort = Callable[[str, str, int], int | None]


async def answer(
    stub: object, session_id: str, mux: MuxClient | None, request: mpb.DialRequest, local_port: LocalPort
) -> None:
    first = mpb.TunnelMessage(agent_flow=mpb.AgentFlow(agent_id=session_id, flow_id=request.flow_id))
    if mux is not None and mux.usable:
        stream = mux.open_stream()
        try:
            stream.send_message_now(first)
            await _run(request, local_port, stream.messages(), stream.send, stream)
        except asyncio.CancelledError:
            stream.reset("the helper is stopping")
            raise
        except Exception as exc:
            log.debug("intercepted flow ended: %r", exc)
            stream.reset(str(exc) or type(exc).__name__)
        else:
            stream.end()
        return
    call = stub.Tunnel()  # type: ignore[attr-defined]
    write = StreamWriter(call.write)
    try:
        await write(first)
        await _run(request, local_port, incoming_messages(call), write, None)
        await write.drain()
        await call.done_writing()
        async with asyncio.timeout(CLOSE_TIMEOUT):
            while await call.read() is not grpc.aio.EOF:
                pass
    except (grpc.aio.AioRpcError, grpc.aio.UsageError, TimeoutError) as exc:
        log.debug("intercepted flow ended: %r", exc)
    finally:
        call.cancel()


async def _run(
    request: mpb.DialRequest,
    local_port: LocalPort,
    incoming: AsyncIterator[mpb.TunnelMessage],
    send: Callable[[mpb.TunnelMessage], object],
    fast: object,
) -> None:
    try:
        spec = framing.parse_open(mpb.TunnelMessage(open=request.open))
    except TunnelError as exc:
        await send(framing.dial_failed(mpb.DialResult.INVALID, str(exc)))  # type: ignore[misc]
        return
    via = request.open.via
    port = spec.destination[1]
    local = local_port(via.namespace, via.name, port) if spec.via is not None else None
    if local is None:
        why = f"this client does not intercept {via.namespace}/{via.name} port {port}"
        await send(framing.dial_failed(mpb.DialResult.REFUSED, why))  # type: ignore[misc]
        return
    spec = dataclasses.replace(spec, destination=(LOCALHOST, local), via=None)
    await run_flow(spec, incoming, send, fast)  # type: ignore[arg-type]
