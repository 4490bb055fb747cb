"""`tether lab up|down|status`: building, checking and removing the sandbox cluster.

`up` is idempotent: with the lab already healthy and the same options it does nothing; with a
different `--vpn` it rebuilds only the corp namespace; after a crash (stale journal, leftover
namespaces, dead processes) it removes everything and builds anew. A failed `up` undoes itself.
`down` ends the lab's processes (by PID from the journal, and any process still inside a
`tether-lab-*` namespace), deletes the namespaces and the lab's files, and leaves nothing.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.util
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tether.lab import clusterdns, network, objects, probes, procs, report, resolved, users
from tether.lab.journal import UP, Journal, JournalFile, ProcessRecord
from tether.lab.netns import NetnsOps
from tether.lab.report import LabInfo
from tether.lab.runner import CommandError, LabError, Runner, SubprocessRunner
from tether.lab.specs import APISERVER_MODULE, ProcessSpec, corp_spec, process_specs
from tether.lab.topology import (
    CORP_NS,
    INET_NS,
    PREFIX,
    ROUTER_NS,
    VPN_IF,
    WS_NODE_IP,
    WS_NS,
    LabPlan,
    StatePaths,
    build_plan,
    plan_fingerprint,
    vpn_options,
)
from tether.runtime.atomicfile import write_atomic

Log = Callable[[str], None]
LOG_TAIL_LINES = 15


@dataclass
class UpResult:
    action: str  # "built", "already up", "vpn changed", "rebuilt"
    info: LabInfo


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise LabError(
            f"tether lab {what} must run as root (it creates network namespaces); try: sudo tether lab {what}"
        )


def _tail(path: str, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "    (no log)"
    return "\n".join(f"    {line}" for line in text) or "    (empty log)"


def _local(journal: Journal) -> bool:
    """Whether the journal's lab was built with --local (the workstation as a node)."""
    return bool(journal.options.get("local", False))


