"""The helper's gRPC server: the Helper service on a unix socket, plus the credentials socket beside it.

Layout (defaults)::

    /run/tether/               root:root 0755 (created if missing; refused if not root's or group/other-writable)
    /run/tether/helper.sock    root:tether 0660  gRPC, every call carries "tether-token" metadata
    /run/tether/helper-auth.sock root:tether 0660  connect, read one JSON line {"token", "expires_in", "uid"}

Only members of the group can connect to either socket; the kernel tells the helper who connected to
the credentials socket, and the token it hands out stands for that caller on the main socket.

Windows (``ENDPOINTS["win32"]``): gRPC listens on 127.0.0.1 with an OS-chosen port and the tokens come
from the named pipe ``AUTH_PIPE`` whose reply also names that port (``pipe_windows``); the group is a
local group named by its SID. The runtime directory holds only the journal there.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import stat
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import grpc

from tether.helper.api import helper_pb2 as pb
from tether.helper.api import helper_pb2_grpc as pb_grpc
from tether.helper.api import validate
from tether.helper.api.paths import (
    API_LEVEL,
    AUTH_PIPE,
    DEFAULT_GROUP,
    DEFAULT_SOCKET,
    MAX_SOCKET_PATH,
    TOKEN_METADATA,
    auth_socket_for,
)
from tether.helper.root.server import authz, membership
from tether.helper.root.server.accounts import accounts
from tether.helper.root.server.authz import Action
from tether.helper.root.server.caller import Caller, username_for
from tether.helper.root.server.peercred import PeerCredentials, PeerCredentialsError, peer_credentials
from tether.helper.root.server.session_api import InterceptSession, Session, SessionError
from tether.helper.root.server.tokens import DEFAULT_TTL, TokenError, TokenStore
from tether.manager.api.version import __version__

log = logging.getLogger("tether.helper.api")

HELPER_NAME = "tether-helper"
SOCKET_MODE = 0o660
DIR_MODE = 0o755

# WatchState streams one uid may hold open at once: a tray, a few terminals and scripts need a handful; each
# stream holds a queue in the session, so without a cap one group member could make the helper grow unbounded.
MAX_WATCHES_PER_UID = 16
# The largest request: a ConnectRequest at every validation limit (kubeconfig and environment at theirs, plus the
# lists), with room for protobuf's framing. Larger ones are refused by gRPC before a handler sees them.
MAX_REQUEST_BYTES = validate.MAX_KUBECONFIG_BYTES + validate.MAX_ENV_BYTES + 512 * 1024
# Replies are states and progress, a few kilobytes even with many routes.
MAX_REPLY_BYTES = 4 * 1024 * 1024
# Streams one client connection may have open at once (HTTP/2's recommended minimum).
MAX_STREAMS_PER_CONNECTION = 100
SERVER_OPTIONS = (
    ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
    ("grpc.max_send_message_length", MAX_REPLY_BYTES),
    ("grpc.max_concurrent_streams", MAX_STREAMS_PER_CONNECTION),
)


# How long the credentials pipe's thread waits for the event loop to issue a token.
ISSUE_TIMEOUT = 10.0


class PipeEndpoint(Protocol):
    """The Windows credentials pipe as the server drives it (pipe_windows.AuthPipeServer)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


PipeFactory = Callable[[Callable[[PeerCredentials], dict[str, object]], str, str, str], PipeEndpoint]


class ServerSetupError(Exception):
    """The helper cannot serve; the message says why and how to fix it."""


@dataclass(frozen=True)
class ServerOptions:
    """``group``: name or gid for the sockets; None means "tether", which must exist.

    ``require_root`` False is the test mode: no euid check, the socket directory must belong to the
    current user instead of root, and (with ``set_group`` False) the sockets keep the user's group.
    """

    socket_path: Path = DEFAULT_SOCKET
    group: str | int | None = None
    require_root: bool = True
    set_group: bool = True
    token_ttl: float = DEFAULT_TTL

    auth_pipe: str = AUTH_PIPE  # Windows: the credentials pipe's name

    @property
    def auth_socket_path(self) -> Path:
        return auth_socket_for(self.socket_path)


# --- setup checks ------------------------------------------------------------------------------------


