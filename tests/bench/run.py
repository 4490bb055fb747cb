"""Tether against the direct path, in one run, on the sandbox cluster ("lab"); prints a table.

    sudo python -m tests.bench.run [--json PATH] [--profile DIR] [--quick] ...
    (from the repository root; the scale part imports tests.bench.scale)

As root: brings the lab up (unless it is up already; then it is left up at the end), starts a
helper of its own in the workstation namespace (socket ``/run/tether-bench/helper.sock``),
connects it with the lab's kubeconfig, measures, then quits the helper and takes down the lab
it brought up. The same client (``tests/bench/client.py``, standard library only) runs

* **through Tether**: in the workstation namespace, against the cluster's ClusterIPs (checked to
  be what ``<svc>.default`` resolves to there) and the workstation's nameserver 203.0.113.53,
  which the helper redirects to its DNS server;
* **directly**: in a pod's namespace (default: the traffic-manager's own pod, where Tether's
  manager dials from, so the ratio is what Tether adds), against the same ClusterIPs and the
  cluster DNS 10.96.0.10.

Measurements (per side, interleaved direct/Tether per metric): bulk TCP download and upload
through the bulk pod's raw source/sink ports; 64-byte request/response round trips on one open
connection to the TCP echo; connect-to-first-byte (new connection each time: connect, send 1
byte, read 1 byte); DNS latency for distinct nonexistent names (never cached) and for one name
asked repeatedly (cached). Then the scale part (``tests/bench/scale.py``): 10,000 concurrent TCP flows
through the helper to the echo service, with the helper's, manager's and API server's RSS and fds before,
while held and after (``--only scale`` runs it alone). MB is 10^6 bytes.

The DNS rows are the nftables mode (the plain lab's resolv.conf names 203.0.113.53, which the helper
redirects). The ``resolved`` part then switches the lab to its systemd-resolved workstation
(``tether lab up --resolver systemd-resolved``: a rebuild, so the traffic-manager is installed again),
starts a helper in that environment, connects it (the systemd-resolved mode: the helper's DNS server on
the TUN link) and measures the same DNS rows through resolved's stub 127.0.0.53, each again beside the
direct path; they are the table's rows marked "systemd-resolved". At the end the lab is put back as it
was found (or taken down if the run brought it up). ``--only resolved`` measures just the DNS rows of
both modes.

Every loop is bounded in count and in time; nothing here fails on speed: targets are marked met/missed;
the exit status is 1 only for errors or a run disturbed by something else in the workstation (e.g.
another helper starting there).

``--profile DIR`` samples the helper, the traffic-manager and the API server (which carries the
port-forward) with py-spy (non-blocking) during each Tether measurement and prints their hottest
frames; py-spy takes CPU too, so a profiled run's numbers are lower. The CPU seconds each process
used per measurement are always reported.

One helper per workstation: if another helper runs in the workstation namespace (``make demo``
leaves one), the run refuses to start its own (a second helper would fight over routes and the DNS
redirect, and its start-up cleanup removes the other's DNS redirect). ``--reuse-connected``
measures through the connected one instead and leaves it alone. Don't run this while something
else (integration tests) brings the lab up or down.

Not collected by pytest (no ``test_*.py`` here, and ``conftest.py`` ignores the folder).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tests.bench import procstat
from tests.bench.scale import run_scale, scale_table
from tether.helper.user.client import HelperClient, HelperError
from tether.lab import procs
from tether.lab.lab import Lab
from tether.lab.resolved import RESOLVER, STUB
from tether.lab.runner import LabError
from tether.lab.topology import DNS_IP, UPSTREAM_DNS_IP, WS_NS, StatePaths, pod_netns

HERE = Path(__file__).resolve().parent
CLIENT = HERE / "client.py"
STARTUP = HERE / "startup.py"
RUN_DIR = Path("/run/tether-bench")
SOCKET = RUN_DIR / "helper.sock"
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: The installed traffic-manager's pod, whatever name the lab's controller gave it.
DEFAULT_DIRECT_POD = "tether/tether-manager"
#: The namespace name prefix of the manager's pods (the controller names a pod's namespace after it).
MANAGER_NETNS_PREFIX = pod_netns("tether", "tether-manager-")
NAMESPACE = "default"
SERVICES = {"echo": "echo", "bulk": "bulk", "web": "web"}
#: What --only selects: the Tether/direct table, the CLI's start-up, the scale phase (tests/bench/scale.py), the
#: DNS rows in the systemd-resolved mode beside the nftables mode's (which it measures even without "table").
PARTS = ("table", "startup", "scale", "resolved")
#: The DNS modes the bench compares, by the helper's name for them.
NFT_MODE = "linux-nft"
RESOLVED_MODE = "systemd-resolved"
#: Phase keys of the systemd-resolved measurements end with this; the rest are the nftables mode's.
RESOLVED_SUFFIX = "@resolved"


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# --- what to measure ------------------------------------------------------------------------------


@dataclass
class Side:
    name: str  # "tether" | "direct"
    netns: str
    dns_server: str
    where: str


@dataclass
class Phase:
    key: str
    title: str
    #: client arguments; "{dns}" is replaced by the side's DNS server
    argv: list[str]
    time_limit: float
    sides: tuple[str, ...] = ("direct", "tether")


@dataclass
class Metric:
    phase: str
    label: str
    unit: str
    field: str  # in the client's JSON: "mb_per_s", "p50_ms", "p99_ms"
    higher_is_better: bool = False
    target: float | None = None


METRICS = (
    Metric("download", "bulk TCP download", "MB/s", "mb_per_s", True, 150.0),
    Metric("upload", "bulk TCP upload", "MB/s", "mb_per_s", True),
    Metric("rr", "req/resp 64 B p50", "ms", "p50_ms", target=0.4),
    Metric("rr", "req/resp 64 B p99", "ms", "p99_ms"),
    Metric("connect", "connect-to-first-byte p50", "ms", "p50_ms", target=1.0),
    Metric("connect", "connect-to-first-byte p99", "ms", "p99_ms"),
    Metric("dns_uncached", "DNS uncached p50", "ms", "p50_ms"),
    Metric("dns_uncached", "DNS uncached p99", "ms", "p99_ms"),
    Metric("dns_cached", "DNS cached p50", "ms", "p50_ms", target=0.3),
    Metric("dns_cached", "DNS cached p99", "ms", "p99_ms"),
    Metric("dns_uncached_short", "DNS uncached, short name p50", "ms", "p50_ms"),
    Metric("dns_cached_short", "DNS cached, short name p50", "ms", "p50_ms"),
)


def is_dns(phase_key: str) -> bool:
    return phase_key.startswith("dns_")


def resolved_metrics(metrics: tuple[Metric, ...] = METRICS) -> tuple[Metric, ...]:
    """The DNS rows again, for the systemd-resolved measurements (their phase keys carry RESOLVED_SUFFIX)."""
    dns = (m for m in metrics if is_dns(m.phase))
    return tuple(replace(m, phase=m.phase + RESOLVED_SUFFIX, label=f"{m.label}, {RESOLVED_MODE}") for m in dns)


ALL_METRICS = METRICS + resolved_metrics()


def phases(args: argparse.Namespace, ips: dict[str, str]) -> list[Phase]:
    nonce = secrets.token_hex(3)  # distinct names in every run: the helper keeps NXDOMAIN for a few seconds
    fqdn = f"{NAMESPACE}.svc.cluster.local"
    limit = args.time_limit
    echo, bulk = ips["echo"], ips["bulk"]
    dns = ["--server", "{dns}", "--count", str(args.dns_count)]
    return [
        Phase("download", "bulk download", ["download", "--host", bulk, "--bytes", str(args.bulk_bytes)], limit),
        Phase("upload", "bulk upload", ["upload", "--host", bulk, "--bytes", str(args.bulk_bytes)], limit),
        Phase("rr", "request/response", ["rr", "--host", echo, "--count", str(args.rr_count)], limit),
        Phase(
            "connect", "connect-to-first-byte", ["connect", "--host", echo, "--count", str(args.connect_count)], limit
        ),
        Phase("dns_uncached", "DNS uncached", ["dns", *dns, "--name", f"bench-{nonce}-{{i}}.{fqdn}"], limit),
        Phase("dns_cached", "DNS cached", ["dns", *dns, "--warmup", "1", "--name", f"web.{fqdn}"], limit),
        # What a workstation user types; only Tether answers these (a pod would expand them with its search list).
        Phase(
            "dns_uncached_short",
            "DNS uncached, short name",
            ["dns", *dns, "--name", f"bench-{nonce}-s{{i}}.{NAMESPACE}"],
            limit,
            ("tether",),
        ),
        Phase(
            "dns_cached_short",
            "DNS cached, short name",
            ["dns", *dns, "--warmup", "1", "--name", f"web.{NAMESPACE}"],
            limit,
            ("tether",),
        ),
    ]


# --- processes --------------------------------------------------------------------------------------


def netns_argv(netns: str, argv: list[str]) -> list[str]:
    return ["ip", "netns", "exec", netns, *argv]


def tether_cli(*argv: str, enter: tuple[str, ...] = ()) -> list[str]:
    """The CLI in the workstation; ``enter`` is a lab variant's command prefix (its environment)."""
    return netns_argv(WS_NS, [*enter, sys.executable, "-m", "tether.helper.user.cli.main", *argv])


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def children_cpu() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


