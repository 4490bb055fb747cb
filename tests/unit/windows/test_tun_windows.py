"""The Windows TUN device over a fake Wintun: the socket bridge, names, MTU command, close, the table row."""

from __future__ import annotations

import asyncio
import select

import pytest

from tests.doubles.fake_powershell import FakePowerShell
from tests.doubles.fake_wintun import FakeWintunApi, FakeWintunSession
from tether.helper.root.journal import Journal
from tether.helper.root.vif.device import PLATFORMS, TunError, open_tun
from tether.helper.root.vif.tun_windows import PacketBridge, TunWindows, pick_name
from tether.helper.root.vif.wintun import FUNCTIONS, WintunError, ring_capacity


def readable(fd: int, timeout: float = 5.0) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def drain(bridge: PacketBridge, count: int) -> list[bytes]:
    got: list[bytes] = []
    while len(got) < count:
        assert readable(bridge.fileno()), f"the bridge never signalled after {got!r}"
        while (packet := bridge.read()) is not None:
            got.append(packet)
    return got


def test_the_function_table_names_every_export_the_device_uses():
    assert {
        "WintunCreateAdapter",
        "WintunOpenAdapter",
        "WintunCloseAdapter",
        "WintunGetAdapterLUID",
        "WintunStartSession",
        "WintunEndSession",
        "WintunGetReadWaitEvent",
        "WintunReceivePacket",
        "WintunReleaseReceivePacket",
        "WintunAllocateSendPacket",
        "WintunSendPacket",
    } <= set(FUNCTIONS)


@pytest.mark.parametrize("size", [0x10000, 0x8000000, 0x30000, True])
def test_ring_capacity_must_be_a_power_of_two_in_range(size):
    with pytest.raises(ValueError, match="ring capacity"):
        ring_capacity(size)


def test_ring_capacity_accepts_the_limits():
    assert ring_capacity(0x20000) == 0x20000 and ring_capacity(0x4000000) == 0x4000000


def test_the_bridge_hands_over_packets_in_order_and_signals_the_socket():
    session = FakeWintunSession()
    bridge = PacketBridge(session)
    bridge.start()
    try:
        assert not readable(bridge.fileno(), 0.05)
        session.deliver(b"one", b"two")
        assert drain(bridge, 2) == [b"one", b"two"]
        assert bridge.read() is None
        session.deliver(b"three")
        assert drain(bridge, 1) == [b"three"]
    finally:
        bridge.stop()


def test_a_partial_read_leaves_the_socket_readable():
    session = FakeWintunSession()
    bridge = PacketBridge(session)
    bridge.start()
    try:
        session.deliver(*(bytes([i]) for i in range(10)))
        assert readable(bridge.fileno())
        while len(bridge._queue) < 10:  # the thread has queued them all
            assert readable(bridge.fileno())
        assert [bridge.read() for _ in range(3)] == [b"\x00", b"\x01", b"\x02"]
        assert readable(bridge.fileno(), 0.05)  # seven are still waiting
    finally:
        bridge.stop()


def test_the_bridge_drops_beyond_its_queue_and_counts():
    session = FakeWintunSession()
    bridge = PacketBridge(session, max_queue=2)
    session.deliver(b"a", b"b", b"c", b"d")
    bridge.start()
    try:
        assert readable(bridge.fileno())
        while session.ring:
            session.event.wait(0.01)
        assert drain(bridge, 2) == [b"a", b"b"]
        assert bridge.dropped == 2
    finally:
        bridge.stop()


def test_a_failing_session_is_reported_by_read():
    session = FakeWintunSession()
    session.fail_with = OSError(6, "The handle is invalid")
    bridge = PacketBridge(session)
    bridge.start()
    try:
        assert readable(bridge.fileno())
        bridge._thread.join(5)
        with pytest.raises(TunError, match="handle is invalid"):
            bridge.read()
    finally:
        bridge.stop()


