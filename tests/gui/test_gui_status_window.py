"""The status window (offscreen Qt) and the diagnostics report it copies."""

import datetime as dt

import pytest
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QLabel, QListWidget

from tether.gui import status_window as status_module
from tether.gui.diagnostics import collect_versions, diagnostics_text, scrub
from tether.gui.state_summary import ResolutionLine, resolution_lines
from tether.gui.status_window import StatusWindow
from tether.helper.api import helper_pb2 as pb
from tether.helper.user.client import HelperNotRunningError
from tether.helper.user.resolutions import Resolution

VERSIONS = {"tether": "0.1.0", "PySide6": "6.12.0", "Qt": "6.12.0", "Python": "CPython 3.11.2", "OS": "Linux-test"}
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW0ifQ.c2lnbmF0dXJlLXNlY3JldA"


def connected_state() -> pb.State:
    return pb.State(
        phase=pb.State.CONNECTED,
        cluster="lab",
        server="https://10.0.0.1:6443",
        namespace="apps",
        manager_version="0.2.0",
        manager_api_level=2,
        client_version="0.1.0",
        client_api_level=1,
        routed_subnets=[pb.Subnet(cidr="10.244.0.0/16", via="tether0"), pb.Subnet(cidr="10.100.0.0/16", via="tether0")],
        dns_mode="nftables-dnat",
        dns_server="127.0.0.53:53",
        remapped=[
            pb.Remap(subnet="10.96.0.0/12", workload="default/echo", reason="proxy-via"),
            pb.Remap(subnet="172.20.0.0/16", workload="", reason="auto-resolve"),
        ],
        conflicts=[pb.Conflict(subnet="10.32.0.0/16", route="10.32.0.0/12", device="wg0")],
        tun_device="tether0",
        virtual_subnet="100.64.0.0/16",
    )


class Clock:
    def __init__(self):
        self.now = dt.datetime(2026, 1, 2, 9, 0, 0)

    def __call__(self):
        self.now += dt.timedelta(seconds=1)
        return self.now


@pytest.fixture
def window(qtbot):
    widget = StatusWindow(versions=VERSIONS, clock=Clock())
    qtbot.addWidget(widget)
    return widget


def items(widget: QListWidget) -> list[str]:
    return [widget.item(i).text() for i in range(widget.count())]


def test_resolution_lines_from_remaps_conflicts_and_the_allow_list():
    resolution = Resolution(allow_conflicting_subnets=("10.100.0.0/16",))
    assert resolution_lines(connected_state(), resolution) == [
        ResolutionLine("10.96.0.0/12", "remapped via default/echo", "proxy-via"),
        ResolutionLine("172.20.0.0/16", "automatic remap", "the traffic-manager dials"),
        ResolutionLine("10.100.0.0/16", "allowed", "routed into the cluster by the allow range 10.100.0.0/16"),
        ResolutionLine("10.32.0.0/16", "unresolved", "overlaps the route 10.32.0.0/12 on wg0"),
    ]


def test_shows_the_connection(window):
    window.show_state(connected_state(), Resolution(allow_conflicting_subnets=("10.100.0.0/16",)))
    assert window.findChild(QLabel, "statusCluster").text() == "lab"
    assert window.field_text("statusServer") == "https://10.0.0.1:6443"
    assert window.field_text("statusNamespace") == "apps"
    assert window.field_text("statusPhase") == "connected"
    assert window.field_text("statusClientVersion") == "0.1.0 (API level 1)"
    assert window.field_text("statusManagerVersion") == "0.2.0 (API level 2)"
    assert window.field_text("statusDnsMode") == "nftables-dnat (127.0.0.53:53)"
    assert window.field_text("statusError") == "—"
    assert items(window.findChild(QListWidget, "routedSubnets")) == [
        "10.244.0.0/16 via tether0",
        "10.100.0.0/16 via tether0",
    ]
    assert items(window.findChild(QListWidget, "conflictResolutions")) == [
        "10.96.0.0/12: remapped via default/echo (proxy-via)",
        "172.20.0.0/16: automatic remap (the traffic-manager dials)",
        "10.100.0.0/16: allowed (routed into the cluster by the allow range 10.100.0.0/16)",
        "10.32.0.0/16: unresolved (overlaps the route 10.32.0.0/12 on wg0)",
    ]
    # The resolution given once stays for the states that follow, until a disconnect.
    window.show_state(connected_state())
    assert "10.100.0.0/16: allowed" in items(window.conflictResolutions)[2]
    window.show_state(pb.State(phase=pb.State.DISCONNECTED, last_error="the connect was cancelled"))
    assert items(window.conflictResolutions) == ["(none)"]
    assert items(window.routedSubnets) == ["(none)"]
    assert window.field_text("statusPhase") == "disconnected"
    assert window.field_text("statusError") == "the connect was cancelled"
    assert window.field_text("statusClientVersion") == window.field_text("statusManagerVersion") == "—"


