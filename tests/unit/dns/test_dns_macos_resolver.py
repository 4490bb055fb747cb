"""The macOS resolver mode: /etc/resolver files (content, atomic, marked, removed), scutil --dns parsing."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from tests.doubles.fake_commands import FakeCommands
from tether.helper.root.dns.resolvers.base import ResolverError, ResolverSettings
from tether.helper.root.dns.resolvers.choose import Mode, Probes, choose
from tether.helper.root.dns.resolvers.macos_resolver import (
    MacosResolverConfigurator,
    parse_scutil_dns,
    resolver_files,
)
from tether.helper.root.dns.rules import RulesConfig, routing_domains

FIXTURES = Path(__file__).parent / "fixtures"
ip = ipaddress.ip_address

RULES = RulesConfig(mapped_namespaces=frozenset({"default", "webshop"}), routed_subnets=("10.96.0.0/16",))
SETTINGS = ResolverSettings(
    server=ip("127.0.0.1"),
    port=53535,
    tun_name="utun7",
    routing_domains=routing_domains(RULES),
    search_domain=RULES.search_domain,
)


def configurator(tmp_path: Path, run: FakeCommands | None = None) -> MacosResolverConfigurator:
    return MacosResolverConfigurator(tmp_path / "resolver", run or FakeCommands())


def test_one_file_per_routing_domain_and_the_search_line_on_the_cluster_domain():
    files = resolver_files(SETTINGS, "tether-helper pid=812 written by Tether")
    assert sorted(files) == ["96.10.in-addr.arpa", "cluster.local", "default", "tether.local", "webshop"]
    assert files["cluster.local"] == (
        "# tether-helper pid=812 written by Tether\n"
        "domain cluster.local\n"
        "nameserver 127.0.0.1\n"
        "port 53535\n"
        "search tether.local\n"
    )
    assert (
        files["webshop"]
        == "# tether-helper pid=812 written by Tether\ndomain webshop\nnameserver 127.0.0.1\nport 53535\n"
    )
    assert "search" not in files["tether.local"]


def test_a_search_domain_not_among_the_routing_domains_still_gets_its_file():
    settings = ResolverSettings(ip("127.0.0.1"), 53, "utun7", ("cluster.local.",), "tether.local.")
    assert sorted(resolver_files(settings, "m")) == ["cluster.local", "tether.local"]


@pytest.mark.parametrize("domain", ["../etc", "a b", "", "bad/name"])
def test_bad_domains_are_refused_by_name(domain):
    settings = ResolverSettings(ip("127.0.0.1"), 53, "utun7", ("cluster.local.", domain))
    with pytest.raises(ResolverError, match=repr(domain).replace(".", r"\.")):
        resolver_files(settings, "m")


def test_apply_writes_marked_files_and_revert_removes_them(tmp_path):
    run = FakeCommands()
    conf = configurator(tmp_path, run)
    conf.apply(SETTINGS)
    directory = tmp_path / "resolver"
    assert sorted(p.name for p in directory.iterdir()) == sorted(resolver_files(SETTINGS, conf.marker))
    text = (directory / "default").read_text()
    assert text.startswith(f"# tether-helper pid={os.getpid()}")
    assert oct((directory / "default").stat().st_mode & 0o777) == "0o644"
    assert run.commands == [["dscacheutil", "-flushcache"]]
    conf.revert()
    assert list(directory.iterdir()) == []
    assert run.commands[-1] == ["dscacheutil", "-flushcache"]
    conf.revert()  # harmless when nothing is applied


def test_apply_again_removes_domains_no_longer_routed(tmp_path):
    conf = configurator(tmp_path)
    conf.apply(SETTINGS)
    fewer = ResolverSettings(ip("127.0.0.1"), 53535, "utun7", ("cluster.local.", "default."), "tether.local.")
    conf.apply(fewer)
    assert sorted(p.name for p in (tmp_path / "resolver").iterdir()) == ["cluster.local", "default", "tether.local"]


def test_someone_elses_file_is_never_touched_and_nothing_is_half_written(tmp_path):
    directory = tmp_path / "resolver"
    directory.mkdir()
    (directory / "webshop").write_text("nameserver 10.8.0.53\n")
    conf = configurator(tmp_path)
    with pytest.raises(ResolverError, match=r"resolver/webshop exists and was not written by Tether"):
        conf.apply(SETTINGS)
    assert [p.name for p in directory.iterdir()] == ["webshop"]
    assert (directory / "webshop").read_text() == "nameserver 10.8.0.53\n"
    conf.revert()
    assert (directory / "webshop").exists()


def test_cleanup_stale_removes_only_marked_files_of_dead_helpers(tmp_path):
    directory = tmp_path / "resolver"
    directory.mkdir()
    (directory / "corp.example.com").write_text("nameserver 10.8.0.53\n")
    (directory / "cluster.local").write_text("# tether-helper pid=999999999 written by Tether\ndomain cluster.local\n")
    (directory / "default").write_text(f"# tether-helper pid={os.getppid()} written by Tether\ndomain default\n")
    conf = configurator(tmp_path)
    assert conf.cleanup_stale() is True
    assert sorted(p.name for p in directory.iterdir()) == ["corp.example.com", "default"]
    assert conf.cleanup_stale() is False


def test_cleanup_stale_without_the_directory(tmp_path):
    assert configurator(tmp_path).cleanup_stale() is False


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("scutil_dns_wifi.txt", ["192.168.1.1", "fd00:1::1"]),
        ("scutil_dns_vpn.txt", ["10.8.0.53", "10.8.0.54"]),  # the VPN's; never our own 127.0.0.1 resolver
        ("scutil_dns_none.txt", ["192.168.1.1"]),  # only mDNS unscoped: the scoped resolver's
    ],
)
def test_parse_scutil_dns(fixture, expected):
    assert parse_scutil_dns((FIXTURES / fixture).read_text()) == tuple(ip(a) for a in expected)


def test_upstream_runs_scutil(tmp_path):
    run = FakeCommands({("scutil", "--dns"): (FIXTURES / "scutil_dns_vpn.txt").read_text()})
    assert configurator(tmp_path, run).upstream_nameservers() == (ip("10.8.0.53"), ip("10.8.0.54"))
    assert run.commands == [["scutil", "--dns"]]
    failing = FakeCommands(fail={("scutil",): "scutil: command not found"})
    with pytest.raises(ResolverError, match="command not found"):
        configurator(tmp_path, failing).upstream_nameservers()


def test_a_failed_flush_does_not_undo_the_files(tmp_path):
    conf = configurator(tmp_path, FakeCommands(fail={("dscacheutil",): "no"}))
    conf.apply(SETTINGS)
    assert (tmp_path / "resolver" / "cluster.local").exists()


def test_darwin_chooses_this_configurator():
    assert Mode.MACOS_RESOLVER == "macos-resolver"
    assert choose(Probes("darwin")) is MacosResolverConfigurator
