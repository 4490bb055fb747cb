"""A stand-in TUN device (``tether.helper.root.vif.device.TunDevice``) for unit tests of the VIF engine and
its hooks: no kernel device, no privileges."""

from __future__ import annotations

import collections
import queue
import socket
import threading

from tether.helper.root.vif.device import DEFAULT_MTU, TunDevice, TunError, validate_mtu


class FakeTun(TunDevice):
    """An in-memory TUN for unit tests of callers: two packet queues and a real descriptor to wait on.

    The test plays the kernel: ``inject(packet)`` queues a packet for ``read()``; packets the code
    under test ``write()``s land in ``written`` (a ``queue.Queue``; ``take_written`` pops one with a
    timeout). ``fileno()`` is a socket that is readable exactly while injected packets wait, so
    ``loop.add_reader`` works as with the real device. Thread-safe: inject from any thread.
    ``writable = False`` makes ``write`` report a full device.
    """

    def __init__(self, name: str = "tether0", *, mtu: int = DEFAULT_MTU) -> None:
        self.name = name
        self.mtu = validate_mtu(mtu)
        self.inbound: collections.deque[bytes] = collections.deque()
        self.written: queue.Queue[bytes] = queue.Queue()
        self.writable = True
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._signalled = False
        self._closed = False

    # the kernel's side
    def inject(self, packet: bytes) -> None:
        """Queue one packet as if the kernel had routed it into the device."""
        with self._lock:
            self._check_open()
            self.inbound.append(bytes(packet))
            if not self._signalled:
                self._wake_w.send(b"x")
                self._signalled = True

    def take_written(self, timeout: float | None = None) -> bytes:
        """The next packet written by the code under test (queue.Empty after ``timeout``)."""
        return self.written.get(timeout=timeout)

    # the helper's side
    def fileno(self) -> int:
        self._check_open()
        return self._wake_r.fileno()

    def read(self) -> bytes | None:
        with self._lock:
            self._check_open()
            if not self.inbound:
                return None
            packet = self.inbound.popleft()
            if not self.inbound and self._signalled:
                self._wake_r.recv(16)
                self._signalled = False
            return packet

    def write(self, packet: bytes | bytearray | memoryview) -> bool:
        self._check_open()
        if not self.writable:
            return False
        if len(packet) > self.mtu:
            raise TunError(f"{self.name}: packet of {len(packet)} bytes exceeds the MTU {self.mtu}")
        self.written.put(bytes(packet))
        return True

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake_r.close()
            self._wake_w.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise TunError(f"{self.name} is closed")
