"""Resolver configurators: the nft ruleset text, the Linux configurator against a fake nft, choosing a mode."""

import ipaddress
from collections.abc import Callable

import pytest

from tests.doubles.fake_nft_holder import FakeNftHolder
from tests.doubles.fake_resolver import FakeConfigurator
from tether.helper.root.dns.resolvers.base import (
    DIES_WITH_HELPER,
    DNS_BYPASS_MARK,
    ResolverConfigurator,
    ResolverError,
    ResolverSettings,
)
from tether.helper.root.dns.resolvers.choose import (
    IMPLEMENTATIONS,
    Mode,
    Probes,
    UnsupportedHost,
    choose,
    choose_mode,
)
from tether.helper.root.dns.resolvers.linux_nft import (
    JOURNALED,
    MARKER,
    OWNED,
    UNHELD,
    HeldNftConfigurator,
    LinuxNftConfigurator,
    nameservers,
    ruleset,
    table_comment,
)

ip = ipaddress.ip_address


def test_ruleset_text():
    text = ruleset(ip("192.0.2.1"), ip("127.0.0.1"), 5353, 0x7E7E0053)
    assert text == (
        "table inet tether_dns\n"
        "delete table inet tether_dns\n"
        "table inet tether_dns {\n"
        f'\tcomment "{MARKER}"\n'
        "\tchain untracked {\n"
        "\t\ttype filter hook output priority -300; policy accept;\n"
        "\t\tmeta mark 0x7e7e0053 notrack\n"
        "\t}\n"
        "\tchain output {\n"
        "\t\ttype nat hook output priority -100; policy accept;\n"
        "\t\tmeta mark 0x7e7e0053 return\n"
        "\t\tip daddr 192.0.2.1 udp dport 53 dnat ip to 127.0.0.1:5353\n"
        "\t\tip daddr 192.0.2.1 tcp dport 53 dnat ip to 127.0.0.1:5353\n"
        "\t}\n"
        "}\n"
    )


def test_ruleset_ipv6():
    text = ruleset(ip("fd00::53"), ip("::1"), 5353, 1)
    assert "ip6 daddr fd00::53 udp dport 53 dnat ip6 to [::1]:5353" in text
    assert "meta mark 0x1 return" in text


def test_ruleset_for_a_loopback_nameserver():
    text = ruleset(ip("127.0.0.1"), ip("127.0.0.1"), 5353, 1)
    assert "ip daddr 127.0.0.1 udp dport 53 dnat ip to 127.0.0.1:5353" in text


@pytest.mark.parametrize(
    ("nameserver", "server", "port", "mark", "message"),
    [
        ("fd00::53", "127.0.0.1", 5353, 1, "cannot change the address family"),
        ("127.0.0.1", "127.0.0.1", 53, 1, "is the nameserver it would redirect"),
        ("192.0.2.1", "127.0.0.1", 5353, 0, "non-zero 32-bit"),
        ("192.0.2.1", "127.0.0.1", 5353, 2**32, "non-zero 32-bit"),
    ],
)
def test_ruleset_refuses(nameserver, server, port, mark, message):
    with pytest.raises(ResolverError, match=message):
        ruleset(ip(nameserver), ip(server), port, mark)


def test_nameservers_from_resolv_conf():
    text = "# generated\nsearch corp.example\nnameserver 192.0.2.1 # primary\nnameserver bogus\n"
    text += "nameserver fe80::1%eth0\n;nameserver 10.0.0.1\noptions edns0\n"
    assert nameservers(text) == (ip("192.0.2.1"), ip("fe80::1"))
    assert nameservers("") == ()


def test_table_comment():
    listing = f'table inet tether_dns {{\n\tcomment "{MARKER}"\n\tchain output {{\n\t}}\n}}\n'
    assert table_comment(listing) == MARKER
    assert table_comment("table inet tether_dns {\n\tchain output {\n\t}\n}\n") is None


class FakeNft:
    """Stands in for the nft command: keeps one table's text, fails like nft when it is missing."""

    def __init__(self, listing: str | None = None) -> None:
        self.listing = listing
        self.calls: list[tuple[tuple[str, ...], str | None]] = []

    def __call__(self, argv, stdin):
        self.calls.append((tuple(argv), stdin))
        command = tuple(argv[list(argv).index("nft") + 1 :])
        if command[:2] == ("-f", "-"):
            self.listing = stdin.split("delete table inet tether_dns\n", 1)[1]
            return ""
        if command[:2] == ("list", "table"):
            if self.listing is None:
                raise ResolverError("nft list table inet tether_dns failed (1): Error: No such file or directory")
            return self.listing
        if command[:2] == ("delete", "table"):
            self.listing = None
            return ""
        raise AssertionError(f"unexpected nft call {argv}")


