"""The Wintun driver's API (wintun.dll, https://www.wintun.net), bound with ctypes, loaded only on Windows.

``FUNCTIONS`` is the function table: each entry names an export with its result and argument types.
``load`` resolves it against the DLL (``ctypes.WinDLL``, stdcall); nothing here touches the DLL at
import time, so the table and ``WintunSession``'s contract can be checked on any machine.

``WintunSession`` is what the TUN device needs from Wintun, as four operations on an open session:
``receive`` (one packet, or None when the ring is empty; ``EOFError`` once the session is over),
``wait_readable`` (block on the session's read event), ``send`` (copy a packet into the send ring;
False when the ring is full), ``end``. ``CtypesWintunSession`` implements it over the DLL; the tests
use a fake (``tests/doubles/fake_wintun.py``).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "FUNCTIONS",
    "MAX_IP_PACKET_SIZE",
    "MAX_RING_CAPACITY",
    "MIN_RING_CAPACITY",
    "CtypesWintunSession",
    "Wintun",
    "WintunError",
    "WintunSession",
    "load",
    "ring_capacity",
]

MIN_RING_CAPACITY = 0x20000  # 128 KiB
MAX_RING_CAPACITY = 0x4000000  # 64 MiB
DEFAULT_RING_CAPACITY = 0x800000  # 8 MiB: several thousand full-size packets of slack for the Python side
MAX_IP_PACKET_SIZE = 0xFFFF
ERROR_HANDLE_EOF = 38
ERROR_NO_MORE_ITEMS = 259
ERROR_BUFFER_OVERFLOW = 111
WAIT_OBJECT_0 = 0
WAIT_TIMEOUT = 0x102
WAIT_FAILED = 0xFFFFFFFF

_H = ctypes.c_void_p  # WINTUN_ADAPTER_HANDLE, WINTUN_SESSION_HANDLE, HANDLE
_GUID = ctypes.c_void_p  # const GUID * (NULL: Wintun picks one)
_LUID_P = ctypes.POINTER(ctypes.c_uint64)

# name -> (restype, argtypes)
FUNCTIONS: dict[str, tuple[Any, tuple[Any, ...]]] = {
    "WintunCreateAdapter": (_H, (ctypes.c_wchar_p, ctypes.c_wchar_p, _GUID)),
    "WintunOpenAdapter": (_H, (ctypes.c_wchar_p,)),
    "WintunCloseAdapter": (None, (_H,)),
    "WintunGetAdapterLUID": (None, (_H, _LUID_P)),
    "WintunGetRunningDriverVersion": (ctypes.c_uint32, ()),
    "WintunStartSession": (_H, (_H, ctypes.c_uint32)),
    "WintunEndSession": (None, (_H,)),
    "WintunGetReadWaitEvent": (_H, (_H,)),
    "WintunReceivePacket": (ctypes.c_void_p, (_H, ctypes.POINTER(ctypes.c_uint32))),
    "WintunReleaseReceivePacket": (None, (_H, ctypes.c_void_p)),
    "WintunAllocateSendPacket": (ctypes.c_void_p, (_H, ctypes.c_uint32)),
    "WintunSendPacket": (None, (_H, ctypes.c_void_p)),
}


class WintunError(OSError):
    """A Wintun call failed; the message names the call and the Windows error."""


def ring_capacity(size: int) -> int:
    """``size`` checked against what WintunStartSession accepts: a power of two in [128 KiB, 64 MiB]."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise ValueError(f"invalid Wintun ring capacity {size!r}: expected an integer")
    if not MIN_RING_CAPACITY <= size <= MAX_RING_CAPACITY or size & (size - 1):
        raise ValueError(
            f"invalid Wintun ring capacity {size}: must be a power of two between {MIN_RING_CAPACITY} and "
            f"{MAX_RING_CAPACITY}"
        )
    return size


