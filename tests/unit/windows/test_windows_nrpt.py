"""The Windows resolver: NRPT rules owned by their comment, the search list, the upstream; exact commands."""

from __future__ import annotations

import ipaddress
import json

import pytest

from tests.doubles.fake_powershell import FakePowerShell
from tests.unit.windows.conftest import fixture
from tether.helper.root.dns.resolvers.base import ResolverConfigurator, ResolverError, ResolverSettings
from tether.helper.root.dns.resolvers.choose import Mode, Probes, choose, implementation
from tether.helper.root.dns.resolvers.windows_nrpt import WindowsNrptConfigurator
from tether.helper.root.powershell import Command, PowerShellError

MARK = "tether:tether-helper pid=7 start=1"
OURS = ["{0F6E7A2D-3C1B-4D8A-A2E4-6C9B1F3D5E22}", "{9A1C2B3D-4E5F-4A6B-8C7D-0E1F2A3B4C33}"]


def settings(
    port: int = 53, domains: tuple[str, ...] = ("cluster.local", "default."), search: str = ""
) -> ResolverSettings:
    return ResolverSettings(
        server=ipaddress.ip_address("127.0.0.1"),
        port=port,
        tun_name="tether0",
        routing_domains=domains,
        search_domain=search,
    )


class Host:
    """Global DNS settings that Set-DnsClientGlobalSetting changes."""

    def __init__(self, search_list: list[str] | None = None, rules: str = "[]") -> None:
        self.search_list = search_list or []
        self.shell = FakePowerShell(
            {
                "Get-DnsClientNrptRule": rules,
                "Get-DnsClientServerAddress": fixture("get-dnsclientserveraddress.json"),
                "Get-DnsClientGlobalSetting": lambda c: json.dumps({"SuffixSearchList": self.search_list}),
                "Set-DnsClientGlobalSetting": self._set,
            }
        )

    def _set(self, c: Command) -> str:
        value = c.param("SuffixSearchList")
        self.search_list = [v for v in value if v] if isinstance(value, tuple) else []
        return ""

    def writes(self) -> list[str]:
        return [s for s in self.shell.scripts if not s.startswith("ConvertTo-Json")]


def test_the_table_gives_windows_the_nrpt_configurator():
    assert implementation(Mode.WINDOWS) is WindowsNrptConfigurator
    assert choose(Probes("win32")) is WindowsNrptConfigurator
    assert isinstance(WindowsNrptConfigurator(FakePowerShell()), ResolverConfigurator)


def test_upstream_comes_from_every_interface_but_ours():
    conf = WindowsNrptConfigurator(Host().shell)
    assert [str(a) for a in conf.upstream_nameservers()] == ["192.168.1.1", "1.1.1.1", "10.8.0.1"]
    assert conf.shell.scripts == [  # type: ignore[attr-defined]
        "ConvertTo-Json -Compress -Depth 4 -InputObject @(Get-DnsClientServerAddress -AddressFamily 'IPv4' "
        "| Select-Object InterfaceAlias,InterfaceIndex,ServerAddresses)"
    ]


def test_apply_adds_one_marked_rule_per_domain_and_the_tun_suffix():
    host = Host()
    WindowsNrptConfigurator(host.shell, MARK).apply(settings(search="default.svc.cluster.local"))
    assert host.writes() == [
        f"Add-DnsClientNrptRule -Namespace '.cluster.local' -NameServers '127.0.0.1' -Comment '{MARK}'",
        f"Add-DnsClientNrptRule -Namespace '.default' -NameServers '127.0.0.1' -Comment '{MARK}'",
        "Set-DnsClient -InterfaceAlias 'tether0' -ConnectionSpecificSuffix 'default.svc.cluster.local'",
        "Clear-DnsClientCache",
    ]
    assert host.search_list == []


def test_a_global_search_list_gets_ours_first_and_is_put_back_exactly():
    host = Host(["corp.example.com", "example.net"])
    conf = WindowsNrptConfigurator(host.shell, MARK)
    conf.apply(settings(search="default.svc.cluster.local"))
    assert host.search_list == ["default.svc.cluster.local", "corp.example.com", "example.net"]
    conf.apply(settings(search="default.svc.cluster.local"))  # a second apply does not lose the original
    conf.revert()
    assert host.search_list == ["corp.example.com", "example.net"]


def test_revert_leaves_a_search_list_somebody_changed_meanwhile():
    host = Host(["corp.example.com"])
    conf = WindowsNrptConfigurator(host.shell, MARK)
    conf.apply(settings(search="default.svc.cluster.local"))
    host.search_list = ["other.example"]
    conf.revert()
    assert host.search_list == ["other.example"]


def test_revert_and_cleanup_remove_only_marked_rules():
    host = Host(rules=fixture("get-dnsclientnrptrule.json"))
    assert WindowsNrptConfigurator(host.shell, MARK).cleanup_stale()
    assert host.writes() == [f"Remove-DnsClientNrptRule -Name '{name}' -Force" for name in OURS]
    host = Host(rules=fixture("get-dnsclientnrptrule.json"))
    WindowsNrptConfigurator(host.shell, MARK).revert()
    assert host.writes() == [
        *(f"Remove-DnsClientNrptRule -Name '{name}' -Force" for name in OURS),
        "Clear-DnsClientCache",
    ]


def test_cleanup_with_nothing_of_ours_changes_nothing():
    host = Host(rules='[{"Name":"{5B4B0B0E-6A3C-4E0B-9B73-2F8E5D7C1A11}","Comment":"Corporate VPN"}]')
    assert not WindowsNrptConfigurator(host.shell, MARK).cleanup_stale()
    assert host.writes() == []


def test_a_port_other_than_53_is_refused_before_anything_changes():
    host = Host()
    with pytest.raises(ResolverError, match="port 53, not 5353"):
        WindowsNrptConfigurator(host.shell, MARK).apply(settings(port=5353))
    assert host.shell.commands == []


@pytest.mark.parametrize("domain", ["evil' ; Remove-Item C:\\", "a..b", "-x.local", "x" * 64 + ".local", ""])
def test_bad_domains_are_refused_naming_the_value_before_anything_changes(domain):
    host = Host()
    with pytest.raises(ResolverError, match="invalid DNS domain"):
        WindowsNrptConfigurator(host.shell, MARK).apply(settings(domains=("cluster.local", domain)))
    assert host.writes() == []


def test_a_failed_rule_removes_the_rules_already_added():
    added: list[str] = []
    shell = FakePowerShell()

    def add(c: Command) -> str:
        if c.param("Namespace") == ".default":
            raise PowerShellError("Add-DnsClientNrptRule failed: Access is denied")
        added.append("{0F6E7A2D-3C1B-4D8A-A2E4-6C9B1F3D5E22}")
        return ""

    shell.answers["Add-DnsClientNrptRule"] = add
    shell.answers["Get-DnsClientNrptRule"] = lambda c: json.dumps([{"Name": n, "Comment": MARK} for n in added])
    with pytest.raises(ResolverError, match="Access is denied"):
        WindowsNrptConfigurator(shell, MARK).apply(settings())
    assert shell.ran("Remove-DnsClientNrptRule")[0].param("Name") == added[0]


def test_rule_names_that_are_not_guids_are_never_passed_on():
    host = Host(rules=json.dumps([{"Name": "x'; Remove-Item C:\\", "Comment": MARK}]))
    with pytest.raises(ResolverError, match="not a rule name"):
        WindowsNrptConfigurator(host.shell, MARK).cleanup_stale()