SETTINGS = ResolverSettings(server=ip("127.0.0.1"), port=5353, tun_name="tether0")


def configurator(tmp_path, nft: FakeNft, text: str = "nameserver 192.0.2.1\nnameserver 192.0.2.2\n"):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(text)
    return LinuxNftConfigurator(resolv_conf=resolv, run=nft)


def test_apply_revert_cycle(tmp_path):
    nft = FakeNft()
    linux = configurator(tmp_path, nft)
    assert isinstance(linux, ResolverConfigurator) and linux.mode == "linux-nft"
    assert linux.upstream_nameservers() == (ip("192.0.2.1"), ip("192.0.2.2"))
    linux.apply(SETTINGS)
    assert linux.redirected == ip("192.0.2.1")
    script = nft.calls[-1][1]
    assert script == ruleset(ip("192.0.2.1"), ip("127.0.0.1"), 5353, DNS_BYPASS_MARK)
    linux.apply(SETTINGS)  # again: replaces, no error
    linux.revert()
    assert nft.listing is None and linux.redirected is None
    linux.revert()  # nothing left: harmless
    assert [argv[1:3] for argv, _ in nft.calls].count(("delete", "table")) == 1


def test_resolv_conf_is_never_written(tmp_path):
    nft = FakeNft()
    linux = configurator(tmp_path, nft)
    before = (tmp_path / "resolv.conf").stat()
    linux.apply(SETTINGS)
    linux.revert()
    after = (tmp_path / "resolv.conf").stat()
    assert (before.st_mtime_ns, before.st_size) == (after.st_mtime_ns, after.st_size)


def test_apply_without_nameserver_is_a_clear_error(tmp_path):
    linux = configurator(tmp_path, FakeNft(), text="search example\n")
    with pytest.raises(ResolverError, match="names no nameserver"):
        linux.apply(SETTINGS)
    missing = LinuxNftConfigurator(resolv_conf=tmp_path / "absent", run=FakeNft())
    with pytest.raises(ResolverError, match="cannot read"):
        missing.apply(SETTINGS)


def test_a_foreign_table_of_our_name_is_left_alone(tmp_path):
    foreign = "table inet tether_dns {\n\tchain output {\n\t}\n}\n"
    nft = FakeNft(foreign)
    linux = configurator(tmp_path, nft)
    with pytest.raises(ResolverError, match="not ours"):
        linux.apply(SETTINGS)
    assert linux.cleanup_stale() is False
    linux.revert()
    assert nft.listing == foreign


def test_cleanup_stale_removes_our_leftover(tmp_path):
    nft = FakeNft(f'table inet tether_dns {{\n\tcomment "{MARKER}"\n}}\n')
    linux = configurator(tmp_path, nft)
    assert linux.cleanup_stale() is True
    assert nft.listing is None
    assert linux.cleanup_stale() is False


def test_nft_prefix_is_used_for_every_call(tmp_path):
    nft = FakeNft()
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.1\n")
    linux = LinuxNftConfigurator(resolv_conf=resolv, run=nft, nft=("ip", "netns", "exec", "ns1", "nft"))
    linux.apply(SETTINGS)
    linux.revert()
    assert all(argv[:5] == ("ip", "netns", "exec", "ns1", "nft") for argv, _ in nft.calls)


def test_other_nft_failures_propagate(tmp_path):
    def broken(argv, stdin):
        raise ResolverError("nft: Operation not permitted")

    linux = configurator(tmp_path, broken)
    with pytest.raises(ResolverError, match="not permitted"):
        linux.apply(SETTINGS)


def test_settings_validate():
    assert ResolverSettings("127.0.0.1", 53, "tun0").server == ip("127.0.0.1")
    with pytest.raises(ValueError, match="out of range"):
        ResolverSettings(ip("127.0.0.1"), 0, "tun0")


def test_fake_configurator_records_calls():
    fake = FakeConfigurator(nameservers=(ip("192.0.2.1"),), stale=True)
    assert isinstance(fake, ResolverConfigurator)
    assert fake.cleanup_stale() is True and fake.cleanup_stale() is False
    assert fake.upstream_nameservers() == (ip("192.0.2.1"),)
    fake.apply(SETTINGS)
    assert fake.applied == SETTINGS
    fake.revert()
    assert fake.applied is None
    assert [name for name, _ in fake.calls] == [
        "cleanup_stale",
        "cleanup_stale",
        "upstream_nameservers",
        "apply",
        "revert",
    ]
    failing = FakeConfigurator(fail_apply="no permission")
    with pytest.raises(ResolverError, match="no permission"):
        failing.apply(SETTINGS)


RESOLVED_STUB = "nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch .\n"


def test_choose_linux_without_resolved_gives_the_nft_configurator():
    assert choose(Probes("linux", "nameserver 192.0.2.1\n")) is HeldNftConfigurator


