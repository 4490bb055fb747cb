"""The macOS TUN device: a utun interface opened through a kernel-control (``PF_SYSTEM``) socket.

* Opening: ``socket(PF_SYSTEM, SOCK_DGRAM, SYSPROTO_CONTROL)``, the ``CTLIOCGINFO`` ioctl turns the control
  name ``com.apple.net.utun_control`` into its id, and ``connect`` with a ``sockaddr_ctl`` whose ``sc_unit``
  is N+1 creates ``utunN`` (0 lets the kernel pick the first free number). The interface's name is read
  back with ``getsockopt(SYSPROTO_CONTROL, UTUN_OPT_IFNAME)``.
* Names: macOS only makes ``utunN``. A name holding ``%d`` (the default ``tether%d``) means "the next
  free one"; ``utunN`` asks for that unit; anything else is refused with the name in the message.
* Framing: every packet on the socket starts with the 4-byte address family in network byte order
  (``AF_INET`` 2, ``AF_INET6`` 30 on macOS). ``read`` strips it and ``write`` adds it, so callers see
  whole IP packets as on Linux.
* Configuration: ``ifconfig utunN mtu M up`` (addresses and routes are the route applier's job).
* Lifetime: the interface exists while the socket is open; closing it (or the helper dying) removes
  the interface and every route through it, so a crash leaves no device behind to clean up.

Python's ``socket`` module on Linux has no ``AF_SYSTEM`` constants, so the structs are packed here with
``struct``: the packing, the framing and the name rules are pure functions tested on any machine, and the
socket calls are a thin shell (``open_control``) that a test replaces with a fake.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import socket
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from tether.helper.root.oscommand import CommandFailed, CommandRunner, run_command
from tether.helper.root.vif.device import DEFAULT_MTU, DEFAULT_NAME, TunDevice, TunError, validate_mtu

if TYPE_CHECKING:
    from tether.helper.root.journal import Journal

__all__ = [
    "AF_INET6_DARWIN",
    "ControlSocket",
    "TunDarwin",
    "UtunSocket",
    "add_af_header",
    "ctl_info",
    "parse_ctl_id",
    "parse_ifname",
    "sockaddr_ctl",
    "strip_af_header",
    "unit_for_name",
]

PF_SYSTEM = 32
AF_SYS_CONTROL = 2
SYSPROTO_CONTROL = 2
UTUN_CONTROL_NAME = "com.apple.net.utun_control"
UTUN_OPT_IFNAME = 2
MAX_KCTL_NAME = 96
IFNAMSIZ = 16
AF_INET_DARWIN = 2
AF_INET6_DARWIN = 30

# struct ctl_info { u_int32_t ctl_id; char ctl_name[MAX_KCTL_NAME]; }
CTL_INFO = struct.Struct(f"=I{MAX_KCTL_NAME}s")
# _IOWR('N', 3, struct ctl_info): in/out, the struct's size, group 'N', number 3.
CTLIOCGINFO = 0xC0000000 | (CTL_INFO.size << 16) | (ord("N") << 8) | 3
# struct sockaddr_ctl { u_char sc_len; u_char sc_family; u_int16_t ss_sysaddr; u_int32_t sc_id;
#                       u_int32_t sc_unit; u_int32_t sc_reserved[5]; }
SOCKADDR_CTL = struct.Struct("=BBHII20x")
AF_HEADER = struct.Struct("!I")
AF_HEADER_LEN = AF_HEADER.size
READ_SIZE = 65536 + AF_HEADER_LEN

_FAMILY_OF_VERSION = {4: AF_INET_DARWIN, 6: AF_INET6_DARWIN}
_HEADERS = {version: AF_HEADER.pack(family) for version, family in _FAMILY_OF_VERSION.items()}
_KNOWN_FAMILIES = frozenset(_FAMILY_OF_VERSION.values())
_UTUN_RE = re.compile(r"^utun(\d{1,5})$")


# --- pure parts --------------------------------------------------------------------------------------


def ctl_info(name: str = UTUN_CONTROL_NAME) -> bytes:
    """The ``struct ctl_info`` CTLIOCGINFO takes: an id of 0 and the control's name."""
    encoded = name.encode()
    if not encoded or len(encoded) >= MAX_KCTL_NAME:
        raise ValueError(f"invalid kernel control name {name!r}")
    return CTL_INFO.pack(0, encoded)


def parse_ctl_id(answer: bytes) -> int:
    """The control id the kernel filled into a ``struct ctl_info``."""
    if len(answer) < CTL_INFO.size:
        raise TunError(f"CTLIOCGINFO returned {len(answer)} bytes, expected {CTL_INFO.size}")
    ctl_id, _name = CTL_INFO.unpack_from(answer)
    if ctl_id == 0:
        raise TunError(f"the kernel has no control named {UTUN_CONTROL_NAME}")
    return ctl_id


def sockaddr_ctl(ctl_id: int, unit: int) -> bytes:
    """The ``struct sockaddr_ctl`` to connect to: unit N+1 makes utunN, 0 the next free one."""
    if not 0 <= unit < 2**32:
        raise ValueError(f"invalid utun unit {unit}")
    return SOCKADDR_CTL.pack(SOCKADDR_CTL.size, PF_SYSTEM, AF_SYS_CONTROL, ctl_id, unit)


