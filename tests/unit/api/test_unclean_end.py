"""A helper that died: the client's error for a broken stream, `tether status` naming an unclean end, and the
restarted helper's words for what its start-up cleanup did (issue 16)."""

import json
import re
import socket

import grpc
import pytest

from tether.helper.api.paths import journal_for
from tether.helper.root import daemon
from tether.helper.user import client as client_module
from tether.helper.user.cli.main import main
from tether.helper.user.client import HelperCallError, HelperGoneError


class Broken(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str = "Stream removed") -> None:
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


def dead_socket(directory) -> None:
    """Both socket files left behind by a killed helper: they exist, nobody listens."""
    for name in ("helper.sock", "helper-auth.sock"):
        leftover = socket.socket(socket.AF_UNIX)
        leftover.bind(str(directory / name))
        leftover.close()


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN])
def test_a_broken_stream_from_a_dead_helper_says_it_stopped(tmp_path, code):
    dead_socket(tmp_path)
    error = client_module.gone_error(Broken(code), tmp_path / "helper.sock")
    assert isinstance(error, HelperGoneError)
    assert error.message.startswith("the Tether helper stopped in the middle of the call (killed or crashed")
    assert "connect again" in error.fix


def test_a_broken_stream_from_a_live_helper_is_a_plain_call_error(tmp_path):
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(tmp_path / "helper.sock"))
        live.listen()
        error = client_module.gone_error(Broken(grpc.StatusCode.UNAVAILABLE), tmp_path / "helper.sock")
    assert type(error) is HelperCallError and error.details == "Stream removed"
    refused = client_module.gone_error(Broken(grpc.StatusCode.INVALID_ARGUMENT, "bad"), tmp_path / "x.sock")
    assert type(refused) is HelperCallError and refused.code == grpc.StatusCode.INVALID_ARGUMENT


def test_status_names_an_unclean_end_when_the_journal_is_left(tmp_path, capsys):
    dead_socket(tmp_path)
    sock = str(tmp_path / "helper.sock")
    assert main(["status", "--socket", sock]) == 3
    assert "the last session ended uncleanly" not in capsys.readouterr().err  # no journal: a clean end

    journal_for(tmp_path / "helper.sock").write_text("{}")
    assert main(["status", "--socket", sock]) == 3
    err = capsys.readouterr().err
    assert "the Tether helper is not running" in err
    assert "the last session ended uncleanly" in err and str(tmp_path / "journal.json") in err
    assert main(["status", "--socket", sock, "--json"]) == 3
    info = json.loads(capsys.readouterr().out)
    assert info["phase"] == "unavailable" and info["last_session"].startswith("the last session ended uncleanly")


def test_the_recovered_note_says_what_the_cleanup_did():
    assert daemon.recovered_note([], []) == (
        "the previous helper ended uncleanly (killed or crashed during a session); "
        "nothing of it was left on this machine"
    )
    note = daemon.recovered_note(["nftables inet tether_dns", "link tether0"], ["route x: busy"])
    assert note.endswith(
        "its start-up cleanup removed nftables inet tether_dns, link tether0; left behind: route x: busy"
    )


def test_startup_cleanup_tells_an_unclean_end_from_a_clean_one(monkeypatch, tmp_path):
    from tether.helper.root import cleanup

    reports = {"clean": cleanup.CleanupReport(journal="missing"), "unclean": cleanup.CleanupReport(journal="read")}
    monkeypatch.setattr(cleanup, "run", lambda path: reports[path.name])
    assert daemon.startup_cleanup(tmp_path / "clean") == ""
    assert daemon.startup_cleanup(tmp_path / "unclean").startswith("the previous helper ended uncleanly")


def test_status_shows_what_a_crash_leaves_and_a_recovered_predecessor():
    from tether.helper.api import helper_pb2 as pb
    from tether.helper.user.cli.control import describe_state, format_state

    state = pb.State(
        phase=pb.State.CONNECTED,
        dns_mode="linux-nft",
        dns_crash_safety="dies with the helper (its nftables table is owned by the helper's socket)",
    )
    assert describe_state(state)["dns_crash_safety"].startswith("dies with the helper")
    assert re.search(r"^dns on crash +dies with the helper \(", format_state(state), re.MULTILINE)
    fresh = pb.State(phase=pb.State.DISCONNECTED, previous_session="the previous helper ended uncleanly (x)")
    assert describe_state(fresh)["previous_session"] == "the previous helper ended uncleanly (x)"
    shown = format_state(fresh)
    assert re.search(r"^previous session +the previous helper ended uncleanly \(x\)$", shown, re.MULTILINE)
    assert "previous session" not in format_state(pb.State(phase=pb.State.DISCONNECTED))
