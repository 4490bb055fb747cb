"""probe_host: the files of a host laid out under a temporary root, and a real (private) D-Bus daemon on which
test services own resolved's and NetworkManager's names and answer their properties."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import pytest
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusSignature
from dbus_fast.service import PropertyAccess, ServiceInterface, dbus_property

from tether.helper.root.dns.resolvers.choose import Mode, Probes, decide
from tether.helper.root.dns.resolvers.probe import (
    bus_facts,
    networkmanager_configured_dns,
    probe_host,
    wsl_generates_resolv_conf,
)

DBusString = Annotated[str, DBusSignature("s")]
STUB = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n"


class ResolvedManager(ServiceInterface):
    def __init__(self, mode: str) -> None:
        super().__init__("org.freedesktop.resolve1.Manager")
        self._mode = mode

    @dbus_property(access=PropertyAccess.READ)
    def ResolvConfMode(self) -> DBusString:
        return self._mode


class DnsManager(ServiceInterface):
    def __init__(self, mode: str) -> None:
        super().__init__("org.freedesktop.NetworkManager.DnsManager")
        self._mode = mode

    @dbus_property(access=PropertyAccess.READ)
    def Mode(self) -> DBusString:
        return self._mode


@pytest.fixture
def bus_address(tmp_path: Path) -> Iterator[str]:
    """A private bus daemon on a socket path (the session configuration lets anyone own any name)."""
    daemon = shutil.which("dbus-daemon")
    if daemon is None:
        pytest.fail("dbus-daemon is missing: make deps installs it (apt dbus-daemon)")
    address = f"unix:path={tmp_path / 'bus'}"
    # It prints the address once it listens (the socket file exists a moment earlier, refusing connections).
    argv = [daemon, "--session", "--nofork", "--nopidfile", "--address", address, "--print-address"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith(address), f"dbus-daemon did not start ({proc.poll()})"
        yield address
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


async def serve(address: str, name: str, path: str, interface: ServiceInterface) -> MessageBus:
    bus = await MessageBus(bus_address=address).connect()
    bus.export(path, interface)
    await bus.request_name(name)
    return bus


def host(root: Path, files: dict[str, str], links: dict[str, str] | None = None) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    for name, target in (links or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, root / name)
    return root


def test_ubuntu_like_host_on_a_real_bus(tmp_path, bus_address):
    """resolved's stub file linked from /etc, resolved and NetworkManager owning their names on the bus."""
    root = host(
        tmp_path / "root",
        {"run/systemd/resolve/stub-resolv.conf": STUB, "etc/NetworkManager/NetworkManager.conf": "[main]\n"},
        {"etc/resolv.conf": "../run/systemd/resolve/stub-resolv.conf"},
    )

    async def scenario() -> Probes:
        resolved = await serve(
            bus_address, "org.freedesktop.resolve1", "/org/freedesktop/resolve1", ResolvedManager("stub")
        )
        nm = await serve(
            bus_address,
            "org.freedesktop.NetworkManager",
            "/org/freedesktop/NetworkManager/DnsManager",
            DnsManager("systemd-resolved"),
        )
        try:
            return await probe_host(root, "linux", bus_address)
        finally:
            resolved.disconnect()
            nm.disconnect()

    probes = asyncio.run(scenario())
    assert probes == Probes(
        "linux",
        STUB,
        resolved_on_bus=True,
        resolv_conf_link="../run/systemd/resolve/stub-resolv.conf",
        resolved_resolv_conf_mode="stub",
        networkmanager_dns="systemd-resolved",
        networkmanager_on_bus=True,
    )
    assert decide(probes).mode is Mode.SYSTEMD_RESOLVED


def test_an_empty_bus_leaves_the_configured_networkmanager_mode(tmp_path, bus_address):
    root = host(
        tmp_path / "root",
        {
            "etc/resolv.conf": "nameserver 127.0.0.1\n",
            "etc/NetworkManager/NetworkManager.conf": "[main]\nplugins=ifupdown,keyfile\n",
            "etc/NetworkManager/conf.d/dns.conf": "[main]\ndns=dnsmasq\n",
        },
    )
    probes = asyncio.run(probe_host(root, "linux", bus_address))
    assert probes == Probes("linux", "nameserver 127.0.0.1\n", networkmanager_dns="dnsmasq")
    assert decide(probes).mode is Mode.LINUX_NFT


