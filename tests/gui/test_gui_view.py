"""The pure view: icon, tooltip, status lines and menu model from (state, unreachable, clusters, activity)."""

from __future__ import annotations

import grpc
import pytest

from tether.gui import view
from tether.gui.contexts import Cluster, ClusterList, Source
from tether.helper.api import helper_pb2 as pb
from tether.helper.user.client import (
    HelperCallError,
    HelperNotInstalledError,
    HelperNotRunningError,
    HelperPermissionError,
)

CLUSTERS = ClusterList(
    (Cluster("lab", current=True), Cluster("staging"), Cluster("edge", Source.ADDED)),
)
CONNECTED = pb.State(
    phase=pb.State.CONNECTED,
    cluster="staging",
    namespace="shop",
    manager_version="1.2.3",
    routed_subnets=[pb.Subnet(cidr=c) for c in ("10.96.0.0/12", "10.244.1.0/24", "10.244.2.0/24", "a::/64", "b::/64")],
    dns_mode="nftables-dnat",
)
CONFLICT = pb.Conflict(subnet="10.96.0.0/12", route="10.0.0.0/8", description="10.96.0.0/12 overlaps 10.0.0.0/8 (vpn0)")


def labels(shown: view.TrayView) -> list[str]:
    return [e.label for e in shown.entries()]


@pytest.mark.parametrize(
    ("state", "unreachable", "activity", "icon"),
    [
        (None, None, None, "disconnected"),
        (pb.State(), None, None, "disconnected"),
        (pb.State(phase=pb.State.CONNECTING, cluster="lab"), None, None, "connecting"),
        (pb.State(phase=pb.State.RECONNECTING, cluster="lab"), None, None, "connecting"),
        (pb.State(), None, view.Activity("connect", "lab"), "connecting"),
        (CONNECTED, None, None, "connected"),
        (pb.State(phase=pb.State.DISCONNECTED, last_error="x", conflicts=[CONFLICT]), None, None, "conflict"),
        (pb.State(phase=pb.State.ERROR, conflicts=[CONFLICT]), None, None, "conflict"),
        (pb.State(phase=pb.State.CONNECTED, conflicts=[CONFLICT]), None, None, "conflict"),
        (pb.State(phase=pb.State.ERROR, last_error="routes failed"), None, None, "error"),
        (pb.State(phase=pb.State.DISCONNECTED, last_error="manager unreachable"), None, None, "error"),
        (CONNECTED, HelperNotRunningError("gone", "restart it"), None, "error"),
    ],
)
def test_icon_says_the_state(state, unreachable, activity, icon):
    assert view.compute_view(state, unreachable, CLUSTERS, activity).icon == icon


def test_tooltips_say_the_state_in_words():
    assert view.tooltip(None, None, None) == "Tether: Contacting the Tether helper…"
    assert view.tooltip(pb.State(), None, None) == "Tether: Not connected"
    assert view.tooltip(CONNECTED, None, None) == "Tether: Connected to staging\nnamespace shop, 5 subnets routed"
    assert view.tooltip(pb.State(), None, view.Activity("connect", "lab", "finding the traffic-manager")) == (
        "Tether: Connecting to lab…\nfinding the traffic-manager"
    )
    conflict = pb.State(cluster="lab", conflicts=[CONFLICT], last_error="conflict")
    assert view.tooltip(conflict, None, None) == (
        "Tether: VPN conflict: not connected to lab\n10.96.0.0/12 overlaps 10.0.0.0/8 (vpn0)"
    )
    error = pb.State(phase=pb.State.ERROR, cluster="lab", last_error="cannot add routes\ndetails")
    assert view.tooltip(error, None, None) == "Tether: Error on lab: disconnect to clean up\ncannot add routes"


