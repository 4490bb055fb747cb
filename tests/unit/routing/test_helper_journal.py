"""The cleanup journal (atomic writes, round trip, corrupt files) and the cleanup step registry."""

from __future__ import annotations

import json
import os

import pytest

from tether.helper.root import cleanup
from tether.helper.root.journal import (
    ExtraRecord,
    Journal,
    JournalCorrupt,
    JournalState,
    NftTableRecord,
    OwnerMark,
    RouteRecord,
    owner_mark,
    parse_owner_mark,
    read_journal,
)


def test_round_trip(tmp_path):
    path = tmp_path / "run" / "journal.json"
    journal = Journal(path)
    assert read_journal(path) == JournalState(pid=os.getpid(), start_time=journal.state.start_time)
    journal.add_link("tether0")
    journal.add_link("tether0")
    journal.add_routes([RouteRecord("10.43.0.0/16", "tether0"), RouteRecord("fd00::/64", "tether0")])
    journal.add_routes([RouteRecord("10.43.0.0/16", "tether0")])
    journal.add_nft_table("inet", "tether_dns")
    journal.add_record("resolver", "link:tether0", {"domains": ["cluster.local"]}, module="tether.helper.root.dns.x")
    journal.add_record("resolver", "link:tether0", {"domains": ["svc"]}, module="tether.helper.root.dns.x")
    state = read_journal(path)
    assert state == journal.state
    assert state.links == ("tether0",)
    assert [str(r) for r in state.routes] == ["10.43.0.0/16 dev tether0 proto 126", "fd00::/64 dev tether0 proto 126"]
    assert state.nft_tables == (NftTableRecord("inet", "tether_dns"),)
    assert state.records == (ExtraRecord("resolver", "link:tether0", {"domains": ["svc"]}, "tether.helper.root.dns.x"),)
    assert not state.is_empty

    journal.remove_routes([RouteRecord("10.43.0.0/16", "tether0")])
    journal.remove_link("tether0")
    journal.remove_nft_table("inet", "tether_dns")
    journal.remove_record("resolver", "link:tether0")
    assert read_journal(path).routes == (RouteRecord("fd00::/64", "tether0"),)
    assert list(path.parent.iterdir()) == [path], "no temporary files left behind"
    journal.discard()
    assert read_journal(path) is None


def test_record_data_must_be_json(tmp_path):
    journal = Journal(tmp_path / "j.json")
    with pytest.raises(TypeError):
        journal.add_record("x", "k", {"bad": object()})
    assert read_journal(tmp_path / "j.json").records == ()


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"version": 99}', "unknown version 99"),
        (b'{"version": 1, "links": "tether0"}', "links is not a list"),
        (b'{"version": 1, "routes": [{"dst": 5, "dev": "tether0"}]}', "routes[].dst is 5"),
        (b'{"version": 1, "pid": "12"}', "pid is '12'"),
        (b"\xff\xfe", "not UTF-8"),
        (b"", "not JSON"),
    ],
)
def test_corrupt_journal(tmp_path, content, reason):
    path = tmp_path / "journal.json"
    path.write_bytes(content)
    with pytest.raises(JournalCorrupt) as info:
        read_journal(path)
    assert str(path) in str(info.value)
    assert reason in str(info.value)


def test_owner_marks():
    assert owner_mark(12, 345) == "tether-helper pid=12 start=345"
    assert parse_owner_mark("tether-helper pid=12 start=345") == OwnerMark(12, 345)
    assert parse_owner_mark("tether-helper pid=12") == OwnerMark(12, None)
    assert parse_owner_mark("tether-helper") == OwnerMark()
    for other in (None, "", "wireguard", "tether-helperish", "my tether-helper"):
        assert parse_owner_mark(other) is None


@pytest.fixture
def step():
    calls: list[list[ExtraRecord]] = []

    def fn(records):
        calls.append(list(records))
        return [f"undid {r.key}" for r in records]

    cleanup.register_cleanup("test-kind", fn)
    yield calls
    cleanup.unregister_cleanup("test-kind")


# Cleanup with sweep=False and a journal holding only other modules' records touches nothing but them.