def helper_answers(socket_path: Path) -> bool:
    """Whether a helper serves on ``socket_path`` (a socket file alone may be a crashed run's leftover)."""
    if not socket_path.exists():
        return False
    try:
        with HelperClient(socket_path, timeout=5) as helper:
            helper.version()
    except HelperError:
        return False
    return True


def tun_devices(netns: str) -> list[str]:
    """TUN devices in netns, one line each: "tether0 alias tether-helper pid=N start=T"."""
    out = subprocess.run(["ip", "-n", netns, "-o", "link", "show", "type", "tun"], capture_output=True, text=True)
    devices = []
    for line in out.stdout.splitlines():
        if not line.strip():
            continue
        name = line.split(":")[1].strip()
        _, _, alias = line.partition(" alias ")
        devices.append(f"{name} alias {alias.strip()}" if alias else name)
    return devices


def helper_processes(netns: str) -> list[tuple[int, str]]:
    """Helper daemons running inside netns (by command line)."""
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout
    found = []
    for word in out.split():
        try:
            cmdline = Path(f"/proc/{word}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if "helper start" in cmdline or "tether-helper" in cmdline or "tether.helper.root.daemon" in cmdline:
            found.append((int(word), cmdline))
    return found


def helper_pid_of_tun(netns: str) -> int | None:
    """The helper that owns the workstation's TUN, from the alias it sets ("tether-helper pid=N ...")."""
    for line in tun_devices(netns):
        for word in line.split():
            if word.startswith("pid=") and word[4:].isdigit():
                return int(word[4:])
    return None


class Profiler:
    """py-spy record on a few processes for the length of one measurement."""

    def __init__(self, directory: Path, targets: dict[str, int], rate: int) -> None:
        self.directory = directory
        self.targets = targets
        self.rate = rate
        self.pyspy = shutil.which("py-spy")
        self.running: list[subprocess.Popen[bytes]] = []
        if self.pyspy is None:
            raise BenchError("--profile needs py-spy on PATH (pip install py-spy)")
        directory.mkdir(parents=True, exist_ok=True)

    def start(self, phase: str) -> None:
        assert self.pyspy is not None
        for name, pid in self.targets.items():
            out = self.directory / f"{phase}.{name}.txt"
            argv = [self.pyspy, "record", "--pid", str(pid), "--rate", str(self.rate), "--nonblocking"]
            argv += ["--format", "raw", "--output", str(out)]
            self.running.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.3)  # let py-spy attach before the traffic starts

    def stop(self) -> None:
        for proc in self.running:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
        for proc in self.running:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.running = []