@pytest.mark.parametrize(
    ("error", "title"),
    [
        (HelperNotInstalledError("no socket at /run/tether/helper.sock", "Install Tether"), "not installed"),
        (HelperNotRunningError("nothing answers", "Restart it"), "not running"),
        (HelperPermissionError('not in the "tether" group', "sudo usermod -aG tether $USER"), "Not allowed"),
        (HelperCallError(grpc.StatusCode.INTERNAL, "boom"), "unreachable"),
    ],
)
def test_unreachable_helper_names_the_reason_and_the_fix(error, title):
    shown = view.compute_view(None, error, CLUSTERS)
    assert title in shown.find(view.KEY_HEADER).label
    assert shown.tooltip.splitlines()[1] == error.message
    assert shown.find(view.KEY_UNREACHABLE_REASON).label == error.message
    if error.fix:
        assert shown.find(view.KEY_UNREACHABLE_FIX).label == f"Fix: {error.fix}"
    else:
        assert shown.find(view.KEY_UNREACHABLE_FIX) is None
    assert shown.find(view.KEY_RETRY).action == view.RETRY
    assert not shown.find(view.KEY_CONNECT).enabled
    assert not any(e.enabled for e in view._entries(shown.find(view.KEY_CLUSTERS).items) if e.action == view.CONNECT)


def test_long_sentences_wrap_without_breaking_paths_or_commands():
    error = HelperPermissionError(
        'permission denied: you are not in the "tether" group that may use the Tether helper '
        "(/run/tether/some-rather-long-directory-name/helper.sock)",
        "Add yourself with `sudo usermod -aG tether $USER`, then log out and in again (or run `newgrp tether`)",
    )
    shown = view.compute_view(None, error, CLUSTERS)
    reason = [e for e in shown.entries() if e.key.startswith(view.KEY_UNREACHABLE_REASON)]
    assert len(reason) > 1 and all(not e.enabled for e in reason)
    assert any("(/run/tether/some-rather-long-directory-name/helper.sock)" in e.label for e in reason)
    assert [e.key for e in reason] == [view.KEY_UNREACHABLE_REASON] + [
        f"{view.KEY_UNREACHABLE_REASON}-{i}" for i in range(2, len(reason) + 1)
    ]


def test_commands_in_backticks_are_never_split_across_lines():
    error = HelperNotInstalledError(
        "the Tether helper is not installed or not running (/run/tether does not exist)",
        "Install Tether (its package runs the tether-helper service), or start it with "
        "`sudo systemctl start tether-helper` or, in a terminal, `sudo tether helper start`",
    )
    shown = view.compute_view(None, error, CLUSTERS)
    fix = [e.label for e in shown.entries() if e.key.startswith(view.KEY_UNREACHABLE_FIX)]
    assert len(fix) > 1
    commands = [line for line in fix if "`" in line]
    assert any("`sudo\u00a0systemctl\u00a0start\u00a0tether-helper`" in line for line in commands)
    assert all(line.count("`") % 2 == 0 for line in fix), "no line ends inside a command"


def test_an_unreachable_helper_disables_the_stale_disconnect():
    shown = view.compute_view(CONNECTED, HelperNotRunningError("gone", "restart it"), CLUSTERS)
    assert not shown.find(view.KEY_DISCONNECT).enabled


def test_connected_status_lines_and_entries():
    shown = view.compute_view(CONNECTED, None, CLUSTERS)
    assert labels(shown)[:7] == [
        "Connected to staging",
        "Cluster: staging",
        "Namespace: shop",
        "Manager version: 1.2.3",
        "Routed subnets: 10.96.0.0/12, 10.244.1.0/24, 10.244.2.0/24,",  # wrapped: menus do not wrap
        "    a::/64 and 1 more",
        "DNS: nftables-dnat",
    ]
    assert shown.find(view.KEY_DISCONNECT).action == view.DISCONNECT
    assert shown.find(view.KEY_CONNECT) is None
    assert shown.find(view.KEY_CONFLICTS) is None
    assert shown.find(view.KEY_STATUS_WINDOW).action == view.STATUS_WINDOW
    assert shown.find(view.KEY_SETTINGS).action == view.SETTINGS
    assert shown.find(view.KEY_QUIT).label == "Quit"


def test_a_forced_dns_mode_says_so_in_the_menu():
    forced = pb.State()
    forced.CopyFrom(CONNECTED)
    forced.dns_mode, forced.dns_mode_forced = "linux-nft", True
    assert "DNS: linux-nft (forced)" in labels(view.compute_view(forced, None, CLUSTERS))


