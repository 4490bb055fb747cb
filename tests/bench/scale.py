"""The benchmark's scale phase: many concurrent TCP flows through the helper, with the memory and fds it costs.

``run.py --only scale`` runs it alone. The client (``client.py hold``) opens ``flows`` connections from the
workstation to the lab's TCP echo service (an asyncio server that holds any number of idle connections), echoes
a line on each, holds them all, and closes them when told. The helper's, the manager's and the API server's
RSS and open fds are read before, while the flows are held, and after they closed. Never fails on time or
memory: the helper's RSS goal is marked met/missed.
"""

from __future__ import annotations

import json
import select
import subprocess
import time
from collections.abc import Callable
from typing import Any

from tests.bench import procstat
from tether.helper.root.vif.memtrim import CHECK_INTERVAL

HELPER_RSS_GOAL_MB = 200.0
#: "back to baseline": the helper's RSS after the flows closed within this much of where it started
#: (CPython's allocator keeps some arenas it has used, so exactly back is not expected).
BACK_TO_BASELINE_MB = 20.0
#: Fds each of the lab's processes on the path may need beyond one per flow.
FD_HEADROOM = 1024


def sample(pids: dict[str, int]) -> dict[str, dict[str, Any]]:
    return {name: {"rss_mb": procstat.rss_mb(pid), "fds": procstat.fd_count(pid)} for name, pid in pids.items()}


