"""The Windows TUN device: a Wintun adapter, with a socket pair standing in for the selectable descriptor.

``TunDevice`` promises a descriptor the event loop can wait on (``loop.add_reader(dev.fileno())``).
Wintun has none: a session hands out packets from a shared-memory ring and signals a Win32 event
when the ring stops being empty. The adaptation (``PacketBridge``), so that the asyncio side stays
exactly as on Linux:

* a reader thread takes packets from the session (``WintunReceivePacket``, copying each out and
  releasing it at once, so the ring never fills behind a slow loop) into a bounded queue, and waits on
  the read event (``WintunGetReadWaitEvent``) when the ring is empty;
* a ``socket.socketpair()`` (AF_INET on Windows, which is selectable by every event loop) carries
  wake-up bytes, not packets: the thread writes one byte when it queues a packet into an empty,
  unsignalled queue, ``fileno()`` is the other end;
* ``read()`` pops the queue; only when the queue is empty does it drain the wake-up bytes (then looks
  once more, for a packet queued meanwhile). So the descriptor stays readable while packets wait,
  even when a reader takes only part of them (``read_batch`` with a limit).

Writes need no thread: ``WintunAllocateSendPacket`` + ``WintunSendPacket`` copy a packet into the
send ring from the loop thread; a full ring makes ``write`` return False (dropped, as on Linux).

The adapter: created with ``WintunCreateAdapter(name, "Tether", NULL)``; ``tether%d`` takes the first
name ``WintunOpenAdapter`` does not find. The MTU is set with ``Set-NetIPInterface -NlMtuBytes``.
``close`` ends the session and closes the adapter, which removes it and every route and address on
it. The adapter's name is written to the journal while it exists.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import socket
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tether.helper.root.powershell import Command, PowerShell, PowerShellError, PowerShellRunner
from tether.helper.root.vif.device import DEFAULT_MTU, DEFAULT_NAME, TunDevice, TunError, validate_mtu
from tether.helper.root.vif.wintun import DEFAULT_RING_CAPACITY, CtypesWintunSession, WintunSession

if TYPE_CHECKING:
    from tether.helper.root.journal import Journal

__all__ = ["PacketBridge", "TunWindows", "pick_name"]

log = logging.getLogger(__name__)

TUNNEL_TYPE = "Tether"
MAX_ADAPTER_NAME = 127
MAX_QUEUE = 4096  # packets waiting for the loop; beyond this they are dropped (counted)
WAIT_SLICE = 0.25  # the reader thread looks at its stop flag at least this often
MAX_NAMES = 100


def pick_name(pattern: str, exists: Callable[[str], bool]) -> str:
    """``pattern`` itself, or with ``%d`` replaced by the first number whose name is free."""
    if not pattern or len(pattern) > MAX_ADAPTER_NAME or not pattern.isprintable() or pattern.count("%") > 1:
        raise ValueError(f"invalid adapter name {pattern!r}")
    if "%" not in pattern:
        if exists(pattern):
            raise TunError(f"cannot create adapter {pattern}: an adapter with that name exists")
        return pattern
    if "%d" not in pattern:
        raise ValueError(f"invalid adapter name {pattern!r}: the only pattern allowed is %d")
    for number in range(MAX_NAMES):
        name = pattern.replace("%d", str(number))
        if not exists(name):
            return name
    raise TunError(f"no free adapter name for {pattern} (tried {MAX_NAMES})")


class PacketBridge:
    """Moves received packets from a Wintun session to a queue, signalling a socket (module docstring)."""

    def __init__(self, session: WintunSession, max_queue: int = MAX_QUEUE) -> None:
        self.session = session
        self.max_queue = max_queue
        self.dropped = 0
        self._queue: collections.deque[bytes] = collections.deque()
        self._signalled = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._thread = threading.Thread(target=self._run, name="tether-wintun-reader", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def fileno(self) -> int:
        return self._wake_r.fileno()

    def _signal(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                packet = self.session.receive()
                if packet is None:
                    self.session.wait_readable(WAIT_SLICE)
                    continue
                with self._lock:
                    if len(self._queue) >= self.max_queue:
                        self.dropped += 1
                        continue
                    self._queue.append(packet)
                    wake = not self._signalled
                    self._signalled = True
                if wake:
                    self._signal()
        except EOFError:
            pass
        except BaseException as exc:
            self.error = exc
            log.error("the Wintun reader stopped: %s", exc)
        finally:
            self._signal()  # let the loop notice (read() then reports the error)

    def read(self) -> bytes | None:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            self._signalled = False
        # Empty: drain the wake-up bytes, then look once more for a packet queued in between.
        with contextlib.suppress(BlockingIOError, InterruptedError, OSError):
            while self._wake_r.recv(4096):
                pass
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        if self.error is not None:
            raise TunError(f"the Wintun reader failed: {self.error}")
        return None

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._wake_r.close()
        self._wake_w.close()


def mtu_command(name: str, mtu: int) -> Command:
    return Command(
        "Set-NetIPInterface",
        (("InterfaceAlias", name), ("NlMtuBytes", validate_mtu(mtu)), ("PolicyStore", "ActiveStore")),
    )


class TunWindows(TunDevice):
    """A Wintun adapter and session (see the module docstring). Needs Administrator rights and wintun.dll."""

    def __init__(
        self,
        name: str = DEFAULT_NAME,
        *,
        mtu: int = DEFAULT_MTU,
        journal: Journal | None = None,
        api: Any = None,
        shell: PowerShell | None = None,
        session_factory: Callable[[Any, int], WintunSession] | None = None,
        ring: int = DEFAULT_RING_CAPACITY,
    ) -> None:
        self.mtu = validate_mtu(mtu)
        if api is None:
            from tether.helper.root.vif.wintun import load

            api = load()
        self._api = api
        self._journal = journal
        self._closed = False
        self._adapter: Any = None
        self._bridge: PacketBridge | None = None
        self._session: WintunSession | None = None

        def exists(candidate: str) -> bool:
            handle = api.WintunOpenAdapter(candidate)
            if handle:
                api.WintunCloseAdapter(handle)  # opened, not created: closing leaves it in place
            return bool(handle)

        self.name = pick_name(name, exists)
        try:
            self._adapter = api.WintunCreateAdapter(self.name, TUNNEL_TYPE, None)
            if not self._adapter:
                raise TunError(f"cannot create Wintun adapter {self.name}: {api.fail('WintunCreateAdapter')}")
            if journal is not None:
                journal.add_link(self.name)
            factory = session_factory or (lambda a, adapter: CtypesWintunSession(a, adapter, ring))
            self._session = factory(api, self._adapter)
            try:
                (shell or PowerShellRunner()).run(mtu_command(self.name, self.mtu))
            except PowerShellError as exc:
                raise TunError(f"cannot set the MTU of {self.name} to {self.mtu}: {exc}") from None
            self._bridge = PacketBridge(self._session)
            self._bridge.start()
        except BaseException:
            self.close()
            raise

    def fileno(self) -> int:
        if self._bridge is None:
            raise TunError(f"{self.name} is closed")
        return self._bridge.fileno()

    def read(self) -> bytes | None:
        if self._bridge is None:
            return None
        return self._bridge.read()

    def write(self, packet: bytes | bytearray | memoryview) -> bool:
        if self._session is None:
            return False
        return self._session.send(packet)

    @property
    def dropped(self) -> int:
        return self._bridge.dropped if self._bridge is not None else 0

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bridge is not None:
            self._bridge.stop()  # its thread may still be in receive(); end the session after it left
            self._bridge = None
        if self._session is not None:
            self._session.end()
            self._session = None
        if self._adapter:
            self._api.WintunCloseAdapter(self._adapter)  # created by us: this removes the adapter
            self._adapter = None
        if self._journal is not None:
            self._journal.remove_link(self.name)
