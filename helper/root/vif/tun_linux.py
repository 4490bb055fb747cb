"""The Linux TUN device: /dev/net/tun with TUNSETIFF (IFF_TUN | IFF_NO_PI), configured over netlink.

* Name: ``tether%d`` by default, so the kernel picks the first free ``tetherN`` atomically. An exact
  name (no ``%d``) that already exists is refused: TUNSETIFF would otherwise attach to an existing
  device instead of creating one.
* The device is not persistent: when the last descriptor closes (the helper exits or crashes) the
  kernel deletes it, and every route through it, by itself. ``close()`` also deletes the link
  explicitly, in case a descriptor leaked into a child process.
* Ownership marker for crash cleanup: the name prefix ``tether`` plus the interface alias
  ``tether-helper pid=N start=T`` (see ``tether.helper.root.journal``).
* IPv6 address autoconfiguration is turned off on the device (no link-local address), so the kernel
  does not send router solicitations and MLD reports into it; addresses the plan assigns still work.
* The descriptor is non-blocking and close-on-exec; ``read`` returns None on EAGAIN.
* Checksum offload: the device is opened with IFF_VNET_HDR and TUNSETOFFLOAD(TUN_F_CSUM) when the kernel
  allows (``checksum_offload``), so every packet crosses the descriptor behind a 10-byte virtio_net_hdr.
  The kernel then hands over the packets it generates without summing their TCP/UDP payload (NEEDS_CSUM:
  the field holds the pseudo-header sum) and takes ours the same way: ``read_batch_offload`` returns each
  packet with whether its checksum is vouched for, ``write_partial`` writes a netstack packet built with
  ``partial_checksums`` as CHECKSUM_PARTIAL (delivered locally, it is never summed at all). The plain
  ``read``/``read_batch``/``write`` keep their meaning of whole IP packets with complete checksums (a
  partial checksum is completed for them), for callers that do not know about offload.

The device remembers the network namespace it was created in; later netlink operations (``close``,
addresses) run there even when called from a thread in another namespace, so a device made inside a
test namespace can never make us touch a same-named device elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import ipaddress
import os
import struct
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from tether.helper.root.journal import owner_mark, process_start_time
from tether.helper.root.vif.device import DEFAULT_BATCH, DEFAULT_MTU, DEFAULT_NAME, TunDevice, TunError, validate_mtu
from tether.helper.root.vif.netstack.checksum import checksum

if TYPE_CHECKING:
    from pyroute2 import IPRoute

    from tether.helper.root.journal import Journal

__all__ = ["NetnsPin", "TunLinux"]

TUN_PATH = "/dev/net/tun"
TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUN_F_CSUM = 0x01
# struct virtio_net_hdr (legacy, host byte order): flags, gso_type, hdr_len, gso_size, csum_start, csum_offset.
VNET_HDR = struct.Struct("=BBHHHH")
VNET_HDR_LEN = VNET_HDR.size
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_F_DATA_VALID = 2
VIRTIO_NET_HDR_GSO_NONE = 0
_VERIFIED = VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID
_PLAIN_HDR = bytes(VNET_HDR_LEN)
# Headers for our partial packets: IPv4 without options, IPv6 without extension headers (what the netstack emits).
_PARTIAL_HDRS = {
    (4, 6): VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 20, 16),
    (4, 17): VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 20, 6),
    (6, 6): VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 40, 16),
    (6, 17): VNET_HDR.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 40, 6),
}
IFNAMSIZ = 16
CLONE_NEWNET = 0x40000000
IN6_ADDR_GEN_MODE_NONE = 1
IFA_F_NODAD = 0x02
# The largest IP packet (the MTU is at most 65535); one read never returns more than one packet.
READ_SIZE = 65536

T = TypeVar("T")
_NOT_FOUND = (errno.ENODEV, errno.ENOENT, errno.EADDRNOTAVAIL, errno.ESRCH)


# --- network namespace pinning -------------------------------------------------------------------------

_libc: ctypes.CDLL | None = None


def _setns(fd: int) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _current_netns() -> tuple[int, int]:
    st = os.stat("/proc/thread-self/ns/net")
    return st.st_dev, st.st_ino


class NetnsPin:
    """The network namespace the calling thread is in now; ``call`` later runs code there.

    Keeps a descriptor of the namespace (so it stays valid) until ``close``.
    """

    def __init__(self) -> None:
        self._fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        st = os.fstat(self._fd)
        self._id = (st.st_dev, st.st_ino)

    def is_current(self) -> bool:
        return _current_netns() == self._id

    def call(self, fn: Callable[[], T]) -> T:
        """fn() in the pinned namespace, blocking until it is done.

        Runs directly when this thread is in that namespace and runs no event loop; otherwise on a
        short-lived helper thread (pyroute2's synchronous API cannot run inside a running loop).
        """
        if self._fd < 0:
            raise ValueError("network namespace pin is closed")
        if self.is_current() and not _loop_running():
            return fn()
        result: list[T] = []
        error: list[BaseException] = []

        def target() -> None:
            try:
                # Only this short-lived thread moves; it ends inside the namespace.
                if not self.is_current():
                    _setns(self._fd)
                result.append(fn())
            except BaseException as exc:
                error.append(exc)

        thread = threading.Thread(target=target, name="tether-netlink", daemon=True)
        thread.start()
        thread.join()
        if error:
            raise error[0]
        return result[0]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _iproute() -> IPRoute:
    from pyroute2 import IPRoute

    return IPRoute()


def _netlink_code(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    return exc.errno if isinstance(exc, OSError) else None


def _describe(exc: BaseException) -> str:
    code = _netlink_code(exc)
    if code:
        with contextlib.suppress(ValueError):
            return os.strerror(code)
    return str(exc)


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"invalid device name {name!r}: empty")
    if len(name.encode()) >= IFNAMSIZ:
        raise ValueError(f"invalid device name {name!r}: longer than {IFNAMSIZ - 1} bytes")
    if not name.isascii() or any(c in name for c in "/: \t\n") or name.count("%") > 1:
        raise ValueError(f"invalid device name {name!r}")
    if "%" in name and "%d" not in name:
        raise ValueError(f"invalid device name {name!r}: the only pattern allowed is %d")
    return name


def _complete(data: bytes) -> bytes:
    """The IP packet behind a virtio_net_hdr, its checksum completed if the kernel left it partial."""
    flags, _gso, _hdr_len, _gso_size, start, offset = VNET_HDR.unpack_from(data)
    packet = data[VNET_HDR_LEN:]
    if not flags & VIRTIO_NET_HDR_F_NEEDS_CSUM or start + offset + 2 > len(packet):
        return packet
    # The field holds the pseudo-header sum; the checksum covers everything from csum_start on.
    fixed = bytearray(packet)
    field = start + offset
    value = checksum(fixed[start:])
    if offset == 6 and not value:
        value = 0xFFFF  # UDP: a zero checksum would mean "none"
    fixed[field : field + 2] = value.to_bytes(2, "big")
    return bytes(fixed)


class TunLinux(TunDevice):
    """A TUN device on Linux (see the module docstring). Needs CAP_NET_ADMIN."""

    def __init__(
        self,
        name: str = DEFAULT_NAME,
        *,
        mtu: int = DEFAULT_MTU,
        addresses: Iterable[str | ipaddress.IPv4Interface | ipaddress.IPv6Interface] = (),
        journal: Journal | None = None,
        owner_pid: int | None = None,
    ) -> None:
        validate_name(name)
        self.mtu = validate_mtu(mtu)
        self._journal = journal
        self._closed = False
        self._fd = -1
        self._netns = NetnsPin()
        try:
            if "%d" not in name and self._with_ipr(lambda ipr: ipr.link_lookup(ifname=name)):
                raise TunError(errno.EEXIST, f"cannot create TUN device {name}: a device with that name exists")
            self._fd, self.name, self.checksum_offload = self._create(name)
            if journal is not None:
                journal.add_link(self.name)
            pid = os.getpid() if owner_pid is None else owner_pid
            self.alias = owner_mark(pid, process_start_time(pid))
            self.index = self._with_ipr(self._configure)
            for address in addresses:
                self.add_address(address)
        except BaseException:
            self._abort()
            raise

    @staticmethod
    def _create(name: str) -> tuple[int, str, bool]:
        try:
            fd = os.open(TUN_PATH, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise TunError(errno.ENOENT, f"cannot create TUN device {name}: {TUN_PATH} is missing") from None
        except PermissionError:
            raise TunError(errno.EPERM, f"cannot create TUN device {name}: no access to {TUN_PATH}") from None
        try:
            ifr = struct.pack(f"{IFNAMSIZ}sH", name.encode(), IFF_TUN | IFF_NO_PI | IFF_VNET_HDR)
            result = fcntl.ioctl(fd, TUNSETIFF, ifr)
        except OSError as exc:
            os.close(fd)
            if exc.errno == errno.EPERM:
                reason = "permission denied (needs root or CAP_NET_ADMIN)"
            elif exc.errno == errno.EBUSY:
                reason = "the name is in use"
            else:
                reason = exc.strerror or str(exc)
            raise TunError(exc.errno, f"cannot create TUN device {name}: {reason}") from None
        actual = result[:IFNAMSIZ].split(b"\0", 1)[0].decode()
        try:
            fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", VNET_HDR_LEN))
            fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM)
            offload = True
        except OSError:
            offload = False  # the header stays (the device has it from birth), all-zero: plain packets
        return fd, actual, offload

    def _configure(self, ipr: IPRoute) -> int:
        found = ipr.link_lookup(ifname=self.name)
        if not found:
            raise TunError(errno.ENODEV, f"TUN device {self.name} vanished right after it was created")
        index = found[0]
        step = "set its alias"
        try:
            ipr.link("set", index=index, IFLA_IFALIAS=self.alias)
            step = "turn off IPv6 autoconfiguration"
            with contextlib.suppress(Exception):  # IPv6 may be disabled on this host; then it does not matter
                ipr.link(
                    "set",
                    index=index,
                    IFLA_AF_SPEC={
                        "attrs": [("AF_INET6", {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", IN6_ADDR_GEN_MODE_NONE)]})]
                    },
                )
            step = f"set MTU {self.mtu}"
            ipr.link("set", index=index, mtu=self.mtu)
            step = "bring it up"
            ipr.link("set", index=index, state="up")
        except Exception as exc:
            raise TunError(_netlink_code(exc), f"TUN device {self.name}: cannot {step}: {_describe(exc)}") from exc
        return index

    def _address(self, ipr: IPRoute, command: str, address: Any) -> None:
        iface = ipaddress.ip_interface(address)
        kwargs: dict[str, Any] = {"index": self.index, "address": str(iface.ip), "prefixlen": iface.network.prefixlen}
        if iface.version == 6 and command == "add":
            kwargs["flags"] = IFA_F_NODAD  # usable at once; nobody else is on this link to clash with
        try:
            ipr.addr(command, **kwargs)
        except Exception as exc:
            code = _netlink_code(exc)
            if command == "add" and code == errno.EEXIST:
                return
            if command == "del" and code in _NOT_FOUND:
                return
            verb = "add" if command == "add" else "remove"
            raise TunError(code, f"TUN device {self.name}: cannot {verb} address {iface}: {_describe(exc)}") from exc

    # --- addresses (the route applier manages the plan's addresses; these are for direct use) -----

    def add_address(self, address: str | ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> None:
        self._check_open()
        self._with_ipr(lambda ipr: self._address(ipr, "add", address))

    def remove_address(self, address: str | ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> None:
        self._check_open()
        self._with_ipr(lambda ipr: self._address(ipr, "del", address))

    def _with_ipr(self, fn: Callable[[IPRoute], T]) -> T:
        def run() -> T:
            with _iproute() as ipr:
                return fn(ipr)

        return self._netns.call(run)

    # --- packets -----------------------------------------------------------------------------------

    def fileno(self) -> int:
        self._check_open()
        return self._fd

    def read(self) -> bytes | None:
        try:
            data = os.read(self._fd, VNET_HDR_LEN + READ_SIZE)
        except BlockingIOError:
            return None
        except OSError as exc:
            if self._closed:
                raise TunError(errno.EBADF, f"{self.name} is closed") from None
            raise TunError(exc.errno, f"reading from {self.name}: {exc.strerror}") from exc
        return _complete(data)

    def read_batch(self, max_packets: int = DEFAULT_BATCH) -> list[bytes]:
        return [_complete(data) for data in self._read_raw(max_packets)]

    def read_batch_offload(self, max_packets: int = DEFAULT_BATCH) -> list[tuple[memoryview, bool]]:
        """Up to ``max_packets`` packets, each with True when the kernel vouched for its TCP/UDP checksum
        (NEEDS_CSUM: never computed, the field holds the pseudo-header sum; DATA_VALID: checked)."""
        return [(memoryview(data)[VNET_HDR_LEN:], bool(data[0] & _VERIFIED)) for data in self._read_raw(max_packets)]

    def _read_raw(self, max_packets: int) -> list[bytes]:
        packets: list[bytes] = []
        read = os.read
        fd = self._fd
        size = VNET_HDR_LEN + READ_SIZE
        try:
            while len(packets) < max_packets:
                packets.append(read(fd, size))
        except BlockingIOError:
            pass
        except OSError as exc:
            if not packets:
                raise TunError(exc.errno, f"reading from {self.name}: {exc.strerror}") from exc
        return packets

    def write(self, packet: bytes | bytearray | memoryview) -> bool:
        """Write a whole packet whose checksums are complete."""
        return self._writev(_PLAIN_HDR, packet)

    def write_partial(self, packet: bytes | bytearray | memoryview) -> bool:
        """Write a packet of a netstack with ``partial_checksums``: TCP and UDP ones as CHECKSUM_PARTIAL."""
        version = packet[0] >> 4
        header = _PARTIAL_HDRS.get((version, packet[6] if version == 6 else packet[9]), _PLAIN_HDR)
        return self._writev(header, packet)

    def _writev(self, header: bytes, packet: bytes | bytearray | memoryview) -> bool:
        try:
            os.writev(self._fd, (header, packet))
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                return False
            if self._closed:
                raise TunError(errno.EBADF, f"{self.name} is closed") from None
            raise TunError(exc.errno, f"writing {len(packet)} bytes to {self.name}: {exc.strerror}") from exc
        return True

    # --- lifetime ------------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise TunError(errno.EBADF, f"{self.name} is closed")

    def _delete_link(self) -> None:
        def delete(ipr: IPRoute) -> None:
            for index in ipr.link_lookup(ifname=self.name):
                link = ipr.link("get", index=index)[0]
                # Only ever the device we made: same name, our alias (the kernel may reuse the name).
                if link.get("IFLA_IFALIAS") != self.alias:
                    continue
                try:
                    ipr.link("del", index=index)
                except Exception as exc:
                    if _netlink_code(exc) not in _NOT_FOUND:
                        raise

        self._with_ipr(delete)

    def _abort(self) -> None:
        """Undo a half-made device during __init__."""
        if self._fd >= 0:
            os.close(self._fd)  # not persistent: closing deletes the device
            self._fd = -1
        if getattr(self, "name", None) and self._journal is not None:
            with contextlib.suppress(Exception):
                self._journal.remove_link(self.name)
        self._closed = True
        self._netns.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        error: BaseException | None = None
        try:
            self._delete_link()
        except Exception as exc:
            error = exc
        os.close(self._fd)
        self._fd = -1
        self._netns.close()
        if error is None and self._journal is not None:
            self._journal.remove_link(self.name)
        if error is not None:
            code = _netlink_code(error)
            raise TunError(code, f"closing TUN device {self.name}: {_describe(error)}") from error
