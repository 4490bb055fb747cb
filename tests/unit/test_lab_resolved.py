"""The systemd-resolved lab variant's package fetching (tether.lab.resolved): its errors say what to do."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.lab import resolved
from tether.lab.runner import LabError

CACHE = Path("/var/cache/tether-lab-debs")


def test_a_download_without_package_lists_says_to_run_apt_get_update() -> None:
    stderr = "E: Can't select candidate version from package systemd-resolved as it has no candidate\n"
    message = resolved.download_error(CACHE, 100, stderr)
    assert "apt-get update" in message and "systemd-resolved libsystemd-shared" in message
    assert "has no candidate" in message and str(CACHE) in message
    assert "apt-get update" in resolved.download_error(CACHE, 100, "E: Unable to locate package systemd-resolved")


def test_an_unreachable_mirror_is_named_as_such() -> None:
    stderr = "E: Failed to fetch http://deb.debian.org/debian/pool/main/s/systemd/x.deb  Temporary failure resolving"
    message = resolved.download_error(CACHE, 100, stderr)
    assert "out of reach" in message and "apt-get update" not in message


def test_other_failures_are_quoted_without_a_guess() -> None:
    message = resolved.download_error(CACHE, 1, "E: something else")
    assert message.endswith(": E: something else") and "(1):" in message


def test_ldd_listing_names_the_libraries_not_found() -> None:
    listing = (
        "\tlinux-vdso.so.1 (0x00007f)\n"
        "\tlibsystemd-shared-252.so => /x/libsystemd-shared-252.so (0x00007f)\n"
        "\tlibkmod.so.2 => not found\n"
        "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n"
        "\tlibip4tc.so.2 => not found\n"
    )
    assert resolved.not_found(listing) == ["libkmod.so.2", "libip4tc.so.2"]
    assert resolved.not_found("\tlibc.so.6 => /lib/libc.so.6 (0x1)\n") == []


def test_missing_libraries_stop_the_variant_with_their_names(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(resolved, "missing_libraries", lambda root: ["libkmod.so.2"])
    with pytest.raises(LabError, match=r"cannot load libkmod\.so\.2: .*APT_PACKAGES"):
        resolved.check_libraries(tmp_path)
