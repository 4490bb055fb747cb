"""Fixtures for the helper API tests: a HelperServer with a FakeSession in a background thread."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from api_support import ServerThread, options_for, short_tmp

from tests.doubles.fake_session import FakeSession


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    base = short_tmp()
    yield base / "run"
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def helper(socket_dir: Path) -> Iterator[ServerThread]:
    thread = ServerThread(FakeSession(), options_for(socket_dir)).start()
    yield thread
    thread.stop()
