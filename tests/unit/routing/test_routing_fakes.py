"""The fakes callers test against (FakeTun, FakeRouteApplier) and the per-platform tables."""

from __future__ import annotations

import asyncio
import queue

import pytest

from tests.doubles.fake_routing import FakeRouteApplier
from tests.doubles.fake_tun import FakeTun
from tether.helper.root.routing.apply import RouteError, UnsupportedPlatform, open_applier
from tether.helper.root.routing.table import EMPTY_PLAN, compute_plan
from tether.helper.root.vif.device import TunError, open_tun, platform_key
from tether.helper.root.vif.device import UnsupportedPlatform as TunUnsupported


def test_fake_tun_round_trip():
    dev = FakeTun(mtu=1500)
    assert dev.read() is None
    dev.inject(b"\x45one")
    dev.inject(b"\x45two")
    assert dev.read_batch(10) == [b"\x45one", b"\x45two"]
    assert dev.read() is None
    assert dev.write(b"\x45out")
    assert dev.take_written(timeout=1) == b"\x45out"
    with pytest.raises(queue.Empty):
        dev.take_written(timeout=0.01)
    dev.writable = False
    assert not dev.write(b"x")
    dev.writable = True
    with pytest.raises(TunError, match="exceeds the MTU"):
        dev.write(b"x" * 1501)
    dev.close()
    dev.close()
    assert dev.closed
    with pytest.raises(TunError, match="closed"):
        dev.read()


def test_fake_tun_works_with_add_reader():
    async def main() -> list[bytes]:
        loop = asyncio.get_running_loop()
        dev = FakeTun()
        got: list[bytes] = []
        done = asyncio.Event()

        def readable() -> None:
            got.extend(dev.read_batch())
            if len(got) >= 3:
                done.set()

        loop.add_reader(dev.fileno(), readable)
        try:
            for i in range(3):
                loop.call_later(0.01 * i, dev.inject, bytes([0x45, i]))
            await asyncio.wait_for(done.wait(), 5)
            # Drained: the descriptor is no longer readable.
            await asyncio.sleep(0.05)
            assert dev.read() is None
        finally:
            loop.remove_reader(dev.fileno())
            dev.close()
        return got

    assert asyncio.run(main()) == [b"\x45\x00", b"\x45\x01", b"\x45\x02"]


def test_platform_keys():
    assert platform_key("linux") == "linux"
    assert platform_key("win32") == "windows"
    assert platform_key("darwin") == "darwin"
    with pytest.raises(TunUnsupported, match="sunos5"):
        open_tun(platform="sunos5")


@pytest.mark.parametrize("platform", ["freebsd14"])
def test_applier_platform_table(platform):
    with pytest.raises(UnsupportedPlatform):
        open_applier("tether0", platform=platform)


def test_fake_applier_incremental_and_all_or_nothing():
    applier = FakeRouteApplier(foreign=["10.50.0.0/16"])
    first = compute_plan(service_subnets=["10.43.0.0/16"], pod_subnets=["10.42.0.0/16"])
    added, removed = applier.apply(first)
    assert added == first and removed == EMPTY_PLAN
    second = compute_plan(service_subnets=["10.43.0.0/16"], pod_subnets=["10.44.0.0/16"])
    added, removed = applier.apply(second)
    assert [str(r) for r in added.routes] == ["10.44.0.0/16"]
    assert [str(r) for r in removed.routes] == ["10.42.0.0/16"]
    with pytest.raises(RouteError, match=r"10\.50\.0\.0/16") as info:
        applier.apply(compute_plan(service_subnets=["10.43.0.0/16"], pod_subnets=["10.50.0.0/16"]))
    assert info.value.existing
    assert applier.applied == second
    added, removed = applier.clear()
    assert removed == second and applier.applied == EMPTY_PLAN
    assert len(applier.calls) == 4 and len(applier.history) == 3


def test_fake_applier_async():
    applier = FakeRouteApplier()
    plan = compute_plan(service_subnets=["10.43.0.0/16"])
    asyncio.run(applier.apply_async(plan))
    assert applier.applied == plan
    asyncio.run(applier.clear_async())
    assert applier.applied == EMPTY_PLAN