def test_choose_refuses_unknown_hosts():
    with pytest.raises(UnsupportedHost, match="freebsd"):
        choose_mode(Probes("freebsd14", None))


def test_every_mode_is_in_the_table_and_implemented():
    assert set(IMPLEMENTATIONS) == set(Mode)
    assert all(IMPLEMENTATIONS[mode] is not None for mode in Mode)


# --- the table owned by the helper's socket (nft_holder) ----------------------------------------------------


def held(tmp_path, nft: FakeNft, holder: FakeNftHolder | None):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 192.0.2.1\n")
    return LinuxNftConfigurator(resolv_conf=resolv, run=nft, holder=lambda: holder)


def keep_listing(nft: FakeNft) -> Callable[[str], None]:
    """What the kernel would list after a holder's script: the last table body, or nothing after a lone delete."""

    def applied(script: str) -> None:
        body = script.rsplit("delete table inet tether_dns\n", 1)
        nft.listing = body[1] if len(body) == 2 and body[1] else None

    return applied


def test_ruleset_owned_text():
    text = ruleset(ip("192.0.2.1"), ip("127.0.0.1"), 5353, 1, owned=True)
    # the re-add carries the flag too: the kernel refuses to change an owned table's flags
    assert text.startswith("table inet tether_dns { flags owner; }\ndelete table inet tether_dns\n")
    assert f'table inet tether_dns {{\n\tflags owner\n\tcomment "{MARKER}"\n' in text
    assert "flags owner" not in ruleset(ip("192.0.2.1"), ip("127.0.0.1"), 5353, 1)


def test_table_comment_after_the_flags_line():
    listing = f'table inet tether_dns {{ # progname python3\n\tflags owner\n\tcomment "{MARKER}"\n}}\n'
    assert table_comment(listing) == MARKER


def test_an_owned_table_goes_through_the_holder_only(tmp_path):
    nft = FakeNft()
    holder = FakeNftHolder()
    holder.applied = keep_listing(nft)
    linux = held(tmp_path, nft, holder)
    linux.apply(SETTINGS)
    assert holder.scripts == [ruleset(ip("192.0.2.1"), ip("127.0.0.1"), 5353, DNS_BYPASS_MARK, owned=True)]
    assert linux.crash_safety == OWNED and linux.crash_safety.startswith(DIES_WITH_HELPER)
    linux.apply(SETTINGS)  # an update: the same socket, the same owned replace
    assert len(holder.scripts) == 2 and holder.scripts[1] == holder.scripts[0]
    linux.revert()
    assert holder.scripts[-1] == "delete table inet tether_dns" and holder.closed
    assert nft.listing is None
    # writes never went through the nft command (it could not change an owned table)
    assert [argv[1:2] for argv, _ in nft.calls] == [("list",)] * len(nft.calls)


def test_an_earlier_helpers_plain_table_is_deleted_in_the_same_transaction(tmp_path):
    nft = FakeNft(f'table inet tether_dns {{\n\tcomment "{MARKER}"\n}}\n')
    holder = FakeNftHolder()
    linux = held(tmp_path, nft, holder)
    linux.apply(SETTINGS)
    assert holder.scripts[0].startswith("delete table inet tether_dns\ntable inet tether_dns { flags owner; }\n")


def test_a_kernel_without_the_owner_flag_falls_back_to_a_plain_table(tmp_path):
    nft = FakeNft()
    holder = FakeNftHolder(refuse_owner="Error: Could not process rule: Operation not supported")
    linux = held(tmp_path, nft, holder)
    linux.apply(SETTINGS)
    assert holder.closed
    assert nft.calls[-1][1] == ruleset(ip("192.0.2.1"), ip("127.0.0.1"), 5353, DNS_BYPASS_MARK)
    assert linux.crash_safety == JOURNALED and "owner flag" in linux.crash_safety
    linux.apply(SETTINGS)  # no second attempt at an owned table
    assert len(holder.scripts) == 1
    linux.revert()
    assert nft.listing is None


def test_other_holder_errors_propagate_and_no_libnftables_means_plain_tables(tmp_path):
    holder = FakeNftHolder(refuse_owner="Error: Could not process rule: Operation not permitted")
    with pytest.raises(ResolverError, match="not permitted"):
        held(tmp_path, FakeNft(), holder).apply(SETTINGS)
    nft = FakeNft()
    linux = held(tmp_path, nft, None)
    linux.apply(SETTINGS)
    assert linux.crash_safety == UNHELD and "flags owner" not in nft.calls[-1][1]


def test_the_helpers_nft_mode_holds_its_table():
    assert HeldNftConfigurator().crash_safety == OWNED
    assert all(
        cls.crash_safety
        for cls in IMPLEMENTATIONS.values()
        if cls is not None and cls is not IMPLEMENTATIONS[Mode.LINUX_NFT]
    )
