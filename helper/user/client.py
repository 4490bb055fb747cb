"""The client library for the helper's API, used by the ``tether`` CLI and the tray (no Qt here).

Synchronous use (scripts, threads)::

    with HelperClient() as helper:              # socket: $TETHER_HELPER_SOCKET or /run/tether/helper.sock
        print(helper.status().phase)
        request = build_connect_request(context="lab")
        for progress in helper.connect(request):
            print(progress.step)

From asyncio code, call it on a worker thread (``asyncio.to_thread``). The client fetches a token from the
helper's credentials socket when needed, and a new one once when the helper answers UNAUTHENTICATED
(e.g. after it restarted).

Windows: there are no sockets; the token comes from the helper's named pipe (``AUTH_PIPE``), whose reply
also names the loopback address gRPC listens on (``grpc_target``), and the client dials that.

Failures are ``HelperError`` subclasses with a ``fix`` sentence: ``HelperNotInstalledError`` (no socket
directory or no socket), ``HelperNotRunningError`` (nobody answers), ``HelperPermissionError`` (not in the
socket's group), ``HelperCallError`` (the helper answered with an error status; ``.code``, ``.details``).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

from tether.helper.api import helper_pb2 as pb
from tether.helper.api import helper_pb2_grpc as pb_grpc
from tether.helper.api.paths import AUTH_PIPE, TOKEN_METADATA, auth_socket_for, default_socket

START_HINT = "start it with `sudo systemctl start tether-helper` or, in a terminal, `sudo tether helper start`"
TOKEN_MARGIN = 30.0  # fetch a new token this long before the old one expires
MAX_TOKEN_REPLY = 64 * 1024


class HelperError(Exception):
    """Something went wrong talking to the helper. ``message`` says what, ``fix`` how to fix it."""

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(f"{message}. {fix}" if fix else message)
        self.message = message
        self.fix = fix


class HelperNotInstalledError(HelperError):
    """There is no socket directory or no socket: the helper is not installed, or not started."""


class HelperNotRunningError(HelperError):
    """The socket exists but nobody answers on it (the helper crashed or was killed)."""


class HelperGoneError(HelperNotRunningError):
    """The helper stopped answering in the middle of a stream (it was killed or crashed)."""


class HelperPermissionError(HelperError):
    """The socket refused us (EACCES): this user is not in the helper's group."""


class HelperProtocolError(HelperError):
    """The helper answered something this client does not understand."""


class HelperCallError(HelperError):
    """The helper refused or failed a call; ``code`` is the gRPC status code, ``details`` its message."""

    def __init__(self, code: grpc.StatusCode, details: str, fix: str = "") -> None:
        super().__init__(details or code.name.lower().replace("_", " "), fix)
        self.code = code
        self.details = details


# --- errors ------------------------------------------------------------------------------------------


def _group_of(path: Path) -> str:
    try:
        import grp  # POSIX only; Windows never gets here (no socket file modes)

        gid = path.stat().st_gid
    except (OSError, ImportError):
        return "tether"
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def connection_error(exc: OSError, path: Path) -> HelperError:
    """Turn a failed ``connect()`` on one of the helper's sockets into a HelperError with a fix."""
    if isinstance(exc, FileNotFoundError) or exc.errno == errno.ENOENT:
        if not path.parent.is_dir():
            return HelperNotInstalledError(
                f"the Tether helper is not installed or not running ({path.parent} does not exist)",
                f"Install Tether (its package runs the tether-helper service), or {START_HINT}",
            )
        return HelperNotInstalledError(
            f"the Tether helper is not installed or not running (no socket at {path})",
            f"Install Tether, or {START_HINT}",
        )
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
        return HelperNotRunningError(
            f"the Tether helper is not running: nothing answers on {path} (it may have crashed)",
            "Restart it: `sudo systemctl restart tether-helper`, or `sudo tether helper start`",
        )
    if isinstance(exc, PermissionError) or exc.errno in (errno.EACCES, errno.EPERM):
        group = _group_of(path)
        return HelperPermissionError(
            f'permission denied: you are not in the "{group}" group that may use the Tether helper ({path})',
            f"Add yourself with `sudo usermod -aG {group} $USER`, then log out and in again (or run `newgrp {group}`)",
        )
    if isinstance(exc, TimeoutError | socket.timeout):
        return HelperNotRunningError(
            f"the Tether helper did not answer on {path} in time",
            f"Check that it is healthy, or restart it; {START_HINT}",
        )
    return HelperError(f"cannot reach the Tether helper on {path}: {exc.strerror or exc}")


_FIXES = {
    grpc.StatusCode.PERMISSION_DENIED: "Ask the session's owner to disconnect, or use sudo",
    grpc.StatusCode.INVALID_ARGUMENT: "Correct the value and try again",
    grpc.StatusCode.UNIMPLEMENTED: "This helper cannot do that yet; update Tether",
}


