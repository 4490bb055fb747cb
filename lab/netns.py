"""Network namespace, link, address, route, sysctl and nftables operations, through a command runner.

Every link is created directly inside namespaces the lab owns (`ip -n NS link add ... netns NS2`),
so nothing ever appears in the host namespace, even for a moment.

Also: entering a namespace from the calling thread (`entered`), and running a function in a
namespace on a helper thread (`call_in`), for probes and tests. Only the thread moves: its mount
namespace stays, so name resolution in such a thread still reads the host's /etc/resolv.conf.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from tether.lab.runner import LabError, Runner
from tether.lab.topology import WS_NS

NETNS_RUN_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def exec_argv(netns: str, argv: Sequence[str], host_mounts: bool = False) -> list[str]:
    """argv run inside netns. `ip netns exec` gives the process a mount namespace of its own (for
    /etc/netns/NS/resolv.conf); with host_mounts it keeps the host's, so namespaces it creates with
    `ip netns add` (their /run/netns mounts) are seen by everyone."""
    if host_mounts:
        return ["nsenter", f"--net={NETNS_RUN_DIR / netns}", "--", *argv]
    return ["ip", "netns", "exec", netns, *argv]


class NetnsOps:
    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    # namespaces
    def list(self, prefix: str = "") -> list[str]:
        out = self.runner.run(["ip", "netns", "list"], check=False)
        names = [line.split()[0] for line in out.splitlines() if line.strip()]
        return sorted(n for n in names if n.startswith(prefix))

    def add(self, name: str) -> None:
        self.runner.run(["ip", "netns", "add", name])
        self.link_up(name, "lo")

    def delete(self, name: str) -> None:
        self.runner.run(["ip", "netns", "delete", name])

    def pids(self, name: str) -> list[int]:
        out = self.runner.run(["ip", "netns", "pids", name], check=False)
        return [int(p) for p in out.split() if p.isdigit()]

    def exec(self, netns: str, argv: Sequence[str], stdin: str | None = None) -> str:
        return self.runner.run(exec_argv(netns, argv), stdin=stdin)

    # links
    def link_up(self, netns: str, dev: str) -> None:
        self.runner.run(["ip", "-n", netns, "link", "set", dev, "up"])

    def veth(self, netns: str, name: str, peer_netns: str, peer: str) -> None:
        """A veth pair created inside netns with its peer placed straight into peer_netns; both up.

        The lab is IPv4 only: neither end gets an IPv6 link-local address, which the kernel would add (with
        its route) a moment after the link comes up, racing whoever compares route tables before and after.
        """
        argv = ["ip", "-n", netns, "link", "add", name, "type", "veth", "peer", "name", peer, "netns", peer_netns]
        self.runner.run(argv)
        self.runner.run(["ip", "-n", netns, "link", "set", "dev", name, "addrgenmode", "none"])
        self.runner.run(["ip", "-n", peer_netns, "link", "set", "dev", peer, "addrgenmode", "none"])
        self.link_up(netns, name)
        self.link_up(peer_netns, peer)

    def link_delete(self, netns: str, dev: str) -> None:
        """Delete a link if it exists (a veth takes its peer with it, at once)."""
        self.runner.run(["ip", "-n", netns, "link", "delete", dev], check=False)

    def bridge(self, netns: str, name: str, address: str) -> None:
        """A bridge whose MAC is ``address`` for good: the kernel leaves a MAC given at creation alone, instead
        of following its ports' lowest one as they come and go."""
        self.runner.run(["ip", "-n", netns, "link", "add", name, "address", address, "type", "bridge"])
        self.link_up(netns, name)

    def set_master(self, netns: str, dev: str, master: str) -> None:
        self.runner.run(["ip", "-n", netns, "link", "set", dev, "master", master])

    # addresses and routes
    def addr_add(self, netns: str, dev: str, cidr: str) -> None:
        self.runner.run(["ip", "-n", netns, "addr", "add", cidr, "dev", dev])

    def route_add(self, netns: str, *spec: str) -> None:
        self.runner.run(["ip", "-n", netns, "route", "add", *spec])

    def routes(self, netns: str) -> str:
        return self.runner.run(["ip", "-n", netns, "route", "show", "table", "all"], check=False)

    # kernel settings and firewall
    def sysctl(self, netns: str, settings: dict[str, str]) -> None:
        """Set sysctls in netns only (run by a process inside it, never from the host)."""
        self.exec(netns, ["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in settings.items())])

    def nft(self, netns: str, script: str) -> None:
        self.exec(netns, ["nft", "-f", "-"], stdin=script)


# --- moving threads between namespaces -----------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(netns: str) -> Iterator[None]:
    """Move the calling thread into the named network namespace, and back on exit.

    Sockets created inside stay in that namespace; threads started inside inherit it.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        try:
            target = os.open(NETNS_RUN_DIR / netns, os.O_RDONLY)
        except FileNotFoundError:
            raise LabError(f"network namespace {netns} does not exist") from None
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


def workstation() -> contextlib.AbstractContextManager[None]:
    """Move the calling thread into the lab's workstation namespace (see `entered`)."""
    return entered(WS_NS)


def call_in(netns: str, fn: Callable[[], T], timeout: float = 60.0) -> T:
    """Run fn() on a new thread inside netns; return its result or raise its exception."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            with entered(netns):
                result.append(fn())
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, name=f"netns-{netns}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"call in {netns} did not finish in {timeout}s")
    if error:
        raise error[0]
    return result[0]
