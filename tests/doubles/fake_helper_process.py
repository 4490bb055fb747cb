"""A helper process for tests that kill it: the real API server with a FakeSession, on the socket in argv[1].

``python -m tests.doubles.fake_helper_process SOCKET`` prints ``ready`` once it serves, then runs until
it is stopped or killed. A SIGKILL ends it as it would end the real helper: the watch streams break and
the socket files stay behind with nobody listening.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from tests.doubles.fake_session import FakeSession
from tether.helper.root.server.server import HelperServer, ServerOptions


async def serve(socket_path: Path) -> None:
    server = HelperServer(FakeSession(), ServerOptions(socket_path=socket_path, require_root=False, set_group=False))
    await server.start()
    print("ready", flush=True)
    await server.wait()
    await server.stop(grace=0.5)


if __name__ == "__main__":
    asyncio.run(serve(Path(sys.argv[1])))