class Lab:
    def __init__(
        self,
        paths: StatePaths | None = None,
        runner: Runner | None = None,
        log: Log | None = None,
        python: str = sys.executable,
        apiserver_module: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.paths = paths or StatePaths()
        self.ops = NetnsOps(runner or SubprocessRunner())
        self.journal_file = JournalFile(self.paths.journal)
        self.log = log or (lambda _msg: None)
        self.python = python
        self.apiserver_module = apiserver_module or APISERVER_MODULE
        self.timeout = timeout
        self._journal = Journal()

    # --- up --------------------------------------------------------------------------------------

    def up(self, vpn: Sequence[str] = (), resolver: str = "", local: bool = False) -> UpResult:
        require_root("up")
        if resolver not in resolved.RESOLVERS:
            raise LabError(f"unknown workstation resolver {resolver!r} (known: {', '.join(resolved.RESOLVERS[1:])})")
        try:
            wanted = vpn_options(vpn)
        except ValueError as exc:
            raise LabError(str(exc)) from None
        journal = self.journal_file.load()
        action = "built"
        if journal is not None and journal.state == UP:
            problems = self.problems(journal)
            if journal.options.get("plan") != plan_fingerprint(build_plan()):
                problems.append("it was built from a different address plan (another version of tether)")
            if journal.options.get("resolver", "") != resolver:
                problems.append(f"its workstation resolver is {journal.options.get('resolver') or 'plain'}")
            if bool(journal.options.get("local", False)) != local:
                problems.append("it was built " + ("without" if local else "with") + " --local")
            if not problems:
                if journal.options.get("vpn", []) == wanted:
                    return UpResult("already up", self._info(journal))
                self._journal = journal
                self._guarded(lambda: self._set_vpn(wanted))
                return UpResult("vpn changed", self._info(self._journal))
            self.log("the lab needs rebuilding (" + "; ".join(problems) + "): removing it and building it again")
            action = "rebuilt"
        if self.leftovers():
            if action == "built":
                self.log("removing what an earlier, unfinished run left behind")
                action = "rebuilt"
            self.down()
        self._guarded(lambda: self._build(wanted, resolver, local))
        return UpResult(action, self._info(self._journal))

    def _guarded(self, step: Callable[[], None]) -> None:
        """Run a build step; on any failure (or Ctrl-C) remove everything, then report."""
        try:
            step()
        except BaseException as exc:
            self.log("lab up failed; removing what was created")
            leftovers = self.down()
            if not isinstance(exc, Exception):
                raise
            note = "" if not leftovers else " (could not remove: " + "; ".join(leftovers) + ")"
            if isinstance(exc, LabError):
                raise LabError(f"{exc}{note}") from exc
            raise LabError(f"lab up failed: {type(exc).__name__}: {exc}{note}") from exc

    def _build(self, vpn: list[str], resolver: str = "", local: bool = False) -> None:
        missing = self._check_tools()
        if missing:
            raise LabError(missing)
        plan = build_plan(vpn, local)
        for directory in (self.paths.root, self.paths.logs, self.paths.ready, self.paths.conf):
            directory.mkdir(mode=0o755, parents=True, exist_ok=True)
        debs = resolved.unpacked() if resolver else None
        self._journal = Journal(
            options={"vpn": vpn, "local": local, "plan": plan_fingerprint(build_plan()), "resolver": resolver}
        )
        self._save()

        self.log("creating namespaces and links")
        network.build_cluster(self.ops, plan, self._record_netns)
        if plan.vpn is not None:
            network.build_vpn(self.ops, plan.vpn, self._record_netns)
        if plan.local:
            network.build_local(self.ops, plan)

        self._write_files(plan)

        specs = process_specs(plan, self.paths, self.python, apiserver_module=self.apiserver_module)
        self.log("starting the API server and DNS servers")
        deadline = time.monotonic() + self.timeout
        first = [(s, self._start(s)) for s in specs if not s.after_api]
        self._wait_ready([p for p in first if p[0].name == "apiserver"], deadline)
        later = [(s, self._start(s)) for s in specs if s.after_api]
        if later:
            self.log("starting " + ", ".join(s.name for s, _ in later))
        self._wait_ready(first + later, deadline)
        if debs is not None:
            self._start_resolved(debs, deadline)
        self._journal.state = UP
        self._save()

    @property
    def resolved_files(self) -> resolved.ResolvedFiles:
        return resolved.ResolvedFiles(self.paths.root / "resolved")

    def _start_resolved(self, debs: Path, deadline: float) -> None:
        """The systemd-resolved workstation: a private system bus, then the daemon (see tether.lab.resolved)."""
        self.log("starting systemd-resolved on the workstation")
        files = self.resolved_files
        resolved.write_files(files, debs, str(clusterdns.UPSTREAM_DNS_IP))
        self._write_file(self.paths.resolv_conf(WS_NS), f"nameserver {resolved.STUB}\n")
        bus = ProcessSpec("dbus-system", WS_NS, tuple(resolved.dbus_argv(files)))
        bus_record = self._start(bus)
        while not files.bus_socket.exists():
            self._wait_ready([(bus, bus_record)], deadline)
            if time.monotonic() > deadline:
                raise LabError(f"dbus-daemon made no socket {files.bus_socket}; log {bus_record.log}")
            time.sleep(0.05)
        argv = tuple(resolved.resolved_argv(files, debs))
        daemon = ProcessSpec("systemd-resolved", WS_NS, argv, ready_file=str(files.stub_resolv_conf))
        self._wait_ready([(daemon, self._start(daemon))], deadline)

    def run_argv(self, netns: str, cmd: Sequence[str]) -> list[str]:
        """cmd inside netns as `tether lab run` runs it (on the workstation: in the resolver variant's environment)."""
        journal = self.journal_file.load()
        if netns == WS_NS and journal is not None and journal.options.get("resolver"):
            return ["ip", "netns", "exec", netns, str(self.resolved_files.enter), *cmd]
        return ["ip", "netns", "exec", netns, *cmd]

    def _set_vpn(self, vpn: list[str]) -> None:
        """Replace the corp namespace (and with it vpn0 and its routes) for a new --vpn set."""
        self.log("changing the VPN to " + (", ".join(vpn) or "none"))
        # A deleted namespace is torn down asynchronously by the kernel: remove vpn0 (and with it
        # its routes and its peer) now, so a new vpn0 can be created at once.
        self.ops.link_delete(WS_NS, VPN_IF)
        self._remove_netns(CORP_NS)
        plan = build_plan(vpn, _local(self._journal))
        if plan.vpn is not None:
            network.build_vpn(self.ops, plan.vpn, self._record_netns)
            spec = corp_spec(plan, self.paths, self.python)
            self._wait_ready([(spec, self._start(spec))], time.monotonic() + self.timeout)
        self._journal.options["vpn"] = vpn
        self._save()

    def _check_tools(self) -> str:
        missing = [tool for tool in ("ip", "nft", "dnsmasq", "sysctl", "nsenter") if shutil.which(tool) is None]
        if importlib.util.find_spec("kmock") is None:
            # An optional part of Tether: installs without it carry no lab-only dependency.
            missing.append(
                "kmock, the API server emulator's library (install Tether's lab extra: pip install 'tether[lab]')"
            )
        elif importlib.util.find_spec(self.apiserver_module) is None:
            missing.append(f"the API server emulator (python module {self.apiserver_module})")
        return "missing: " + ", ".join(missing) if missing else ""

    def _record_netns(self, name: str) -> None:
        self._journal.namespaces.append(name)
        self._save()

    def _save(self) -> None:
        self.journal_file.save(self._journal)

    def _write_file(self, path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def _write_files(self, plan: LabPlan) -> None:
        for ns in plan.netns_names():
            if ns == CORP_NS:
                continue
            pod = next((p for p in plan.pods if p.netns == ns), None)
            resolv = clusterdns.pod_resolv_conf(pod.namespace) if pod else clusterdns.upstream_resolv_conf()
            self._journal.etc_dirs.append(str(self.paths.resolv_conf(ns).parent))
            self._save()
            self._write_file(self.paths.resolv_conf(ns), resolv)
        coredns = plan.pods_of("dns")[0]
        self.paths.cluster_hosts.mkdir(mode=0o755, parents=True, exist_ok=True)
        self._write_file(
            self.paths.conf / "cluster-dns.conf", clusterdns.cluster_conf(plan, coredns.ip, self.paths.cluster_hosts)
        )
        self._write_file(self.paths.conf / "upstream-dns.conf", clusterdns.upstream_conf())
        if plan.local:
            self._write_file(self.paths.conf / "ws-resolver.conf", clusterdns.workstation_resolver_conf(WS_NODE_IP))
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        seed = objects.seed_objects(plan, now)
        self._write_file(self.paths.seed, json.dumps(seed, indent=1) + "\n")
        self._write_tokens()
        users.write_files(self.paths, plan.api_url)
        self._write_file(self.paths.kubeconfig, yaml.safe_dump(objects.kubeconfig(plan.api_url), sort_keys=False))
        self._write_file(
            self.paths.pod_kubeconfig, yaml.safe_dump(objects.kubeconfig(plan.pod_api_url), sort_keys=False)
        )

    def _write_tokens(self) -> None:
        """No token is issued in advance: the controller asks the API server for each pod's (TokenRequest)."""
        self.paths.tokens.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(self.paths.service_account_tokens, "[]\n", mode=0o600, fsync=False)

    def _start(self, spec: ProcessSpec) -> ProcessRecord:
        log = self.paths.logs / (spec.name.replace("/", "_") + ".log")
        record = procs.start(spec.name, spec.netns, spec.argv, log, dict(spec.env), spec.ready_file, spec.host_mounts)
        self._journal.processes.append(record)
        self._save()
        return record

    def _wait_ready(self, started: list[tuple[ProcessSpec, ProcessRecord]], deadline: float) -> None:
        pending = list(started)
        while pending:
            for spec, record in list(pending):
                if not procs.is_running(record.pid, record.start_time):
                    code = procs.exit_code(record.pid)
                    status = f" with exit code {code}" if code is not None else ""
                    raise LabError(
                        f"{spec.name} exited{status} before it was ready: {shlex.join(spec.argv)} "
                        f"(in {spec.netns}); log {record.log}:\n{_tail(record.log)}"
                    )
                if spec.ready_file and not Path(spec.ready_file).exists():
                    continue
                if spec.probe is not None and not probes.check(spec.probe):
                    continue
                pending.remove((spec, record))
            if not pending:
                return
            if time.monotonic() > deadline:
                spec, record = pending[0]
                what = ", ".join(s.name for s, _ in pending)
                raise LabError(
                    f"not ready after {self.timeout:.0f}s: {what}; {spec.name} log {record.log}:\n{_tail(record.log)}"
                )
            time.sleep(0.05)

    # --- down ------------------------------------------------------------------------------------

    def down(self) -> list[str]:
        """Remove everything; returns what could not be removed (empty when clean)."""
        require_root("down")
        journal = self.journal_file.load()
        pids: list[int] = []
        if journal is not None:
            pids += [p.pid for p in journal.processes if procs.is_running(p.pid, p.start_time)]
        owned = self.ops.list(PREFIX)
        for ns in owned:
            pids += self.ops.pids(ns)
        stuck = procs.terminate(pids)
        errors = [f"process {pid} did not exit" for pid in stuck]
        for ns in owned:
            try:
                self.ops.delete(ns)
            except CommandError as exc:
                errors.append(str(exc))
        for directory in sorted(self.paths.netns_etc.glob(PREFIX + "*")):
            shutil.rmtree(directory, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.paths.netns_etc.rmdir()  # only if empty: the lab may have been the one to create it
        shutil.rmtree(self.paths.root, ignore_errors=True)
        return errors + self.leftovers()

    # --- restart --------------------------------------------------------------------------------

    def restart(self, name: str) -> ProcessRecord:
        """End one lab process (by the PID the journal records), start it again from its spec, wait
        until it is ready, and record the new PID. `name` is a process name from the journal
        ("apiserver", "dns-upstream", "pod/kube-system/coredns-0", ...) or a pod as NAMESPACE/NAME."""
        require_root("restart")
        journal = self.journal_file.load()
        if journal is None or journal.state != UP:
            raise LabError("the lab is not up (run: tether lab up)")
        names = [p.name for p in journal.processes]
        if name not in names and f"pod/{name}" in names:
            name = f"pod/{name}"
        record = journal.process(name)
        plan = build_plan(journal.options.get("vpn", []), _local(journal))
        specs = process_specs(plan, self.paths, self.python, apiserver_module=self.apiserver_module)
        spec = next((s for s in specs if s.name == name), None)
        if record is None or spec is None:
            raise LabError(f"no lab process {name!r} (processes: {', '.join(names)})")
        self._journal = journal
        self.log(f"restarting {name} (pid {record.pid})")
        if procs.is_running(record.pid, record.start_time):
            stuck = procs.terminate([record.pid])
            if stuck:
                raise LabError(f"{name} (pid {record.pid}) did not exit")
        if spec.ready_file:
            with contextlib.suppress(FileNotFoundError):
                Path(spec.ready_file).unlink()
        self._journal.processes = [p for p in self._journal.processes if p.name != name]
        self._save()
        new = self._start(spec)
        self._wait_ready([(spec, new)], time.monotonic() + self.timeout)
        return new

    def _remove_netns(self, name: str) -> None:
        pids = [p.pid for p in self._journal.processes if p.netns == name]
        if name in self.ops.list(PREFIX):
            pids += self.ops.pids(name)
        procs.terminate(pids)
        if name in self.ops.list(PREFIX):
            self.ops.delete(name)
        self._journal.processes = [p for p in self._journal.processes if p.netns != name]
        self._journal.namespaces = [n for n in self._journal.namespaces if n != name]
        self._save()

    def leftovers(self) -> list[str]:
        """Anything of the lab that exists on this host."""
        found = [f"network namespace {ns}" for ns in self.ops.list(PREFIX)]
        found += [f"directory {d}" for d in sorted(self.paths.netns_etc.glob(PREFIX + "*"))]
        if self.paths.root.exists():
            found.append(f"directory {self.paths.root}")
        return found

    # --- status ----------------------------------------------------------------------------------

    def problems(self, journal: Journal) -> list[str]:
        existing = set(self.ops.list(PREFIX))
        found = [f"namespace {ns} is missing" for ns in journal.namespaces if ns not in existing]
        found += [
            f"{p.name} (pid {p.pid}) is not running"
            for p in journal.processes
            if not procs.is_running(p.pid, p.start_time)
        ]
        if not self.paths.users.exists():
            found.append("its API server has no restricted users (built by an older tether)")
        return found

    def _info(self, journal: Journal) -> LabInfo:
        plan = build_plan(journal.options.get("vpn", []), _local(journal))
        return LabInfo(plan, self.paths, list(journal.notes))

    def info(self) -> LabInfo:
        journal = self.journal_file.load()
        if journal is None or journal.state != UP:
            raise LabError("the lab is not up (run: tether lab up)")
        return self._info(journal)

    def status(self) -> dict[str, Any]:
        journal = self.journal_file.load()
        if journal is None:
            leftovers = self.leftovers()
            return {"state": "stale" if leftovers else "down", "leftovers": leftovers}
        return report.status(self._info(journal), journal, self.problems(journal), self.ops.pids)

    def netns_for(self, target: str | None) -> str:
        """The namespace for `run`: the workstation, or a pod given as NAMESPACE/NAME (or NAME in default)."""
        info = self.info()
        if not target:
            return WS_NS
        if target in (ROUTER_NS, INET_NS, CORP_NS, WS_NS):
            return target
        namespace, _, name = target.rpartition("/")
        try:
            return info.plan.pod(namespace or "default", name).netns
        except KeyError:
            pods = ", ".join(info.pod_ips)
            raise LabError(f"no pod {target!r} in the lab (pods: {pods})") from None
