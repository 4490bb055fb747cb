"""A connection's intercepts: set them up with the user's credentials and the manager, keep answering the
connections they bring, and take them down (leave, disconnect, uninstall).

``intercept`` checks before it changes anything: the workload, Service and port exist (the names in the error),
something listens on the local port, and nobody else holds the port (the manager names who and since when).
Then it claims the port at the manager, makes the agent take the port (the workload's pods restart when its
template changes), and waits until every live agent of the workload reports sending the port here. If any
step fails, what was done is undone (the claim is given back; the agent stays, as after a leave).

The helper keeps answering intercepted connections while it holds intercepts (``WatchInterceptDials``); after a
reconnect (a new manager session) it claims its intercepts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import grpc
import kubernetes

from tether.helper.api import helper_pb2 as pb
from tether.helper.api.intercepts import ACTIVE, FAILED, WAITING, InterceptTable, phase_of
from tether.helper.root.intercept.answer import answer
from tether.helper.root.intercept.volumes import NO_VOLUMES, VolumeMounter, VolumesNotMounted
from tether.helper.root.kube import intercepts as kube
from tether.helper.root.kube.inject import InjectionError, find_workload
from tether.helper.root.server.session_api import SessionError
from tether.helper.root.tunnel.manager_link import ManagerLink
from tether.manager.api import manager_pb2 as mpb
from tether.manager.api.sidecar import SidecarConfig, Workload

log = logging.getLogger("tether.helper.root.intercept")

#: How long an intercept waits for the workload's agents to take the port (their pods may restart first).
AGENT_WAIT = 120.0
POLL = 0.5
CALL_TIMEOUT = 10.0


class InterceptService:
    def __init__(
        self,
        link: ManagerLink,
        configuration: kubernetes.client.Configuration,
        sidecar: SidecarConfig,
        namespace: str,
        client_name: str,
        on_change: Callable[[], None],
        volumes: VolumeMounter = NO_VOLUMES,
        agent_wait: float = AGENT_WAIT,
    ) -> None:
        self._link = link
        self._configuration = configuration
        self._sidecar = sidecar
        self.namespace = namespace
        self._client = client_name
        self._on_change = on_change
        self._volumes = volumes
        self._agent_wait = agent_wait
        self.table = InterceptTable()
        self.last_error = ""
        self._watch: asyncio.Task[None] | None = None
        self._watching = asyncio.Event()
        self._answers: set[asyncio.Task[None]] = set()

    # --- state ---

    def stamp(self, state: pb.State) -> pb.State:
        """``state`` with this connection's intercepts and last intercept error."""
        del state.intercepts[:]
        state.intercepts.extend(self.table.all())
        state.intercept_error = self.last_error
        return state

    def _fail(self, message: str, code: grpc.StatusCode = grpc.StatusCode.FAILED_PRECONDITION) -> SessionError:
        self.last_error = message
        self._on_change()
        return SessionError(message, code)

    # --- intercept / leave ---

    async def intercept(self, request: pb.InterceptRequest) -> pb.InterceptReply:
        namespace = request.namespace or self.namespace
        held = self.table.get(namespace, request.name)
        if held is not None:
            raise self._fail(
                f"you already intercept {namespace}/{request.name} (port {held.port} -> localhost:{held.local_port}); "
                f"tether leave {request.name} first",
                grpc.StatusCode.ALREADY_EXISTS,
            )
        try:
            target = await asyncio.to_thread(self._resolve, namespace, request)
        except kube.InterceptSetupError as exc:
            raise self._fail(str(exc), grpc.StatusCode.NOT_FOUND) from None
        except InjectionError as exc:
            raise self._fail(str(exc), grpc.StatusCode.NOT_FOUND) from None
        local = request.local_port or target.service_port
        if not await _listening(local):
            raise self._fail(
                f"nothing listens on localhost:{local}: start the local server first (or name its port with "
                f"--port LOCAL[:{target.port_name or target.service_port}])"
            )
        self._ensure_watch()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._watching.wait(), CALL_TIMEOUT)
        spec = mpb.InterceptSpec(
            workload=mpb.WorkloadRef(namespace=namespace, name=target.workload.name, kind=target.workload.kind),
            port=target.app_port,
            service=target.service,
            service_port=target.service_port,
            port_name=target.port_name,
            local_port=local,
        )
        info = await self._claim(spec)
        state = _state(info, ours=True)
        state.phase = WAITING
        self.table.put(state)
        self.last_error = ""
        self._on_change()
        try:
            await asyncio.to_thread(self._take_port, target)
            info = await self._wait_active(spec, state, target)
            await self._mount(state, request.mount)
        except BaseException as exc:
            self.table.remove(namespace, target.workload.name)
            await self._release(spec)
            message = str(exc) if isinstance(exc, SessionError | InjectionError) else f"intercept failed: {exc}"
            if isinstance(exc, asyncio.CancelledError):
                self._on_change()
                raise
            raise self._fail(message) from None
        self._on_change()
        log.info("intercepting", extra={"workload": f"{namespace}/{target.workload.name}", "port": target.app_port})
        return pb.InterceptReply(intercept=state, environment=dict(info.environment))

    async def _mount(self, state: pb.InterceptState, mount: str) -> None:
        """Mount the pod's volumes; when that fails the intercept still holds (its traffic is what was asked for
        first) and the reason is kept on it, for the CLI, ``tether status`` and the tray."""
        try:
            state.mount = await self._volumes.mount(state, mount)
        except VolumesNotMounted as exc:
            state.mount_error = str(exc)
            log.warning(
                "volumes not mounted", extra={"workload": f"{state.namespace}/{state.workload}", "why": str(exc)}
            )

    def _resolve(self, namespace: str, request: pb.InterceptRequest) -> kube.Target:
        with kubernetes.client.ApiClient(self._configuration) as api:
            return kube.resolve(api, namespace, request.name, request.service, request.port)

    def _take_port(self, target: kube.Target) -> None:
        with kubernetes.client.ApiClient(self._configuration) as api:
            kube.take_port(api, target, self._sidecar)

    async def _claim(self, spec: mpb.InterceptSpec) -> mpb.InterceptInfo:
        stub, session = self._session()
        try:
            return await stub.CreateIntercept(mpb.InterceptRequest(session_id=session, spec=spec), timeout=CALL_TIMEOUT)
        except grpc.aio.AioRpcError as exc:
            code = grpc.StatusCode.ALREADY_EXISTS if exc.code() == grpc.StatusCode.ALREADY_EXISTS else exc.code()
            raise self._fail(exc.details() or exc.code().name, code) from None

    async def _release(self, spec: mpb.InterceptSpec) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError, SessionError):
            stub, session = self._session()
            await stub.RemoveIntercept(mpb.InterceptRequest(session_id=session, spec=spec), timeout=CALL_TIMEOUT)

    async def _wait_active(
        self, spec: mpb.InterceptSpec, state: pb.InterceptState, target: kube.Target
    ) -> mpb.InterceptInfo:
        """Until every live agent of the workload sends the port here and no pod without one is left (the
        Service still sends connections to pods that are going away)."""
        deadline = time.monotonic() + self._agent_wait
        while True:
            info = await self._find(spec)
            if info is None:
                raise SessionError(f"the traffic-manager dropped the intercept of {_name(spec)}")
            state.agents_intercepting, state.agents_live = info.agents_intercepting, info.agents_live
            phase = phase_of(info.agents_intercepting, info.agents_live)
            left = await asyncio.to_thread(self._rollout_left, target) if phase == ACTIVE else -1
            state.phase = ACTIVE if left == 0 else WAITING
            self._on_change()
            if state.phase == ACTIVE:
                return info
            if time.monotonic() > deadline:
                pods = f"; {left} pods without it are still there" if left > 0 else ""
                raise SessionError(
                    f"the tether-agents of {_name(spec)} did not take port {spec.port} within {self._agent_wait:g}s "
                    f"({info.agents_intercepting} of {info.agents_live} live agents did{pods})"
                )
            await asyncio.sleep(POLL)

    def _rollout_left(self, target: kube.Target) -> int:
        with kubernetes.client.ApiClient(self._configuration) as api:
            return kube.rollout_left(api, target)

    async def _find(self, spec: mpb.InterceptSpec) -> mpb.InterceptInfo | None:
        stub, session = self._session()
        listing = await stub.ListIntercepts(mpb.SessionInfo(session_id=session), timeout=CALL_TIMEOUT)
        wanted = (spec.workload.namespace, spec.workload.name, spec.port)
        return next(
            (i for i in listing.intercepts if (i.spec.workload.namespace, i.spec.workload.name, i.spec.port) == wanted),
            None,
        )

    async def leave(self, request: pb.LeaveRequest) -> None:
        namespace = request.namespace or self.namespace
        state = self.table.remove(namespace, request.name)
        if state is None:
            raise self._fail(f"you do not intercept {namespace}/{request.name}", grpc.StatusCode.NOT_FOUND)
        await self._end(state)
        self.last_error = ""
        self._on_change()

    async def _end(self, state: pb.InterceptState) -> None:
        await self._release(_spec(state))
        with contextlib.suppress(Exception):
            await self._volumes.unmount(state)
        log.info("left the intercept", extra={"workload": f"{state.namespace}/{state.workload}"})

    async def close(self) -> None:
        """End every intercept (at the manager too, while the link is up) and stop answering."""
        for state in self.table.clear():
            await self._end(state)
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch
            self._watch = None
        for task in list(self._answers):
            task.cancel()
        if self._answers:
            await asyncio.wait(self._answers, timeout=2)

    # --- listing and uninstalling ---

    async def list_workloads(self, namespace: str) -> pb.WorkloadList:
        namespace = namespace or self.namespace

        def read() -> list[Workload]:
            with kubernetes.client.ApiClient(self._configuration) as api:
                return list(kube.workloads(api, namespace))

        try:
            found = await asyncio.to_thread(read)
        except Exception as exc:
            raise self._fail(f"cannot list the workloads of namespace {namespace}: {exc}") from None
        stub, session = self._session()
        listing = await stub.ListIntercepts(mpb.SessionInfo(session_id=session), timeout=CALL_TIMEOUT)
        out = pb.WorkloadList()
        for workload in found:
            item = out.workloads.add(
                namespace=workload.namespace,
                name=workload.name,
                kind=workload.kind,
                agent=workload.sidecar is not None,
            )
            for info in listing.intercepts:
                if (info.spec.workload.namespace, info.spec.workload.name) == (item.namespace, item.name):
                    ours = self.table.get(item.namespace, item.name)
                    item.intercepts.append(ours if ours is not None else _state(info, ours=False))
        return out

    async def uninstall_agents(self, request: pb.UninstallAgentsRequest) -> list[str]:
        namespace = request.namespace or self.namespace

        def remove() -> list[str]:
            removed = []
            with kubernetes.client.ApiClient(self._configuration) as api:
                if request.all:
                    targets = [w for w in kube.workloads(api, None) if w.sidecar is not None]
                else:
                    targets = [find_workload(api, namespace, name) for name in request.names]
                for workload in targets:
                    if kube.remove_agent(api, workload):
                        removed.append(str(workload))
            return removed

        named = {(namespace, name) for name in request.names}
        for state in [s for s in self.table.all() if request.all or (s.namespace, s.workload) in named]:
            self.table.remove(state.namespace, state.workload)
            await self._end(state)
        self._on_change()
        try:
            return await asyncio.to_thread(remove)
        except InjectionError as exc:
            raise self._fail(str(exc), grpc.StatusCode.NOT_FOUND) from None

    # --- answering intercepted connections ---

    def _session(self) -> tuple[object, str]:
        link = self._link
        if link.stub is None or not link.session_id:
            raise SessionError(
                "not connected to the traffic-manager (reconnecting); try again", grpc.StatusCode.UNAVAILABLE
            )
        return link.stub, link.session_id

    def _ensure_watch(self) -> None:
        if self._watch is None or self._watch.done():
            self._watch = asyncio.ensure_future(self._watch_dials())

    async def _watch_dials(self) -> None:
        """Take intercepted connections for as long as the connection lasts; claim the intercepts again under
        each new manager session (after a reconnect)."""
        claimed_for = ""
        while True:
            link = self._link
            if link.stub is None or not link.session_id:
                self._watching.clear()
                await asyncio.sleep(0.25)
                continue
            stub, session = link.stub, link.session_id
            call = stub.WatchInterceptDials(mpb.SessionInfo(session_id=session))
            try:
                await call.initial_metadata()
                self._watching.set()
                if claimed_for and claimed_for != session:
                    await self._claim_again()
                claimed_for = session
                async for request in call:
                    task = asyncio.ensure_future(answer(stub, session, link.mux, request, self.table.local_port))
                    self._answers.add(task)
                    task.add_done_callback(self._answers.discard)
            except grpc.aio.AioRpcError as exc:
                log.info("intercepted-connection watch ended: %s", exc.code().name)
            finally:
                self._watching.clear()
                call.cancel()
            await asyncio.sleep(0.25)

    async def _claim_again(self) -> None:
        for state in self.table.all():
            try:
                await self._claim(_spec(state))
            except SessionError as exc:
                state.phase, state.error = FAILED, f"lost after a reconnect: {exc}"
        self._on_change()


def _name(spec: mpb.InterceptSpec) -> str:
    return f"{spec.workload.namespace}/{spec.workload.name}"


def _spec(state: pb.InterceptState) -> mpb.InterceptSpec:
    return mpb.InterceptSpec(
        workload=mpb.WorkloadRef(namespace=state.namespace, name=state.workload, kind=state.kind),
        port=state.port,
        service=state.service,
        service_port=state.service_port,
        port_name=state.port_name,
        local_port=state.local_port,
    )


def _state(info: mpb.InterceptInfo, ours: bool) -> pb.InterceptState:
    spec = info.spec
    return pb.InterceptState(
        namespace=spec.workload.namespace,
        workload=spec.workload.name,
        kind=spec.workload.kind,
        service=spec.service,
        service_port=spec.service_port,
        port_name=spec.port_name,
        port=spec.port,
        local_port=spec.local_port,
        client=info.client,
        since_unix_ms=info.since_unix_ms,
        phase=phase_of(info.agents_intercepting, info.agents_live),
        agents_intercepting=info.agents_intercepting,
        agents_live=info.agents_live,
        ours=ours,
    )


async def _listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port (where intercepted connections are dialed)."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
    except (OSError, TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return True