#: Leaf frames that mean "waiting", not working: the event loop's select, gRPC's poller thread (native
#: epoll shows up as a bare Thread.run), executor workers, blocking reads of watch threads.
IDLE_LEAVES = (
    "EpollSelector.select",
    "Thread.run (threading",
    "_worker (concurrent",
    "wait (threading",
    "readinto (socket",
)
#: Frames on every busy stack of an asyncio program; they say nothing about where the time goes.
PLUMBING = ("<module>", "_run_module_as_main", "_run_code", "run (", "Runner.run", "BaseEventLoop.run", "main (")
PLUMBING += ("BaseEventLoop._run_once", "Handle._run", "Thread._bootstrap")


def top_frames(path: Path, limit: int = 8) -> dict[str, Any]:
    """Self and inclusive time per function (line numbers dropped) over the busy samples of py-spy's raw output."""
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    busy = idle = 0
    if not path.exists():
        return {"busy_samples": 0, "idle_samples": 0, "self": [], "inclusive": []}
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit() or not stack:
            continue
        count = int(count_text)
        frames = [_strip_line(f) for f in stack.split(";")]
        if any(mark in frames[-1] for mark in IDLE_LEAVES):
            idle += count
            continue
        busy += count
        leaf[frames[-1]] += count
        for frame in set(frames):
            if not frame.startswith(PLUMBING):
                inclusive[frame] += count

    def rows(counter: Counter[str]) -> list[list[Any]]:
        return [[frame, round(100.0 * n / busy, 1)] for frame, n in counter.most_common(limit)] if busy else []

    return {"busy_samples": busy, "idle_samples": idle, "self": rows(leaf), "inclusive": rows(inclusive)}


def _strip_line(frame: str) -> str:
    """'f (path/file.py:12)' -> 'f (path/file.py)'."""
    name, sep, where = frame.rpartition(" (")
    if not sep:
        return frame
    return f"{name} ({where.rstrip(')').rsplit(':', 1)[0]})"


