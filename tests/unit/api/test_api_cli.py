"""The `tether` commands against a helper (FakeSession) in a background thread."""

import json

import pytest

from tether.helper.user.cli.main import build_parser, main


@pytest.fixture
def kubeconfig(tmp_path, monkeypatch):
    path = tmp_path / "config"
    path.write_text(
        "apiVersion: v1\ncurrent-context: lab\nclusters: [{name: k, cluster: {server: 'https://k:6443'}}]\n"
        "contexts: [{name: lab, context: {cluster: k, namespace: apps}}, {name: other, context: {cluster: k}}]\n"
    )
    monkeypatch.setenv("KUBECONFIG", str(path))
    return path


def test_commands_are_registered():
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name in ("connect", "disconnect", "status", "quit", "version", "helper", "cluster-info", "lab"):
        assert name in commands


def test_connect_status_disconnect(helper, kubeconfig, capsys):
    sock = str(helper.socket_path)
    assert main(["status", "--socket", sock]) == 0
    assert capsys.readouterr().out.split() == ["phase", "disconnected", "last", "error", "-"]

    argv = ["connect", "--socket", sock, "--never-proxy", "10.9.0.0/16", "--mapped-namespaces", "a,b"]
    argv += ["--dns-include-suffix", ".corp.example", "--dns-exclude-suffix", "internal"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "  finding the traffic-manager" in out
    assert "connected to lab (https://fake.invalid:6443)" in out
    request, _ = helper.session.connects[-1]
    assert list(request.mapped_namespaces) == ["a", "b"]
    assert (list(request.dns_include_suffixes), list(request.dns_exclude_suffixes)) == ([".corp.example"], ["internal"])
    assert "https://k:6443" in request.kubeconfig

    assert main(["status", "--socket", sock, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["phase"] == "connected"
    assert status["cluster"] == "lab"
    assert status["routed_subnets"][0] == {"cidr": "10.96.0.0/12", "via": "tun"}
    assert status["never_proxy"] == ["10.9.0.0/16"]
    assert status["dns_mode"] == "fake"
    assert status["conflicts"] == []
    assert isinstance(status["owner_uid"], int)
    assert (status["client_version"], status["client_api_level"]) == ("0.0.0-fake-client", 1)
    assert (status["manager_version"], status["manager_api_level"]) == ("0.0.0-fake", 2)

    assert main(["status", "--socket", sock]) == 0
    text = capsys.readouterr().out
    assert "client version   0.0.0-fake-client (API level 1)" in text
    assert "manager version  0.0.0-fake (API level 2)" in text
    assert "routed subnets   10.96.0.0/12 (tun), 10.244.0.0/16 (tun)" in text
    assert "owner" in text

    assert main(["disconnect", "--socket", sock]) == 0
    assert capsys.readouterr().out.strip() == "disconnected"


def test_connect_failure_is_readable(helper, kubeconfig, capsys):
    helper.session.fail("cannot reach the API server https://k:6443: connection refused")
    assert main(["connect", "--socket", str(helper.socket_path)]) == 1
    err = capsys.readouterr().err
    assert "tether: cannot reach the API server https://k:6443: connection refused" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--also-proxy", "10.1.2.3/16"], '--also-proxy: "10.1.2.3/16" has host bits set; did you mean 10.1.0.0/16?'),
        (["--never-proxy", "nope"], '--never-proxy: "nope" is not a CIDR'),
        (["--allow-conflicting-subnets", "10.0.0.0/33"], "--allow-conflicting-subnets"),
        (["--mapped-namespaces", "ok,Bad_NS"], '--mapped-namespaces: "Bad_NS"'),
        (["--manager-address", "manager"], '--manager-address: "manager" is not HOST:PORT'),
        (["--context", "missing"], 'context "missing" not found'),
        (["--dns-include-suffix", "a b"], '--dns-include-suffix: "a b" is not a domain suffix'),
        (["--dns-mode", "nft"], '--dns-mode: "nft" is not a resolver mode (one of: linux-nft, systemd-resolved, '),
        (["--dns-mode", "windows"], "--dns-mode: windows does not exist on linux (modes here: linux-nft, "),
    ],
)
def test_bad_input_exits_2_naming_the_value(helper, kubeconfig, capsys, args, message):
    assert main(["connect", "--socket", str(helper.socket_path), *args]) == 2
    assert message in capsys.readouterr().err
    assert helper.session.connects == []


def test_unreachable_helper_exits_3(tmp_path, capsys):
    assert main(["status", "--socket", str(tmp_path / "none" / "helper.sock")]) == 3
    err = capsys.readouterr().err
    assert "not installed or not running" in err
    assert main(["version", "--socket", str(tmp_path / "none" / "helper.sock")]) == 3
    captured = capsys.readouterr()
    assert captured.out.startswith("tether ") and "tether-helper" not in captured.out
    assert "not installed or not running" in captured.err


def test_version_and_quit(helper, capsys):
    sock = str(helper.socket_path)
    assert main(["version", "--socket", sock]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("tether ") and lines[1].startswith("tether-helper ")
    assert "(api level 1)" in lines[1]
    assert main(["quit", "--socket", sock]) == 0
    helper._thread.join(10)
    assert helper.stopped


def test_helper_start_refuses_without_root(monkeypatch, capsys):
    from tether.helper.root import daemon

    monkeypatch.setattr(daemon.os, "geteuid", lambda: 1000)
    assert main(["helper", "start", "--socket", "/tmp/tether-never/helper.sock"]) == 4
    assert "must run as root" in capsys.readouterr().err


def test_the_daemon_serves_the_real_session(monkeypatch):
    from tether.helper.root import daemon, session
    from tether.helper.root.server.session_api import SessionConfig

    built = []
    monkeypatch.setattr(session, "create_session", lambda config: built.append(config) or "the session")
    config = SessionConfig(runtime_dir="/run/tether", state_dir="/var/lib/tether")
    assert daemon.create_session(config) == "the session"
    assert built == [config]


@pytest.fixture
def cleanup_as_root(monkeypatch):
    """`tether helper cleanup` with a recorded cleanup.run in place of the real one, as root."""
    from tether.helper.root import cleanup
    from tether.helper.user.cli import helpercmd

    calls = []
    result = {"report": cleanup.CleanupReport(removed=["link tether0"])}

    def run(journal_path, *, force=False):
        calls.append((str(journal_path), force))
        if isinstance(result["report"], Exception):
            raise result["report"]
        return result["report"]

    monkeypatch.setattr(helpercmd.os, "geteuid", lambda: 0)
    monkeypatch.setattr(cleanup, "run", run)
    return calls, result


def test_helper_cleanup_prints_the_report(cleanup_as_root, capsys):
    from tether.helper.root import cleanup

    calls, result = cleanup_as_root
    assert main(["helper", "cleanup"]) == 0
    assert capsys.readouterr().out == "removed link tether0\n"
    assert main(["helper", "cleanup", "--force", "--journal", "/tmp/j.json"]) == 0
    assert calls == [(str(cleanup.DEFAULT_JOURNAL_PATH), False), ("/tmp/j.json", True)]
    capsys.readouterr()

    result["report"] = cleanup.CleanupReport(errors=["cannot remove link tether0: busy"])
    assert main(["helper", "cleanup"]) == 1
    assert "error: cannot remove link tether0: busy" in capsys.readouterr().out


def test_helper_cleanup_refuses_while_the_journal_s_helper_runs(cleanup_as_root, capsys):
    from pathlib import Path

    from tether.helper.root import cleanup
    from tether.helper.root.journal import OwnerMark

    _, result = cleanup_as_root
    result["report"] = cleanup.CleanupRefused(OwnerMark(pid=4242), Path("/run/tether/journal.json"))
    assert main(["helper", "cleanup"]) == 1
    assert "(pid 4242) is still running" in capsys.readouterr().err


def test_helper_cleanup_needs_root(monkeypatch, capsys):
    from tether.helper.user.cli import helpercmd

    monkeypatch.setattr(helpercmd.os, "geteuid", lambda: 1000)
    assert main(["helper", "cleanup"]) == 4
    assert "cleanup needs root" in capsys.readouterr().err


def test_a_forced_dns_mode_goes_to_the_helper_and_status_shows_why(helper, kubeconfig, capsys):
    sock = str(helper.socket_path)
    assert main(["connect", "--socket", sock]) == 0
    assert helper.session.connects[-1][0].dns_mode == ""
    assert main(["status", "--socket", sock]) == 0
    text = capsys.readouterr().out
    assert "dns mode         fake probes\n" in text
    assert "dns probes       platform: fake\n                 resolv.conf: nameserver 192.0.2.53 (a file)\n" in text
    assert main(["disconnect", "--socket", sock]) == 0

    assert main(["connect", "--socket", sock, "--dns-mode", "linux-nft"]) == 0
    assert helper.session.connects[-1][0].dns_mode == "linux-nft"
    capsys.readouterr()
    assert main(["status", "--socket", sock, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["dns_mode"], status["dns_mode_forced"]) == ("linux-nft", True)
    assert status["dns_mode_reason"] == "forced with --dns-mode (fake probes)"
    assert status["dns_probes"] == ["platform: fake", "resolv.conf: nameserver 192.0.2.53 (a file)"]
    assert main(["status", "--socket", sock]) == 0
    assert "dns mode         forced with --dns-mode (fake probes)\n" in capsys.readouterr().out
