"""The tray's Intercepts section, status lines, dialog form and intercept notifications (pure logic)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tether.gui import intercept_menu as im
from tether.gui import notify, view
from tether.gui.contexts import ClusterList
from tether.gui.intercept_form import FormError, intercept_choice
from tether.helper.api import helper_pb2 as pb


def ours(name: str = "web", phase: str = "active", **fields: object) -> pb.InterceptState:
    values = dict(namespace="default", workload=name, kind="Deployment", service=name, service_port=80, port=8080)
    values.update(local_port=9000, client="dev@box", phase=phase, agents_intercepting=1, agents_live=1, ours=True)
    values.update(fields)
    return pb.InterceptState(**values)


def theirs(name: str = "api") -> pb.InterceptState:
    return ours(name, ours=False, client="alice@laptop", since_unix_ms=1_700_000_000_000, local_port=0)


def connected(*items: pb.InterceptState, error: str = "") -> pb.State:
    return pb.State(
        phase=pb.State.CONNECTED, cluster="lab", namespace="default", intercepts=items, intercept_error=error
    )


def listing(*workloads: tuple[str, tuple[pb.InterceptState, ...]]) -> tuple[pb.WorkloadInfo, ...]:
    return tuple(
        pb.WorkloadInfo(namespace="default", name=n, kind="Deployment", intercepts=list(i)) for n, i in workloads
    )


def labels(section: view.Submenu | None) -> dict[str, str]:
    assert section is not None
    return {entry.key: entry.label for entry in view.TrayView("connected", "", (section,)).entries()}


def test_no_section_unless_connected():
    assert im.section(None, im.Workloads()) is None
    assert im.section(pb.State(phase=pb.State.DISCONNECTED), im.Workloads()) is None
    assert im.section(pb.State(phase=pb.State.CONNECTING), im.Workloads()) is None


def test_before_the_listing_arrives_it_says_so():
    assert im.KEY_LOADING in labels(im.section(connected(), im.Workloads()))


def test_workloads_offer_intercept_ours_offer_leave_and_others_show_who_and_since():
    workloads = im.Workloads("default", listing(("api", (theirs(),)), ("db", ()), ("web", (ours(),))), loaded=True)
    section = im.section(connected(ours()), workloads)
    assert section is not None and section.label == "Intercepts (1 active)"
    entries = {e.key: e for e in view.TrayView("connected", "", (section,)).entries()}
    db = entries["tether-workload:default/db"]
    assert (db.label, db.action, db.argument, db.enabled) == (
        "Intercept db (Deployment)…",
        im.INTERCEPT,
        "default/db",
        True,
    )
    web = entries["tether-workload:default/web"]
    assert (web.label, web.action, web.argument) == (
        "Leave web (port 8080 → localhost:9000, active)",
        im.LEAVE,
        "default/web",
    )
    api = entries["tether-workload:default/api"]
    assert not api.action and "intercepted by someone else" in api.label
    other = entries["tether-intercept-other:default/api/8080"]
    assert "alice@laptop since 2023-11-14T22:13:20" in other.label


def test_the_state_is_fresher_than_the_listing():
    workloads = im.Workloads("default", listing(("web", (ours(phase="waiting"),))), loaded=True)
    assert "active" in labels(im.section(connected(ours()), workloads))["tether-workload:default/web"]
    # Left since the listing: the state has no intercept any more, so the row offers Intercept again.
    assert labels(im.section(connected(), workloads))["tether-workload:default/web"].startswith("Intercept web")


def test_an_intercept_of_ours_outside_the_listing_is_still_shown():
    section = im.section(connected(ours("cart", namespace="shop")), im.Workloads("default", (), loaded=True))
    assert labels(section)["tether-workload:shop/cart"].startswith("Leave cart")


def test_waiting_failed_busy_and_errors_are_shown():
    waiting = ours(phase="waiting", agents_intercepting=0, agents_live=2)
    got = labels(im.section(connected(waiting), im.Workloads(loaded=True)))
    assert "waiting (0 of 2 agents)" in got["tether-workload:default/web"]
    failed = ours(phase="failed", error="the agent of web-1 went away")
    got = labels(im.section(connected(failed, error="the agent of web-1 went away"), im.Workloads(loaded=True)))
    assert "the agent of web-1 went away" in got["tether-workload:default/web-error"]
    assert got[im.KEY_INTERCEPT_ERROR] == "Intercept error: the agent of web-1 went away"
    busy = im.Workloads("default", listing(("web", ())), loaded=True, busy={"default/web": "intercepting"})
    entry = view.TrayView("c", "", (im.section(connected(), busy),)).find("tether-workload:default/web")
    assert entry is not None and entry.label == "web: intercepting…" and not entry.action
    failed_list = im.Workloads(error="the helper answered: not connected", last_error="nothing listens on :9000")
    got = labels(im.section(connected(), failed_list))
    assert got[im.KEY_LIST_ERROR] == "Cannot list workloads: the helper answered: not connected"
    assert got[im.KEY_INTERCEPT_ERROR] == "Intercept error: nothing listens on :9000"
    assert got[im.KEY_NONE] == "No workloads in default"


def test_a_failed_listing_is_said_once_and_long_errors_are_cut_in_the_menu_not_the_status_window():
    long = "cannot list the workloads of namespace default: " + "x" * 300
    workloads = im.Workloads(error=long)
    got = labels(im.section(connected(error=long), workloads))
    assert im.KEY_INTERCEPT_ERROR not in got
    shown = " ".join(v.strip() for k, v in got.items() if k.startswith(im.KEY_LIST_ERROR))
    assert shown.endswith("…") and len(shown) < 200
    assert im.status_lines(connected(error=long), workloads) == [f"Cannot list workloads: {long}"]


def test_entries_are_disabled_while_reconnecting_or_unreachable():
    workloads = im.Workloads("default", listing(("web", ())), loaded=True)
    reconnecting = pb.State(phase=pb.State.RECONNECTING, namespace="default")
    for section in (im.section(reconnecting, workloads), im.section(connected(), workloads, reachable=False)):
        assert section is not None
        entry = view.TrayView("c", "", (section,)).find("tether-workload:default/web")
        assert isinstance(entry, view.Entry) and not entry.enabled


def test_the_section_sits_in_the_menu_after_the_status_lines():
    section = im.section(connected(), im.Workloads(loaded=True))
    tray = view.compute_view(connected(), None, ClusterList(), None, section)
    keys = [item.key for item in tray.menu]
    assert keys.index(im.KEY_SECTION) < keys.index(view.KEY_DISCONNECT)
    assert im.KEY_SECTION not in [item.key for item in view.compute_view(connected(), None, ClusterList()).menu]


def test_status_lines_use_the_cli_words():
    workloads = im.Workloads("default", listing(("api", (theirs(),)), ("web", ())), loaded=True, last_error="boom")
    lines = im.status_lines(connected(ours(mount="/tmp/web-volumes")), workloads)
    assert lines[0] == (
        "default/web port 8080 (service web port 80) -> localhost:9000: active; volumes at /tmp/web-volumes"
    )
    assert lines[1].startswith("default/api port 8080 (service api port 80) -> alice@laptop: active, intercepted by")
    assert lines[2] == "Intercept error: boom"
    assert im.status_lines(connected(), im.Workloads()) == []


def test_notifications_on_start_failure_and_end_not_on_the_baseline():
    start = im.summary(connected(ours()))
    assert notify.on_intercepts(None, start) == []
    assert notify.on_intercepts({}, start) == [notify.Notification("Tether", "Intercepting default/web port 8080")]
    waiting = im.summary(connected(ours(phase="waiting")))
    assert notify.on_intercepts({}, waiting) == []
    assert notify.on_intercepts(waiting, start)[0].message == "Intercepting default/web port 8080"
    assert notify.on_intercepts(start, start) == []
    failed = im.summary(connected(ours(phase="failed", error="agent gone")))
    (news,) = notify.on_intercepts(start, failed)
    assert news.level is notify.Level.ERROR and news.message.endswith("failed: agent gone")
    (ended,) = notify.on_intercepts(start, {})
    assert ended.message == "The intercept of default/web port 8080 ended"
    assert notify.on_intercepts(waiting, {}) == [], "a start that failed is the failed call's to tell"


def test_the_form_gives_the_cli_request_and_names_bad_values():
    choice = intercept_choice("default", "web", local_port="9000", service_port="http", env_file="/tmp/x/web.env")
    assert (choice.request.local_port, choice.request.port, choice.request.mount) == (9000, "http", "")
    assert choice.env_file == Path("/tmp/x/web.env") and choice.env_json is None
    assert intercept_choice("default", "web", mount=False).request.mount == "false"
    assert intercept_choice("default", "web", mount_dir="/tmp/m").request.mount == "/tmp/m"
    assert intercept_choice("default", "web", mount=False, mount_dir="/tmp/m").request.mount == "false"
    with pytest.raises(FormError, match=r'port "99999": the local port "99999"'):
        intercept_choice("default", "web", local_port="99999")
    with pytest.raises(FormError, match='service port name "Bad_Name"'):
        intercept_choice("default", "web", service_port="Bad_Name")
    with pytest.raises(FormError, match=r'env file "web\.env" is not an absolute path'):
        intercept_choice("default", "web", env_file="web.env")
    with pytest.raises(FormError, match=r'mount point "m" is not an absolute path'):
        intercept_choice("default", "web", mount_dir="m")


def test_split_name_names_a_bad_value():
    assert im.split_name("shop/cart") == ("shop", "cart")
    with pytest.raises(ValueError, match='"cart" is not namespace/name'):
        im.split_name("cart")
