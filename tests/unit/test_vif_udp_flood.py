"""A UDP flood into the VIF whose streams take nothing: what the engine holds stays within its budget.

Any local user can send datagrams to a routed address; before the budget, every datagram a stream could not
take at once (its dial unanswered, or no credit) was kept, and the helper grew by gigabytes. Here the streams
never answer their dial and never take a write, which is the worst case: everything would be held.
"""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Callable

import pytest

from tests.doubles.fake_tun import FakeTun
from tether.helper.root.vif import flowstream as fs
from tether.helper.root.vif.engine import VifEngine
from tether.helper.root.vif.netstack import NetStack, NetStackConfig
from tether.helper.root.vif.netstack.packets import build_udp
from tether.helper.root.vif.udpbudget import UdpQueueBudget, UdpQueueLimits
from tether.runtime import eventloop

APP, SVC = "10.1.0.2", "10.96.0.10"
PAYLOAD = 8000
MTU = 65000


class StalledStream:
    """A stream whose dial is never answered and which takes no write without waiting (forever)."""

    def __init__(self) -> None:
        self.never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_opened(self, callback: Callable[[], None]) -> None:
        pass

    async def opened(self) -> fs.Opened | fs.Refused:
        await self.never
        return fs.OPENED

    async def read(self) -> bytes | fs.StreamEvent:
        await self.never
        return fs.ENDED

    async def write(self, data: bytes) -> None:
        await self.never

    async def write_eof(self) -> None:
        await self.never

    def try_write(self, data: bytes) -> bool:
        return False

    def try_write_eof(self) -> bool:
        return False

    def set_sink(self, sink: Callable[[bytes], int]) -> None:
        pass

    def close(self) -> None:
        pass


async def _drain(tun: FakeTun) -> None:
    """Until the engine has read every injected packet."""
    while tun.inbound:
        await asyncio.sleep(0)


async def _flood(tun: FakeTun, packets: list[bytes], rounds: int) -> None:
    for _ in range(rounds):
        for packet in packets:
            tun.inject(packet)
        await _drain(tun)


def _held(engine: VifEngine) -> int:
    """Datagrams the engine's flows hold in their queues (read from the bridges themselves, not the budget)."""
    return sum(b.outbound.qsize() for b in engine._bridges.values() if b.outbound is not None)


def _run(flows: int, rounds: int, limits: UdpQueueLimits | None = None) -> dict[str, int]:
    figures: dict[str, int] = {}

    async def main() -> None:
        tun = FakeTun(mtu=MTU)
        engine = VifEngine(tun, NetStack(NetStackConfig(mtu=MTU)), lambda *_: StalledStream(), None, limits)
        engine.start()
        payload = b"x" * PAYLOAD
        packets = [build_udp(APP, SVC, 20000 + i, 53, payload) for i in range(flows)]
        try:
            tracemalloc.start()
            await _flood(tun, packets, max(1, rounds // 4))
            after_quarter, _ = tracemalloc.get_traced_memory()
            await _flood(tun, packets, rounds - max(1, rounds // 4))
            after_all, _ = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            figures.update(
                sent_bytes=flows * rounds * PAYLOAD,
                held_datagrams=_held(engine),
                held_budget=engine.udp_budget.held,
                growth_after_first_quarter=after_all - after_quarter,
                flows=engine.flow_count,
                **engine.udp_budget.counters,
            )
        finally:
            await engine.stop()
            tun.close()
        figures["held_after_stop"] = engine.udp_budget.held

    eventloop.run(main())
    return figures


@pytest.mark.usefixtures("each_event_loop")
def test_one_flow_flooded_holds_at_most_its_share():
    limits = UdpQueueLimits()
    figures = _run(flows=1, rounds=2000, limits=limits)  # 16 MB at one flow
    print(figures)
    share = min(limits.flow_datagrams, limits.flow_bytes // UdpQueueBudget.cost(PAYLOAD))
    assert figures["held_datagrams"] == share
    assert figures["udp_drop_flow_queue"] == 2000 - share
    assert figures["held_budget"] <= limits.flow_bytes
    assert figures["held_after_stop"] == 0


def test_many_flows_flooded_hold_at_most_the_total():
    limits = UdpQueueLimits(total_bytes=4 * 1024 * 1024)
    figures = _run(flows=400, rounds=40, limits=limits)  # 128 MB over 400 flows
    print(figures)
    assert figures["flows"] == 400
    assert figures["held_budget"] <= limits.total_bytes
    assert figures["held_datagrams"] * UdpQueueBudget.cost(PAYLOAD) == figures["held_budget"]
    assert figures["udp_drop_total_queue"] > 0
    # Flat: the last three quarters of the flood added (next to) nothing to what Python holds.
    assert figures["growth_after_first_quarter"] < 1024 * 1024
    assert figures["held_after_stop"] == 0


def test_datagrams_held_before_the_dial_answer_are_sent_and_given_back():
    budget_seen: list[int] = []

    async def main() -> None:
        tun = FakeTun(mtu=MTU)
        streams: list[tuple[asyncio.Future[fs.Opened | fs.Refused], list[bytes]]] = []

        class AnsweredStream(StalledStream):
            def __init__(self) -> None:
                super().__init__()
                self.answer: asyncio.Future[fs.Opened | fs.Refused] = asyncio.get_running_loop().create_future()
                self.sent: list[bytes] = []
                streams.append((self.answer, self.sent))

            async def opened(self) -> fs.Opened | fs.Refused:
                return await self.answer

            async def write(self, data: bytes) -> None:
                self.sent.append(data)

        engine = VifEngine(tun, NetStack(NetStackConfig(mtu=MTU)), lambda *_: AnsweredStream())
        engine.start()
        try:
            for i in range(5):
                tun.inject(build_udp(APP, SVC, 20000, 53, b"q%d" % i))
            await _drain(tun)
            budget_seen.append(engine.udp_budget.held)
            streams[0][0].set_result(fs.OPENED)
            for _ in range(100):
                if len(streams[0][1]) == 5:
                    break
                await asyncio.sleep(0.01)
            assert streams[0][1] == [b"q%d" % i for i in range(5)]
            budget_seen.append(engine.udp_budget.held)
        finally:
            await engine.stop()
            tun.close()

    eventloop.run(main())
    assert budget_seen == [5 * UdpQueueBudget.cost(2), 0]