@dataclass
class Wintun:
    """The resolved functions (attribute per name in ``FUNCTIONS``) plus kernel32's wait and error calls."""

    dll: Any
    kernel32: Any

    def __getattr__(self, name: str) -> Any:
        if name in FUNCTIONS:
            return getattr(self.dll, name)
        raise AttributeError(name)

    def last_error(self) -> int:
        return int(ctypes.get_last_error())  # type: ignore[attr-defined]

    def fail(self, call: str) -> WintunError:
        code = self.last_error()
        return WintunError(code, f"{call} failed: {ctypes.FormatError(code)}")  # type: ignore[attr-defined]


def load(path: str | Path = "wintun.dll") -> Wintun:
    """Load wintun.dll (next to the helper, or on the DLL search path) and bind ``FUNCTIONS``."""
    win_dll = getattr(ctypes, "WinDLL", None)
    if win_dll is None:
        raise WintunError(0, "Wintun exists only on Windows")
    try:
        dll = win_dll(str(path), use_last_error=True)
    except OSError as exc:
        raise WintunError(0, f"cannot load {path}: {exc} (install wintun.dll from https://www.wintun.net)") from None
    for name, (restype, argtypes) in FUNCTIONS.items():
        function = getattr(dll, name)
        function.restype = restype
        function.argtypes = list(argtypes)
    kernel32 = win_dll("kernel32", use_last_error=True)
    kernel32.WaitForSingleObject.restype = ctypes.c_uint32
    kernel32.WaitForSingleObject.argtypes = [_H, ctypes.c_uint32]
    return Wintun(dll, kernel32)


class WintunSession(Protocol):
    def receive(self) -> bytes | None:
        """One packet, or None when none is waiting; EOFError when the session has ended."""
        ...

    def wait_readable(self, timeout: float) -> None:
        """Block until a packet may be waiting or ``timeout`` seconds passed."""
        ...

    def send(self, packet: bytes | bytearray | memoryview) -> bool:
        """Queue one packet for the OS; False when the send ring is full (the packet is dropped)."""
        ...

    def end(self) -> None: ...


class CtypesWintunSession:
    """A session on an adapter (WintunStartSession), read and written through the DLL."""

    def __init__(self, api: Wintun, adapter: int, capacity: int = DEFAULT_RING_CAPACITY) -> None:
        self.api = api
        self.handle = api.WintunStartSession(adapter, ring_capacity(capacity))
        if not self.handle:
            raise api.fail("WintunStartSession")
        self.event = api.WintunGetReadWaitEvent(self.handle)

    def receive(self) -> bytes | None:
        size = ctypes.c_uint32(0)
        pointer = self.api.WintunReceivePacket(self.handle, ctypes.byref(size))
        if not pointer:
            code = self.api.last_error()
            if code == ERROR_NO_MORE_ITEMS:
                return None
            if code == ERROR_HANDLE_EOF:
                raise EOFError("the Wintun session ended")
            raise self.api.fail("WintunReceivePacket")
        try:
            return ctypes.string_at(pointer, size.value)
        finally:
            self.api.WintunReleaseReceivePacket(self.handle, pointer)

    def wait_readable(self, timeout: float) -> None:
        result = self.api.kernel32.WaitForSingleObject(self.event, max(0, int(timeout * 1000)))
        if result == WAIT_FAILED:
            raise self.api.fail("WaitForSingleObject")

    def send(self, packet: bytes | bytearray | memoryview) -> bool:
        data = bytes(packet)
        if len(data) > MAX_IP_PACKET_SIZE:
            return False
        pointer = self.api.WintunAllocateSendPacket(self.handle, len(data))
        if not pointer:
            code = self.api.last_error()
            if code in (ERROR_BUFFER_OVERFLOW, ERROR_HANDLE_EOF):
                return False
            raise self.api.fail("WintunAllocateSendPacket")
        ctypes.memmove(pointer, data, len(data))
        self.api.WintunSendPacket(self.handle, pointer)
        return True

    def end(self) -> None:
        if self.handle:
            self.api.WintunEndSession(self.handle)
            self.handle = None
