"""The contract between the API server and the session that does the work (one cluster at a time).

The daemon builds the real session with ``tether.helper.root.session.create_session(config: SessionConfig)``
and hands it to ``HelperServer``. The server does authentication, authorization, validation and logging
before it calls the session, so a session method can trust that:

* the caller is who the kernel said (``Caller``), and is allowed to do this (see ``authz``);
* every field of the ``ConnectRequest`` passed ``validate.connect_request`` (CIDRs strict, names valid,
  kubeconfig at most 1 MiB, environment names portable).

What the server expects back:

* ``connect`` yields ``ConnectProgress`` messages (a short ``step`` sentence; ``state`` may be set on any,
  and should be on the last). When it returns, ``state().phase`` must be CONNECTED; the server then sends
  a final message with the state if the last one had none. To fail, raise ``SessionError`` (its ``code``
  becomes the gRPC status; default FAILED_PRECONDITION) after undoing what was done; ``validate.ValidationError``
  becomes INVALID_ARGUMENT; anything else is logged and reported as INTERNAL. If the client goes away, the
  generator is closed (``GeneratorExit``/``CancelledError`` at the current ``await``): roll back.
* ``disconnect`` may be called while a ``connect`` is still running (by the owner or root): it must stop
  that connect (which then raises ``SessionError``) and leave the state DISCONNECTED.
* ``state()`` is cheap and synchronous. After a failed connect with nothing left applied, report
  DISCONNECTED (with ``last_error``); ERROR means something is still held and needs a disconnect.
  The server fills in ``owner_uid`` itself (it tracks the owner), so the session need not.
* ``watch()`` yields the current state first, then one per change, until the caller stops iterating.
* ``close()`` is called once when the helper exits (after the server stopped): disconnect and release all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import grpc

from tether.helper.api import helper_pb2 as pb
from tether.helper.root.server.caller import Caller

ConnectRequest = pb.ConnectRequest
ConnectProgress = pb.ConnectProgress
State = pb.State


class SessionError(Exception):
    """A failure to report to the client: ``str(exc)`` is the human message, ``code`` the gRPC status."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION) -> None:
        super().__init__(message)
        self.code = code


@runtime_checkable
class Session(Protocol):
    def connect(self, request: ConnectRequest, caller: Caller) -> AsyncIterator[ConnectProgress]:
        """Connect to the cluster in ``request``; an async generator (``async def`` with ``yield``)."""
        ...

    async def disconnect(self, caller: Caller) -> State:
        """Disconnect (or stop a running connect); return the resulting state."""
        ...

    def state(self) -> State: ...

    def watch(self) -> AsyncIterator[State]:
        """The current state, then one message per change (an async generator)."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class InterceptSession(Protocol):
    """What a session that does intercepts offers besides ``Session`` (the server answers UNIMPLEMENTED for a
    session without them). Each raises SessionError naming what is wrong."""

    async def intercept(self, request: pb.InterceptRequest, caller: Caller) -> pb.InterceptReply: ...

    async def leave(self, request: pb.LeaveRequest, caller: Caller) -> State: ...

    async def list_workloads(self, request: pb.ListWorkloadsRequest, caller: Caller) -> pb.WorkloadList: ...

    async def uninstall_agents(self, request: pb.UninstallAgentsRequest, caller: Caller) -> pb.UninstallAgentsReply: ...


@dataclass(frozen=True)
class SessionConfig:
    """What the daemon knows when it builds the session.

    ``runtime_dir`` is the root-owned 0755 directory that holds the sockets (``/run/tether``): a session
    may keep runtime files there. ``state_dir`` (``/var/lib/tether``) survives reboots: journals and
    ownership markers for cleanup after a crash. ``options`` carries ``--session-option KEY=VALUE`` pairs
    from the command line, for settings the session defines.
    """

    runtime_dir: Path
    state_dir: Path
    options: dict[str, str] = field(default_factory=dict)
    # What the start-up cleanup found of a predecessor that ended uncleanly ("" when it ended cleanly).
    recovered: str = ""
