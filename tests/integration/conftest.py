"""Integration tests run as root against the sandbox cluster ("lab") built in network namespaces.

Fixtures:

* ``lab`` (session): brings the lab up once (through the Python API) and yields a
  ``tether.lab.report.LabInfo``: ``kubeconfig``, ``api_url``, ``netns`` (all namespaces),
  ``ws_netns``, ``cluster_ips`` / ``pod_ips`` / ``pod_netns`` keyed "namespace/name",
  ``service_ip(name, namespace="default")``, ``vpn_hosts``, and the whole ``plan``.
  At the end of the session the lab is taken down and nothing of it may be left.
  The traffic-manager is installed into it as a user would: ``tether lab run -- tether manager install
  --kubeconfig ... --wait`` (the lab's controller then runs its pod); ``manager_client.manager_pod(lab)``
  finds that pod and ``manager_client.restart_manager(lab)`` replaces it.
* ``lab_control`` (session): the ``Lab`` object itself, for tests that change the lab (``up(vpn=...)``,
  ``down()``); such tests must put it back with ``lab_control.up()``, which installs the manager again
  whenever it (re)builds the lab.
* ``workstation``: a function returning a context manager that moves the *calling thread* into the
  workstation namespace (``with workstation(): ...``); threads started inside inherit it.
  ``netns(name)`` does the same for any lab namespace (e.g. ``lab.pod_netns["default/web-0"]``).
  Only the network namespace changes: in-process name resolution still reads the host's resolv.conf;
  use ``tether lab run`` (``lab_run``) for a process that sees the namespace's resolv.conf.

Tests that use ``lab`` (or carry the ``lab`` mark) are skipped unless running as root with working
``ip netns``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tether.lab.lab import Lab
from tether.lab.netns import entered
from tether.lab.netns import workstation as _workstation
from tether.lab.topology import PREFIX, StatePaths

LAB_FIXTURES = {"lab", "lab_control", "workstation", "netns", "lab_run", "assert_lab_gone"}


def _lab_unavailable() -> str:
    if sys.platform != "linux":
        return "the lab needs Linux network namespaces"
    if os.geteuid() != 0:
        return "the lab needs root"
    for tool in ("ip", "nft", "dnsmasq"):
        if shutil.which(tool) is None:
            return f"the lab needs {tool}"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"ip netns does not work here: {probe.stderr.strip()}"
    return ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests that rewrite a lab workload's template run after all others: the lab's seeded pods (web-0,
    # web-1...) are replaced by pods with hashed names once a template changes, even when it is put back,
    # and the lab's own tests name the seeded pods.
    items.sort(key=lambda item: item.get_closest_marker("rewrites_workloads") is not None)
    reason = None
    for item in items:
        if LAB_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.lab)
        if item.get_closest_marker("lab") is not None:
            if reason is None:
                reason = _lab_unavailable()
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


def lab_processes_left(pids: list[int], state_dir: Path) -> list[str]:
    """Processes of the lab that still run: journal PIDs, or anything naming the state directory."""
    left = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z" or int(proc.name) == os.getpid():
            continue
        if int(proc.name) in pids or str(state_dir) in cmdline:
            left.append(f"{proc.name}: {cmdline.strip()}")
    return left


def assert_nothing_left(lab: Lab, pids: list[int]) -> None:
    paths = lab.paths
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert [line for line in namespaces.splitlines() if line.startswith(PREFIX)] == []
    assert sorted(paths.netns_etc.glob(PREFIX + "*")) == []
    assert not paths.root.exists()
    assert lab_processes_left(pids, paths.root) == []


TETHER = (sys.executable, "-m", "tether.helper.user.cli.main")


def install_manager(kubeconfig: Path) -> None:
    """`tether manager install --wait` from the workstation, exactly as the README's demo runs it."""
    argv = [*TETHER, "lab", "run", "--", *TETHER, "manager", "install", "--kubeconfig", str(kubeconfig), "--wait"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    if done.returncode != 0 and "already installed" not in done.stderr:  # a lab left up by an earlier run
        raise AssertionError(f"tether manager install failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    print(f"[lab] {done.stdout.strip()}", file=sys.stderr)


class InstalledLab(Lab):
    """The lab, with the traffic-manager installed into it whenever `up` builds it."""

    def up(self, vpn=(), resolver="", local=False):  # type: ignore[no-untyped-def]
        result = super().up(vpn, resolver, local=local)
        if result.action != "vpn changed":  # a lab that was up keeps its installed manager
            install_manager(self.paths.kubeconfig)
        return result


@pytest.fixture(scope="session")
def lab_control():
    reason = _lab_unavailable()
    if reason:
        pytest.skip(reason)
    control = InstalledLab(paths=StatePaths(), log=lambda msg: print(f"[lab] {msg}", file=sys.stderr))
    control.up()
    yield control
    journal = control.journal_file.load()
    pids = [p.pid for p in journal.processes] if journal else []
    leftovers = control.down()
    assert leftovers == []
    assert_nothing_left(control, pids)


@pytest.fixture(scope="session")
def lab(lab_control):
    return lab_control.info()


@pytest.fixture(scope="session")
def workstation(lab):
    return _workstation


@pytest.fixture(scope="session")
def netns(lab):
    return entered


@pytest.fixture(scope="session")
def assert_lab_gone(lab_control):
    """assert_lab_gone(pids): no lab namespace, file or process (of pids, or naming the state dir) is left."""
    return lambda pids: assert_nothing_left(lab_control, pids)


@pytest.fixture(scope="session")
def lab_run(lab):
    """lab_run(*cmd, pod=None, timeout=30) -> CompletedProcess: `tether lab run [--pod POD] -- CMD`."""

    def run(*cmd: str, pod: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "tether.helper.user.cli.main", "lab", "run"]
        if pod:
            argv += ["--pod", pod]
        return subprocess.run([*argv, "--", *cmd], capture_output=True, text=True, timeout=timeout)

    return run


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    """A failed test's report carries the lab network's state (see labfacts), taken while it is still there."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when == "call" and StatePaths().root.exists():
        from labfacts import network_facts

        report.sections.append(("lab network at the failure", network_facts()))