def resolve_group(group: str | int | None) -> int:
    """The gid for the sockets. The default group must exist; an explicit numeric gid need not."""
    if group is None:
        gid = accounts().group_id(DEFAULT_GROUP)
        if gid is None:
            raise ServerSetupError(
                f'the group "{DEFAULT_GROUP}" does not exist. Create it with `groupadd --system {DEFAULT_GROUP}` '
                f"and add the users who may use Tether (`usermod -aG {DEFAULT_GROUP} USER`; they must log in "
                "again), or choose another group with --group"
            )
        return gid
    if isinstance(group, int) or validate.is_ascii_number(group):
        gid = int(group)
        if not 0 <= gid < 2**32 - 1:
            raise ServerSetupError(f"--group {group}: not a valid gid")
        return gid
    found = accounts().group_id(group)
    if found is None:
        raise ServerSetupError(f"--group {group}: no such group (create it with `groupadd --system {group}`)")
    return found


def resolve_group_sid(group: str | int | None, lookup: Callable[[str], str | None] | None = None) -> str:
    """Windows: the SID of the helper's local group (a name, or a SID given as is)."""
    name = DEFAULT_GROUP if group is None else str(group)
    if name.startswith("S-1-"):
        return name
    sid = (lookup or accounts("win32").group_sid)(name)
    if sid is None:
        raise ServerSetupError(
            f'the local group "{name}" does not exist. Create it with `New-LocalGroup -Name {name}` and add the '
            f"users who may use Tether (`Add-LocalGroupMember -Group {name} -Member USER`; they must sign in again)"
        )
    return sid


# Left in a socket directory the helper made, so that a later helper (after a crash) knows it is Tether's to
# remove, and one that was there before Tether stays.
OWNED_MARKER = ".made-by-tether-helper"


def made_by_tether(directory: Path) -> bool:
    return (directory / OWNED_MARKER).exists()


def existed_before_tether(directory: Path) -> bool:
    return directory.exists() and not made_by_tether(directory)


def prepare_socket_dir(directory: Path, owner_uid: int) -> None:
    """Create ``directory`` (0755, with the ownership marker) if missing; refuse one others could tamper with."""
    if not directory.exists():
        try:
            directory.mkdir(mode=DIR_MODE, parents=True)
            os.chmod(directory, DIR_MODE)  # mkdir's mode is filtered by the umask
            (directory / OWNED_MARKER).touch(mode=0o644)
        except OSError as exc:
            raise ServerSetupError(f"cannot create the socket directory {directory}: {exc.strerror}") from None
    info = directory.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise ServerSetupError(f"refusing to use {directory}: it is not a directory (a symlink or a file)")
    if info.st_uid != owner_uid:
        whose = "root" if owner_uid == 0 else f"uid {owner_uid}"
        raise ServerSetupError(
            f"refusing to use {directory}: it is owned by uid {info.st_uid}, not {whose}; "
            f"remove it or `chown {owner_uid}:0 {directory}`"
        )
    if info.st_mode & 0o022:
        raise ServerSetupError(
            f"refusing to use {directory}: it is writable by group or others (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"`chmod 755 {directory}`"
        )


def _answers(path: Path) -> bool:
    """True when something accepts connections on the unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        try:
            probe.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                return False
            raise
        return True


def clear_stale_socket(path: Path) -> None:
    """Remove a socket left by a crashed helper; refuse when a live helper still answers on it."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise ServerSetupError(f"{path} exists and is not a socket; remove it first")
    try:
        live = _answers(path)
    except OSError as exc:
        raise ServerSetupError(f"cannot check whether another helper serves on {path}: {exc}") from None
    if live:
        raise ServerSetupError(
            f"another tether-helper is already running on {path}; stop it first "
            "(`tether quit`, or `systemctl stop tether-helper`)"
        )
    log.info("removing a stale socket", extra={"socket": str(path)})
    path.unlink(missing_ok=True)


class _Umask(contextlib.AbstractContextManager["_Umask"]):
    def __init__(self, mask: int) -> None:
        self._mask = mask
        self._old = 0

    def __enter__(self) -> _Umask:
        self._old = os.umask(self._mask)
        return self

    def __exit__(self, *exc: object) -> None:
        os.umask(self._old)