@pytest.mark.parametrize(
    ("pattern", "existing", "name"),
    [("tether%d", set(), "tether0"), ("tether%d", {"tether0", "tether1"}, "tether2"), ("mytun", set(), "mytun")],
)
def test_pick_name(pattern, existing, name):
    assert pick_name(pattern, existing.__contains__) == name


def test_pick_name_refuses_an_existing_exact_name_and_bad_patterns():
    with pytest.raises(TunError, match="exists"):
        pick_name("tether0", {"tether0"}.__contains__)
    for bad in ("", "a%sb", "a\nb", "x" * 200):
        with pytest.raises(ValueError, match="invalid adapter name"):
            pick_name(bad, lambda n: False)


def make(tmp_path, api: FakeWintunApi | None = None, shell: FakePowerShell | None = None):
    session = FakeWintunSession(send_capacity=2)
    api = api or FakeWintunApi({"tether0"})
    journal = Journal(tmp_path / "journal.json")
    dev = TunWindows(
        mtu=1500, journal=journal, api=api, shell=shell or FakePowerShell(), session_factory=lambda a, h: session
    )
    return dev, session, api, journal


def test_the_device_creates_a_free_adapter_sets_its_mtu_and_journals_it(tmp_path):
    shell = FakePowerShell()
    dev, _session, api, journal = make(tmp_path, shell=shell)
    try:
        assert dev.name == "tether1" and api.created == ["tether1"]
        assert shell.scripts == [
            "Set-NetIPInterface -InterfaceAlias 'tether1' -NlMtuBytes 1500 -PolicyStore 'ActiveStore'"
        ]
        assert journal.state.links == ("tether1",)
    finally:
        dev.close()
    assert api.closed == ["tether1"] and journal.state.links == ()
    assert "tether0" in api.existing  # somebody else's adapter, only opened to test the name


def test_the_device_reads_through_the_event_loop_and_writes_to_the_ring(tmp_path):
    dev, session, _api, _journal = make(tmp_path)

    async def receive() -> list[bytes]:
        loop = asyncio.get_running_loop()
        got: asyncio.Queue[bytes] = asyncio.Queue()
        loop.add_reader(dev.fileno(), lambda: [got.put_nowait(p) for p in dev.read_batch()])
        session.deliver(b"\x45packet")
        try:
            return [await asyncio.wait_for(got.get(), 5)]
        finally:
            loop.remove_reader(dev.fileno())

    try:
        assert asyncio.run(receive()) == [b"\x45packet"]
        assert dev.write_batch([b"a", b"b", b"c"]) == 2  # the send ring holds two
        assert session.sent == [b"a", b"b"]
    finally:
        dev.close()
    assert session.ended and dev.closed and not dev.write(b"x")


def test_a_failed_mtu_command_removes_the_adapter(tmp_path):
    api = FakeWintunApi()
    with pytest.raises(TunError, match="cannot set the MTU of tether0 to 1500"):
        make(tmp_path, api=api, shell=FakePowerShell(fail={"Set-NetIPInterface": "Access is denied"}))
    assert api.closed == ["tether0"]


def test_a_failed_create_names_the_adapter_and_the_cause(tmp_path):
    with pytest.raises(TunError, match=r"cannot create Wintun adapter tether0: .*Access is denied"):
        make(tmp_path, api=FakeWintunApi(fail_create=True))


def test_the_platform_table_gives_windows_the_wintun_device(tmp_path):
    dev = PLATFORMS["windows"](
        name="tether%d",
        mtu=1500,
        journal=None,
        api=FakeWintunApi(),
        shell=FakePowerShell(),
        session_factory=lambda a, h: FakeWintunSession(),
    )
    try:
        assert isinstance(dev, TunWindows)
    finally:
        dev.close()


def test_open_tun_for_windows_loads_wintun_only_on_windows():
    with pytest.raises(WintunError, match="only on Windows"):
        open_tun(platform="win32")
