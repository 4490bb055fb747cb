"""CLI start-up: `tether status --json` against a running helper, next to bare `python -c pass`, in one run.

    python tests/bench/startup.py --socket /run/tether/helper.sock [--runs 20] [--json]

Standard library only; it runs the two commands alternately (so both see the same machine load) and prints
each one's median wall time and the difference. Run it where the helper's socket is reachable (the bench
runs it in the lab's workstation namespace). It never fails on speed; exit 1 only when `tether status`
fails (no helper answering means there is nothing to measure).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_SECONDS = 0.15  # at most this much above bare Python


def tether_command() -> list[str]:
    """The console script a user runs: the one installed beside this interpreter (not a version manager's
    shim on PATH, whose own start-up would be counted against Tether); else the module it points at."""
    beside = Path(sys.executable).with_name("tether")
    if beside.is_file():
        return [str(beside)]
    return [sys.executable, "-m", "tether.helper.user.cli.main"]


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def measure(socket: str, runs: int) -> dict[str, float]:
    status = [*tether_command(), "status", "--json", "--socket", socket]
    bare = [sys.executable, "-c", "pass"]
    timed(status)  # warm the page cache for both before counting
    timed(bare)
    samples: dict[str, list[float]] = {"tether": [], "python": []}
    for _ in range(runs):
        samples["tether"].append(timed(status))
        samples["python"].append(timed(bare))
    tether, python = statistics.median(samples["tether"]), statistics.median(samples["python"])
    return {"runs": runs, "tether_status_s": tether, "python_pass_s": python, "difference_s": tether - python}


def table(result: dict[str, float]) -> str:
    met = "met" if result["difference_s"] <= TARGET_SECONDS else "MISSED"
    rows = [
        ("python -c pass", f"{result['python_pass_s']:.3f}", ""),
        ("tether status --json", f"{result['tether_status_s']:.3f}", ""),
        ("difference", f"{result['difference_s']:.3f}", f"<= {TARGET_SECONDS:g} s  {met}"),
    ]
    header = (f"CLI start-up (median of {result['runs']:g})", "seconds", "target")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    return "\n".join(f"{a.ljust(widths[0])}  {b.rjust(widths[1])}  {c}".rstrip() for a, b, c in [header, *rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--socket", required=True, help="the running helper's socket")
    parser.add_argument("--runs", type=int, default=20, help="runs of each command (default 20)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    try:
        result = measure(args.socket, args.runs)
    except subprocess.CalledProcessError as exc:
        print(f"startup: {' '.join(exc.cmd)} failed with {exc.returncode}", file=sys.stderr)
        return 1
    print(json.dumps({**result, "table": table(result)}) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
