"""A real proxy server for the tests: pproxy (PyPI), one process serving HTTP CONNECT and SOCKS5 listeners.

``ProxyServer(listen=[...], netns=...)`` starts it (inside a network namespace when ``netns`` is given) with
its verbose log in a file, waits until every listener serves, and ``connections()`` reads from the log which
connections it carried (``("http"|"socks5", destination host:port)``). ``stop()`` ends it by its PID.

pproxy serves both protocols in one unprivileged process that runs exactly where it is started (an apt
proxy such as tinyproxy or dante would also install and start a system service on the host). Its
``main()`` installs uvloop when it can and then asks for the current loop, which current uvloop refuses
outside a running loop, so it is started with uvloop hidden and a loop set.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAUNCH = (
    "import asyncio, sys; sys.modules['uvloop'] = None; asyncio.set_event_loop(asyncio.new_event_loop()); "
    "from pproxy.server import main; main()"
)
_CARRIED = re.compile(r"^(\w+) \S+ -> (\S+)$")


class ProxyServer:
    def __init__(self, listen: list[str], *, netns: str = "", ssl_files: tuple[Path, Path] | None = None) -> None:
        self.listen = listen
        self.netns = netns
        self.ssl_files = ssl_files
        self.log_path = Path(tempfile.mkstemp(prefix="tether-proxy-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> ProxyServer:
        argv = [sys.executable, "-u", "-c", LAUNCH, "-v"]
        for uri in self.listen:
            argv += ["-l", uri]
        if self.ssl_files:
            argv += ["--ssl", f"{self.ssl_files[0]},{self.ssl_files[1]}"]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while self.log_text().count("Serving on") < len(self.listen):
            if self.process.poll() is not None or time.monotonic() > deadline:
                text = self.log_text()
                self.stop()
                raise RuntimeError(f"pproxy did not start ({' '.join(self.listen)}):\n{text[-2000:]}")
            time.sleep(0.05)
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def connections(self) -> list[tuple[str, str]]:
        return [m.groups() for line in self.log_text().splitlines() if (m := _CARRIED.match(line.strip()))]

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
        with contextlib.suppress(FileNotFoundError):
            self.log_path.unlink()

    def __enter__(self) -> ProxyServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