def test_recent_events_are_timestamped_newest_first_and_bounded(window, monkeypatch):
    monkeypatch.setattr(status_module, "MAX_EVENTS", 3)
    for n in range(5):
        window.add_event(f"event {n}")
    assert items(window.recentEvents) == ["09:00:05  event 4", "09:00:04  event 3", "09:00:03  event 2"]


def test_default_event_bound(window):
    for n in range(status_module.MAX_EVENTS + 10):
        window.add_event(f"e{n}")
    assert window.recentEvents.count() == status_module.MAX_EVENTS
    assert len(window.events()) == status_module.MAX_EVENTS
    assert window.events()[-1].endswith(f"e{status_module.MAX_EVENTS + 9}")


def test_unreachable_helper_is_shown_until_the_next_state(window):
    error = HelperNotRunningError("the Tether helper is not running", "Restart it: `sudo tether helper start`")
    window.set_unreachable(error)
    banner = window.findChild(QLabel, "unreachableBanner")
    assert not banner.isHidden()
    assert banner.text() == (
        "The Tether helper cannot be reached: the Tether helper is not running\nRestart it: `sudo tether helper start`"
    )
    window.show_state(connected_state())
    assert banner.isHidden()


def test_copy_diagnostics_puts_the_report_on_the_clipboard(qtbot, window):
    window.show_state(connected_state())
    window.add_event("connected to lab")
    window.add_event(f"kubeconfig user token: {JWT}")  # something that must never leave the machine
    with qtbot.waitSignal(window.diagnosticsCopied) as copied:
        window.copyDiagnosticsButton.click()
    text = QGuiApplication.clipboard().text()
    assert text == copied.args[0]
    assert text.startswith("Tether diagnostics\n")
    for expected in (
        "  tether: 0.1.0",
        "  PySide6: 6.12.0",
        "  Python: CPython 3.11.2",
        "  OS: Linux-test",
        "  phase: connected",
        "  cluster: lab",
        "  client version: 0.1.0 (API level 1)",
        "  manager version: 0.2.0 (API level 2)",
        "  DNS mode: nftables-dnat",
        "  10.244.0.0/16 via tether0",
        "  10.96.0.0/12: remapped via default/echo (proxy-via)",
        "  09:00:01  connected to lab",
    ):
        assert expected in text.splitlines(), expected
    assert JWT not in text
    assert "token: [redacted]" in text


def test_diagnostics_text_has_no_secrets_and_names_missing_parts():
    state = pb.State(phase=pb.State.ERROR, last_error=f"Authorization: Bearer {JWT}")
    text = diagnostics_text(state, [], VERSIONS, Resolution(auto_resolve=True))
    assert JWT not in text
    assert "Bearer [redacted]" in text
    assert "Routed subnets:\n  (none)" in text
    assert "Recent events:\n  (none)" in text
    assert "remembered choice: --auto-resolve" in text


def test_scrub_leaves_ordinary_text_alone():
    plain = "10.96.0.0/12 overlaps 10.0.0.0/8 on tun-vpn; no token for lab"
    assert scrub(plain) == plain
    assert scrub('{"token": "abc123"}') == '{"token": "[redacted]"}'
    key = "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----"
    assert scrub(f"x {key} y") == "x [redacted] y"


def test_collect_versions_names_everything():
    versions = collect_versions()
    assert set(versions) == {"tether", "PySide6", "Qt", "Python", "OS"}
    assert versions["PySide6"].startswith("6.")


def test_shows_why_the_dns_mode_and_the_probes(window):
    state = connected_state()
    state.dns_mode = "linux-nft"
    state.dns_mode_reason = "forced with --dns-mode (the probes choose systemd-resolved: resolv.conf sends ...)"
    state.dns_mode_forced = True
    state.dns_probes.extend(["platform: linux", "systemd-resolved: on the system bus, ResolvConfMode stub"])
    window.show_state(state)
    assert window.field_text("statusDnsReason") == state.dns_mode_reason
    assert window.field_text("statusDnsProbes") == "\n".join(state.dns_probes)
    assert state.dns_probes[1] in window.field_text("statusDnsProbes").splitlines()
    report = window.diagnostics()
    assert f"  DNS mode chosen: {state.dns_mode_reason}\n" in report
    assert "  DNS probes: platform: linux; systemd-resolved: on the system bus, ResolvConfMode stub\n" in report
    window.show_state(pb.State(phase=pb.State.DISCONNECTED))
    assert window.field_text("statusDnsReason") == window.field_text("statusDnsProbes") == "—"
