"""pytest-qt tests of the tray app: offscreen Qt, no display and no tray host needed."""

import os
import shutil

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from test_gui_support import FakeHelper, short_dir


@pytest.fixture
def work():
    """A private directory with a short path (for unix sockets), removed afterwards."""
    base = short_dir()
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def helper(work):
    """A fake helper: the real API server with a stand-in session, on a socket under ``work``."""
    fake = FakeHelper(work / "run" / "helper.sock").start()
    yield fake
    fake.stop()
