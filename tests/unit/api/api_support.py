"""Shared helpers for the helper API tests (imported as ``api_support``; fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from pathlib import Path

from tests.doubles.fake_session import FakeSession
from tether.helper.root.server.server import HelperServer, ServerOptions


def options_for(socket_dir: Path) -> ServerOptions:
    """Test mode: no root check, the directory belongs to us, the sockets keep our group."""
    return ServerOptions(socket_path=socket_dir / "helper.sock", require_root=False, set_group=False)


def short_tmp() -> Path:
    """A private directory with a short path (unix socket paths are limited to ~100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="tether-api-"))
    os.chmod(path, 0o755)
    return path


class ServerThread:
    """Run a HelperServer in its own thread and event loop, so blocking clients can call it."""

    def __init__(self, session: FakeSession, options: ServerOptions) -> None:
        self.session = session
        self.server = HelperServer(session, options)
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())
        self.loop.close()

    async def _main(self) -> None:
        try:
            await self.server.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self.server.wait()
        await self.server.stop(grace=1)

    def start(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(10)
        if self._error:
            raise self._error
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.server.request_stop)
            self._thread.join(10)

    @property
    def stopped(self) -> bool:
        return not self._thread.is_alive()

    @property
    def socket_path(self) -> Path:
        return self.server.socket_path