# --- the run --------------------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    lab: Lab = field(init=False)
    brought_up: bool = False
    helper: subprocess.Popen[bytes] | None = None
    helper_pid: int | None = None
    connected: bool = False
    reused: bool = False
    #: the workstation resolver variant the lab had when the run found it up ("" plain); put back at the end
    found_resolver: str | None = None
    #: the variant the lab has now
    resolver: str = ""
    #: something outside the benchmark changed the workstation during the run
    disturbed: bool = False
    notes: list[str] = field(default_factory=list)
    #: mimalloc or pymalloc (helper/root/allocator.py), read once our helper answers
    helper_allocator: str | None = None

    def __post_init__(self) -> None:
        self.lab = Lab(paths=StatePaths(), log=lambda msg: log(f"lab: {msg}"))

    # setup

    def setup(self) -> None:
        status = self.lab.status()
        if "resolved" in self.args.only and self.args.reuse_connected:
            raise BenchError("--reuse-connected cannot go with the resolved part (it rebuilds the lab)")
        if status["state"] == "up":
            log("the lab is up already: using it (and leaving it up)")
            journal = self.lab.journal_file.load()
            self.found_resolver = journal.options.get("resolver", "") if journal else ""
            if self.found_resolver:
                log(f"its workstation runs {self.found_resolver}: switching it to the plain workstation")
                self.switch_lab("")
        else:
            log(f"bringing the lab up (it is {status['state']})")
            self.found_resolver = ""
            started = time.monotonic()
            result = self.lab.up()
            self.brought_up = True
            log(f"lab {result.action} in {time.monotonic() - started:.1f}s")
        self.install_manager()
        info = self.lab.info()
        if info.plan.vpn is not None:
            self.notes.append(f"the lab has a VPN ({', '.join(map(str, info.plan.vpn.cidrs))})")
        # One helper per workstation: a second one would fight over routes and the DNS redirect, and its
        # start-up cleanup removes the other's DNS redirect (it carries the same ownership marker).
        tuns = tun_devices(WS_NS)
        others = helper_processes(WS_NS)
        if tuns and self.args.reuse_connected:
            pid = helper_pid_of_tun(WS_NS)
            log(f"measuring through the helper already connected in the workstation (pid {pid})")
            self.reused = True
            self.helper_pid = pid
            self.notes.append(f"measured through an already connected helper (pid {pid}), not one of our own")
            return
        if tuns or others:
            found = "; ".join([*tuns, *(f"pid {pid}: {cmd}" for pid, cmd in others)])
            raise BenchError(
                f"another helper runs in {WS_NS} ({found}); two cannot share the workstation. Stop it "
                "(tether lab run -- tether quit [--socket PATH]), or, if it is connected, measure through it "
                "with --reuse-connected"
            )
        self.start_helper()
        self.connect(info.kubeconfig)

    def switch_lab(self, resolver: str) -> None:
        """Rebuild the lab with another workstation resolver variant (the helper must be stopped)."""
        started = time.monotonic()
        result = self.lab.up(resolver=resolver)
        self.resolver = resolver
        log(f"lab {result.action} with the {resolver or 'plain'} workstation in {time.monotonic() - started:.1f}s")

    def start_helper(self, enter: tuple[str, ...] = ()) -> None:
        RUN_DIR.mkdir(mode=0o755, exist_ok=True)
        if helper_answers(SOCKET):
            raise BenchError(f"a helper already answers on {SOCKET}: another benchmark run? (tether quit --socket ...)")
        argv = ["helper", "start", "--socket", str(SOCKET), "--group", "root", "--log-format", "text"]
        argv += ["--state-dir", str(RUN_DIR / "state")]
        # the resolved part's helper appends to the first one's log
        log_file = open(self.args.helper_log, "ab" if enter else "wb")  # noqa: SIM115 - kept open for the helper's life
        log(f"starting the helper in {WS_NS} (socket {SOCKET}, log {self.args.helper_log})")
        self.helper = subprocess.Popen(
            tether_cli(*argv, enter=enter),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log_file.close()
        self.helper_pid = self.helper.pid  # `ip netns exec` execs the command: same process
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.helper.poll() is not None:
                raise BenchError(f"the helper exited ({self.helper.returncode}): {self._log_tail()}")
            if helper_answers(SOCKET):
                self.helper_allocator = procstat.allocator(self.helper_pid)
                return
            time.sleep(0.2)
        raise BenchError(f"the helper did not answer on {SOCKET} within 30s: {self._log_tail()}")

    def install_manager(self) -> None:
        """The lab starts no traffic-manager: install it as the README does, unless a release is there."""
        kubeconfig = str(self.lab.paths.kubeconfig)
        if self._cli("manager", "status", "--kubeconfig", kubeconfig, timeout=60).returncode == 0:
            return
        started = time.monotonic()
        done = self._cli("manager", "install", "--kubeconfig", kubeconfig, "--wait", timeout=300)
        if done.returncode != 0:
            raise BenchError(f"tether manager install failed ({done.returncode}): {done.stdout}{done.stderr}".strip())
        log(f"installed the traffic-manager in {time.monotonic() - started:.1f}s")

    def manager_netns(self) -> str | None:
        found = self.lab.ops.list(MANAGER_NETNS_PREFIX)
        return found[0] if len(found) == 1 else None

    def connect(self, kubeconfig: Path) -> None:
        started = time.monotonic()
        done = self._cli("connect", "--socket", str(SOCKET), "--kubeconfig", str(kubeconfig), timeout=60)
        if done.returncode != 0:
            raise BenchError(f"tether connect failed ({done.returncode}): {done.stdout}{done.stderr}".strip())
        self.connected = True
        log(f"connected in {time.monotonic() - started:.1f}s")

    # teardown

    def teardown(self) -> None:
        self.stop_helper()
        if self.brought_up and not self.args.keep_lab:
            log("taking the lab down")
            try:
                left = self.lab.down()
            except LabError as exc:
                left = [str(exc)]
            if left:
                log("the lab left: " + "; ".join(left))
        elif self.found_resolver is not None and self.resolver != self.found_resolver:
            log(f"putting the lab back to the {self.found_resolver or 'plain'} workstation it had")
            try:
                self.switch_lab(self.found_resolver)
            except LabError as exc:
                log(f"could not: {exc}")

    def stop_helper(self) -> None:
        if self.helper is not None:
            if self.connected:
                self._cli("disconnect", "--socket", str(SOCKET), timeout=30)
            self._cli("quit", "--socket", str(SOCKET), timeout=30)
            try:
                self.helper.wait(timeout=20)
            except subprocess.TimeoutExpired:
                log(f"the helper (pid {self.helper.pid}) did not quit: terminating it")
                self.helper.terminate()
                try:
                    self.helper.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.helper.kill()
                    self.helper.wait()
            if self.helper.returncode == 0:
                shutil.rmtree(RUN_DIR, ignore_errors=True)
            else:
                log(f"the helper exited with {self.helper.returncode}; {RUN_DIR} kept (its journal undoes leftovers)")
            self.helper = None
            self.connected = False

    # measuring

    def process_pids(self) -> dict[str, int]:
        """The processes on Tether's path that we can account CPU to (and profile)."""
        pids: dict[str, int] = {}
        if self.helper_pid:
            pids["helper"] = self.helper_pid
        journal = self.lab.journal_file.load()
        for record in journal.processes if journal else []:
            if not procs.is_running(record.pid, record.start_time):
                continue
            if record.name == "apiserver":
                pids["apiserver"] = record.pid
        netns = self.manager_netns()  # the controller runs the manager's pod: its one process
        found = self.lab.ops.pids(netns) if netns else []
        if len(found) == 1:
            pids["manager"] = found[0]
        return pids

    def resolve(self, side: Side) -> dict[str, Any]:
        names = [f"{svc}.{NAMESPACE}" for svc in SERVICES] if side.name == "tether" else []
        names += [f"{svc}.{NAMESPACE}.svc.cluster.local" for svc in SERVICES]
        return self.client(side, ["resolve", *names], 30)

    def client(self, side: Side, argv: list[str], time_limit: float) -> dict[str, Any]:
        argv = [a.replace("{dns}", side.dns_server) for a in argv]
        full = netns_argv(side.netns, [sys.executable, str(CLIENT), *argv, "--time-limit", str(time_limit)])
        try:
            done = subprocess.run(full, capture_output=True, text=True, timeout=time_limit + 30)
        except subprocess.TimeoutExpired:
            return {"error": f"the client did not finish within {time_limit + 30:.0f}s"}
        try:
            return json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {"error": f"client exit {done.returncode}: {done.stderr.strip()[-500:]}"}

    def sides(self, tether_dns: str, how: str) -> dict[str, Side]:
        direct_netns = self._direct_netns()
        return {
            "tether": Side("tether", WS_NS, tether_dns, f"{WS_NS} ({how})"),
            "direct": Side("direct", direct_netns, str(DNS_IP), f"{direct_netns} (pod network, no Tether)"),
        }

    def measure(self) -> dict[str, Any]:
        info = self.lab.info()
        ips = {key: info.service_ip(svc, NAMESPACE) for key, svc in SERVICES.items()}
        sides = self.sides(str(UPSTREAM_DNS_IP), "through the helper; DNS: the nftables redirect")
        pids = self.process_pids()
        scale = self.scale(ips, pids) if "scale" in self.args.only else None
        wanted = [p for p in phases(self.args, ips) if "table" in self.args.only or is_dns(p.key)]
        if "table" not in self.args.only and "resolved" not in self.args.only:
            wanted = []
        resolved = {name: self.resolve(side) for name, side in sides.items()} if wanted else {}
        self.check_resolved(resolved, ips)
        profiler = Profiler(Path(self.args.profile), pids, self.args.profile_rate) if self.args.profile else None
        results, cpu = self.run_phases(wanted, sides, pids, profiler)
        profile = {}
        if profiler is not None:
            for phase_key in results:
                for name in pids:
                    profile[f"{phase_key}.{name}"] = top_frames(Path(self.args.profile) / f"{phase_key}.{name}.txt")
        startup = self.startup() if "startup" in self.args.only else None
        where = {name: side.where for name, side in sides.items()}
        if "resolved" in self.args.only:
            more, more_cpu, more_where = self.measure_resolved()
            results.update(more)
            cpu.update(more_cpu)
            where.update(more_where)
        return {
            "startup": startup,
            "scale": scale,
            "sides": where,
            "services": ips,
            "resolved": resolved,
            "results": results,
            "cpu_seconds": cpu,
            "pids": pids,
            "profile": profile,
        }

    def measure_resolved(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
        """The DNS phases again with the lab's systemd-resolved workstation and a helper in its environment."""
        self.stop_helper()
        self.switch_lab(RESOLVER)
        self.install_manager()
        self.start_helper(enter=(str(self.lab.resolved_files.enter),))
        self.connect(self.lab.paths.kubeconfig)
        mode = self.dns_mode()
        if mode != RESOLVED_MODE:
            raise BenchError(f"the helper chose the DNS mode {mode!r} on the systemd-resolved workstation")
        info = self.lab.info()
        ips = {key: info.service_ip(svc, NAMESPACE) for key, svc in SERVICES.items()}
        sides = self.sides(STUB, "through resolved's stub and the helper; DNS: the systemd-resolved mode")
        self.check_resolved({name: self.resolve(side) for name, side in sides.items()}, ips)
        dns = [p for p in phases(self.args, ips) if is_dns(p.key)]
        dns = [replace(p, key=p.key + RESOLVED_SUFFIX, title=f"{p.title}, resolved") for p in dns]
        results, cpu = self.run_phases(dns, sides, self.process_pids(), None)
        where = {f"{name}{RESOLVED_SUFFIX}": side.where for name, side in sides.items()}
        return results, cpu, where

    def dns_mode(self) -> str:
        done = self._cli("status", "--json", "--socket", str(SOCKET), timeout=30)
        try:
            return str(json.loads(done.stdout)["dns_mode"])
        except (ValueError, KeyError, TypeError):
            raise BenchError(f"tether status --json gave no dns_mode ({done.returncode}): {done.stderr}") from None

    def check_resolved(self, resolved: dict[str, dict[str, Any]], ips: dict[str, str]) -> None:
        for name, result in resolved.items():
            for query, got in result.get("addresses", {}).items():
                want = ips[query.split(".")[0]]
                if got != [want]:
                    self.notes.append(f"{name}: {query} resolved to {got}, expected [{want}]")

    def run_phases(
        self, wanted: list[Phase], sides: dict[str, Side], pids: dict[str, int], profiler: Profiler | None
    ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, float]]]:
        """Each phase on each of its sides, interleaved; the budget counts from here."""
        results: dict[str, dict[str, Any]] = {}
        cpu: dict[str, dict[str, float]] = {}
        started = time.monotonic()
        for phase in wanted:
            results[phase.key] = {}
            for side_name in phase.sides:
                if time.monotonic() - started > self.args.budget:
                    results[phase.key][side_name] = {
                        "error": f"skipped: the run's budget ({self.args.budget}s) is spent"
                    }
                    continue
                side = sides[side_name]
                profiling = profiler is not None and side_name == "tether"
                if profiling:
                    profiler.start(phase.key)
                before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                client_before = children_cpu()
                t0 = time.monotonic()
                result = self.client(side, phase.argv, phase.time_limit)
                wall = time.monotonic() - t0
                if side_name == "tether":
                    used = {"client": children_cpu() - client_before}
                    for name, pid in pids.items():
                        after = cpu_seconds(pid)
                        if after is not None and before[name] is not None:
                            used[name] = after - before[name]
                    cpu[phase.key] = {"wall": wall, **{k: round(v, 3) for k, v in used.items()}}
                if profiling:
                    profiler.stop()
                results[phase.key][side_name] = result
                if side_name == "tether":
                    self.check_workstation(phase.key, result)
                log(f"{phase.title:28} {side_name:6} {_brief(result)}")
        return results, cpu

    def scale(self, ips: dict[str, str], pids: dict[str, int]) -> dict[str, Any]:
        """Many concurrent flows through the helper to the echo service (tests/bench/scale.py)."""
        echo = self.lab_pid("pod/default/echo-0")
        raise_for = {name: pid for name, pid in pids.items() if name in ("manager", "apiserver")}
        if echo is not None:
            raise_for["echo"] = echo
        client = netns_argv(WS_NS, [sys.executable, str(CLIENT), "hold", "--host", ips["echo"]])
        client += ["--window", str(self.args.scale_window)]
        rounds = []
        for number in range(1, self.args.scale_rounds + 1):
            log(f"scale: round {number} of {self.args.scale_rounds}")
            result = run_scale(
                client, pids, raise_for, self.args.scale_flows, self.args.scale_time_limit, self.args.scale_settle, log
            )
            log("scale: " + json.dumps({k: result[k] for k in ("before", "held", "after")}))
            rounds.append(result)
        return {**rounds[0], "rounds": rounds}

    def lab_pid(self, name: str) -> int | None:
        journal = self.lab.journal_file.load()
        record = journal.process(name) if journal else None
        return record.pid if record and procs.is_running(record.pid, record.start_time) else None

    def startup(self) -> dict[str, Any]:
        """`tether status --json` against the connected helper beside bare Python, run inside the workstation
        (tests/bench/startup.py alternates the two, so both see the same load)."""
        socket = "/run/tether/helper.sock" if self.reused else str(SOCKET)
        argv = netns_argv(WS_NS, [sys.executable, str(STARTUP), "--socket", socket, "--runs", "20", "--json"])
        run = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        if run.returncode != 0:
            return {"error": run.stderr.strip() or f"exit {run.returncode}"}
        result = json.loads(run.stdout)
        log(f"CLI start-up: tether status {result['tether_status_s']:.3f} s, python {result['python_pass_s']:.3f} s")
        return result

    def check_workstation(self, phase: str, result: dict[str, Any]) -> None:
        """Notice what invalidates Tether's numbers: another helper starting in the workstation (its start-up
        cleanup removes our DNS redirect), our DNS redirect gone, DNS answers that cannot be the cluster's."""
        others = [pid for pid, _ in helper_processes(WS_NS) if pid != self.helper_pid]
        if others:
            self._note(f"other helpers ran in {WS_NS} during the run (pids {others}): numbers may not be Tether's")
        tables = subprocess.run(["ip", "netns", "exec", WS_NS, "nft", "list", "tables"], capture_output=True, text=True)
        # (the systemd-resolved mode redirects nothing: resolved's link routes the queries to the helper)
        if not phase.endswith(RESOLVED_SUFFIX) and "tether_dns" not in tables.stdout:
            self._note(f"after {phase}: the helper's DNS redirect (nft table tether_dns) is gone; DNS rows are invalid")
        rcodes = result.get("rcodes") or {}
        if phase.startswith("dns_cached") and set(rcodes) - {"NOERROR"}:
            self._note(f"{phase}: answers {rcodes} for an existing service: the queries did not reach the helper?")

    def _note(self, text: str) -> None:
        self.disturbed = True
        if text not in self.notes:
            self.notes.append(text)
            log(text)

    def _direct_netns(self) -> str:
        target = self.args.direct
        if target.startswith("tether-lab-"):
            return target
        if target == DEFAULT_DIRECT_POD:
            netns = self.manager_netns()
            if netns is None:
                raise BenchError("no single traffic-manager pod runs in the lab (tether manager status)")
            return netns
        namespace, _, name = target.rpartition("/")
        return pod_netns(namespace or "default", name)

    def _cli(self, *argv: str, timeout: float) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(tether_cli(*argv), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, 124, "", f"timed out after {timeout}s")

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(Path(self.args.helper_log).read_text(errors="replace").splitlines()[-8:])
        return ""


