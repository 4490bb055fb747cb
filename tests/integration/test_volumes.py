"""A web pod's volumes mounted here with sshfs over the tunnel (the agent's SFTP service on the pod's loopback,
reached by a stream that the web workload's agent dials): read what the pod wrote, write what the pod reads,
unmount and leave nothing behind."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import time
from pathlib import Path

import pytest
from manager_client import ManagerClient

from tether.helper.root.journal import Journal, read_journal
from tether.helper.root.tunnel.streams import TunnelOpener
from tether.helper.root.vif.flowstream import DialFailure, FlowProtocol, Opened, Refused
from tether.helper.root.volumes.mount import (
    JOURNAL_KIND,
    LOOPBACK,
    VolumeMountError,
    agent_stream,
    mount_pod_volumes,
)
from tether.helper.root.volumes.sshfs import FSNAME_PREFIX, Owner
from tether.lab.topology import WEB_VOLUME_FILE
from tether.manager.api.volumes import SFTP_PORT

WEB = ("default", "web", "Deployment")
NOBODY = Owner(65534, 65534)  # the user the mount is for: not the test's root, so ownership shows


@pytest.fixture(scope="module")
def client(lab, workstation):
    session = ManagerClient(lab, workstation, name="volumes-test")
    # the web pods' agents arrive at the manager a moment after their pods run: wait for one to answer
    deadline = time.monotonic() + 60
    while not isinstance(answer := session.run(lambda: _dial(session, (LOOPBACK, SFTP_PORT))), Opened):
        assert time.monotonic() < deadline, answer
        time.sleep(0.3)
    yield session
    session.close()


async def _dial(client: ManagerClient, target: tuple[ipaddress.IPv4Address, int]) -> Opened | Refused:
    """Whether the web workload's agent connects to ``target`` from inside its pod."""
    stream = _opener(client).open_via(FlowProtocol.TCP, (LOOPBACK, 0), target, WEB)
    try:
        return await stream.opened()
    finally:
        stream.close()


def _opener(client: ManagerClient) -> TunnelOpener:
    opener = TunnelOpener()
    opener.stub, opener.session_id, opener.open_ahead = client.stub, client.session, False
    return opener


def _mount(client: ManagerClient, journal: Journal, target: str = ""):
    """Mount, retrying while the web pods' agents are still arriving at the manager (as test_agent waits)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return client.run(
                lambda: mount_pod_volumes(agent_stream(_opener(client), WEB), WEB, target, NOBODY, journal)
            )
        except VolumeMountError as exc:
            if time.monotonic() > deadline or "cannot reach" not in str(exc):
                raise
            time.sleep(0.5)


def _app_process(lab, pod: str) -> tuple[int, Path]:
    """The web app's PID in ``pod`` and the file it wrote, as the app itself names it (its view's path)."""
    pids = subprocess.run(["ip", "netns", "pids", lab.pod_netns[f"default/{pod}"]], capture_output=True, text=True)
    for pid in pids.stdout.split():
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"--write-file" in argv:
            return int(pid), Path(argv[argv.index(b"--write-file") + 1].decode())
    raise AssertionError(f"no web app process in pod {pod}")


def _sshfs_processes() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(b"sshfs\0") and FSNAME_PREFIX.encode() in cmdline:
                found.append(int(entry.name))
    return found


def test_web_volumes_mount_here_both_ways_and_unmount_cleanly(lab, client, tmp_path):
    journal = Journal(tmp_path / "journal.json")
    mount = _mount(client, journal)
    try:
        assert mount.path.parent == Path("/tmp") and mount.path.name.startswith("tether-volumes-")
        assert mount.path.stat().st_uid == NOBODY.uid
        [record] = [r for r in read_journal(journal.path).records if r.kind == JOURNAL_KIND]
        assert record.data["path"] == str(mount.path) and record.data["pid"] == mount.process.pid

        # what the pod wrote, through the agent's tree: /tether/volumes/data is the app's /data
        written = mount.path / "data" / Path(WEB_VOLUME_FILE).name
        text = written.read_text()
        assert text.startswith("written by pod web-"), text
        assert written.stat().st_uid == NOBODY.uid and written.stat().st_mode & 0o077 == 0
        pod = text.split()[-1]

        payload = os.urandom(200_000).hex()
        (mount.path / "data" / "from-workstation.txt").write_text(payload)
        # the pod reads it at its own /data, in the app container's mount namespace
        pid, pod_file = _app_process(lab, pod)
        seen = subprocess.run(
            ["nsenter", "-t", str(pid), "-m", "cat", str(pod_file.parent / "from-workstation.txt")],
            capture_output=True, text=True, timeout=20,
        )  # fmt: skip
        assert seen.returncode == 0, seen.stderr
        assert seen.stdout == payload
        assert mount.alive
    finally:
        client.run(mount.unmount)
    assert not mount.alive
    assert str(mount.path) not in Path("/proc/self/mounts").read_text()
    assert not mount.path.exists()  # the temporary directory went with the mount
    assert mount.process.returncode is not None and _sshfs_processes() == []
    state = read_journal(journal.path)
    assert state is None or not [r for r in state.records if r.kind == JOURNAL_KIND]


def test_the_sftp_service_listens_on_the_pods_loopback_only(lab, client):
    """From the pod's own network (the agent dials it), the pod IP's SFTP port is closed: the volumes are not
    for the cluster to read."""
    for pod in ("web-0", "web-1"):
        target = (ipaddress.ip_address(lab.pod_ips[f"default/{pod}"]), SFTP_PORT)
        answer = client.run(lambda target=target: _dial(client, target))
        assert isinstance(answer, Refused) and answer.reason == DialFailure.REFUSED, (pod, answer)


def test_a_mount_point_that_is_not_empty_is_refused_by_name(lab, client, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    os.chown(tmp_path / "busy", NOBODY.uid, NOBODY.gid)
    with pytest.raises(VolumeMountError, match=f'"{tmp_path / "busy"}" is not empty'):
        client.run(lambda: mount_pod_volumes(agent_stream(_opener(client), WEB), WEB, str(tmp_path / "busy"), NOBODY))


def test_a_workload_without_an_agent_is_named(lab, client, tmp_path):
    echo = ("default", "echo", "Deployment")
    with pytest.raises(VolumeMountError, match="default/echo"):
        client.run(lambda: mount_pod_volumes(agent_stream(_opener(client), echo), echo, "", NOBODY))
    assert not [
        p for p in Path("/tmp").glob("tether-volumes-*") if p.stat().st_uid == NOBODY.uid and not any(p.iterdir())
    ]