def test_no_bus_is_a_probe_value_not_a_failure(tmp_path):
    root = host(tmp_path / "root", {"etc/resolv.conf": STUB})
    probes = asyncio.run(probe_host(root, "linux", f"unix:path={tmp_path / 'nobody'}"))
    assert probes.resolved_on_bus is False
    assert probes.bus_error.startswith("no system bus: ")
    assert dict(probes.summary())["system bus"] == probes.bus_error


def test_a_resolved_without_the_property_still_counts(tmp_path, bus_address):
    """Older systemd has no ResolvConfMode: the name on the bus is what matters."""

    class Bare(ServiceInterface):
        def __init__(self) -> None:
            super().__init__("org.freedesktop.resolve1.Manager")

    async def scenario() -> tuple[bool, str, str]:
        resolved = await serve(bus_address, "org.freedesktop.resolve1", "/org/freedesktop/resolve1", Bare())
        try:
            facts = await bus_facts(bus_address)
        finally:
            resolved.disconnect()
        return facts.resolved_on_bus, facts.resolved_resolv_conf_mode, facts.error

    assert asyncio.run(scenario()) == (True, "", "")


def test_wsl_is_read_from_proc_version_and_wsl_conf(tmp_path, bus_address):
    version = "Linux version 5.15.167.4-microsoft-standard-WSL2 (root@f9c826d3017f) (gcc (GCC) 11.2.0) #1 SMP\n"
    root = host(tmp_path / "root", {"etc/resolv.conf": "nameserver 10.255.255.254\n", "proc/version": version})
    probes = asyncio.run(probe_host(root, "linux", bus_address))
    assert (probes.wsl, probes.wsl_generates_resolv_conf) == (True, True)
    (root / "etc/wsl.conf").write_text("[boot]\nsystemd=true\n[network]\ngenerateResolvConf = false\n")
    assert wsl_generates_resolv_conf(root) is False
    (root / "proc/version").write_text("Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org)\n")
    assert asyncio.run(probe_host(root, "linux", bus_address)).wsl is False


def test_other_platforms_read_only_files(tmp_path):
    assert asyncio.run(probe_host(tmp_path, "darwin", "unix:path=/nonexistent")) == Probes("darwin")


@pytest.mark.parametrize(
    ("files", "dns"),
    [
        ({}, ""),
        ({"etc/NetworkManager/NetworkManager.conf": "[main]\nplugins=keyfile\n"}, "default"),
        ({"etc/NetworkManager/NetworkManager.conf": "[main]\ndns=none\n"}, "none"),
        (
            {
                "usr/lib/NetworkManager/conf.d/20-dns.conf": "[main]\ndns=systemd-resolved\n",
                "etc/NetworkManager/NetworkManager.conf": "[main]\ndns=default\n",
            },
            "default",  # the main file is read after /usr/lib's snippets
        ),
        (
            {
                "etc/NetworkManager/NetworkManager.conf": "[main]\ndns=default\n",
                "etc/NetworkManager/conf.d/00-a.conf": "[main]\ndns=dnsmasq\n",
                "etc/NetworkManager/conf.d/10-b.conf": "[logging]\nlevel=INFO\n",
            },
            "dnsmasq",  # /etc's snippets after the main file; one without dns= changes nothing
        ),
        (
            {
                "run/NetworkManager/conf.d/dns.conf": "[main]\ndns=dnsmasq\n",
                "etc/NetworkManager/conf.d/dns.conf": "# hides /run's file of the same name\n",
            },
            "default",
        ),
        ({"etc/NetworkManager/NetworkManager.conf": "not an ini file ["}, "default"),
    ],
)
def test_networkmanager_configured_dns(tmp_path, files, dns):
    assert networkmanager_configured_dns(host(tmp_path, files)) == dns