def call_error(exc: grpc.RpcError, path: Path, probe: bool = True) -> HelperError:
    """``probe`` False (Windows: gRPC is on loopback TCP) skips asking the socket why a connect failed."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    if probe and code == grpc.StatusCode.UNAVAILABLE and details and "connect" in details.lower():
        # gRPC could not reach the socket: say why in the same words as for the credentials socket.
        try:
            _probe(path)
        except OSError as probe_error:
            return connection_error(probe_error, path)
    return HelperCallError(code, details or "", _FIXES.get(code, ""))


def gone_error(exc: grpc.RpcError, path: Path, probe: bool = True) -> HelperError:
    """A stream that had answered broke: HelperGoneError when nothing answers on the socket any more.

    gRPC reports a peer that vanished as UNAVAILABLE or UNKNOWN ("Stream removed"), depending on when."""
    if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN):
        return call_error(exc, path, probe)
    if probe and _still_listening(path):
        return call_error(exc, path, probe)  # it answers: a broken stream, not a dead helper
    return HelperGoneError(
        f"the Tether helper stopped in the middle of the call (killed or crashed; {exc.details() or 'stream closed'})",
        "What it changed went with it or is undone when it starts again: restart it "
        "(`sudo systemctl restart tether-helper`, or `sudo tether helper start`), then connect again",
    )


def _still_listening(path: Path, tries: int = 5, pause: float = 0.1) -> bool:
    """Whether the socket keeps accepting: a dying helper's may still accept for a moment after a stream broke
    (the kernel closes its descriptors one by one), so one refusal among a few tries settles it."""
    for attempt in range(tries):
        try:
            _probe(path)
        except OSError:
            return False
        if attempt + 1 < tries:
            time.sleep(pause)
    return True


def _probe(path: Path) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))


# --- tokens ------------------------------------------------------------------------------------------


def _parse_token_reply(data: bytes, path: Path | str) -> tuple[str, float, str]:
    """(token, expires_in, grpc_target) from the helper's one-line reply; the target is "" on POSIX."""
    try:
        reply = json.loads(data.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise HelperProtocolError(
            f"unexpected answer from {path}", "Is this a Tether helper of the same version?"
        ) from None
    if not isinstance(reply, dict):
        raise HelperProtocolError(f"unexpected answer from {path}")
    if "error" in reply:
        raise HelperCallError(grpc.StatusCode.UNAUTHENTICATED, str(reply["error"]))
    token, expires_in = reply.get("token"), reply.get("expires_in")
    if not isinstance(token, str) or not isinstance(expires_in, int | float):
        raise HelperProtocolError(f"unexpected answer from {path}: no token")
    target = reply.get("grpc_target", "")
    if not isinstance(target, str) or (target and not _is_loopback_target(target)):
        raise HelperProtocolError(f"unexpected answer from {path}: grpc_target {target!r} is not a loopback address")
    return token, float(expires_in), target


def _is_loopback_target(target: str) -> bool:
    host, sep, port = target.rpartition(":")
    return sep == ":" and host == "127.0.0.1" and port.isdigit() and 0 < int(port) < 65536


def _read_pipe(name: str, timeout: float) -> bytes:
    """The helper's reply on its named pipe (Windows: a pipe opens like a file)."""
    with open(name, "rb", buffering=0) as pipe:
        return pipe.read(MAX_TOKEN_REPLY + 1)


def pipe_error(exc: OSError, name: str) -> HelperError:
    """A failed open of the helper's pipe as a HelperError with a fix (Windows)."""
    if isinstance(exc, FileNotFoundError):
        return HelperNotInstalledError(
            f"the Tether helper is not installed or not running (no pipe {name})",
            "Install Tether, or start the helper in an Administrator terminal with `tether helper start`",
        )
    if isinstance(exc, PermissionError):
        return HelperPermissionError(
            f'permission denied: you are not in the "tether" group that may use the Tether helper ({name})',
            "Add yourself with `Add-LocalGroupMember -Group tether -Member $env:USERNAME` (as an Administrator), "
            "then sign out and in again",
        )
    return HelperError(f"cannot reach the Tether helper on {name}: {exc.strerror or exc}")


class TokenSource:
    """Fetch and cache the token for one helper; safe to share between threads."""

    def __init__(
        self,
        auth_socket_path: Path,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        platform: str = sys.platform,
        pipe: str = AUTH_PIPE,
        read_pipe: Callable[[str, float], bytes] = _read_pipe,
    ):
        self.path = auth_socket_path
        # Windows: the pipe replaces the credentials socket; the reply's grpc_target is where to call.
        self.pipe = pipe if platform == "win32" else ""
        self._read_pipe = read_pipe
        self.grpc_target = ""
        self.timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._valid_until = 0.0

    def cached(self) -> str | None:
        with self._lock:
            return self._token if self._token and self._clock() < self._valid_until else None

    def _store(self, token: str, expires_in: float) -> str:
        with self._lock:
            self._token = token
            self._valid_until = self._clock() + max(0.0, expires_in - TOKEN_MARGIN)
        return token

    def invalidate(self, token: str | None = None) -> None:
        with self._lock:
            if token is None or token == self._token:
                self._token = None

    def get(self) -> str:
        token = self.cached()
        if token:
            return token
        if self.pipe:
            try:
                data = self._read_pipe(self.pipe, self.timeout)
            except OSError as exc:
                raise pipe_error(exc, self.pipe) from None
            token, expires_in, target = _parse_token_reply(data, self.pipe)
            if not target:
                raise HelperProtocolError(f"unexpected answer from {self.pipe}: no grpc_target")
            self.grpc_target = target
            return self._store(token, expires_in)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            try:
                sock.connect(str(self.path))
                data = b""
                while chunk := sock.recv(4096):
                    data += chunk
                    if len(data) > MAX_TOKEN_REPLY:
                        break
            except OSError as exc:
                raise connection_error(exc, self.path) from None
        token, expires_in, _ = _parse_token_reply(data, self.path)
        return self._store(token, expires_in)


# --- requests ----------------------------------------------------------------------------------------


def build_connect_request(
    *,
    context: str | None = None,
    kubeconfig: str | os.PathLike[str] | None = None,
    kubeconfig_text: str | None = None,
    namespace: str = "",
    manager_namespace: str = "",
    manager_address: str = "",
    also_proxy: Sequence[str] = (),
    never_proxy: Sequence[str] = (),
    allow_conflicting_subnets: Sequence[str] = (),
    proxy_via: Sequence[str] = (),
    auto_resolve: bool = False,
    virtual_subnet: str = "",
    dns_include_suffixes: Sequence[str] = (),
    dns_exclude_suffixes: Sequence[str] = (),
    mapped_namespaces: Sequence[str] = (),
    environment: Mapping[str, str] | None = None,
    client_name: str = "tether",
    dns_mode: str = "",
) -> pb.ConnectRequest:
    """A checked ConnectRequest carrying this user's kubeconfig for ``context`` (flattened) and environment.

    ``kubeconfig_text`` (exclusive with ``kubeconfig``) is kubeconfig YAML held in memory, for clusters
    whose token comes from the OS keychain: it goes to the helper without touching the disk.

    Raises ``validate.ValidationError`` for bad values and ``kubeconfig.KubeconfigError`` for a kubeconfig
    that cannot be used; both name the offending value or file.
    """
    # Only connect needs these; the light commands' start-up stays without them.
    from tether.helper.api import validate
    from tether.helper.user.kubeconfig import flatten

    if kubeconfig is not None and kubeconfig_text is not None:
        raise ValueError("build_connect_request: give kubeconfig or kubeconfig_text, not both")
    env = dict(os.environ if environment is None else environment)
    flat = flatten(context or None, kubeconfig=kubeconfig, environ=env, text=kubeconfig_text)
    request = pb.ConnectRequest(
        kubeconfig=flat.text,
        context=flat.context,
        namespace=namespace,
        manager_namespace=manager_namespace,
        manager_address=manager_address,
        also_proxy=list(also_proxy),
        never_proxy=list(never_proxy),
        allow_conflicting_subnets=list(allow_conflicting_subnets),
        proxy_via=list(proxy_via),
        auto_resolve=auto_resolve,
        virtual_subnet=virtual_subnet,
        dns_include_suffixes=list(dns_include_suffixes),
        dns_exclude_suffixes=list(dns_exclude_suffixes),
        mapped_namespaces=list(mapped_namespaces),
        environment=validate.portable_environment(env),
        proxy_environment=_proxy_environment(env),
        client_name=client_name,
        dns_mode=dns_mode,
    )
    validate.connect_request(request)
    return request


def _proxy_environment(environ: Mapping[str, str]) -> pb.ProxyEnvironment:
    # The helper is a daemon with no proxy variables of its own: the user's go with the request.
    from tether.helper.api.proxies import ProxyEnvironment

    found = ProxyEnvironment.from_environ(environ)
    return pb.ProxyEnvironment(https_proxy=found.https_proxy, http_proxy=found.http_proxy, no_proxy=found.no_proxy)


# --- clients -----------------------------------------------------------------------------------------


class HelperClient:
    """Blocking client. Streaming calls return iterators; stop iterating (or ``close()`` them) to cancel."""

    def __init__(
        self,
        socket_path: str | os.PathLike[str] | None = None,
        *,
        timeout: float = 30.0,
        tokens: TokenSource | None = None,
    ) -> None:
        self.socket_path = Path(socket_path) if socket_path else default_socket()
        self.auth_socket_path = auth_socket_for(self.socket_path)
        self.timeout = timeout
        self.tokens = tokens or TokenSource(self.auth_socket_path)
        self._channel: grpc.Channel | None = None
        self._stub: pb_grpc.HelperStub | None = None
        self._target = ""

    def target(self) -> str:
        """What gRPC dials: the helper's socket, or (Windows) the loopback address its pipe named."""
        return self.tokens.grpc_target or f"unix:{self.socket_path}"

    def stub(self) -> pb_grpc.HelperStub:
        target = self.target()
        if self._stub is not None and target != self._target:
            self.close()  # a restarted helper (Windows) listens on another port
        if self._stub is None:
            self._channel = grpc.insecure_channel(target)
            self._stub = pb_grpc.HelperStub(self._channel)
            self._target = target
        return self._stub

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = self._stub = None

    def __enter__(self) -> HelperClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unary(self, method: str, request: Any, timeout: float | None = None) -> Any:
        for attempt in range(2):
            token = self.tokens.get()
            try:
                return getattr(self.stub(), method)(
                    request, metadata=((TOKEN_METADATA, token),), timeout=timeout or self.timeout
                )
            except grpc.RpcError as exc:
                if self._refetch(exc) and attempt == 0:
                    self.tokens.invalidate(token)
                    continue
                raise call_error(exc, self.socket_path, probe=not self.tokens.pipe) from None
        raise AssertionError("unreachable")

    def _stream(self, method: str, request: Any, timeout: float | None = None) -> Iterator[Any]:
        for attempt in range(2):
            token = self.tokens.get()
            call = getattr(self.stub(), method)(request, metadata=((TOKEN_METADATA, token),), timeout=timeout)
            received = False
            try:
                for message in call:
                    received = True
                    yield message
                return
            except grpc.RpcError as exc:
                if self._refetch(exc) and attempt == 0 and not received:
                    self.tokens.invalidate(token)
                    continue
                if received:
                    raise gone_error(exc, self.socket_path, probe=not self.tokens.pipe) from None
                raise call_error(exc, self.socket_path, probe=not self.tokens.pipe) from None
            finally:
                call.cancel()

    def _refetch(self, exc: grpc.RpcError) -> bool:
        """Whether a new token may help: the helper forgot ours, or (Windows) it restarted on another port."""
        code = exc.code()
        if code == grpc.StatusCode.UNAVAILABLE:
            return bool(self.tokens.pipe)
        return code == grpc.StatusCode.UNAUTHENTICATED

    def version(self) -> pb.VersionInfo:
        return self._unary("Version", pb.Empty())

    def status(self) -> pb.State:
        return self._unary("Status", pb.Empty())

    def disconnect(self) -> pb.State:
        return self._unary("Disconnect", pb.Empty(), timeout=max(self.timeout, 60))

    def quit(self) -> None:
        self._unary("Quit", pb.Empty(), timeout=max(self.timeout, 60))

    def connect(self, request: pb.ConnectRequest, timeout: float | None = None) -> Iterator[pb.ConnectProgress]:
        """Progress messages; the last one carries the connected state. Errors raise HelperError."""
        return self._stream("Connect", request, timeout)

    def connect_and_wait(
        self, request: pb.ConnectRequest, on_progress: Callable[[pb.ConnectProgress], None] | None = None
    ) -> pb.State:
        state = None
        for progress in self.connect(request):
            if on_progress is not None:
                on_progress(progress)
            if progress.HasField("state"):
                state = progress.state
        return state if state is not None else self.status()

    def intercept(self, request: pb.InterceptRequest, timeout: float = 300) -> pb.InterceptReply:
        """Returns once the workload's agents take the port (their pods may restart first): minutes at most."""
        return self._unary("Intercept", request, timeout=timeout)

    def leave(self, request: pb.LeaveRequest) -> pb.State:
        return self._unary("Leave", request, timeout=max(self.timeout, 30))

    def list_workloads(self, namespace: str = "") -> pb.WorkloadList:
        return self._unary("ListWorkloads", pb.ListWorkloadsRequest(namespace=namespace), timeout=max(self.timeout, 30))

    def uninstall_agents(self, request: pb.UninstallAgentsRequest) -> pb.UninstallAgentsReply:
        return self._unary("UninstallAgents", request, timeout=max(self.timeout, 120))

    def watch_state(self) -> Iterator[pb.State]:
        """The current state, then one per change, until you stop iterating."""
        return self._stream("WatchState", pb.Empty())
