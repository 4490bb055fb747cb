"""Where the emulator's port-forward connects: like the kubelet, to ``localhost`` inside the pod's network
namespace (so a server that listens on the pod's loopback only is reachable this way and no other), found
from the lab's ``netns://NAME/container`` container IDs; pods without one are reached at their IP."""

from __future__ import annotations

import asyncio
import socket

from tether.lab.apiserver.kinds import Obj
from tether.lab.netns import entered

_SCHEME = "netns://"
_CONNECT_TIMEOUT = 10.0


def pod_netns(pod: Obj) -> str | None:
    """The network namespace the lab runs the pod in, from its container IDs; None if it names none."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        container_id = str(status.get("containerID") or "")
        if container_id.startswith(_SCHEME):
            name = container_id[len(_SCHEME) :].split("/", 1)[0]
            if name:
                return name
    return None


def _connect_in(netns: str, port: int) -> socket.socket:
    # A socket keeps the namespace it was created in; the thread moves back when it leaves.
    with entered(netns):
        sock = socket.create_connection(("127.0.0.1", port), timeout=_CONNECT_TIMEOUT)
    sock.setblocking(False)
    return sock


async def connect_in_pod(netns: str, port: int) -> socket.socket:
    """A TCP connection to 127.0.0.1:port inside ``netns`` (on a thread: setns moves only the caller)."""
    try:
        return await asyncio.to_thread(_connect_in, netns, port)
    except TimeoutError:
        raise OSError("i/o timeout") from None