def test_cleanup_runs_registered_steps_and_removes_journal(tmp_path, step):
    path = tmp_path / "journal.json"
    journal = Journal(path, pid=2**22 + 12345)  # a pid that is not running
    journal.add_record("test-kind", "a", {"n": 1})
    report = cleanup.run(path, sweep=False)
    assert report.ok, report
    assert report.journal == "read"
    assert step == [[ExtraRecord("test-kind", "a", {"n": 1})]]
    assert "test-kind: undid a" in report.removed
    assert not path.exists()
    # Idempotent: nothing there, nothing done.
    report = cleanup.run(path, sweep=False)
    assert report.ok and report.journal == "missing" and report.removed == []
    assert str(report) == "nothing to clean up"


def test_cleanup_keeps_journal_when_a_step_fails(tmp_path):
    def broken(records):
        raise RuntimeError("resolver unreachable")

    cleanup.register_cleanup("test-broken", broken)
    try:
        path = tmp_path / "journal.json"
        Journal(path, pid=2**22 + 12345).add_record("test-broken", "k")
        report = cleanup.run(path, sweep=False)
        assert not report.ok
        assert report.errors == ["test-broken: resolver unreachable"]
        assert path.exists()
    finally:
        cleanup.unregister_cleanup("test-broken")


def test_cleanup_unknown_kind_is_an_error(tmp_path):
    path = tmp_path / "journal.json"
    Journal(path, pid=2**22 + 12345).add_record("nobody-handles-this", "k")
    report = cleanup.run(path, sweep=False)
    assert any("nobody-handles-this" in e for e in report.errors)
    assert path.exists()


def test_cleanup_refuses_non_tether_modules(tmp_path):
    path = tmp_path / "journal.json"
    Journal(path, pid=2**22 + 12345).add_record("test-kind", "k", module="os")
    report = cleanup.run(path, sweep=False)
    assert any("not a tether module" in e for e in report.errors)


def test_cleanup_refuses_a_running_helper(tmp_path):
    path = tmp_path / "journal.json"
    Journal(path, pid=1)  # pid 1 is always running and is not us
    with pytest.raises(cleanup.CleanupRefused, match="pid 1"):
        cleanup.run(path, sweep=False)
    assert path.exists()


def test_cleanup_of_corrupt_journal_without_sweep_is_an_error(tmp_path):
    path = tmp_path / "journal.json"
    path.write_text("{garbage")
    report = cleanup.run(path, sweep=False)
    assert report.journal == "corrupt"
    assert not report.ok
    assert path.exists()


def test_register_validates():
    with pytest.raises(ValueError, match="invalid cleanup kind"):
        cleanup.register_cleanup("Bad Kind", lambda records: None)
    with pytest.raises(TypeError):
        cleanup.register_cleanup("ok-kind", "not callable")  # type: ignore[arg-type]


def test_journal_file_is_json(tmp_path):
    path = tmp_path / "journal.json"
    Journal(path, pid=77).add_link("tether3")
    data = json.loads(path.read_text())
    assert data["version"] == 1 and data["pid"] == 77 and data["links"] == ["tether3"]


def test_the_platform_table_routes_link_and_route_cleanup(tmp_path, monkeypatch):
    assert set(cleanup.PLATFORM_CLEANERS) == {"linux", "darwin", "win32"}
    path = tmp_path / "journal.json"
    Journal(path).add_link("utun7")
    # macOS: the utun went with its process; nothing is run, the journal is done with.
    report = cleanup.run(path, sweep=False, platform="darwin")
    assert report.ok and report.notes[0] == "link utun7: a utun vanishes with the process that opened it"
    assert not path.exists()
    Journal(path).add_link("tether0")
    report = cleanup.run(path, sweep=False, platform="sunos5")
    assert report.errors == ["cleaning up links, routes and nftables is not implemented on sunos5"]
    assert path.exists()


def test_the_default_journal_is_in_the_platforms_runtime_directory():
    from tether.helper.api.paths import runtime_dir
    from tether.helper.root.journal import DEFAULT_JOURNAL_PATH

    assert runtime_dir() / "journal.json" == DEFAULT_JOURNAL_PATH


def test_cleanup_removes_the_temporary_file_of_a_journal_write_cut_short(tmp_path):
    """A helper killed in the middle of rewriting its journal leaves atomicfile's temporary beside it."""
    path = tmp_path / "journal.json"
    cut = tmp_path / ".journal.json.0a1b2c3d.tmp"
    cut.write_text('{"half": ')
    other = tmp_path / ".other.json.0a1b2c3d.tmp"
    other.write_text("not ours")
    report = cleanup.run(path, sweep=False, platform="none")
    assert not cut.exists() and other.exists()
    assert f"removed {cut}, a journal write cut short" in report.notes
