"""What the tray shows, computed from what the controller knows (pure: no Qt, no I/O).

``compute_view(state, unreachable, clusters, activity)`` gives the icon, the tooltip and the menu model.
The tray renders the model as it is; tests and the end-to-end test find entries by their ``key``, which
is also the Qt object name of the rendered action.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from typing import Literal

from tether.gui.contexts import ClusterList, Source
from tether.helper.api import helper_pb2 as pb
from tether.helper.user.client import HelperError, HelperNotInstalledError, HelperNotRunningError, HelperPermissionError

IconKey = Literal["disconnected", "connecting", "connected", "conflict", "error"]
ICON_KEYS: tuple[IconKey, ...] = ("disconnected", "connecting", "connected", "conflict", "error")

# Action ids (what a click asks for).
CONNECT = "connect"  # argument: the cluster's name
DISCONNECT = "disconnect"
CANCEL = "cancel"  # stop a running connect (a Disconnect, for the helper)
CONFLICTS = "conflicts"
STATUS_WINDOW = "status-window"
SETTINGS = "settings"
ADD_CLUSTER = "add-cluster"
RETRY = "retry"
RECONNECT = "reconnect"  # argument: the cluster of the session a dead helper took with it
QUIT = "quit"

# Keys (Qt object names) of the entries other code looks for.
KEY_HEADER = "tether-header"
KEY_CONNECT = "tether-connect"
KEY_DISCONNECT = "tether-disconnect"
KEY_CANCEL = "tether-cancel"
KEY_CLUSTERS = "tether-clusters"
KEY_CLUSTER_PREFIX = "tether-cluster:"
KEY_CONFLICTS = "tether-conflicts"
KEY_STATUS_WINDOW = "tether-status-window"
KEY_SETTINGS = "tether-settings"
KEY_ADD_CLUSTER = "tether-add-cluster"
KEY_RETRY = "tether-retry"
KEY_RECONNECT = "tether-reconnect"
KEY_LOST = "tether-lost-session"
KEY_QUIT = "tether-quit"
KEY_STATUS_PREFIX = "tether-status-"  # + cluster, namespace, manager, subnets, dns, step, error
KEY_UNREACHABLE_REASON = "tether-unreachable-reason"
KEY_UNREACHABLE_FIX = "tether-unreachable-fix"
KEY_PROBLEM_PREFIX = "tether-problem-"

LINE_WIDTH = 64  # menus do not wrap; long sentences become several lines
MAX_SUBNETS_SHOWN = 4
_COMMAND = re.compile(r"`[^`]*`")
ACTIVE_PHASES = (pb.State.CONNECTING, pb.State.CONNECTED, pb.State.RECONNECTING)


@dataclass(frozen=True)
class Activity:
    """A call this tray has running: ``kind`` "connect" or "disconnect"; ``step`` the latest progress."""

    kind: Literal["connect", "disconnect"]
    cluster: str = ""
    step: str = ""


@dataclass(frozen=True)
class Entry:
    key: str
    label: str
    action: str = ""  # empty: an information line (shown disabled)
    argument: str = ""
    enabled: bool = True
    checkable: bool = False
    checked: bool = False


@dataclass(frozen=True)
class Separator:
    key: str


@dataclass(frozen=True)
class Submenu:
    key: str
    label: str
    items: tuple[Item, ...]
    enabled: bool = True


Item = Entry | Separator | Submenu


@dataclass(frozen=True)
class TrayView:
    icon: IconKey
    tooltip: str
    menu: tuple[Item, ...]

    def find(self, key: str) -> Entry | Submenu | None:
        """The entry or submenu with this key, searching submenus too."""
        return _find(self.menu, key)

    def entries(self) -> list[Entry]:
        """Every entry, submenus flattened, in menu order."""
        return list(_entries(self.menu))


def _find(items: tuple[Item, ...], key: str) -> Entry | Submenu | None:
    for item in items:
        if isinstance(item, Entry | Submenu) and item.key == key:
            return item
        if isinstance(item, Submenu) and (found := _find(item.items, key)) is not None:
            return found
    return None


def _entries(items: tuple[Item, ...]) -> list[Entry]:
    found: list[Entry] = []
    for item in items:
        if isinstance(item, Entry):
            found.append(item)
        elif isinstance(item, Submenu):
            found.extend(_entries(item.items))
    return found


def info_lines(key: str, text: str) -> list[Entry]:
    """An information line, wrapped; the first line keeps ``key``, the others get ``key-2``, ``key-3``..."""
    # A `command` stays on one line (its spaces become no-break spaces, which textwrap does not split
    # on), and so do paths: a break inside either would make it wrong to type.
    text = _COMMAND.sub(lambda match: match.group(0).replace(" ", "\u00a0"), text)
    lines = textwrap.wrap(
        text, LINE_WIDTH, subsequent_indent="    ", break_on_hyphens=False, break_long_words=False
    ) or [""]
    return [Entry(key if i == 0 else f"{key}-{i + 1}", line, enabled=False) for i, line in enumerate(lines)]


# --- words ---------------------------------------------------------------------------------------------


def unreachable_title(error: HelperError) -> str:
    """A few words on why the helper cannot be reached, by the kind of error."""
    if isinstance(error, HelperPermissionError):
        return "Not allowed to use the Tether helper"
    if isinstance(error, HelperNotInstalledError):
        return "Tether helper not installed or not started"
    if isinstance(error, HelperNotRunningError):
        return "Tether helper not running"
    return "Tether helper unreachable"


def icon_for(state: pb.State | None, unreachable: HelperError | None, activity: Activity | None) -> IconKey:
    if unreachable is not None:
        return "error"
    if activity is not None and activity.kind == "connect":
        return "connecting"
    if state is None:
        return "disconnected"
    if state.conflicts:
        return "conflict"
    if state.phase in (pb.State.CONNECTING, pb.State.RECONNECTING):
        return "connecting"
    if state.phase == pb.State.CONNECTED:
        return "connected"
    if state.phase == pb.State.ERROR or state.last_error:
        return "error"
    return "disconnected"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def headline(state: pb.State | None, unreachable: HelperError | None, activity: Activity | None) -> str:
    """The state in words, as the first menu line and the tooltip say it."""
    if unreachable is not None:
        return unreachable_title(unreachable)
    if activity is not None and activity.kind == "connect":
        return f"Connecting to {activity.cluster}…"
    if activity is not None and activity.kind == "disconnect":
        return "Disconnecting…"
    if state is None:
        return "Contacting the Tether helper…"
    cluster = state.cluster or "the cluster"
    if state.phase == pb.State.CONNECTED:
        return f"Connected to {cluster}" + (" (with a VPN conflict)" if state.conflicts else "")
    if state.phase == pb.State.CONNECTING:
        return f"Connecting to {cluster}…"
    if state.phase == pb.State.RECONNECTING:
        return f"Reconnecting to {cluster}…"
    if state.conflicts:
        return f"VPN conflict: not connected to {cluster}"
    if state.phase == pb.State.ERROR:
        return f"Error on {cluster}: disconnect to clean up"
    if state.last_error:
        return "Not connected: the last connect failed"
    return "Not connected"


def tooltip(state: pb.State | None, unreachable: HelperError | None, activity: Activity | None) -> str:
    lines = [f"Tether: {headline(state, unreachable, activity)}"]
    if unreachable is not None:
        lines.append(unreachable.message)
    elif activity is not None and activity.step:
        lines.append(activity.step)
    elif state is not None and state.phase == pb.State.CONNECTED:
        subnets = len(state.routed_subnets)
        lines.append(f"namespace {state.namespace or '-'}, {subnets} subnet{'s' if subnets != 1 else ''} routed")
    elif state is not None and state.conflicts:
        lines.append(_first_line(state.conflicts[0].description) or f"{state.conflicts[0].subnet} is taken")
    elif state is not None and state.last_error:
        lines.append(_first_line(state.last_error))
    return "\n".join(lines)


def status_lines(state: pb.State | None, activity: Activity | None) -> list[Entry]:
    """Cluster, namespace, manager version, routed subnets, DNS mode; progress and the last error."""
    lines: list[Entry] = []
    if activity is not None and activity.step:
        lines += info_lines(f"{KEY_STATUS_PREFIX}step", f"… {activity.step}")
    if state is None:
        return lines
    active = state.phase in ACTIVE_PHASES or state.phase == pb.State.ERROR
    if state.cluster and active:
        lines += info_lines(f"{KEY_STATUS_PREFIX}cluster", f"Cluster: {state.cluster}")
    if state.namespace and active:
        lines += info_lines(f"{KEY_STATUS_PREFIX}namespace", f"Namespace: {state.namespace}")
    if state.manager_version:
        lines += info_lines(f"{KEY_STATUS_PREFIX}manager", f"Manager version: {state.manager_version}")
    if state.routed_subnets:
        cidrs = [s.cidr for s in state.routed_subnets]
        shown = ", ".join(cidrs[:MAX_SUBNETS_SHOWN])
        if len(cidrs) > MAX_SUBNETS_SHOWN:
            shown += f" and {len(cidrs) - MAX_SUBNETS_SHOWN} more"
        lines += info_lines(f"{KEY_STATUS_PREFIX}subnets", f"Routed subnets: {shown}")
    if state.dns_mode:
        forced = " (forced)" if state.dns_mode_forced else ""
        lines += info_lines(f"{KEY_STATUS_PREFIX}dns", f"DNS: {state.dns_mode}{forced}")
    if state.last_error and not state.conflicts:
        lines += info_lines(f"{KEY_STATUS_PREFIX}error", f"Last error: {_first_line(state.last_error)}")
    return lines


def connect_target(state: pb.State | None, clusters: ClusterList) -> str:
    """The cluster the top "Connect" entry connects: the last one used if still listed, else the current one."""
    if state is not None and state.cluster and clusters.find(state.cluster) is not None:
        return state.cluster
    current = clusters.current
    if current is not None:
        return current.name
    return clusters.clusters[0].name if clusters.clusters else ""


def _cluster_items(state: pb.State | None, clusters: ClusterList, can_connect: bool) -> tuple[Item, ...]:
    active = state.cluster if state is not None and state.phase in ACTIVE_PHASES else ""
    items: list[Item] = []
    for source in (Source.KUBECONFIG, Source.ADDED):
        group = [c for c in clusters.clusters if c.source == source]
        if group and items:
            items.append(Separator(f"tether-clusters-{source.value}"))
        for cluster in group:
            label = cluster.name + ("  (current context)" if cluster.current else "")
            items.append(
                Entry(
                    KEY_CLUSTER_PREFIX + cluster.name,
                    label,
                    CONNECT,
                    cluster.name,
                    enabled=can_connect and cluster.name != active,
                    checkable=True,
                    checked=cluster.name == active,
                )
            )
    if not clusters.clusters and not clusters.problems:
        items += info_lines(f"{KEY_PROBLEM_PREFIX}none", "No clusters: your kubeconfig has no contexts")
    for index, problem in enumerate(clusters.problems):
        items += info_lines(f"{KEY_PROBLEM_PREFIX}{index}", problem)
    items += [Separator("tether-clusters-end"), Entry(KEY_ADD_CLUSTER, "Add cluster…", ADD_CLUSTER)]
    return tuple(items)


def _connection_entries(
    state: pb.State | None, reachable: bool, activity: Activity | None, target: str, lost: str = ""
) -> list[Entry]:
    phase = state.phase if state is not None else None
    if activity is not None and activity.kind == "disconnect":
        return [Entry(KEY_DISCONNECT, "Disconnecting…", DISCONNECT, enabled=False)]
    if (activity is not None and activity.kind == "connect") or phase == pb.State.CONNECTING:
        return [Entry(KEY_CANCEL, "Cancel connecting", CANCEL, enabled=reachable)]
    entries: list[Entry] = []
    if phase in (pb.State.CONNECTED, pb.State.RECONNECTING, pb.State.ERROR) and state is not None:
        label = f"Disconnect from {state.cluster or 'the cluster'}"
        entries.append(Entry(KEY_DISCONNECT, label, DISCONNECT, enabled=reachable))
    if phase not in (pb.State.CONNECTED, pb.State.RECONNECTING):
        if lost:  # enabled once the (restarted) helper answers again
            entries.append(Entry(KEY_RECONNECT, f"Reconnect to {lost}", RECONNECT, lost, enabled=reachable))
        else:
            label = f"Connect to {target}" if target else "Connect"
            entries.append(Entry(KEY_CONNECT, label, CONNECT, target, enabled=reachable and bool(target)))
    return entries


def compute_view(
    state: pb.State | None,
    unreachable: HelperError | None,
    clusters: ClusterList,
    activity: Activity | None = None,
    intercepts: Submenu | None = None,
    lost: str = "",
) -> TrayView:
    """``intercepts``: the Intercepts section (``intercept_menu.section``), placed after the status lines;
    ``lost``: the cluster of a session the helper died in (TrayController.lost_session), "" if none."""
    reachable = unreachable is None and state is not None
    menu: list[Item] = [Entry(KEY_HEADER, headline(state, unreachable, activity), enabled=False)]
    if lost:
        menu += info_lines(KEY_LOST, f"Session with {lost} lost: the helper stopped")
    if unreachable is not None:
        menu += info_lines(KEY_UNREACHABLE_REASON, unreachable.message)
        if unreachable.fix:
            menu += info_lines(KEY_UNREACHABLE_FIX, f"Fix: {unreachable.fix}")
        menu.append(Entry(KEY_RETRY, "Try again now", RETRY))
    else:
        menu += status_lines(state, activity)
    if state is not None and state.conflicts and unreachable is None:
        count = len(state.conflicts)
        menu += [
            Separator("tether-conflicts-separator"),
            Entry(KEY_CONFLICTS, f"VPN conflicts ({count})…", CONFLICTS),
        ]
    if intercepts is not None and unreachable is None:
        menu += [Separator("tether-intercepts-separator"), intercepts]
    menu.append(Separator("tether-connection-separator"))
    target = connect_target(state, clusters)
    menu += _connection_entries(state, reachable, activity, target, lost)
    can_connect = reachable and activity is None and (state is None or state.phase != pb.State.CONNECTING)
    menu.append(Submenu(KEY_CLUSTERS, "Clusters", _cluster_items(state, clusters, can_connect)))
    menu += [
        Separator("tether-windows-separator"),
        Entry(KEY_STATUS_WINDOW, "Open status window", STATUS_WINDOW),
        Entry(KEY_SETTINGS, "Settings…", SETTINGS),
        Separator("tether-quit-separator"),
        Entry(KEY_QUIT, "Quit", QUIT),
    ]
    return TrayView(icon_for(state, unreachable, activity), tooltip(state, unreachable, activity), tuple(menu))