def unit_for_name(name: str) -> int:
    """The ``sc_unit`` for a requested device name (see the module docstring)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"invalid device name {name!r}: empty")
    if "%d" in name:
        return 0
    match = _UTUN_RE.match(name)
    if match is None:
        raise ValueError(f"invalid device name {name!r}: macOS TUN devices are named utunN (or use %d for any)")
    return int(match.group(1)) + 1


def parse_ifname(raw: bytes) -> str:
    """The interface name from UTUN_OPT_IFNAME (a NUL-terminated C string)."""
    name = raw.split(b"\0", 1)[0].decode("ascii", "replace")
    if _UTUN_RE.match(name) is None:
        raise TunError(f"the kernel named the device {name!r}, not utunN")
    return name


def add_af_header(packet: bytes | bytearray | memoryview) -> bytes:
    """The packet as the utun socket takes it: its address family (from the IP version nibble) in front."""
    view = memoryview(packet)
    version = view[0] >> 4 if len(view) else 0
    header = _HEADERS.get(version)
    if header is None:
        raise TunError(f"not an IP packet (version {version}); cannot write it to a utun device")
    return header + view.tobytes()


def strip_af_header(frame: bytes) -> bytes | None:
    """The IP packet in a frame read from the utun socket; None for a frame of an unknown family."""
    if len(frame) <= AF_HEADER_LEN:
        return None
    (family,) = AF_HEADER.unpack_from(frame)
    if family not in _KNOWN_FAMILIES:
        return None
    return frame[AF_HEADER_LEN:]


# --- the I/O shell -----------------------------------------------------------------------------------


class ControlSocket(Protocol):
    """What TunDarwin needs of the connected utun control socket (a real one, or a test's fake)."""

    name: str

    def fileno(self) -> int: ...

    def recv(self, size: int) -> bytes: ...

    def send(self, data: bytes) -> int: ...

    def close(self) -> None: ...


class UtunSocket:
    """A connected control socket and the interface name the kernel gave it."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self._sock = sock
        self.name = name

    def fileno(self) -> int:
        return self._sock.fileno()

    def recv(self, size: int) -> bytes:
        return self._sock.recv(size)

    def send(self, data: bytes) -> int:
        return self._sock.send(data)

    def close(self) -> None:
        self._sock.close()


def open_control(unit: int) -> ControlSocket:
    """Create utun(unit-1), or the next free one for unit 0, as the module docstring says."""
    sock = socket.socket(PF_SYSTEM, socket.SOCK_DGRAM, SYSPROTO_CONTROL)
    try:
        answer = fcntl.ioctl(sock.fileno(), CTLIOCGINFO, ctl_info())
        address = sockaddr_ctl(parse_ctl_id(answer), unit)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.connect(sock.fileno(), address, len(address)) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        name = parse_ifname(sock.getsockopt(SYSPROTO_CONTROL, UTUN_OPT_IFNAME, IFNAMSIZ))
        sock.setblocking(False)
        sock.set_inheritable(False)
    except BaseException:
        sock.close()
        raise
    return UtunSocket(sock, name)


class TunDarwin(TunDevice):
    """A utun device on macOS (see the module docstring). Needs root."""

    def __init__(
        self,
        name: str = DEFAULT_NAME,
        *,
        mtu: int = DEFAULT_MTU,
        journal: Journal | None = None,
        run: CommandRunner | None = None,
        opener: Callable[[int], ControlSocket] | None = None,
    ) -> None:
        unit = unit_for_name(name)
        self.mtu = validate_mtu(mtu)
        self._run = run or run_command
        self._closed = False
        # The utun goes away with its socket, so there is nothing for crash cleanup to record.
        del journal
        try:
            self._sock = (opener or open_control)(unit)
        except OSError as exc:
            code = exc.errno or 0
            reason = "the device is in use" if code == errno.EBUSY else (exc.strerror or str(exc))
            raise TunError(code, f"cannot create TUN device {name}: {reason}") from exc
        self.name = self._sock.name
        try:
            self._run(["ifconfig", self.name, "mtu", str(self.mtu), "up"])
        except CommandFailed as exc:
            self._sock.close()
            self._closed = True
            raise TunError(f"cannot configure TUN device {self.name}: {exc}") from exc

    def fileno(self) -> int:
        return self._sock.fileno()

    def read(self) -> bytes | None:
        while True:
            try:
                frame = self._sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return None
            packet = strip_af_header(frame)
            if packet is not None:
                return packet
            # A frame of another family (none is expected): skip it rather than hand on garbage.

    def write(self, packet: bytes | bytearray | memoryview) -> bool:
        if len(packet) > self.mtu:
            raise TunError(f"{self.name}: packet of {len(packet)} bytes exceeds the MTU {self.mtu}")
        try:
            self._sock.send(add_af_header(packet))
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:  # the interface queue is full: a drop, as on a busy link
                return False
            raise
        return True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._sock.close()

    @property
    def closed(self) -> bool:
        return self._closed