def check_options(opts: ServerOptions) -> int | None:
    """Everything that can be refused before touching the filesystem; returns the sockets' gid (or None)."""
    if opts.require_root and not accounts().is_privileged():
        raise ServerSetupError(
            "tether-helper must run as root: it creates a network device, routes and DNS settings. "
            "Start it with sudo (`sudo tether helper start`) or through the tether-helper service"
        )
    for path in (opts.socket_path, opts.auth_socket_path):
        if not path.is_absolute():
            raise ServerSetupError(f"socket path {path} must be absolute")
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise ServerSetupError(f"socket path {path} is too long for a unix socket (at most {MAX_SOCKET_PATH})")
    return resolve_group(opts.group) if opts.set_group else None


def preflight(opts: ServerOptions, platform: str = sys.platform) -> int | None:
    """``check_options``, then the socket directory and stale sockets; refuses when a helper already serves.

    Windows has no sockets to check: the group must exist and the runtime directory (the journal's) is made;
    a second helper is refused when it creates the credentials pipe (FILE_FLAG_FIRST_PIPE_INSTANCE)."""
    if platform == "win32":
        if opts.require_root and not accounts(platform).is_privileged():
            raise ServerSetupError("tether-helper must run elevated (as an Administrator, or as its service)")
        if opts.set_group:
            resolve_group_sid(opts.group)
        opts.socket_path.parent.mkdir(parents=True, exist_ok=True)
        return None
    gid = check_options(opts)
    prepare_socket_dir(opts.socket_path.parent, 0 if opts.require_root else os.geteuid())
    clear_stale_socket(opts.socket_path)
    clear_stale_socket(opts.auth_socket_path)
    return gid


# --- the service -------------------------------------------------------------------------------------


def _metadata(context: grpc.aio.ServicerContext, key: str) -> str | None:
    for entry in context.invocation_metadata() or ():
        if entry.key == key:
            value = entry.value
            return value.decode() if isinstance(value, bytes) else value
    return None


