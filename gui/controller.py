"""The tray's one link to the helper: every call runs off the GUI thread, every answer comes back on it.

``TrayController`` keeps a WatchState stream open in a thread of its own and runs Connect, Disconnect and
Status (and kubeconfig reading) in a small thread pool, with the blocking ``HelperClient``. Worker threads
never touch Qt objects: they post a callable to the GUI thread (a queued signal), which updates what the
controller knows and emits the public signals there, so slots connected to them may touch widgets.

Each call gets a fresh client (a new channel): a gRPC channel that saw the helper go away backs off on its
own schedule (up to two minutes), and the tray should notice a restarted helper within seconds. When the
stream fails without having delivered anything, the helper is unreachable: ``helperUnreachable`` says
why (not installed, not running, not in the group) and the stream is retried with capped backoff; a
stream that drops after working is retried quietly first.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Mapping
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
from PySide6.QtCore import QObject, Qt, Signal, Slot

from tether.gui import intercept_menu
from tether.gui.connect_request import (
    KubeconfigTextFor,
    RequestError,
    SettingsSource,
    build_request,
    default_kubeconfig_text,
    default_settings,
)
from tether.gui.contexts import AddedClusters, Cluster, ClusterList, default_added_clusters, load_clusters
from tether.gui.retry import Backoff
from tether.gui.view import ACTIVE_PHASES, Activity
from tether.helper.api import helper_pb2 as pb
from tether.helper.api import intercepts
from tether.helper.api.paths import auth_socket_for, default_socket
from tether.helper.user.client import HelperCallError, HelperClient, HelperError, HelperNotRunningError, TokenSource
from tether.helper.user.resolutions import Resolution, ResolutionStore, connect_remembering

log = logging.getLogger("tether.gui.controller")

MAX_EVENTS = 200
CALL_TIMEOUT = 30.0
SHUTDOWN_WAIT = 3.0


def _phase(state: pb.State) -> str:
    return pb.State.Phase.Name(state.phase).lower()


class _Client(HelperClient):
    """A client that stays closed: a call started after ``close()`` fails instead of opening a new channel.

    ``shutdown()`` closes clients that other threads are about to use; without this, a worker between
    "got the client" and "started the call" would open a fresh channel and block on it for good.
    """

    def __init__(self, socket_path: Path, *, timeout: float, tokens: TokenSource) -> None:
        super().__init__(socket_path, timeout=timeout, tokens=tokens)
        self._guard = threading.Lock()
        self.closed = False

    def stub(self) -> Any:
        with self._guard:
            if self.closed:
                raise HelperNotRunningError("the tray is shutting down")
            return super().stub()

    def close(self) -> None:
        with self._guard:
            self.closed = True
            super().close()


def describe_error(error: HelperError) -> str:
    return f"{error.message}. {error.fix}" if error.fix else error.message


class TrayController(QObject):
    stateChanged = Signal(object)  # pb.State, every one the helper sends
    helperUnreachable = Signal(object)  # the HelperError; retrying goes on
    helperReachable = Signal()  # the helper answers again after helperUnreachable
    sessionLost = Signal(str)  # the cluster: the helper died (its watch stream ended) during a session
    progress = Signal(str)  # a step of a connect this tray runs
    connectFailed = Signal(str)  # why a connect this tray ran failed (not sent when the user cancelled it)
    disconnectFailed = Signal(str)
    conflictsFound = Signal(object)  # the State with conflicts, after a connect failed on them
    eventLogged = Signal(str)  # one line for the status window's event list
    activityChanged = Signal(object)  # view.Activity, or None when no call of ours runs
    clustersChanged = Signal(object)  # contexts.ClusterList
    workloadsChanged = Signal(object)  # intercept_menu.Workloads
    interceptStarted = Signal(object)  # the InterceptReply of an intercept this tray asked for
    interceptFailed = Signal(str, str)  # namespace/name, why (the helper's words)
    leaveFailed = Signal(str, str)  # namespace/name, why

    _posted = Signal(object)  # a callable from a worker thread, to run on the GUI thread

    def __init__(
        self,
        socket_path: str | os.PathLike[str] | None = None,
        *,
        kubeconfig: str | os.PathLike[str] | None = None,
        environ: Mapping[str, str] | None = None,
        resolutions: ResolutionStore | None = None,
        settings: SettingsSource = default_settings,
        added_clusters: AddedClusters | None = default_added_clusters,
        kubeconfig_text_for: KubeconfigTextFor = default_kubeconfig_text,
        backoff: Backoff | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.socket_path = Path(socket_path) if socket_path else default_socket()
        self.kubeconfig = kubeconfig
        self.environ = dict(os.environ if environ is None else environ)
        self.resolutions = resolutions or ResolutionStore()
        self._settings = settings
        self._added_clusters = added_clusters
        self._kubeconfig_text_for = kubeconfig_text_for
        self._backoff = backoff or Backoff()
        self._tokens = TokenSource(auth_socket_for(self.socket_path))

        self._state: pb.State | None = None
        self._unreachable: HelperError | None = None
        self._activity: Activity | None = None
        self._clusters = ClusterList()
        self._workloads = intercept_menu.Workloads()
        self._resolution: Resolution | None = None  # what the current connection was made with
        self._cancel_requested = False
        self.last_target = ""  # the cluster of the last connect this tray started
        self._lost = ""  # the cluster of a session the helper died in, until a connect starts
        self.events: deque[str] = deque(maxlen=MAX_EVENTS)

        self._lock = threading.Lock()
        self._clients: set[_Client] = set()
        self._running: set[futures.Future[None]] = set()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="tether-tray-call")
        self._watcher: threading.Thread | None = None
        self._closed = False
        self._posted.connect(self._run_posted, Qt.ConnectionType.QueuedConnection)

    # --- what the controller knows (GUI thread) ---

    @property
    def state(self) -> pb.State | None:
        return self._state

    @property
    def unreachable(self) -> HelperError | None:
        return self._unreachable

    @property
    def activity(self) -> Activity | None:
        return self._activity

    @property
    def lost_session(self) -> str:
        """The cluster of the session a dead helper took with it ("" if none): the tray offers to reconnect."""
        return self._lost

    @property
    def clusters(self) -> ClusterList:
        return self._clusters

    @property
    def workloads(self) -> intercept_menu.Workloads:
        return self._workloads

    @property
    def resolution(self) -> Resolution | None:
        """The conflict resolution the current connection was made with (by this tray), if any."""
        return self._resolution

    # --- commands (GUI thread) ---

    def start(self) -> None:
        """Start watching the helper and read the clusters."""
        if self._watcher is None:
            self._watcher = threading.Thread(target=self._watch, name="tether-tray-watch", daemon=True)
            self._watcher.start()
        self.refresh_clusters()

    def retry_now(self) -> None:
        """Skip the rest of the backoff wait and try the helper again."""
        self._backoff.reset()
        self._wake.set()

    def refresh_clusters(self) -> None:
        self._submit(self._load_clusters)

    def connect_cluster(self, context: str, resolution: Resolution | None = None) -> None:
        """Connect to ``context`` (a kubeconfig context or an added cluster), with ``resolution`` if given.

        Without one, the resolution remembered for the cluster applies; one given is remembered once the
        connect succeeded. Connected to another cluster, the tray disconnects from it first.
        """
        if self._activity is not None:
            self.log(f"ignored: connect to {context} while {self._activity.kind}ing")
            return
        cluster = self._clusters.find(context) or Cluster(context)
        self.last_target = context
        self._lost = ""
        self._cancel_requested = False
        self._set_activity(Activity("connect", context))
        self.log(f"connecting to {context}" + (f" with {resolution.describe()}" if resolution else ""))
        self._submit(self._connect, cluster, resolution)

    def disconnect(self) -> None:
        """Disconnect, or stop the connect that is running (the helper rolls it back)."""
        if self._activity is not None and self._activity.kind == "connect":
            self._cancel_requested = True
            self.log(f"cancelling the connect to {self._activity.cluster}")
        elif self._activity is None:
            cluster = self._state.cluster if self._state is not None else ""
            self._set_activity(Activity("disconnect", cluster))
            self.log(f"disconnecting from {cluster or 'the cluster'}")
        else:
            return
        self._submit(self._disconnect)

    def refresh_workloads(self) -> None:
        """List the connection's namespace's workloads (only while connected)."""
        if intercept_menu.connected(self._state):
            self._submit(self._list_workloads)

    def intercept(
        self, request: pb.InterceptRequest, env_file: Path | None = None, env_json: Path | None = None
    ) -> None:
        """Start an intercept; the pod's environment is written to ``env_file``/``env_json`` (as the user)."""
        name = intercept_menu.name_of(request.namespace or self._namespace(), request.name)
        if name in self._workloads.busy:
            self.log(f"ignored: intercept {name} while {self._workloads.busy[name]}")
            return
        self._set_busy(name, "intercepting")
        self.log(f"intercepting {name}" + (f" port {request.port}" if request.port else ""))
        self._submit(self._intercept, name, request, env_file, env_json)

    def leave(self, name: str) -> None:
        """End the intercept of ``namespace/name``."""
        namespace, workload = intercept_menu.split_name(name)
        if name in self._workloads.busy:
            return
        self._set_busy(name, "leaving")
        self.log(f"leaving the intercept of {name}")
        self._submit(self._leave, name, pb.LeaveRequest(name=workload, namespace=namespace))

    def shutdown(self) -> None:
        """Stop every thread and call; the helper's connection stays as it is."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake.set()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            with contextlib.suppress(Exception):
                client.close()  # ends a blocked stream in the worker that uses it
        self._pool.shutdown(wait=False, cancel_futures=True)
        # Wait (briefly) for calls already running: their channels are closed, so they end at once, and
        # no worker should outlive the controller (Python may collect Qt objects in whatever thread runs).
        with self._lock:
            running = list(self._running)
        futures.wait(running, timeout=SHUTDOWN_WAIT)
        if self._watcher is not None:
            self._watcher.join(SHUTDOWN_WAIT)

    # --- plumbing between threads ---

    def _post(self, function: Callable[..., None], *args: object) -> None:
        """Run ``function(*args)`` on the GUI thread (from any thread); dropped once shut down."""
        if self._closed:
            return
        with contextlib.suppress(RuntimeError):  # the Qt object is already gone (app exiting)
            self._posted.emit(functools.partial(function, *args))

    @Slot(object)
    def _run_posted(self, function: object) -> None:
        if not self._closed and callable(function):
            function()

    def _submit(self, function: Callable[..., None], *args: object) -> None:
        if self._closed:
            return
        try:
            future = self._pool.submit(self._guarded, function, *args)
        except RuntimeError:  # the pool was shut down in the meantime
            return
        with self._lock:
            self._running.add(future)
        future.add_done_callback(self._forget)

    def _forget(self, future: futures.Future[None]) -> None:
        with self._lock:
            self._running.discard(future)

    def _guarded(self, function: Callable[..., None], *args: object) -> None:
        try:
            function(*args)
        except Exception as exc:  # a bug must show in the log and the event list, not kill a worker silently
            if self._stop.is_set():
                return  # shutdown() closed the call's channel under it
            log.exception("tray call failed")
            self._post(self.log, f"internal error: {exc}")

    def _open_client(self) -> _Client | None:
        with self._lock:
            if self._stop.is_set():
                return None
            client = _Client(self.socket_path, timeout=CALL_TIMEOUT, tokens=self._tokens)
            self._clients.add(client)
            return client

    def _release(self, client: _Client) -> None:
        with self._lock:
            self._clients.discard(client)
        client.close()

    # --- the watch (its own thread) ---

    def _watch(self) -> None:
        while not self._stop.is_set():
            client = self._open_client()
            if client is None:
                return
            received = False
            error: HelperError
            try:
                for state in client.watch_state():
                    if not received:
                        received = True
                        self._backoff.reset()
                    self._post(self._on_state, state)
                error = HelperNotRunningError(
                    f"the Tether helper closed its state stream on {self.socket_path}", "It may be restarting"
                )
            except HelperError as exc:
                error = exc
            except Exception:
                if self._stop.is_set():
                    return  # e.g. "closed channel" from a call that shutdown() overtook
                raise
            finally:
                self._release(client)
            if self._stop.is_set():
                return
            if received:
                self._post(self._on_stream_lost, error)
            else:
                self._post(self._on_unreachable, error)
            self._wake.wait(self._backoff.next())
            self._wake.clear()

    def _on_state(self, state: pb.State) -> None:
        previous = self._state
        if self._unreachable is not None:
            self._unreachable = None
            self.log("the helper answers again")
            self.helperReachable.emit()
        self._state = state
        if previous is None or previous.phase != state.phase or previous.cluster != state.cluster:
            where = f" ({state.cluster})" if state.cluster else ""
            self.log(f"helper: {_phase(state)}{where}" + (f": {state.last_error}" if state.last_error else ""))
        if state.phase not in ACTIVE_PHASES and self._activity is None:
            self._resolution = None
        was_connected = intercept_menu.connected(previous)
        if was_connected and not intercept_menu.connected(state):
            self._set_workloads(intercept_menu.Workloads())
        elif not was_connected and intercept_menu.connected(state):
            self.refresh_workloads()
        elif previous is not None and intercept_menu.summary(previous).keys() != intercept_menu.summary(state).keys():
            self.refresh_workloads()  # who else intercepts may have changed with ours
        self.stateChanged.emit(state)

    def _on_stream_lost(self, error: HelperError) -> None:
        """The watch stream ended. During a session that means the helper died (a helper that stops cleanly
        disconnects first, and says so): what it changed went with it, so the tray shows disconnected."""
        self.log(f"lost the helper's state stream ({describe_error(error)}); watching again")
        state = self._state
        if state is None or state.phase not in ACTIVE_PHASES:
            return
        self._lost = state.cluster or self.last_target
        self.log(f"the helper stopped during the session with {self._lost}")
        self._on_state(
            pb.State(
                phase=pb.State.DISCONNECTED,
                cluster=self._lost,
                last_error="the Tether helper stopped (killed or crashed); its routes and DNS went with it",
            )
        )
        self.sessionLost.emit(self._lost)

    def _on_unreachable(self, error: HelperError) -> None:
        changed = self._unreachable is None or self._unreachable.message != error.message
        self._unreachable = error
        if changed:
            self.log(f"helper unreachable: {describe_error(error)}")
        self.helperUnreachable.emit(error)

    # --- clusters (pool) ---

    def _load_clusters(self) -> None:
        clusters = load_clusters(self.kubeconfig, self.environ, self._added_clusters)
        self._post(self._set_clusters, clusters)

    def _set_clusters(self, clusters: ClusterList) -> None:
        if clusters != self._clusters:
            for problem in set(clusters.problems) - set(self._clusters.problems):
                self.log(problem)
            self._clusters = clusters
            self.clustersChanged.emit(clusters)

    # --- connect (pool) ---

    def _connect(self, cluster: Cluster, resolution: Resolution | None) -> None:
        try:
            request = build_request(
                cluster,
                resolution,
                settings=self._settings,
                kubeconfig=self.kubeconfig,
                environ=self.environ,
                kubeconfig_text_for=self._kubeconfig_text_for,
            )
        except RequestError as exc:
            self._post(self._connect_failed, cluster.name, str(exc), None)
            return

        def run(request: pb.ConnectRequest) -> pb.State:
            client = self._open_client()
            if client is None:
                raise HelperNotRunningError("the tray is shutting down")
            try:
                current = client.status()
                if current.phase in ACTIVE_PHASES and current.cluster != request.context:
                    self._post(self.log, f"disconnecting from {current.cluster} first")
                    client.disconnect()
                if self._cancel_requested:  # cancelled before the connect reached the helper
                    raise HelperCallError(grpc.StatusCode.CANCELLED, "cancelled")
                state: pb.State | None = None
                for message in client.connect(request):
                    if message.step:
                        self._post(self._on_progress, message.step)
                    if message.HasField("state"):
                        state = message.state
                return state if state is not None else client.status()
            finally:
                self._release(client)

        def remembered(choice: Resolution) -> None:
            self._post(self.log, f"using the resolution remembered for {cluster.name}: {choice.describe()}")

        # The states themselves come from the watch stream only: the connect's own last state may overtake
        # states the stream still has queued, and the tray must never show them out of order.
        warning = ""
        try:
            connect_remembering(request, run, self.resolutions, on_remembered=remembered)
        except HelperError as exc:
            conflicts = None if self._cancel_requested else self._conflicts_now()
            self._post(self._connect_failed, cluster.name, describe_error(exc), conflicts)
            return
        except OSError as exc:  # connected, but the resolutions file could not be written
            warning = f"cannot remember the resolution: {exc}"
        used = Resolution.of_request(request)  # the remembered one was applied to it, if any
        self._post(self._connect_done, cluster.name, None if used.empty else used, warning)

    def _conflicts_now(self) -> pb.State | None:
        """After a failed connect: the helper's state, if it reports conflicts (the conflict dialog's input)."""
        client = self._open_client()
        if client is None:
            return None
        try:
            state = client.status()
        except HelperError:
            return None
        finally:
            self._release(client)
        return state if state.conflicts else None

    def _on_progress(self, step: str) -> None:
        if self._activity is not None and self._activity.kind == "connect":
            self._set_activity(replace(self._activity, step=step))
        self.log(f"  {step}")
        self.progress.emit(step)

    def _connect_failed(self, cluster: str, error: str, conflicts: pb.State | None) -> None:
        cancelled = self._cancel_requested
        self._cancel_requested = False
        self._set_activity(None)
        if cancelled:
            self.log(f"the connect to {cluster} was cancelled")
            return
        self.log(f"could not connect to {cluster}: {error}")
        self.connectFailed.emit(error)
        if conflicts is not None:
            self.conflictsFound.emit(conflicts)

    def _connect_done(self, cluster: str, resolution: Resolution | None, warning: str) -> None:
        self._cancel_requested = False
        self._resolution = resolution
        self._set_activity(None)
        self.log(f"connected to {cluster}")
        if warning:
            self.log(warning)

    # --- disconnect (pool) ---

    def _disconnect(self) -> None:
        client = self._open_client()
        if client is None:
            return
        try:
            client.disconnect()
        except HelperError as exc:
            self._post(self._disconnect_done, describe_error(exc))
            return
        finally:
            self._release(client)
        self._post(self._disconnect_done, "")

    def _disconnect_done(self, error: str) -> None:
        if self._activity is not None and self._activity.kind == "disconnect":
            self._set_activity(None)
        if error:
            self._cancel_requested = False
            self.log(f"could not disconnect: {error}")
            self.disconnectFailed.emit(error)
            return
        self._resolution = None

    # --- intercepts (pool) ---

    def _namespace(self) -> str:
        return self._state.namespace if self._state is not None and self._state.namespace else "default"

    def _list_workloads(self) -> None:
        client = self._open_client()
        if client is None:
            return
        try:
            listing = client.list_workloads()
        except HelperError as exc:
            self._post(self._workloads_listed, None, describe_error(exc))
            return
        finally:
            self._release(client)
        self._post(self._workloads_listed, listing, "")

    def _workloads_listed(self, listing: pb.WorkloadList | None, error: str) -> None:
        if not intercept_menu.connected(self._state):
            return  # an answer that overtook a disconnect
        if error:
            if error != self._workloads.error:
                self.log(f"cannot list workloads: {error}")
            self._set_workloads(replace(self._workloads, error=error))
            return
        assert listing is not None
        self._set_workloads(
            replace(
                self._workloads, namespace=self._namespace(), listing=tuple(listing.workloads), loaded=True, error=""
            )
        )

    def _intercept(self, name: str, request: pb.InterceptRequest, env_file: Path | None, env_json: Path | None) -> None:
        client = self._open_client()
        if client is None:
            return
        try:
            reply = client.intercept(request)
        except HelperError as exc:
            self._post(self._intercept_done, name, None, describe_error(exc), [])
            return
        finally:
            self._release(client)
        notes = []
        environment = dict(reply.environment)
        for path, text in ((env_file, intercepts.env_file_text), (env_json, intercepts.env_json_text)):
            if path is None:
                continue
            try:
                path.write_text(text(environment))
            except OSError as exc:
                notes.append(f"cannot write the pod's environment to {path}: {exc.strerror or exc}")
            else:
                notes.append(f"wrote the pod's environment ({len(environment)} variables) to {path}")
        self._post(self._intercept_done, name, reply, "", notes)

    def _intercept_done(self, name: str, reply: pb.InterceptReply | None, error: str, notes: list[str]) -> None:
        busy = {k: v for k, v in self._workloads.busy.items() if k != name}
        if reply is None:
            self.log(f"could not intercept {name}: {error}")
            self._set_workloads(replace(self._workloads, busy=busy, last_error=error))
            self.interceptFailed.emit(name, error)
            return
        self.log(f"intercepting {intercepts.line(reply.intercept)}")
        if reply.intercept.mount:
            self.log(f"the pod's volumes are mounted at {reply.intercept.mount}")
        for note in notes:
            self.log(note)
        self._set_workloads(replace(self._workloads, busy=busy, last_error=""))
        self.interceptStarted.emit(reply)
        self.refresh_workloads()

    def _leave(self, name: str, request: pb.LeaveRequest) -> None:
        client = self._open_client()
        if client is None:
            return
        try:
            client.leave(request)
        except HelperError as exc:
            self._post(self._leave_done, name, describe_error(exc))
            return
        finally:
            self._release(client)
        self._post(self._leave_done, name, "")

    def _leave_done(self, name: str, error: str) -> None:
        busy = {k: v for k, v in self._workloads.busy.items() if k != name}
        if error:
            self.log(f"could not leave the intercept of {name}: {error}")
            self._set_workloads(replace(self._workloads, busy=busy, last_error=error))
            self.leaveFailed.emit(name, error)
            return
        self.log(f"left the intercept of {name}")
        self._set_workloads(replace(self._workloads, busy=busy, last_error=""))
        self.refresh_workloads()

    def _set_busy(self, name: str, what: str) -> None:
        self._set_workloads(replace(self._workloads, busy={**self._workloads.busy, name: what}))

    def _set_workloads(self, workloads: intercept_menu.Workloads) -> None:
        if workloads != self._workloads:
            self._workloads = workloads
            self.workloadsChanged.emit(workloads)

    # --- helpers (GUI thread) ---

    def _set_activity(self, activity: Activity | None) -> None:
        if activity != self._activity:
            self._activity = activity
            self.activityChanged.emit(activity)

    def log(self, text: str) -> None:
        """Add a line to the event list (the status window shows it)."""
        self.events.append(text)
        self.eventLogged.emit(text)
