"""Where the helper listens, per platform, and the environment override."""

from __future__ import annotations

from pathlib import Path

from tether.helper.api.paths import auth_socket_for, default_socket, platform_socket


def test_socket_path_per_platform():
    assert platform_socket("linux") == Path("/run/tether/helper.sock")
    assert platform_socket("darwin") == Path("/var/run/tether/helper.sock")
    assert platform_socket("freebsd14") == Path("/run/tether/helper.sock")
    assert len(str(platform_socket("darwin"))) < 104  # macOS's sun_path


def test_environment_overrides_and_auth_socket_beside_it():
    assert default_socket({"TETHER_HELPER_SOCKET": "/tmp/t/h.sock"}) == Path("/tmp/t/h.sock")
    assert default_socket({}) == platform_socket()
    assert auth_socket_for(Path("/var/run/tether/helper.sock")) == Path("/var/run/tether/helper-auth.sock")


def test_runtime_directory_per_platform():
    from pathlib import PureWindowsPath

    from tether.helper.api.paths import runtime_dir

    assert runtime_dir("linux") == Path("/run/tether")
    assert runtime_dir("darwin") == Path("/var/run/tether")
    assert PureWindowsPath(runtime_dir("win32", {})) == PureWindowsPath(r"C:\ProgramData\Tether")
    assert PureWindowsPath(runtime_dir("win32", {"ProgramData": r"D:\Data"})) == PureWindowsPath(r"D:\Data\Tether")
    assert PureWindowsPath(platform_socket("win32")).parent == PureWindowsPath(r"C:\ProgramData\Tether")