def run_scale(
    client_argv: list[str],
    pids: dict[str, int],
    raise_for: dict[str, int],
    flows: int,
    time_limit: float,
    settle: float,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Run the hold client (``client_argv``, without its count) and sample ``pids`` around it.

    ``raise_for``: processes (the manager, the echo pod, the API server) whose open-files limit is raised to
    carry ``flows`` first."""
    limits = {name: procstat.raise_nofile(pid, flows + FD_HEADROOM) for name, pid in raise_for.items()}
    before = sample(pids)
    argv = [*client_argv, "--count", str(flows), "--time-limit", str(time_limit), "--hold-limit", "120"]
    log(f"scale: opening {flows} TCP flows to the echo service")
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    opened: dict[str, Any] = {}
    closed: dict[str, Any] = {}
    held: dict[str, dict[str, Any]] = {}
    try:
        ready, _, _ = select.select([proc.stdout], [], [], time_limit + 30)
        line = proc.stdout.readline() if ready else ""
        opened = json.loads(line) if line.strip() else {"error": f"no report from the client ({proc.poll()})"}
        log(f"scale: {opened.get('established')} established in {opened.get('seconds', 0):.1f}s; holding")
        time.sleep(3)  # let the last flows' buffers settle before reading memory
        held = sample(pids)
        proc.stdin.write("close\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        closed = json.loads(line) if line.strip() else {"error": "no final report from the client"}
    finally:
        if proc.poll() is None:
            proc.stdin.close()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    # Wait for the far ends to notice the closes (FIN through the mux, the manager's sockets) and for the
    # helper's flows to leave TIME-WAIT, up to `settle`; then a few seconds more for lazily freed buffers.
    deadline = time.monotonic() + settle
    after = sample(pids)
    while time.monotonic() < deadline:
        time.sleep(1)
        after = sample(pids)
        if all(_fds_back(before, after, name) for name in pids):
            break
    # The helper looks at its flow count every CHECK_INTERVAL and gives a drained burst's memory back then.
    time.sleep(CHECK_INTERVAL + 3)
    after = sample(pids)
    return {
        "flows": flows,
        "open": opened,
        "closed": closed,
        "nofile": limits,
        "before": before,
        "held": held,
        "after": after,
        "helper_peak_rss_mb": _hwm(pids.get("helper")),
        "helper_allocator": procstat.allocator(pids["helper"]) if "helper" in pids else None,
    }


def _fds_back(before: dict[str, Any], after: dict[str, Any], name: str) -> bool:
    b, a = before.get(name, {}).get("fds"), after.get(name, {}).get("fds")
    return b is None or a is None or a <= b + 16


def _hwm(pid: int | None) -> float | None:
    """The process's peak RSS so far (VmHWM), in MB."""
    return None if pid is None else procstat.status_mb(pid, "VmHWM")


def _helper_rss(result: dict[str, Any], when: str) -> float | None:
    return result[when].get("helper", {}).get("rss_mb")


def verdicts(result: dict[str, Any]) -> dict[str, bool | None]:
    """The goal on the first round's held flows; "back to baseline" from before the first to after the last."""
    last = result.get("rounds", [result])[-1]
    helper_held = _helper_rss(result, "held")
    helper_before = _helper_rss(result, "before")
    helper_after = _helper_rss(last, "after")
    goal = None if helper_held is None else helper_held <= HELPER_RSS_GOAL_MB
    back = None
    if helper_before is not None and helper_after is not None:
        back = helper_after - helper_before <= BACK_TO_BASELINE_MB and _fds_back(
            result["before"], result["after"], "helper"
        )
    return {"rss_goal_met": goal, "back_to_baseline": back}


def scale_table(result: dict[str, Any]) -> str:
    opened = result["open"]
    lines = [
        f"scale: {result['flows']} concurrent TCP flows to the echo service; established "
        f"{opened.get('established', '?')} in {opened.get('seconds', float('nan')):.1f}s"
        + (f"; errors {opened['errors']} e.g. {opened.get('first_errors')}" if opened.get("errors") else "")
        + (
            f"; {result['closed'].get('dropped_while_held')} dropped while held"
            if result["closed"].get("dropped_while_held")
            else ""
        ),
    ]
    for number, one in enumerate(result.get("rounds", [result])[1:], 2):
        lines.append(
            f"round {number}: established {one['open'].get('established', '?')} in "
            f"{one['open'].get('seconds', float('nan')):.1f}s"
            + (f"; errors {one['open']['errors']}" if one["open"].get("errors") else "")
        )
    header = ["round", "process", "RSS before", "RSS held", "RSS after", "fds before", "fds held", "fds after"]
    rows = [header]
    for number, one in enumerate(result.get("rounds", [result]), 1):
        for name in one["before"]:
            cells = [str(number), name]
            for key, fmt in (("rss_mb", "{:.1f} MB"), ("fds", "{}")):
                for when in ("before", "held", "after"):
                    value = one[when].get(name, {}).get(key)
                    cells.append("-" if value is None else fmt.format(value))
            rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines += ["  ".join(c.ljust(widths[i]) if i < 2 else c.rjust(widths[i]) for i, c in enumerate(r)) for r in rows]
    v = verdicts(result)
    mark = {True: "met", False: "MISSED", None: "?"}
    peak = result.get("helper_peak_rss_mb")
    lines.append(
        f"helper RSS with the flows held <= {HELPER_RSS_GOAL_MB:g} MB: {mark[v['rss_goal_met']]}"
        + (f" (its peak so far, VmHWM: {peak:.1f} MB)" if peak is not None else "")
    )
    rounds = result.get("rounds", [result])
    if len(rounds) > 1:
        afters = [_helper_rss(one, "after") for one in rounds]
        if None not in afters:
            lines.append(
                "helper RSS after each round: "
                + ", ".join(f"{a:.1f} MB" for a in afters)
                + " (flat from round to round: memory kept for reuse, not leaked per flow)"
                if afters[-1] - afters[0] <= BACK_TO_BASELINE_MB / 2
                else "helper RSS after each round: " + ", ".join(f"{a:.1f} MB" for a in afters) + " (GROWING)"
            )
    lines.append(
        f"helper back to baseline after (RSS within {BACK_TO_BASELINE_MB:g} MB of before round 1, fds within 16): "
        + {True: "yes", False: "NO", None: "?"}[v["back_to_baseline"]]
    )
    lines.append(f"open-files limits raised for the run: {result['nofile']}")
    if result.get("helper_allocator"):
        lines.append(f"the helper's allocator: {result['helper_allocator']} (see helper/root/allocator.py)")
    return "\n".join(lines)
