"""Which event loop Tether's processes run on."""

from __future__ import annotations

import asyncio
import sys

import uvloop

from tether.runtime import eventloop


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_uvloop_where_installed(monkeypatch):
    monkeypatch.delenv("TETHER_EVENT_LOOP", raising=False)
    assert issubclass(eventloop.run(_loop_type()), uvloop.Loop)


def test_the_standard_loop_on_request(monkeypatch):
    monkeypatch.setenv("TETHER_EVENT_LOOP", "asyncio")
    loop_type = eventloop.run(_loop_type())
    assert not issubclass(loop_type, uvloop.Loop) and issubclass(loop_type, asyncio.BaseEventLoop)


def test_the_standard_loop_without_uvloop(monkeypatch):
    monkeypatch.delenv("TETHER_EVENT_LOOP", raising=False)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as if it were not installed
    assert not issubclass(eventloop.run(_loop_type()), uvloop.Loop)
