"""A real `tether helper start` in the lab's workstation namespace, driven through the real CLI.

``RunningHelper`` starts the helper as a subprocess (``ip netns exec <ws> python -m tether.helper.user.cli.main
helper start``, so the PID is the helper's own) on a socket directory of its own under /run, with its
log in a file; ``cli(...)`` runs ``tether ... --socket S`` inside the workstation namespace;
``connect()``, ``disconnect()``, ``quit()`` and ``kill()`` do what they say and check the result.

``workstation_leftovers(ns)`` lists what a helper may leave in a namespace: ``tether*`` links, routes
with the helper's protocol number (126) in any table, and ``tether_*`` nftables tables.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tether.helper.root.journal import LINK_PREFIX, NFT_TABLE_PREFIX, ROUTE_PROTO

CLI = [sys.executable, "-m", "tether.helper.user.cli.main"]
LOG_TAIL = 60


def _ns_json(netns: str, *argv: str) -> Any:
    out = subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True, timeout=20)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} in {netns} failed: {out.stderr.strip()}")
    return json.loads(out.stdout or "[]")


def workstation_leftovers(netns: str) -> list[str]:
    """What a helper can leave behind in `netns` (empty when clean)."""
    found = []
    for link in _ns_json(netns, "ip", "-j", "link", "show"):
        if link["ifname"].startswith(LINK_PREFIX):
            found.append(f"link {link['ifname']}")
    for family in ("-4", "-6"):
        for route in _ns_json(netns, "ip", family, "-j", "route", "show", "table", "all"):
            if str(route.get("protocol", "")) == str(ROUTE_PROTO):
                found.append(f"route {route.get('dst')} dev {route.get('dev')} table {route.get('table', 'main')}")
    for table in nft_tables(netns):
        if table.split()[1].startswith(NFT_TABLE_PREFIX):
            found.append(f"nft table {table}")
    return found


def nft_tables(netns: str) -> list[str]:
    """Every nftables table in `netns` as "family name"."""
    # Text, not -j: nft 1.0.6's JSON for a table with `flags owner` carries garbage (or worse) for the flags.
    listing = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "list", "tables"], capture_output=True, text=True, timeout=20
    )
    if listing.returncode != 0:
        raise RuntimeError(f"nft list tables in {netns} failed: {listing.stderr.strip()}")
    return [" ".join(words[1:]) for line in listing.stdout.splitlines() if len(words := line.split()) == 3]


def wait_workstation_free(netns: str, timeout: float = 30.0) -> None:
    """Wait (bounded) until no helper state is in `netns`: these tests need the workstation to themselves."""
    deadline = time.monotonic() + timeout
    while left := workstation_leftovers(netns):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the workstation namespace {netns} is in use by another tether helper "
                f"(found {', '.join(left)}); stop it (tether lab run -- tether quit) and run again"
            )
        time.sleep(0.5)


class RunningHelper:
    def __init__(
        self, netns: str, kubeconfig: Path, workdir: Path, name: str = "helper", enter: tuple[str, ...] = ()
    ) -> None:
        self.netns = netns
        self.enter = enter  # a command prefix that runs the helper in a lab variant's environment
        self.kubeconfig = kubeconfig
        self.workdir = workdir
        # A socket directory of our own under /run (short: sun_path is 108 bytes), so a helper somebody
        # started by hand on the default socket is not disturbed.
        self.rundir = Path(f"/run/tether-test-{secrets.token_hex(4)}")
        self.socket = self.rundir / "helper.sock"
        self.journal = self.rundir / "journal.json"
        self.state_dir = workdir / f"{name}-state"
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # --- the helper process ---

    def start(self, timeout: float = 30.0) -> None:
        self.starts += 1
        with open(self.log, "ab") as log:
            log.write(f"===== start {self.starts} =====\n".encode())
            log.flush()
            argv = [
                "ip", "netns", "exec", self.netns, *self.enter, *CLI, "helper", "start",
                "--socket", str(self.socket), "--group", "root", "--log-format", "text",
                "--state-dir", str(self.state_dir),
            ]  # fmt: skip
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the helper exited with {self.proc.returncode} at start\n{self.tail()}")
            if self.socket.exists() and self.cli("status", "--json").returncode == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the helper did not answer on {self.socket} in {timeout:.0f}s\n{self.tail()}")
            time.sleep(0.1)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to clean up."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def tail(self, lines: int = LOG_TAIL) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return "(no helper log)"
        return f"--- helper log {self.log} (last {len(text)} lines) ---\n" + "\n".join(text)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    # --- the CLI ---

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        argv = ["ip", "netns", "exec", self.netns, *CLI, *args, "--socket", str(self.socket)]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)

    def status(self) -> dict[str, Any]:
        out = self.cli("status", "--json")
        assert out.returncode == 0, f"tether status failed ({out.returncode}): {out.stderr}\n{self.tail()}"
        return json.loads(out.stdout)

    def connect(self, *flags: str) -> dict[str, Any]:
        """`tether connect --json [FLAGS...]`; asserts it connected and returns the state."""
        out = self.cli("connect", "--kubeconfig", str(self.kubeconfig), "--json", *flags, timeout=90)
        assert out.returncode == 0, f"tether connect failed ({out.returncode}): {out.stderr}\n{self.tail()}"
        state = json.loads(out.stdout)
        assert state["phase"] == "connected", state
        return state

    def disconnect(self) -> None:
        out = self.cli("disconnect")
        assert out.returncode == 0, f"tether disconnect failed ({out.returncode}): {out.stderr}\n{self.tail()}"
        assert out.stdout.strip() == "disconnected", out.stdout

    def quit(self, timeout: float = 30.0) -> int:
        """`tether quit`, then wait for the process to end; returns its exit code."""
        assert self.proc is not None
        out = self.cli("quit")
        assert out.returncode == 0, f"tether quit failed ({out.returncode}): {out.stderr}\n{self.tail()}"
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the helper did not exit {timeout:.0f}s after quit\n{self.tail()}") from None

    def stop_quietly(self) -> None:
        """Last-resort teardown: SIGTERM (the helper undoes its changes), then SIGKILL; remove our files."""
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.rundir, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """What this helper left: workstation state, its journal, its sockets, the directory it made for them."""
        found = workstation_leftovers(self.netns)
        for path in (self.journal, self.socket, self.rundir / "helper-auth.sock"):
            if path.exists():
                found.append(f"file {path}")
        if self.rundir.exists():
            found.append(f"directory {self.rundir}")
        return found


@contextlib.contextmanager
def running_helper(netns: str, kubeconfig: Path, workdir: Path, name: str = "helper", enter: tuple[str, ...] = ()):
    """A started helper; on the way out it is stopped (SIGTERM) if a test left it running."""
    wait_workstation_free(netns)
    helper = RunningHelper(netns, kubeconfig, workdir, name, enter)
    try:
        yield helper
    except BaseException:
        print(helper.tail(), file=sys.stderr)
        raise
    finally:
        helper.stop_quietly()
