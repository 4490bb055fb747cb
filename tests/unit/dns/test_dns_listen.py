"""Where the helper's DNS server listens, chosen by the resolver configurator (resolvers/base.listen_address)."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from tests.doubles.fake_powershell import FakePowerShell
from tether.helper.root.dns.resolvers.base import DEFAULT_LISTEN, ResolverError, ResolverSettings, listen_address
from tether.helper.root.dns.resolvers.choose import IMPLEMENTATIONS, RESOLVED_STUBS, Mode, implementation
from tether.helper.root.dns.resolvers.windows_nrpt import DNS_PORT, WindowsNrptConfigurator

EXPECTED = {
    Mode.LINUX_NFT: ("127.0.0.1", 0),
    Mode.SYSTEMD_RESOLVED: ("127.0.0.1", 0),
    Mode.MACOS_RESOLVER: ("127.0.0.1", 0),
    Mode.WINDOWS: ("127.84.69.53", 53),
}


def test_every_mode_has_its_listen_address():
    assert set(EXPECTED) == {mode for mode, cls in IMPLEMENTATIONS.items() if cls is not None}
    for mode, expected in EXPECTED.items():
        assert listen_address(implementation(mode)) == expected, mode
    assert listen_address(object()) == DEFAULT_LISTEN  # a configurator that says nothing keeps the default


def test_windows_listens_on_port_53_of_a_loopback_address_of_its_own():
    host, port = listen_address(WindowsNrptConfigurator)
    assert port == DNS_PORT == 53
    assert ipaddress.ip_address(host).is_loopback
    assert host not in ("127.0.0.1", *RESOLVED_STUBS)  # not where local DNS proxies or resolved's stub sit


def test_nrpt_accepts_its_own_listen_address_and_refuses_the_default():
    shell = FakePowerShell({"Get-DnsClientNrptRule": "[]", "Get-DnsClientGlobalSetting": '{"SuffixSearchList": []}'})
    conf = WindowsNrptConfigurator(shell)
    host, port = listen_address(conf)
    conf.apply(ResolverSettings(server=host, port=port, tun_name="tether0", routing_domains=("cluster.local",)))
    assert any("Add-DnsClientNrptRule" in s and "127.84.69.53" in s for s in shell.scripts)
    with pytest.raises(ResolverError, match="must listen on port 53, not 40000"):
        conf.apply(ResolverSettings(server="127.0.0.1", port=40000, tun_name="tether0"))


def test_the_windows_address_is_bindable_loopback():
    # Linux answers for all of 127.0.0.0/8 as Windows does; port 0 keeps the host's port 53 untouched.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((listen_address(WindowsNrptConfigurator)[0], 0))
        assert sock.getsockname()[0] == "127.84.69.53"