def _brief(result: dict[str, Any]) -> str:
    if "error" in result:
        return "ERROR " + str(result["error"])
    if "mb_per_s" in result:
        return f"{result['mb_per_s']:.1f} MB/s ({result['bytes'] / 1e6:.0f} MB in {result['seconds']:.2f}s)"
    if "p50_ms" in result:
        return f"p50 {result['p50_ms']:.3f} ms  p99 {result['p99_ms']:.3f} ms  (n={result['count']})"
    return json.dumps(result)[:200]


# --- report ---------------------------------------------------------------------------------------


def rows(measured: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per metric of the phases measured (the systemd-resolved DNS rows after the rest)."""
    out = []
    for metric in ALL_METRICS:
        if metric.phase not in measured["results"]:
            continue
        per_side = measured["results"].get(metric.phase, {})
        values = {side: per_side.get(side, {}).get(metric.field) for side in ("tether", "direct")}
        tether, direct = values["tether"], values["direct"]
        ratio = tether / direct if isinstance(tether, float) and isinstance(direct, float) and direct else None
        met = None
        if metric.target is not None and isinstance(tether, float):
            met = tether >= metric.target if metric.higher_is_better else tether <= metric.target
        out.append(
            {
                "metric": metric.label,
                "phase": metric.phase,
                "unit": metric.unit,
                "tether": tether,
                "direct": direct,
                "ratio": ratio,
                "target": None
                if metric.target is None
                else f"{'>=' if metric.higher_is_better else '<='} {metric.target:g} {metric.unit}",
                "met": met,
            }
        )
    return out


def _num(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if unit == "MB/s" else f"{value:.3f}"


def table(table_rows: list[dict[str, Any]]) -> str:
    header = ["metric", "tether", "direct", "ratio", "target (tether)"]
    lines = []
    for r in table_rows:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        target = ""
        if r["target"]:
            target = f"{r['target']}  " + {True: "met", False: "MISSED", None: "?"}[r["met"]]
        lines.append(
            [f"{r['metric']} ({r['unit']})", _num(r["tether"], r["unit"]), _num(r["direct"], r["unit"]), ratio, target]
        )
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    fmt = lambda row: "  ".join(  # noqa: E731
        cell.ljust(widths[i]) if i in (0, 4) else cell.rjust(widths[i]) for i, cell in enumerate(row)
    ).rstrip()
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *(fmt(line) for line in lines)])


def cpu_table(cpu: dict[str, dict[str, float]]) -> str:
    names = sorted(
        {k for v in cpu.values() for k in v if k != "wall"}, key=["client", "helper", "apiserver", "manager"].index
    )
    header = ["tether phase", "wall s", *(f"{n} cpu s" for n in names)]
    lines = [[phase, f"{v['wall']:.2f}", *(f"{v.get(n, float('nan')):.2f}" for n in names)] for phase, v in cpu.items()]
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row))
        for row in [header, *lines]
    )


def profile_text(profile: dict[str, Any]) -> str:
    out = []
    for key, data in profile.items():
        if not data["busy_samples"]:
            continue
        out.append(f"{key}: {data['busy_samples']} busy samples ({data['idle_samples']} idle)")
        out.append("    self:      " + "; ".join(f"{f} {p}%" for f, p in data["self"][:5]))
        out.append("    inclusive: " + "; ".join(f"{f} {p}%" for f, p in data["inclusive"][:5]))
    return "\n".join(out)


def errors_of(measured: dict[str, Any]) -> list[str]:
    found = []
    for phase, sides in measured["results"].items():
        for side, result in sides.items():
            if "error" in result:
                found.append(f"{phase} {side}: {result['error']}")
            if result.get("complete") is False:
                found.append(f"{phase} {side}: stopped after {result['bytes']} of {result['asked']} bytes (time limit)")
            if result.get("sha256_ok") is False:
                found.append(f"{phase} {side}: the sink's sha256/length do not match what was sent")
            for key in ("errors", "timeouts", "mismatches"):
                if result.get(key):
                    found.append(f"{phase} {side}: {result[key]} {key}")
            if "count" in result and result["count"] < result.get("asked", 0):
                found.append(f"{phase} {side}: {result['count']} of {result['asked']} samples (time limit)")
    return found


# --- command line ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    p.add_argument("--bulk-mb", type=float, default=200.0, help="MB (10^6 bytes) per bulk transfer (default 200)")
    p.add_argument("--rr-count", type=int, default=2000, help="request/response round trips (default 2000)")
    p.add_argument("--connect-count", type=int, default=300, help="new connections (default 300)")
    p.add_argument("--dns-count", type=int, default=300, help="DNS queries per DNS measurement (default 300)")
    p.add_argument("--time-limit", type=float, default=20.0, help="seconds per measurement at most (default 20)")
    p.add_argument("--budget", type=float, default=120.0, help="seconds for all measurements; later ones are skipped")
    p.add_argument("--quick", action="store_true", help="a smoke run: 20 MB, 200 round trips, 30 connects/queries")
    p.add_argument(
        "--direct",
        default=DEFAULT_DIRECT_POD,
        metavar="NS/POD",
        help=f"the pod (or tether-lab-* namespace) the direct client runs in (default {DEFAULT_DIRECT_POD})",
    )
    p.add_argument("--profile", metavar="DIR", help="py-spy helper, manager, API server in Tether phases (costs CPU)")
    p.add_argument("--profile-rate", type=int, default=200, help="py-spy samples per second (default 200)")
    p.add_argument("--keep-lab", action="store_true", help="leave the lab up even if this run brought it up")
    p.add_argument(
        "--reuse-connected",
        action="store_true",
        help="if a helper is already connected in the workstation, measure through it instead of refusing",
    )
    p.add_argument("--helper-log", default="/tmp/tether-bench-helper.log", help="where our helper's output goes")
    p.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"comma-separated parts to run, of {', '.join(PARTS)} (default: all); e.g. --only scale",
    )
    p.add_argument("--scale-flows", type=int, default=10_000, help="concurrent TCP flows in the scale part")
    p.add_argument("--scale-window", type=int, default=256, help="flows being set up at once in the scale part")
    p.add_argument("--scale-time-limit", type=float, default=180.0, help="seconds to open the scale part's flows")
    p.add_argument(
        "--scale-rounds",
        type=int,
        default=2,
        help="times to open and close the flows (a second round tells memory kept for reuse from a leak)",
    )
    p.add_argument("--scale-settle", type=float, default=20.0, help="seconds to wait for fds to return after it")
    args = p.parse_args(argv)
    args.only = {part.strip() for part in args.only.split(",") if part.strip()}
    if not args.only or args.only - set(PARTS):
        p.error(f"--only takes {', '.join(PARTS)}; got {sorted(args.only - set(PARTS)) or 'nothing'}")
    if args.quick:
        args.bulk_mb, args.rr_count, args.connect_count, args.dns_count = 20.0, 200, 30, 30
    args.bulk_bytes = int(args.bulk_mb * 1e6)
    return args


def config_of(args: argparse.Namespace) -> dict[str, Any]:
    """The run's options for the JSON report (sets as sorted lists)."""
    return {k: sorted(v) if isinstance(v, set) else v for k, v in vars(args).items() if k != "json"}


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if sys.platform != "linux" or os.geteuid() != 0:
        print("the benchmark needs root on Linux (it builds the lab in network namespaces)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _raise_interrupt)
    bench = Bench(args)
    started = time.monotonic()
    measured: dict[str, Any] | None = None
    try:
        bench.setup()
        measured = bench.measure()
    except (BenchError, LabError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        bench.teardown()
    table_rows = rows(measured)
    problems = errors_of(measured) + bench.notes
    print()
    if table_rows:
        print(f"Tether vs direct ({measured['sides']['direct']}); ratio = tether / direct; MB = 10^6 bytes")
        if any(r["phase"].endswith(RESOLVED_SUFFIX) for r in table_rows):
            print(
                f"DNS rows: the {NFT_MODE} mode (nameserver {UPSTREAM_DNS_IP} redirected to the helper), and marked "
                f"{RESOLVED_MODE}: through resolved's stub {STUB} (its link to the helper), same run"
            )
        print(table(table_rows))
        print()
        print(cpu_table(measured["cpu_seconds"]))
        if bench.helper_allocator:
            print(f"the helper's allocator: {bench.helper_allocator}")
        print()
    startup = measured["startup"]
    if startup is not None:
        print(f"CLI start-up: {startup['error']}" if "error" in startup else startup["table"])
    if measured["scale"] is not None:
        print()
        print(scale_table(measured["scale"]))
    if measured["profile"]:
        print()
        print("py-spy, self time per function:")
        print(profile_text(measured["profile"]))
    if problems:
        print()
        print("notes:")
        for line in problems:
            print(f"  - {line}")
    print(f"\n(total {time.monotonic() - started:.0f}s)")
    if args.json:
        report = {
            "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "cpus": os.cpu_count(),
            "config": config_of(args),
            "helper": {"pid": bench.helper_pid, "reused": bench.reused, "allocator": bench.helper_allocator},
            "lab_brought_up": bench.brought_up,
            "disturbed": bench.disturbed,
            "table": table_rows,
            "notes": problems,
            **measured,
        }
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        log(f"wrote {args.json}")
    failed = any("error" in r for sides in measured["results"].values() for r in sides.values())
    scale = measured["scale"]
    failed = failed or (scale is not None and ("error" in scale["open"] or "error" in scale["closed"]))
    return 1 if failed or bench.disturbed else 0


if __name__ == "__main__":
    sys.exit(main())
