"""The TUN device interface and the per-platform table of implementations.

A TUN device carries whole IP packets (no link-layer header, no packet-info prefix) between the
kernel and the helper: ``read()`` returns one packet the kernel routed into the device, ``write()``
hands one packet to the kernel as if it had arrived on the device. The file descriptor is
non-blocking, so the netstack can wait on it with ``loop.add_reader(dev.fileno(), ...)`` and drain it
with ``read_batch``.

Choosing the implementation is a plain table keyed by platform (``open_tun``); platforms without
one yet raise ``UnsupportedPlatform`` naming the device type they will use.
"""

from __future__ import annotations

import abc
import importlib
import sys
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tether.helper.root.journal import Journal

__all__ = [
    "DEFAULT_MTU",
    "DEFAULT_NAME",
    "MAX_MTU",
    "MIN_MTU",
    "PLATFORMS",
    "TunDevice",
    "TunError",
    "UnsupportedPlatform",
    "open_tun",
    "platform_key",
]

# A large MTU: the per-packet cost in Python limits throughput, not the bytes (see DESIGN.md).
DEFAULT_MTU = 65000
MIN_MTU = 576  # IPv4's minimum datagram size every host must accept; IPv6 needs 1280 and is off below
MAX_MTU = 65535
# "%d" lets the kernel pick the first free number: tether0, tether1, ...
DEFAULT_NAME = "tether%d"
DEFAULT_BATCH = 64


class TunError(OSError):
    """Creating or configuring a TUN device failed; the message names the device and the cause."""


class UnsupportedPlatform(NotImplementedError):
    """No TUN implementation for this platform (yet)."""


class TunDevice(abc.ABC):
    """One TUN device, open for reading and writing IP packets."""

    name: str
    mtu: int

    @abc.abstractmethod
    def fileno(self) -> int:
        """The non-blocking descriptor to wait on (readable when a packet is waiting)."""

    @abc.abstractmethod
    def read(self) -> bytes | None:
        """One IP packet from the kernel, or None when none is waiting (never blocks)."""

    def read_batch(self, max_packets: int = DEFAULT_BATCH) -> list[bytes]:
        """Up to ``max_packets`` packets, stopping early when none is waiting."""
        packets: list[bytes] = []
        while len(packets) < max_packets:
            packet = self.read()
            if packet is None:
                break
            packets.append(packet)
        return packets

    @abc.abstractmethod
    def write(self, packet: bytes | bytearray | memoryview) -> bool:
        """Hand one IP packet to the kernel. False if the device could not take it now (dropped)."""

    def write_batch(self, packets: Iterable[bytes | bytearray | memoryview]) -> int:
        """Write packets in order; returns how many were taken (stops at the first that was not)."""
        count = 0
        for packet in packets:
            if not self.write(packet):
                break
            count += 1
        return count

    @abc.abstractmethod
    def close(self) -> None:
        """Remove the device (and with it every route through it). Idempotent."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool: ...

    def __enter__(self) -> TunDevice:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"mtu={self.mtu}"
        return f"<{type(self).__name__} {self.name} {state}>"


def validate_mtu(mtu: int) -> int:
    if isinstance(mtu, bool) or not isinstance(mtu, int):
        raise ValueError(f"invalid MTU {mtu!r}: expected an integer")
    if not MIN_MTU <= mtu <= MAX_MTU:
        raise ValueError(f"invalid MTU {mtu}: must be between {MIN_MTU} and {MAX_MTU}")
    return mtu


# --- the platform table ----------------------------------------------------------------------------

TunFactory = Callable[..., TunDevice]


def _lazy(module: str, attr: str) -> TunFactory:
    def factory(**kwargs: Any) -> TunDevice:
        return getattr(importlib.import_module(module), attr)(**kwargs)

    return factory


PLATFORMS: dict[str, TunFactory] = {
    "linux": _lazy("tether.helper.root.vif.tun_linux", "TunLinux"),
    "darwin": _lazy("tether.helper.root.vif.tun_darwin", "TunDarwin"),
    "windows": _lazy("tether.helper.root.vif.tun_windows", "TunWindows"),
}


def platform_key(platform: str = sys.platform) -> str:
    """The key of PLATFORMS for a ``sys.platform`` value ("linux", "darwin", "windows")."""
    if platform.startswith("linux"):
        return "linux"
    if platform in ("win32", "cygwin"):
        return "windows"
    return platform


def open_tun(
    name: str = DEFAULT_NAME,
    *,
    mtu: int = DEFAULT_MTU,
    journal: Journal | None = None,
    platform: str = sys.platform,
) -> TunDevice:
    """Create, configure and bring up a TUN device for this platform.

    ``name`` may hold ``%d`` (the first free number is used). When ``journal`` is given, the device is
    recorded in it while it exists, for crash cleanup.
    """
    key = platform_key(platform)
    factory = PLATFORMS.get(key)
    if factory is None:
        raise UnsupportedPlatform(f"no TUN device implementation for platform {platform!r}")
    return factory(name=name, mtu=mtu, journal=journal)