class HelperService(pb_grpc.HelperServicer):
    """The RPC handlers: authenticate, authorize, validate, log, then call the session."""

    def __init__(self, session: Session, tokens: TokenStore, on_quit: Callable[[], None]) -> None:
        self._session = session
        self._tokens = tokens
        self._on_quit = on_quit
        self._owner: int | None = None
        self._connects_running = 0
        self._watches: dict[int, int] = {}  # open WatchState streams per uid

    # The server, not the session, keeps track of the owner: it is needed for every decision.
    def owner(self) -> int | None:
        if self._connects_running or self._session.state().phase != pb.State.DISCONNECTED:
            return self._owner
        return None

    def _stamp(self, state: pb.State) -> pb.State:
        """A copy of ``state`` with the owner the server knows (0 when disconnected)."""
        stamped = pb.State()
        stamped.CopyFrom(state)
        owner = self.owner()
        stamped.owner_uid = owner if owner is not None and state.phase != pb.State.DISCONNECTED else 0
        return stamped

    async def _admit(self, context: grpc.aio.ServicerContext, action: Action) -> Caller:
        try:
            caller = self._tokens.resolve(_metadata(context, TOKEN_METADATA))
        except TokenError as exc:
            log.info("unauthenticated call", extra={"action": action.value, "reason": str(exc)})
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        try:
            authz.authorize(action, caller.uid, self.owner())
        except authz.Denied as exc:
            log.warning(
                "denied", extra={"action": action.value, "uid": caller.uid, "pid": caller.pid, "reason": str(exc)}
            )
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
        if action in authz.PRIVILEGED:
            log.info(action.value.lower(), extra={"uid": caller.uid, "user": caller.username, "pid": caller.pid})
        return caller

    async def Version(self, request: pb.Empty, context: grpc.aio.ServicerContext) -> pb.VersionInfo:
        await self._admit(context, Action.VERSION)
        return pb.VersionInfo(name=HELPER_NAME, version=__version__, api_level=API_LEVEL)

    async def Status(self, request: pb.Empty, context: grpc.aio.ServicerContext) -> pb.State:
        await self._admit(context, Action.STATUS)
        return self._stamp(self._session.state())

    async def WatchState(self, request: pb.Empty, context: grpc.aio.ServicerContext) -> AsyncIterator[pb.State]:
        caller = await self._admit(context, Action.WATCH)
        open_now = self._watches.get(caller.uid, 0)
        if open_now >= MAX_WATCHES_PER_UID:
            log.warning("too many watches", extra={"uid": caller.uid, "open": open_now})
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"uid {caller.uid} already has {open_now} state watches open, the limit is {MAX_WATCHES_PER_UID}; "
                "close one first",
            )
        self._watches[caller.uid] = open_now + 1
        try:
            async with contextlib.aclosing(self._session.watch()) as states:
                async for state in states:
                    yield self._stamp(state)
        finally:
            left = self._watches[caller.uid] - 1
            if left:
                self._watches[caller.uid] = left
            else:
                del self._watches[caller.uid]

    async def Connect(
        self, request: pb.ConnectRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ConnectProgress]:
        caller = await self._admit(context, Action.CONNECT)
        try:
            validate.connect_request(request)
        except validate.ValidationError as exc:
            log.info("connect refused", extra={"uid": caller.uid, "reason": str(exc)})
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if self.owner() is None:
            self._owner = caller.uid
        self._connects_running += 1
        log.info(
            "connecting",
            extra={
                "uid": caller.uid,
                "context": request.context,
                "client": request.client_name,
                "manager_namespace": request.manager_namespace,
            },
        )
        failure: tuple[grpc.StatusCode, str] | None = None
        try:
            last_had_state = False
            async with contextlib.aclosing(self._session.connect(request, caller)) as progress:
                async for message in progress:
                    last_had_state = message.HasField("state")
                    if last_had_state:
                        message = pb.ConnectProgress(step=message.step, state=self._stamp(message.state))
                    yield message
            state = self._stamp(self._session.state())
            if state.phase != pb.State.CONNECTED:
                phase = pb.State.Phase.Name(state.phase).lower()
                failure = (grpc.StatusCode.UNAVAILABLE, state.last_error or f"the connect ended in phase {phase}")
            elif not last_had_state:
                yield pb.ConnectProgress(step="connected", state=state)
        except SessionError as exc:
            failure = (exc.code, str(exc))
        except validate.ValidationError as exc:
            failure = (grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Exception as exc:
            log.exception("connect failed unexpectedly", extra={"uid": caller.uid})
            failure = (grpc.StatusCode.INTERNAL, f"internal error in the helper: {exc}")
        finally:
            self._connects_running -= 1
        if failure is not None:
            log.warning("connect failed", extra={"uid": caller.uid, "code": failure[0].name, "error": failure[1]})
            await context.abort(*failure)
        log.info("connected", extra={"uid": caller.uid, "context": request.context})

    async def Disconnect(self, request: pb.Empty, context: grpc.aio.ServicerContext) -> pb.State:
        caller = await self._admit(context, Action.DISCONNECT)
        try:
            state = await self._session.disconnect(caller)
        except SessionError as exc:
            await context.abort(exc.code, str(exc))
        return self._stamp(state)

    async def Quit(self, request: pb.Empty, context: grpc.aio.ServicerContext) -> pb.Empty:
        caller = await self._admit(context, Action.QUIT)
        if self._session.state().phase != pb.State.DISCONNECTED or self._connects_running:
            try:
                await self._session.disconnect(caller)
            except SessionError as exc:
                await context.abort(exc.code, str(exc))
        # Stop after this reply has gone out.
        asyncio.get_running_loop().call_soon(self._on_quit)
        return pb.Empty()

    # --- intercepts ---

    async def _intercept_call(
        self, context: grpc.aio.ServicerContext, action: Action, method: str, request: Any
    ) -> Any:
        caller = await self._admit(context, action)
        session = self._session
        if not isinstance(session, InterceptSession):
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this helper's session does not do intercepts")
            raise AssertionError("abort raises")
        try:
            return await getattr(session, method)(request, caller)
        except SessionError as exc:
            log.info("%s refused", method, extra={"uid": caller.uid, "error": str(exc)})
            await context.abort(exc.code, str(exc))
            raise

    async def Intercept(self, request: pb.InterceptRequest, context: grpc.aio.ServicerContext) -> pb.InterceptReply:
        return await self._intercept_call(context, Action.INTERCEPT, "intercept", request)

    async def Leave(self, request: pb.LeaveRequest, context: grpc.aio.ServicerContext) -> pb.State:
        return self._stamp(await self._intercept_call(context, Action.INTERCEPT, "leave", request))

    async def ListWorkloads(
        self, request: pb.ListWorkloadsRequest, context: grpc.aio.ServicerContext
    ) -> pb.WorkloadList:
        return await self._intercept_call(context, Action.LIST, "list_workloads", request)

    async def UninstallAgents(
        self, request: pb.UninstallAgentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.UninstallAgentsReply:
        return await self._intercept_call(context, Action.INTERCEPT, "uninstall_agents", request)


# --- the server --------------------------------------------------------------------------------------


class HelperServer:
    """Serve ``session`` on the sockets in ``options``. ``start()``, then ``wait()`` (until Quit), then ``stop()``."""

    def __init__(
        self,
        session: Session,
        options: ServerOptions | None = None,
        tokens: TokenStore | None = None,
        *,
        directory_existed: bool | None = None,
        platform: str = sys.platform,
        pipe_server: PipeFactory | None = None,
        group_sid_lookup: Callable[[str], str | None] | None = None,
    ) -> None:
        self.session = session
        self.options = options or ServerOptions()
        self.platform = platform
        # Windows: the credentials pipe (pipe_windows.AuthPipeServer unless a test passes its double).
        self._pipe_server = pipe_server
        self._group_sid_lookup = group_sid_lookup
        self._pipe: PipeEndpoint | None = None
        self._gid: int | None = None
        self.grpc_target = ""  # Windows: where gRPC listens (the pipe's replies name it)
        # A socket directory that was there before us (made by the admin, a service manager or tmpfiles.d)
        # is theirs: we remove only our sockets from it. None: look at start().
        self._directory_existed = directory_existed
        self.tokens = tokens or TokenStore(ttl=self.options.token_ttl)
        self.service = HelperService(session, self.tokens, self._quit_requested)
        self._grpc: grpc.aio.Server | None = None
        self._auth: asyncio.AbstractServer | None = None
        self._created: dict[Path, tuple[int, int]] = {}
        self._stopped = asyncio.Event()
        self.quit_requested = False

    @property
    def socket_path(self) -> Path:
        return self.options.socket_path

    @property
    def auth_socket_path(self) -> Path:
        return self.options.auth_socket_path

    def check(self) -> int | None:
        return check_options(self.options)

    async def start(self) -> None:
        if self.platform == "win32":
            await self._start_windows()
            return
        opts = self.options
        if self._directory_existed is None:
            self._directory_existed = existed_before_tether(opts.socket_path.parent)
        gid = preflight(opts, self.platform)
        self._gid = gid

        server = grpc.aio.server(options=SERVER_OPTIONS)
        pb_grpc.add_HelperServicer_to_server(self.service, server)
        with _Umask(0o177):  # the sockets appear 0600 and are opened up only after chown
            bound = server.add_insecure_port(f"unix:{opts.socket_path}")
            if not bound:
                raise ServerSetupError(f"cannot listen on {opts.socket_path}")
            self._grpc = server
            self._own(opts.socket_path, gid)
            self._auth = await asyncio.start_unix_server(self._issue_token, path=str(opts.auth_socket_path))
            self._own(opts.auth_socket_path, gid)
        await server.start()
        log.info(
            "serving",
            extra={
                "socket": str(opts.socket_path),
                "auth_socket": str(opts.auth_socket_path),
                "gid": gid,
                "version": __version__,
            },
        )

    async def _start_windows(self) -> None:
        from tether.helper.root.server.pipe_windows import GRPC_LISTEN, AuthPipeServer, grpc_target

        opts = self.options
        group_sid = resolve_group_sid(opts.group, self._group_sid_lookup)
        opts.socket_path.parent.mkdir(parents=True, exist_ok=True)  # the runtime directory: the journal's
        server = grpc.aio.server(options=SERVER_OPTIONS)
        pb_grpc.add_HelperServicer_to_server(self.service, server)
        self.grpc_target = grpc_target(server.add_insecure_port(GRPC_LISTEN))
        loop = asyncio.get_running_loop()

        def issue(creds: PeerCredentials) -> dict[str, object]:
            # On the pipe's thread: the lookups may block there; the token store belongs to the loop.
            caller = self._admit_caller(creds)
            return asyncio.run_coroutine_threadsafe(self._token_reply(caller), loop).result(ISSUE_TIMEOUT)

        factory = self._pipe_server or AuthPipeServer
        pipe = factory(issue, group_sid, self.grpc_target, opts.auth_pipe)
        pipe.start()  # refuses when another helper owns the pipe's name
        self._pipe = pipe
        self._grpc = server
        await server.start()
        log.info(
            "serving",
            extra={"grpc": self.grpc_target, "auth_pipe": opts.auth_pipe, "group": group_sid, "version": __version__},
        )

    def _admit_caller(self, creds: PeerCredentials) -> Caller:
        """The Caller for ``creds`` once the platform's group check passed (blocking lookups: not on the loop)."""
        acc = accounts(self.platform)
        refused = membership.check(creds, self._gid, acc.group_list, acc.user_name, self.platform)
        if refused:
            raise PeerCredentialsError(refused)
        return _caller_from(creds)

    async def _token_reply(self, caller: Caller) -> dict[str, object]:
        issued = self.tokens.issue(caller)
        log.debug("token issued", extra={"uid": caller.uid, "pid": caller.pid})
        return {"token": issued.token, "expires_in": issued.expires_in, "uid": caller.uid, "api_level": API_LEVEL}

    def _own(self, path: Path, gid: int | None) -> None:
        if gid is not None:
            os.chown(path, 0 if self.options.require_root else -1, gid)
        os.chmod(path, SOCKET_MODE)
        info = path.lstat()
        self._created[path] = (info.st_dev, info.st_ino)

    async def _issue_token(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            sock = writer.get_extra_info("socket")
            try:
                creds = peer_credentials(sock, self.platform)
                caller = await asyncio.to_thread(self._admit_caller, creds)
                reply = await self._token_reply(caller)
            except PeerCredentialsError as exc:
                log.warning("cannot identify a client", extra={"error": str(exc)})
                reply = {"error": f"the helper could not identify you: {exc}"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, OSError) as exc:
            log.debug("credentials socket client went away", extra={"error": str(exc)})
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    def _quit_requested(self) -> None:
        self.quit_requested = True
        self._stopped.set()

    def request_stop(self) -> None:
        """Make ``wait()`` return (e.g. from a signal handler)."""
        self._stopped.set()

    async def wait(self) -> None:
        await self._stopped.wait()

    async def stop(self, grace: float = 2.0) -> None:
        """Stop serving and remove our sockets (only if they are still the ones we created)."""
        self._stopped.set()
        if self._pipe is not None:
            await asyncio.to_thread(self._pipe.stop)
            self._pipe = None
        if self._auth is not None:
            self._auth.close()
            self._auth = None
        if self._grpc is not None:
            await self._grpc.stop(grace)
            self._grpc = None
        for path, identity in list(self._created.items()):
            with contextlib.suppress(OSError):
                info = path.lstat()
                if (info.st_dev, info.st_ino) == identity:
                    path.unlink()
            del self._created[path]
        self.remove_directory()
        log.info("stopped", extra={"socket": str(self.options.socket_path)})

    def remove_directory(self) -> None:
        """Remove the socket directory once nothing is left in it: at stop, and again once the session's
        journal (kept there until the session has undone its changes) is gone. Only one we created."""
        if self._directory_existed is not False:
            return
        directory = self.options.socket_path.parent
        with contextlib.suppress(OSError):
            if [entry.name for entry in directory.iterdir()] == [OWNED_MARKER]:
                (directory / OWNED_MARKER).unlink()
            directory.rmdir()


def _caller_from(creds: PeerCredentials) -> Caller:
    return Caller(
        uid=creds.uid, gid=creds.gid, pid=creds.pid, groups=creds.groups, username=username_for(creds.uid, creds.sid)
    )
