"""The engine's one timer, on both event loops Tether runs on (uvloop's call_at differs for past deadlines)."""

from __future__ import annotations

import asyncio

import pytest

from tests.doubles.fake_tun import FakeTun
from tether.helper.root.vif.engine import VifEngine
from tether.helper.root.vif.flowstream import DialFailure, Endpoint, FlowProtocol, FlowStream, StreamRefusedError
from tether.helper.root.vif.netstack import NetStackConfig
from tether.runtime import eventloop

pytestmark = pytest.mark.usefixtures("each_event_loop")


class _Stack:
    """Only what the engine's timer path asks of a netstack: a deadline, and a record of when it fired."""

    config = NetStackConfig(mtu=1500)

    def __init__(self) -> None:
        self.deadline: float | None = None
        self.fired: list[float] = []

    def next_deadline(self) -> float | None:
        return self.deadline

    def on_timer(self, now: float) -> None:
        self.fired.append(now)
        self.deadline = None

    def events(self) -> list[object]:
        return []

    def output(self, now: float) -> list[bytes]:
        return []

    def abort_all(self) -> None:
        pass


def _no_streams(protocol: FlowProtocol, source: Endpoint, destination: Endpoint) -> FlowStream:
    raise StreamRefusedError(DialFailure.UNREACHABLE, "these tests open no flows")


def _engine() -> tuple[VifEngine, _Stack, FakeTun]:
    stack = _Stack()
    tun = FakeTun(mtu=1500)
    return VifEngine(tun, stack, _no_streams), stack, tun  # type: ignore[arg-type]


def test_deadlines_already_past_fire_once():
    async def main() -> list[float]:
        engine, stack, tun = _engine()
        engine.start()
        loop = asyncio.get_running_loop()
        stack.deadline = loop.time() - 1.0
        engine.process_now()  # arms a timer for a moment already gone
        stack.deadline = loop.time() - 0.5
        engine.process_now()  # a later deadline while that one waits: it stays
        await asyncio.sleep(0.05)
        await engine.stop()
        tun.close()
        return stack.fired

    assert len(eventloop.run(main())) == 1


def test_an_earlier_deadline_replaces_the_armed_one():
    async def main() -> tuple[list[float], float]:
        engine, stack, tun = _engine()
        engine.start()
        loop = asyncio.get_running_loop()
        stack.deadline = loop.time() + 30.0
        engine.process_now()
        stack.deadline = soon = loop.time() + 0.01
        engine.process_now()
        await asyncio.sleep(0.2)
        await engine.stop()
        tun.close()
        return stack.fired, soon

    fired, soon = eventloop.run(main())
    # uvloop's clock counts whole milliseconds: the time it fires at can read a float rounding below the sum
    # that made the deadline (2870.912 for 2870.9120000000003), which is no firing early.
    assert len(fired) == 1 and soon - 1e-9 <= fired[0] < soon + 5.0
