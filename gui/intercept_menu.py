"""The tray's Intercepts section, computed from what the tray knows (pure: no Qt, no I/O).

Two sources meet here: ``State.intercepts`` (this session's intercepts, live on the WatchState stream) and
the last ``ListWorkloads`` answer (the namespace's workloads with everyone's intercepts, read when the menu
opens). For a workload both know, the State wins: it is the fresher. ``Workloads`` is what the controller
holds; ``section(state, workloads)`` gives the submenu, ``status_lines(state, workloads)`` the status
window's lines, in the CLI's words (``helper.api.intercepts.line``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tether.gui.view import Entry, Item, Separator, Submenu, info_lines
from tether.helper.api import helper_pb2 as pb
from tether.helper.api import intercepts

INTERCEPT = "intercept"  # argument: "namespace/name"; opens the Intercept dialog
LEAVE = "leave"  # argument: "namespace/name"
REFRESH_WORKLOADS = "refresh-workloads"

KEY_SECTION = "tether-intercepts"
KEY_WORKLOAD_PREFIX = "tether-workload:"  # + namespace/name
KEY_OTHER_PREFIX = "tether-intercept-other:"  # + namespace/name/port: intercepted by someone else
KEY_LIST_ERROR = "tether-intercepts-list-error"
KEY_INTERCEPT_ERROR = "tether-intercepts-error"
KEY_NONE = "tether-intercepts-none"
KEY_LOADING = "tether-intercepts-loading"
KEY_REFRESH = "tether-intercepts-refresh"
MAX_ERROR_CHARS = 180


@dataclass(frozen=True)
class Workloads:
    """The controller's knowledge of the namespace's workloads and the intercept calls it has running."""

    namespace: str = ""
    listing: tuple[pb.WorkloadInfo, ...] = ()
    loaded: bool = False  # a listing arrived since connecting
    error: str = ""  # why the last listing failed
    busy: dict[str, str] = field(default_factory=dict)  # "namespace/name" -> "intercepting" or "leaving"
    last_error: str = ""  # the last Intercept/Leave call's error, as the helper worded it


def name_of(namespace: str, workload: str) -> str:
    return f"{namespace}/{workload}"


def split_name(value: str) -> tuple[str, str]:
    """``namespace/name`` back into its parts; ValueError names a value without both."""
    namespace, _, name = value.partition("/")
    if not namespace or not name:
        raise ValueError(f'"{value}" is not namespace/name')
    return namespace, name


def connected(state: pb.State | None) -> bool:
    return state is not None and state.phase in (pb.State.CONNECTED, pb.State.RECONNECTING)


@dataclass(frozen=True)
class Row:
    """One workload as the section shows it."""

    namespace: str
    name: str
    kind: str
    ours: tuple[pb.InterceptState, ...]
    others: tuple[pb.InterceptState, ...]


def rows(state: pb.State | None, workloads: Workloads) -> list[Row]:
    """The listed workloads plus any workload of ours the listing does not (yet) have, sorted by name."""
    mine: dict[tuple[str, str], list[pb.InterceptState]] = {}
    for item in state.intercepts if state is not None else ():
        mine.setdefault(intercepts.key(item), []).append(item)
    found: dict[tuple[str, str], Row] = {}
    for workload in workloads.listing:
        key = (workload.namespace, workload.name)
        others = tuple(i for i in workload.intercepts if not i.ours)
        listed_ours = tuple(i for i in workload.intercepts if i.ours)
        ours = tuple(mine.get(key, ())) if state is not None and connected(state) else listed_ours
        found[key] = Row(workload.namespace, workload.name, workload.kind, ours, others)
    for key, items in mine.items():
        if key not in found:
            found[key] = Row(key[0], key[1], items[0].kind, tuple(items), ())
    return sorted(found.values(), key=lambda row: (row.namespace, row.name))


def _our_label(row: Row) -> str:
    parts = []
    for item in row.ours:
        text = f"port {item.port} → localhost:{item.local_port}, {item.phase}"
        if item.phase == intercepts.WAITING:
            text += f" ({item.agents_intercepting} of {item.agents_live} agents)"
        parts.append(text)
    return f"Leave {row.name} ({'; '.join(parts)})"


def _workload_entry(row: Row, busy: str, enabled: bool) -> Entry:
    key = KEY_WORKLOAD_PREFIX + name_of(row.namespace, row.name)
    argument = name_of(row.namespace, row.name)
    if busy:
        return Entry(key, f"{row.name}: {busy}…", enabled=False)
    if row.ours:
        return Entry(key, _our_label(row), LEAVE, argument, enabled=enabled)
    if row.others:
        return Entry(key, f"{row.name} ({row.kind}): intercepted by someone else", enabled=False)
    return Entry(key, f"Intercept {row.name} ({row.kind})…", INTERCEPT, argument, enabled=enabled)


def _other_lines(row: Row) -> list[Entry]:
    lines: list[Entry] = []
    for item in row.others:
        since = intercepts.since_text(item.since_unix_ms)
        text = f"{row.name} port {item.port}: {item.client}" + (f" since {since}" if since else "")
        lines += info_lines(f"{KEY_OTHER_PREFIX}{name_of(row.namespace, row.name)}/{item.port}", "    " + text)
    return lines


def errors(state: pb.State | None, workloads: Workloads) -> list[tuple[str, str]]:
    """(key, sentence) of every intercept error the tray knows: failed intercepts come with their rows."""
    found: list[tuple[str, str]] = []
    if workloads.error:
        found.append((KEY_LIST_ERROR, f"Cannot list workloads: {workloads.error}"))
    error = workloads.last_error or (state.intercept_error if state is not None else "")
    if error and error != workloads.error:  # the helper reports a failed listing as its intercept error too
        found.append((KEY_INTERCEPT_ERROR, f"Intercept error: {error}"))
    return found


def _short(text: str) -> str:
    """A menu shows a few lines of an error; the status window has all of it."""
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1].rstrip() + "…"


def section(state: pb.State | None, workloads: Workloads, reachable: bool = True) -> Submenu | None:
    """The Intercepts submenu while connected (None otherwise)."""
    if not connected(state):
        return None
    assert state is not None
    enabled = reachable and state.phase == pb.State.CONNECTED
    items: list[Item] = []
    listed = rows(state, workloads)
    for row in listed:
        items.append(_workload_entry(row, workloads.busy.get(name_of(row.namespace, row.name), ""), enabled))
        items += _other_lines(row)
        for item in row.ours:
            if item.phase == intercepts.FAILED and item.error:
                items += info_lines(
                    f"{KEY_WORKLOAD_PREFIX}{name_of(row.namespace, row.name)}-error", f"    {item.error}"
                )
    if not listed:
        if workloads.loaded or workloads.error:
            where = workloads.namespace or state.namespace or "the namespace"
            items += info_lines(KEY_NONE, f"No workloads in {where}")
        else:
            items += info_lines(KEY_LOADING, "Listing workloads…")
    for key, text in errors(state, workloads):
        items += info_lines(key, _short(text))
    items += [Separator("tether-intercepts-end"), Entry(KEY_REFRESH, "Refresh workloads", REFRESH_WORKLOADS)]
    count = sum(len(row.ours) for row in listed)
    label = f"Intercepts ({count} active)" if count else "Intercepts"
    return Submenu(KEY_SECTION, label, tuple(items), enabled=True)


def status_lines(state: pb.State | None, workloads: Workloads) -> list[str]:
    """The status window's Intercepts list: ours, then other users', then errors; in the CLI's words."""
    listed = rows(state, workloads)
    lines = [intercepts.line(item) for row in listed for item in row.ours]
    lines += [intercepts.line(item) for row in listed for item in row.others]
    lines += [text for _key, text in errors(state, workloads)]
    return lines


def summary(state: pb.State | None) -> dict[tuple[str, str, int], tuple[str, str]]:
    """This session's intercepts by (namespace, workload, port): (phase, error), for noticing changes."""
    if state is None:
        return {}
    return {(i.namespace, i.workload, i.port): (i.phase, i.error) for i in state.intercepts}
