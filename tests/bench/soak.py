"""`make soak`: flows churning through the helper for a long while, its memory read every minute; fails on growth.

    sudo SOAK_MINUTES=30 python -m tests.bench.soak [--flows 1000] ...

As root, like the benchmark (and with its set-up: the lab brought up unless it is up, a helper of our own in the
workstation namespace, connected; both undone at the end). ``client.py churn`` keeps ``--flows`` TCP connections
open to the lab's echo service, each echoing a line, held a few seconds, closed and replaced, for the whole run.
Every minute the helper's and the manager's RSS and open fds are printed. At the end the run fails (exit 1) if
either process's RSS grew (``procstat.growth``: the end against the level after the warm-up), if their fds did
not come back near where they started once the flows closed, or if more than 1% of the flows failed. Never fails
on time.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import time
from typing import Any

from tests.bench import procstat
from tests.bench.run import CLIENT, NAMESPACE, Bench, BenchError, log, netns_argv
from tests.bench.run import parse_args as bench_args
from tether.lab.runner import LabError
from tether.lab.topology import WS_NS

#: fds "near where they started": the helper's and the manager's own sockets may differ by a few.
FD_SLACK = 16
#: the share of flows that may fail (connect errors, timeouts) before the run counts as failed
MAX_FAILED_SHARE = 0.01


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES") or 30))
    p.add_argument("--flows", type=int, default=1000, help="connections open at once (default 1000)")
    p.add_argument("--hold-min", type=float, default=1.0, help="seconds a flow stays open, at least")
    p.add_argument("--hold-max", type=float, default=9.0, help="... and at most")
    p.add_argument("--interval", type=float, default=60.0, help="seconds between samples (default 60)")
    p.add_argument(
        "--warmup", type=int, default=0, help="samples before the baseline (default: 1, or 3 for runs over 10 minutes)"
    )
    p.add_argument("--percent", type=float, default=10.0, help="RSS growth allowed, percent of the baseline")
    p.add_argument("--floor-mb", type=float, default=20.0, help="RSS growth always allowed, MB")
    p.add_argument("--keep-lab", action="store_true", help="leave the lab up even if this run brought it up")
    p.add_argument("--helper-log", default="/tmp/tether-soak-helper.log")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.flows < 1 or args.interval <= 0:
        p.error(f"--minutes, --flows and --interval must be positive: {args.minutes}, {args.flows}, {args.interval}")
    if not args.warmup:
        args.warmup = 3 if args.minutes > 10 else 1
    return args


def sample_line(minute: float, pids: dict[str, int], progress: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"minute": round(minute, 1)}
    for name, pid in pids.items():
        row[name] = {"rss_mb": procstat.rss_mb(pid), "fds": procstat.fd_count(pid)}
    row["flows_completed"] = progress.get("completed")
    row["flows_open"] = progress.get("open")
    row["errors"] = progress.get("errors")
    text = "  ".join(
        f"{name} RSS {row[name]['rss_mb'] or 0:.1f} MB fds {row[name]['fds']}" for name in pids if name in row
    )
    print(
        f"[{row['minute']:5.1f} min] {text}  flows done {row['flows_completed']} open {row['flows_open']}"
        f" errors {row['errors'] or {}}",
        flush=True,
    )
    return row


def soak(bench: Bench, args: argparse.Namespace) -> int:
    echo_ip = bench.lab.info().service_ip("echo", NAMESPACE)
    all_pids = bench.process_pids()
    pids = {name: pid for name, pid in all_pids.items() if name in ("helper", "manager")}
    for pid in (pids.get("manager"), bench.lab_pid("pod/default/echo-0")):
        if pid is not None:
            procstat.raise_nofile(pid, args.flows * 4 + 1024)
    before = {name: {"rss_mb": procstat.rss_mb(pid), "fds": procstat.fd_count(pid)} for name, pid in pids.items()}
    seconds = args.minutes * 60
    argv = netns_argv(WS_NS, [sys.executable, str(CLIENT), "churn", "--host", echo_ip, "--count", str(args.flows)])
    argv += ["--time-limit", str(seconds), "--hold-min", str(args.hold_min), "--hold-max", str(args.hold_max)]
    argv += ["--report-every", "5"]
    log(f"soak: {args.flows} flows churning to {echo_ip}:7 for {args.minutes:g} min; before: {json.dumps(before)}")
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    started = time.monotonic()
    next_sample = started + args.interval
    progress: dict[str, Any] = {}
    samples: list[dict[str, Any]] = []
    final: dict[str, Any] = {}
    try:
        while True:
            wait = max(0.0, next_sample - time.monotonic())
            ready, _, _ = select.select([proc.stdout], [], [], wait)
            if ready:
                line = proc.stdout.readline()
                if not line:
                    break
                report = json.loads(line)
                if report.get("event") == "done":
                    final = report
                else:
                    progress = report
            if time.monotonic() >= next_sample:
                samples.append(sample_line((time.monotonic() - started) / 60, pids, progress))
                next_sample += args.interval
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait()
    if len(samples) < 2:
        print(f"soak: only {len(samples)} samples; run it for at least 2 intervals", file=sys.stderr)
        return 1
    time.sleep(10)  # the last flows' closes reach the manager; its sockets go
    after = {name: {"rss_mb": procstat.rss_mb(pid), "fds": procstat.fd_count(pid)} for name, pid in pids.items()}
    return verdict(args, before, samples, after, final)


def verdict(
    args: argparse.Namespace,
    before: dict[str, Any],
    samples: list[dict[str, Any]],
    after: dict[str, Any],
    final: dict[str, Any],
) -> int:
    failed = False
    print()
    print(f"soak: {args.flows} flows churning for {args.minutes:g} min; warm-up {args.warmup} sample(s)")
    for name in before:
        series = [row[name]["rss_mb"] for row in samples if row[name]["rss_mb"] is not None]
        if len(series) < len(samples):
            print(f"  {name}: gone during the run")
            failed = True
            continue
        result = procstat.growth(series, args.warmup, args.percent, args.floor_mb)
        fds_back = after[name]["fds"] is not None and after[name]["fds"] <= before[name]["fds"] + FD_SLACK
        print(f"  {name} RSS: {result.describe()}")
        print(
            f"  {name} fds: {before[name]['fds']} before, {after[name]['fds']} after the flows closed: "
            + ("back" if fds_back else "NOT BACK")
        )
        failed = failed or result.grew or not fds_back
    errors = sum((final.get("errors") or {}).values())
    opened = final.get("opened") or 0
    print(
        f"  flows: {final.get('completed', '?')} completed, {opened} opened, errors {final.get('errors')}"
        + (f" e.g. {final.get('first_errors')}" if errors else "")
    )
    if not final or errors > MAX_FAILED_SHARE * max(opened, 1):
        print(f"  more than {MAX_FAILED_SHARE:.0%} of the flows failed (or the client gave no report)")
        failed = True
    print("soak: FAILED" if failed else "soak: passed")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if sys.platform != "linux" or os.geteuid() != 0:
        print("the soak needs root on Linux (it builds the lab in network namespaces)", file=sys.stderr)
        return 2
    options = ["--helper-log", args.helper_log, *(["--keep-lab"] if args.keep_lab else [])]
    bench = Bench(bench_args(options))
    try:
        bench.setup()
        return soak(bench, args)
    except (BenchError, LabError) as exc:
        print(f"soak: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("soak: interrupted", file=sys.stderr)
        return 130
    finally:
        bench.teardown()


if __name__ == "__main__":
    sys.exit(main())
