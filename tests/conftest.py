"""Every test, and every process a test starts, gets its own user config directory: the CLI remembers
VPN-conflict resolutions there, and one test's choice must neither leak into another nor stay on the machine."""

import os
import shutil
import tempfile


def pytest_configure(config: object) -> None:
    directory = tempfile.mkdtemp(prefix="tether-test-config-")
    os.environ["XDG_CONFIG_HOME"] = directory
    os.environ["TETHER_TEST_CONFIG_DIR"] = directory


def pytest_unconfigure(config: object) -> None:
    directory = os.environ.pop("TETHER_TEST_CONFIG_DIR", "")
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