def test_clusters_submenu_lists_contexts_marks_the_current_one_and_checks_the_connected_one():
    clusters = view.compute_view(CONNECTED, None, CLUSTERS).find(view.KEY_CLUSTERS)
    assert isinstance(clusters, view.Submenu)
    entries = [item for item in clusters.items if isinstance(item, view.Entry)]
    connectable = [e for e in entries if e.action == view.CONNECT]
    assert [(e.label, e.argument, e.checked) for e in connectable] == [
        ("lab  (current context)", "lab", False),
        ("staging", "staging", True),
        ("edge", "edge", False),
    ]
    assert not connectable[1].enabled, "the connected cluster is not offered again"
    assert connectable[0].enabled and connectable[2].enabled
    kinds = [type(item).__name__ for item in clusters.items]
    assert kinds.count("Separator") == 2, "added clusters are set apart, and so is Add cluster…"
    assert entries[-1].key == view.KEY_ADD_CLUSTER


def test_connect_targets_the_last_cluster_else_the_current_context():
    assert view.compute_view(pb.State(), None, CLUSTERS).find(view.KEY_CONNECT).argument == "lab"
    after = pb.State(phase=pb.State.DISCONNECTED, cluster="staging", last_error="x")
    assert view.compute_view(after, None, CLUSTERS).find(view.KEY_CONNECT).label == "Connect to staging"
    no_current = ClusterList((Cluster("a"), Cluster("b")))
    assert view.compute_view(pb.State(), None, no_current).find(view.KEY_CONNECT).argument == "a"
    nothing = view.compute_view(pb.State(), None, ClusterList())
    assert nothing.find(view.KEY_CONNECT).label == "Connect" and not nothing.find(view.KEY_CONNECT).enabled
    assert nothing.find(f"{view.KEY_PROBLEM_PREFIX}none") is not None


def test_conflicts_entry_only_when_there_are_conflicts():
    failed = pb.State(phase=pb.State.DISCONNECTED, cluster="lab", conflicts=[CONFLICT, CONFLICT], last_error="x")
    shown = view.compute_view(failed, None, CLUSTERS)
    assert shown.find(view.KEY_CONFLICTS).label == "VPN conflicts (2)…"
    assert shown.find(view.KEY_CONFLICTS).action == view.CONFLICTS
    assert shown.find(view.KEY_HEADER).label == "VPN conflict: not connected to lab"
    assert view.compute_view(pb.State(), None, CLUSTERS).find(view.KEY_CONFLICTS) is None


def test_no_intercepts_section_until_the_helper_reports_intercepts():
    for state in (None, pb.State(), CONNECTED):
        shown = view.compute_view(state, None, CLUSTERS)
        assert not any("intercept" in e.key or "Intercept" in e.label for e in shown.entries())


def test_activity_replaces_connect_with_cancel_and_disables_cluster_choice():
    busy = view.Activity("connect", "lab", "finding the traffic-manager")
    shown = view.compute_view(pb.State(), None, CLUSTERS, busy)
    assert shown.find(view.KEY_HEADER).label == "Connecting to lab…"
    assert shown.find(f"{view.KEY_STATUS_PREFIX}step").label == "… finding the traffic-manager"
    assert shown.find(view.KEY_CANCEL).action == view.CANCEL and shown.find(view.KEY_CONNECT) is None
    assert not any(e.enabled for e in shown.entries() if e.action == view.CONNECT)
    leaving = view.compute_view(CONNECTED, None, CLUSTERS, view.Activity("disconnect", "staging"))
    assert leaving.find(view.KEY_DISCONNECT).label == "Disconnecting…"
    assert not leaving.find(view.KEY_DISCONNECT).enabled


def test_broken_kubeconfig_is_a_line_in_the_clusters_menu():
    problem = "kubeconfig /home/dev/.kube/config: not valid YAML at line 3, column 1: expected ','"
    shown = view.compute_view(pb.State(), None, ClusterList((), (problem,)))
    lines = [e.label for e in view._entries(shown.find(view.KEY_CLUSTERS).items) if not e.action]
    assert " ".join(line.strip() for line in lines).startswith("kubeconfig /home/dev/.kube/config: not valid YAML")
    assert not shown.find(view.KEY_CONNECT).enabled


def test_find_and_entries_walk_submenus():
    shown = view.compute_view(pb.State(), None, CLUSTERS)
    assert shown.find(view.KEY_CLUSTER_PREFIX + "edge").argument == "edge"
    assert shown.find("no-such-key") is None
    keys = [e.key for e in shown.entries()]
    assert len(keys) == len(set(keys)), "keys are unique (they become Qt object names)"
