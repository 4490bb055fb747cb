"""The macOS utun device: struct packing, address-family framing and names (pure), and the device over a fake socket."""

from __future__ import annotations

import errno
import struct

import pytest

from tests.doubles.fake_commands import FakeCommands
from tests.doubles.fake_utun import FakeUtunOpener
from tether.helper.root.vif import tun_darwin
from tether.helper.root.vif.device import PLATFORMS, TunError, open_tun
from tether.helper.root.vif.tun_darwin import TunDarwin

IPV4 = bytes([0x45]) + bytes(19)
IPV6 = bytes([0x60]) + bytes(39)


def test_ctliocginfo_is_the_macos_value():
    # _IOWR('N', 3, struct ctl_info) with sizeof(struct ctl_info) == 100, as <sys/kern_control.h> defines it.
    assert tun_darwin.CTL_INFO.size == 100
    assert tun_darwin.CTLIOCGINFO == 0xC0644E03


def test_ctl_info_carries_the_utun_control_name():
    packed = tun_darwin.ctl_info()
    assert len(packed) == 100
    assert packed[:4] == b"\0\0\0\0"
    assert packed[4:].rstrip(b"\0") == b"com.apple.net.utun_control"
    with pytest.raises(ValueError, match=r"x{96}"):
        tun_darwin.ctl_info("x" * 96)


def test_parse_ctl_id():
    assert tun_darwin.parse_ctl_id(struct.pack("=I96s", 7, b"com.apple.net.utun_control")) == 7
    with pytest.raises(TunError, match="no control named"):
        tun_darwin.parse_ctl_id(bytes(100))
    with pytest.raises(TunError, match="expected 100"):
        tun_darwin.parse_ctl_id(bytes(8))


def test_sockaddr_ctl_layout():
    packed = tun_darwin.sockaddr_ctl(ctl_id=7, unit=5)
    assert len(packed) == 32
    sc_len, family, sysaddr, ctl_id, unit = struct.unpack_from("=BBHII", packed)
    assert (sc_len, family, sysaddr, ctl_id, unit) == (32, 32, 2, 7, 5)
    assert packed[12:] == bytes(20)
    with pytest.raises(ValueError, match="-1"):
        tun_darwin.sockaddr_ctl(7, -1)


@pytest.mark.parametrize(
    ("name", "unit"), [("tether%d", 0), ("utun%d", 0), ("utun0", 1), ("utun9", 10), ("utun123", 124)]
)
def test_unit_for_name(name, unit):
    assert tun_darwin.unit_for_name(name) == unit


@pytest.mark.parametrize("name", ["", "tether0", "utun", "utunx", "en0", "utun-1"])
def test_unit_for_name_refuses_other_names(name):
    with pytest.raises(ValueError, match=repr(name)):
        tun_darwin.unit_for_name(name)


def test_parse_ifname():
    assert tun_darwin.parse_ifname(b"utun4\0\0\0\0\0\0\0\0\0\0\0") == "utun4"
    assert tun_darwin.parse_ifname(b"utun12") == "utun12"
    with pytest.raises(TunError, match="'en0'"):
        tun_darwin.parse_ifname(b"en0\0")


def test_af_header_framing_both_ways():
    assert tun_darwin.add_af_header(IPV4) == b"\0\0\0\x02" + IPV4
    assert tun_darwin.add_af_header(memoryview(IPV6)) == b"\0\0\0\x1e" + IPV6
    assert tun_darwin.strip_af_header(b"\0\0\0\x02" + IPV4) == IPV4
    assert tun_darwin.strip_af_header(b"\0\0\0\x1e" + IPV6) == IPV6
    assert tun_darwin.strip_af_header(b"\0\0\0\x07" + IPV4) is None  # an unknown family
    assert tun_darwin.strip_af_header(b"\0\0\0\x02") is None  # no packet behind the header
    with pytest.raises(TunError, match="version 0"):
        tun_darwin.add_af_header(bytes(20))


def test_device_reads_and_writes_whole_ip_packets():
    opener, run = FakeUtunOpener(), FakeCommands()
    with TunDarwin("utun%d", mtu=1500, run=run, opener=opener) as dev:
        kernel = opener.sockets[0].kernel
        assert opener.sockets[0].unit == 0
        assert dev.name == "utun7"
        assert run.commands == [["ifconfig", "utun7", "mtu", "1500", "up"]]
        assert dev.read() is None  # nothing waiting: never blocks
        kernel.send(b"\0\0\0\x02" + IPV4)
        kernel.send(b"\0\0\0\x09junk")  # skipped, not handed on
        kernel.send(b"\0\0\0\x1e" + IPV6)
        assert dev.read_batch() == [IPV4, IPV6]
        assert dev.write(IPV6) is True
        assert kernel.recv(2000) == b"\0\0\0\x1e" + IPV6
        with pytest.raises(TunError, match="exceeds the MTU 1500"):
            dev.write(bytes([0x45]) + bytes(1500))
    assert dev.closed and opener.sockets[0].closed


def test_an_exact_name_asks_for_its_unit():
    opener = FakeUtunOpener()
    TunDarwin("utun3", run=FakeCommands(), opener=opener).close()
    assert opener.sockets[0].unit == 4


def test_a_busy_unit_is_named_in_the_error():
    with pytest.raises(TunError, match="utun3: the device is in use"):
        TunDarwin("utun3", run=FakeCommands(), opener=FakeUtunOpener(OSError(errno.EBUSY, "Resource busy")))


def test_failed_configuration_closes_the_socket():
    opener = FakeUtunOpener()
    run = FakeCommands(fail={("ifconfig",): "ifconfig: ioctl (SIOCSIFMTU): Invalid argument"})
    with pytest.raises(TunError, match="SIOCSIFMTU"):
        TunDarwin(mtu=1500, run=run, opener=opener)
    assert opener.sockets[0].closed


def test_darwin_row_of_the_platform_table(monkeypatch):
    opener = FakeUtunOpener()
    monkeypatch.setattr(tun_darwin, "open_control", opener)
    monkeypatch.setattr(tun_darwin, "run_command", FakeCommands())
    dev = open_tun(mtu=1500, platform="darwin")
    assert isinstance(dev, TunDarwin) and dev.name == "utun7"
    dev.close()
    assert "darwin" in PLATFORMS
