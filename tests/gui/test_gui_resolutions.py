"""``connect_remembering``: the one rule the tray and the CLI share for remembered VPN-conflict resolutions.

The CLI half runs ``tether connect`` against the fake helper in conflict mode, so a change to the shared
function that broke the CLI shows here too.
"""

from __future__ import annotations

import shutil

import grpc
import pytest
from test_gui_support import (
    VPN_CONFLICT,
    FakeHelper,
    collect_garbage_on_the_gui_thread,  # noqa: F401 (an autouse fixture)
    short_dir,
    write_kubeconfig,
)

from tether.helper.api import helper_pb2 as pb
from tether.helper.user.cli.main import main as cli
from tether.helper.user.client import HelperCallError
from tether.helper.user.resolutions import Resolution, ResolutionStore, connect_remembering

CONNECTED = pb.State(phase=pb.State.CONNECTED, cluster="lab")


def request(**fields) -> pb.ConnectRequest:
    return pb.ConnectRequest(context="lab", **fields)


def test_a_request_without_a_resolution_gets_the_remembered_one(tmp_path):
    store = ResolutionStore(tmp_path / "r.json")
    store.remember("lab", Resolution(proxy_via=("all=default/web",)))
    sent, announced = [], []
    connect_remembering(request(), lambda r: sent.append(r) or CONNECTED, store, on_remembered=announced.append)
    assert list(sent[0].proxy_via) == ["all=default/web"]
    assert announced == [Resolution(proxy_via=("all=default/web",))]


def test_a_given_resolution_wins_and_is_remembered_only_once_connected(tmp_path):
    store = ResolutionStore(tmp_path / "r.json")
    store.remember("lab", Resolution(proxy_via=("all=default/web",)))
    given = request(allow_conflicting_subnets=["10.0.0.0/8"])
    failed = pb.State(phase=pb.State.DISCONNECTED, last_error="x")
    connect_remembering(given, lambda r: failed, store)
    assert store.get("lab") == Resolution(proxy_via=("all=default/web",)), "a failed connect changes nothing"
    sent = []
    connect_remembering(given, lambda r: sent.append(r) or CONNECTED, store)
    assert list(sent[0].proxy_via) == [], "the remembered one is not mixed in"
    assert store.get("lab") == Resolution(allow_conflicting_subnets=("10.0.0.0/8",))


def test_an_error_remembers_nothing_and_forget_drops_the_remembered_one(tmp_path):
    store = ResolutionStore(tmp_path / "r.json")

    def refuse(_request):
        raise HelperCallError(grpc.StatusCode.FAILED_PRECONDITION, "10.96.0.0/12 overlaps 10.0.0.0/8")

    with pytest.raises(HelperCallError):
        connect_remembering(request(auto_resolve=True), refuse, store)
    assert store.get("lab") is None
    store.remember("lab", Resolution(auto_resolve=True))
    sent = []
    connect_remembering(request(), lambda r: sent.append(r) or CONNECTED, store, forget=True)
    assert not sent[0].auto_resolve and store.get("lab") is None


@pytest.fixture
def helper():
    base = short_dir()
    fake = FakeHelper(base / "run" / "helper.sock").start()
    fake.session.conflict_with([VPN_CONFLICT])
    yield fake
    fake.stop()
    shutil.rmtree(base, ignore_errors=True)


def test_the_cli_remembers_a_working_resolution_and_reuses_it(helper, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path)))
    sock = str(helper.socket_path)
    assert cli(["connect", "--socket", sock]) == 1, "the conflict fails the plain connect"
    assert cli(["connect", "--socket", sock, "--allow-conflicting-subnets", "10.0.0.0/8"]) == 0
    assert cli(["disconnect", "--socket", sock]) == 0
    capsys.readouterr()
    assert cli(["connect", "--socket", sock]) == 0
    assert "using the resolution remembered for lab: --allow-conflicting-subnets 10.0.0.0/8" in capsys.readouterr().out
    assert list(helper.requests[-1].allow_conflicting_subnets) == ["10.0.0.0/8"]
    assert cli(["disconnect", "--socket", sock]) == 0
    assert cli(["connect", "--socket", sock, "--forget-resolution"]) == 1
    assert ResolutionStore(tmp_path / "config" / "tether" / "resolutions.json").get("lab") is None
