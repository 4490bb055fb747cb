"""Serving the emulator over plain HTTP: in the current event loop (:class:`LabApiServer`), or on a loop in a
thread of its own for synchronous callers (:class:`LabApiServerThread`), and a kubeconfig that reaches it."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Self

import aiohttp.web
from kmock import KubernetesError

from tether.lab.apiserver.emulator import ApiServerEmulator
from tether.lab.apiserver.kinds import KINDS_BY_TYPE, Obj

# The names the emulator has always logged under (the lab's process logs show them).
log = logging.getLogger("tether.lab.apiserver")
access_log = logging.getLogger("tether.lab.apiserver.access")


def _describe(obj: Mapping[str, Any]) -> str:
    """E.g. "Service default/web", for messages about objects that may not be valid."""
    meta = obj.get("metadata") or {}
    kind = KINDS_BY_TYPE.get((obj.get("apiVersion"), obj.get("kind")))
    namespace = meta.get("namespace") or ("default" if kind is not None and kind.namespaced else "")
    return f"{obj.get('kind')} {namespace + '/' if namespace else ''}{meta.get('name')}"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class LabApiServer:
    """Serve an :class:`ApiServerEmulator` over plain HTTP while inside ``async with``.

    ``seed`` objects are created before the port opens; ``emulator_options`` go to the emulator
    (``service_cidr``, ``history_limit``, ``namespaces``, ``node_port_range``).
    """

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, seed: Iterable[Mapping[str, Any]] = (), **emulator_options: Any
    ) -> None:
        self.host, self.port = host, port
        self.seed = list(seed)
        self.emulator_options = emulator_options
        self.emulator: ApiServerEmulator | None = None
        self._runner: aiohttp.web.ServerRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}"

    def kubeconfig(self, **options: Any) -> Obj:
        return kubeconfig_for(self.url, **options)

    async def __aenter__(self) -> Self:
        emulator = ApiServerEmulator(**self.emulator_options)
        await emulator.__aenter__()
        try:
            for i, obj in enumerate(self.seed):
                try:
                    emulator.create_object(obj, keep_uid=True)
                except KubernetesError as e:
                    raise SeedError(f"seed object #{i} ({_describe(obj)}): {e.message}") from None
            server = aiohttp.web.Server(
                emulator, handler_cancellation=True, access_log=access_log, access_log_format='%a "%r" %s %b %Tfs'
            )
            # Streams are ended at shutdown (close_streams); this bounds the wait for anything else.
            self._runner = aiohttp.web.ServerRunner(server, shutdown_timeout=1.0)
            await self._runner.setup()
            await aiohttp.web.TCPSite(self._runner, self.host, self.port).start()
            self.port = self._runner.addresses[0][1]
        except BaseException:
            await self._close(emulator)
            raise
        self.emulator = emulator
        log.info("serving the Kubernetes API on %s", self.url)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self.emulator is not None
        await self._close(self.emulator)
        self.emulator = None

    async def _close(self, emulator: ApiServerEmulator) -> None:
        emulator.close_streams()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await emulator.__aexit__(None, None, None)


class SeedError(Exception):
    """A seed object the emulator refused; the message says which one and why."""


class LabApiServerThread:
    """A :class:`LabApiServer` on its own event loop in a daemon thread, for synchronous callers (tests).

    ``with LabApiServerThread(service_cidr='10.96.0.0/16') as server: ... server.url ...``
    """

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.server: LabApiServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self.server is not None, "not started"
        return self.server.url

    @property
    def emulator(self) -> ApiServerEmulator:
        assert self.server is not None and self.server.emulator is not None, "not started"
        return self.server.emulator

    def kubeconfig(self, **options: Any) -> Obj:
        return kubeconfig_for(self.url, **options)

    def start(self) -> str:
        started = threading.Event()
        failure: list[BaseException] = []

        async def main() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            try:
                async with LabApiServer(**self.options) as server:
                    self.server = server
                    started.set()
                    await self._stop.wait()
            except BaseException as e:  # handed to start()'s caller
                failure.append(e)
            finally:
                started.set()

        self._thread = threading.Thread(target=asyncio.run, args=(main(),), name="lab-apiserver", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            self._thread.join()
            raise failure[0]
        return self.url

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the server's loop (where the emulator's methods must run); return its result."""
        assert self._loop is not None, "not started"

        async def invoke() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(invoke(), self._loop).result()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join()
            self._loop = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def kubeconfig_for(url: str, *, name: str = "tether-lab", namespace: str = "default") -> Obj:
    """A kubeconfig (as a dict) with one context for an unauthenticated API server at ``url``."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": url}}],
        "users": [{"name": name, "user": {}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}],
        "current-context": name,
        "preferences": {},
    }
