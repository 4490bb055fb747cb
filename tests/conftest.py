"""Every test, and every process a test starts, gets its own user config directory: the CLI remembers
VPN-conflict resolutions there, and one test's choice must neither leak into another nor stay on the machine."""

import os
import shutil
import tempfile

import pytest


def pytest_configure(config: object) -> None:
    directory = tempfile.mkdtemp(prefix="tether-test-config-")
    os.environ["XDG_CONFIG_HOME"] = directory
    os.environ["TETHER_TEST_CONFIG_DIR"] = directory


def pytest_unconfigure(config: object) -> None:
    directory = os.environ.pop("TETHER_TEST_CONFIG_DIR", "")
    if directory:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(params=["asyncio", "uvloop"])
def each_event_loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once per event loop Tether's processes may run on (``tether.runtime.eventloop.run``
    reads the choice): uvloop differs from asyncio in ways code can trip over (a first read before a
    pause in connection_made takes effect, call_at's handle for a deadline already past)."""
    monkeypatch.setenv("TETHER_EVENT_LOOP", request.param)
    return request.param
