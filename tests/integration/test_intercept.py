"""Intercepts in the lab: `tether intercept web` sends the web Service's traffic, from another pod, to a server in
the workstation namespace; `tether leave` gives it back to the app. Driven through the real CLI and helper,
the real manager and the agents the lab's controller runs in re-created web pods.

Order matters (one helper, one connection for the module): the errors first (nothing changes in the cluster),
then the first intercept (the web pods restart with the agent taking the port), then what reuses it (no
restart): another user's claim, the pod's volumes mounted, 200 MB each way and 200 concurrent connections,
``-- CMD``, leave; last ``tether uninstall --agent web`` and an intercept that injects the agent from scratch,
after which the web Deployment is put back as the lab made it. About 25 s of tests (plus the lab's start and
stop).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from helper_fixture import RunningHelper, running_helper
from manager_client import ManagerClient, kube_configuration
from test_volumes import _sshfs_processes as sshfs_processes

from tether.lab.topology import WEB_VOLUME_FILE
from tether.manager.api import manager_pb2 as pb
from tether.manager.api.sidecar import INTERCEPT_ANNOTATION, SIDECAR_NAME

pytestmark = [pytest.mark.lab, pytest.mark.rewrites_workloads]

PEERS = str(Path(__file__).with_name("intercept_peers.py"))
WEB_IP = "10.96.1.10"  # the web Service's ClusterIP (lab/topology.py)
CLIENT_POD = "default/echo-0"
HELLO = "hello from the workstation"
MB = 1024 * 1024


def read(lab, workstation, kind: str, name: str) -> dict[str, Any]:
    """The object as the API server holds it (raw JSON), read from the workstation (the API server's side)."""
    with workstation(), kubernetes.client.ApiClient(kube_configuration(lab.kubeconfig)) as api:
        if kind == "Service":
            call = kubernetes.client.CoreV1Api(api).read_namespaced_service
        else:
            call = kubernetes.client.AppsV1Api(api).read_namespaced_deployment
        response = call(name, "default", _preload_content=False)
        return dict(json.loads(response.data))


@pytest.fixture(scope="module")
def helper(lab, workstation, tmp_path_factory) -> Iterator[RunningHelper]:
    original = read(lab, workstation, "Deployment", "web")
    with running_helper(lab.ws_netns, lab.kubeconfig, tmp_path_factory.mktemp("intercept")) as running:
        running.start()
        running.connect()
        yield running
        running.cli("uninstall", "--agent", "web")
        running.disconnect()
    # Put web back as the lab made it (its own agent sidecar, for the other modules' proxy-via tests).
    original["metadata"]["resourceVersion"] = read(lab, workstation, "Deployment", "web")["metadata"]["resourceVersion"]
    with workstation(), kubernetes.client.ApiClient(kube_configuration(lab.kubeconfig)) as api:
        kubernetes.client.AppsV1Api(api).replace_namespaced_deployment("web", "default", original)
    wait_web_settled(lab, workstation, original)


def wait_web_settled(lab, workstation, deployment: dict[str, Any], timeout: float = 120) -> None:
    """Until web's pods are all made from the template and ready (the lab must not go down mid-rollout)."""
    wanted = deployment["spec"]["template"]["spec"]["containers"]
    deadline = time.monotonic() + timeout
    while True:
        with workstation(), kubernetes.client.ApiClient(kube_configuration(lab.kubeconfig)) as api:
            response = kubernetes.client.CoreV1Api(api).list_namespaced_pod(
                "default", label_selector="app=web", _preload_content=False
            )
            pods = json.loads(response.data)["items"]
        settled = len(pods) == deployment["spec"].get("replicas", 1) and all(
            not p["metadata"].get("deletionTimestamp")
            and [c.get("args") for c in p["spec"]["containers"]] == [c.get("args") for c in wanted]
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])
            for p in pods
        )
        if settled:
            return
        assert time.monotonic() < deadline, [p["metadata"]["name"] for p in pods]
        time.sleep(0.5)


@contextlib.contextmanager
def local_server(netns: str, mode: str, port: int, results: Path) -> Iterator[Path]:
    proc = subprocess.Popen(
        ["ip", "netns", "exec", netns, sys.executable, PEERS, "serve", mode, str(port), str(results)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "listening"
        yield results
    finally:
        proc.terminate()
        proc.wait(10)


def from_pod(lab_run, *argv: str, timeout: float = 60) -> str:
    done = lab_run(*argv, pod=CLIENT_POD, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout


def bulk_client(lab_run, size: int, connections: int) -> str:
    """``connections`` connections to the web Service from another pod, each sending and asking for ``size``."""
    argv = (sys.executable, PEERS, "bulk", WEB_IP, "80", str(size), str(size), str(connections))
    return from_pod(lab_run, *argv, timeout=300)


def curl_web(lab_run) -> str:
    return from_pod(lab_run, "curl", "-sS", "--max-time", "5", f"http://{WEB_IP}/")


def cli_ok(helper: RunningHelper, *args: str, timeout: float = 240) -> str:
    done = helper.cli(*args, timeout=timeout)
    assert done.returncode == 0, f"tether {' '.join(args)}: {done.stdout}{done.stderr}\n{helper.tail()}"
    return done.stdout


def cli_fails(helper: RunningHelper, *args: str) -> str:
    done = helper.cli(*args)
    assert done.returncode != 0, done.stdout
    return done.stderr


def test_errors_name_the_workload_service_port_and_local_port(helper, lab, tmp_path):
    error = cli_fails(helper, "intercept", "nosuch", "--port", "8080")
    assert 'named "nosuch" in namespace "default"' in error
    assert helper.status()["intercept_error"] in error  # every error is in the status too
    assert 'no Service "nope"' in cli_fails(helper, "intercept", "web", "--service", "nope")
    assert 'has no TCP port "grpc"' in cli_fails(helper, "intercept", "web", "--port", "8080:grpc")
    assert "nothing listens on localhost:8089" in cli_fails(helper, "intercept", "web", "--port", "8089")
    assert 'local port "x"' in cli_fails(helper, "intercept", "web", "--port", "x:80")
    assert helper.status()["intercepts"] == []


def test_intercepted_web_answers_from_the_workstation(helper, lab, lab_run, tmp_path):
    env_json, env_file = tmp_path / "env.json", tmp_path / "env"
    with local_server(lab.ws_netns, "http", 8080, tmp_path / "unused"):
        out = cli_ok(
            helper, "intercept", "web", "--port", "8080", "--env-json", str(env_json), "--env-file", str(env_file)
        )
        assert "default/web port 8080 (service web port 80) -> localhost:8080: active" in out
        assert curl_web(lab_run) == HELLO + "\n"
        [intercept] = helper.status()["intercepts"]
        assert intercept["phase"] == "active" and intercept["ours"] and intercept["local_port"] == 8080
        assert intercept["agents_intercepting"] == intercept["agents_live"] == 2
        listing = json.loads(cli_ok(helper, "list", "--json"))
        web = next(w for w in listing if w["name"] == "web")
        assert web["agent"] and web["intercepts"][0]["client"] == intercept["client"]
    environment = json.loads(env_json.read_text())
    assert environment["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"
    assert "KUBERNETES_SERVICE_HOST='10.96.0.1'" in env_file.read_text().splitlines() or (
        "KUBERNETES_SERVICE_HOST=10.96.0.1" in env_file.read_text().splitlines()
    )
    cli_ok(helper, "leave", "web")
    assert "hello from web" in curl_web(lab_run)


def test_another_users_intercept_is_named(helper, lab, workstation, tmp_path):
    other = ManagerClient(lab, workstation, name="other-user@elsewhere")
    try:
        spec = pb.InterceptSpec(workload=pb.WorkloadRef(namespace="default", name="web"), port=8080, service="web")
        other.run(lambda: other.stub.CreateIntercept(pb.InterceptRequest(session_id=other.session, spec=spec)))
        with local_server(lab.ws_netns, "http", 8080, tmp_path / "unused"):
            error = cli_fails(helper, "intercept", "web", "--port", "8080")
        assert "default/web port 8080 is already intercepted by other-user@elsewhere since " in error
    finally:
        other.close()


def test_intercept_mounts_the_pods_volumes_until_leave(helper, lab, tmp_path):
    """--mount DIR: the web pod's volumes at DIR (in the helper's mount namespace: ``ip netns exec`` gave it its
    own), read what the pod wrote, write what the pod reads; leave unmounts, ends sshfs and removes DIR."""
    mount = tmp_path / "web-volumes"
    in_helper = ("nsenter", "-t", str(helper.pid), "-m")
    with local_server(lab.ws_netns, "http", 8080, tmp_path / "unused"):
        out = cli_ok(helper, "intercept", "web", "--port", "8080", "--mount", str(mount))
        assert f"volumes mounted at {mount}" in out
        [intercept] = helper.status()["intercepts"]
        assert (intercept["mount"], intercept["mount_error"]) == (str(mount), "")
        assert f"volumes at {mount}" in cli_ok(helper, "status")

        written = run_ok(*in_helper, "cat", str(mount / "data" / Path(WEB_VOLUME_FILE).name))
        assert written.startswith("written by pod web-"), written
        payload = os.urandom(50_000).hex()
        run_ok(*in_helper, "sh", "-c", f"cat > {mount}/data/from-workstation.txt", stdin=payload)
        pid, pod_file = writer_of(written)
        assert run_ok("nsenter", "-t", str(pid), "-m", "cat", str(pod_file.parent / "from-workstation.txt")) == payload
        cli_ok(helper, "leave", "web")
    assert str(mount) not in run_ok(*in_helper, "cat", "/proc/self/mounts")
    assert run_ok(*in_helper, "sh", "-c", f"test -e {mount} && echo there || echo gone").strip() == "gone"
    assert sshfs_processes() == []
    assert helper.status()["intercepts"] == []


def test_a_mount_that_fails_leaves_the_intercept_with_the_reason(helper, lab, lab_run, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "file").write_text("x")
    with local_server(lab.ws_netns, "http", 8080, tmp_path / "unused"):
        out = cli_ok(helper, "intercept", "web", "--port", "8080", "--mount", str(busy))
        assert f'volumes not mounted: mount point "{busy}" is not empty' in out, out
        [intercept] = helper.status()["intercepts"]
        assert (intercept["phase"], intercept["mount"]) == ("active", "")
        assert f'"{busy}" is not empty' in intercept["mount_error"]
        assert curl_web(lab_run) == HELLO + "\n"  # the intercept holds without its volumes
        cli_ok(helper, "leave", "web")
    assert (busy / "file").read_text() == "x"


def writer_of(written: str) -> tuple[int, Path]:
    """The web app process (of the controller's re-created pods, which the lab's own table does not name) that
    wrote ``written``, and the file as it names it."""
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if entry.name.isdigit() and b"--write-file" in argv:
                path = Path(argv[argv.index(b"--write-file") + 1].decode())
                seen = subprocess.run(["nsenter", "-t", entry.name, "-m", "cat", str(path)], capture_output=True)
                if seen.stdout.decode(errors="replace") == written:
                    return int(entry.name), path
    raise AssertionError(f"no web app process wrote {written!r}")


def run_ok(*argv: str, stdin: str | None = None) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr}"
    return done.stdout


def test_200_mb_each_way_and_200_connections(helper, lab, lab_run, tmp_path):
    results = tmp_path / "server.jsonl"
    with local_server(lab.ws_netns, "bulk", 8081, results):
        cli_ok(helper, "intercept", "web", "--port", "8081:http")
        started = time.monotonic()
        [one] = json.loads(
            from_pod(
                lab_run, sys.executable, PEERS, "bulk", WEB_IP, "80", str(200 * MB), str(200 * MB), "1", timeout=300
            )
        )
        bulk_seconds = time.monotonic() - started
        [server] = [json.loads(line) for line in results.read_text().splitlines()]
        assert one["received_bytes"] == server["sent_bytes"] == 200 * MB
        assert (one["sent"], one["received"]) == (server["received"], server["sent"])
        results.unlink()
        started = time.monotonic()
        many = json.loads(
            from_pod(lab_run, sys.executable, PEERS, "bulk", WEB_IP, "80", "65536", "65536", "200", timeout=300)
        )
        many_seconds = time.monotonic() - started
        assert [m for m in many if "error" in m] == []
        servers = [json.loads(line) for line in results.read_text().splitlines()]
        assert len(servers) == 200
        assert sorted((m["sent"], m["received"]) for m in many) == sorted((s["received"], s["sent"]) for s in servers)
        cli_ok(helper, "leave", "web")
    print(f"[intercept] 200 MB each way: {bulk_seconds:.1f}s; 200 connections of 64 KiB each way: {many_seconds:.1f}s")


def test_command_runs_with_the_pods_environment_and_ends_the_intercept(helper, lab, tmp_path):
    with local_server(lab.ws_netns, "http", 8080, tmp_path / "unused"):
        show = "import os, sys; print('pod env', os.environ['KUBERNETES_SERVICE_HOST']); sys.exit(3)"
        # --socket before "--": what follows is the command's (the fixture's own --socket lands in its argv)
        argv = ("intercept", "web", "--port", "8080", "--socket", str(helper.socket), "--", sys.executable, "-c", show)
        done = helper.cli(*argv, timeout=240)
    assert done.returncode == 3, done.stderr  # the command's status
    assert "pod env 10.96.0.1" in done.stdout and "left the intercept of default/web" in done.stdout
    assert helper.status()["intercepts"] == []


def test_uninstall_takes_the_agent_out_and_an_intercept_injects_it_again(helper, lab, workstation, lab_run, tmp_path):
    assert read(lab, workstation, "Service", "web")["spec"]["ports"][0]["targetPort"] != 8080  # the agent's
    out = cli_ok(helper, "uninstall", "--agent", "web")
    assert "removed the tether-agent from Deployment default/web" in out
    service = read(lab, workstation, "Service", "web")
    deployment = read(lab, workstation, "Deployment", "web")
    assert service["spec"]["ports"][0]["targetPort"] == 8080
    assert INTERCEPT_ANNOTATION not in (service["metadata"].get("annotations") or {})
    assert SIDECAR_NAME not in [c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]]
    deadline = time.monotonic() + 120
    while "hello from web" not in (
        answer := lab_run("curl", "-sS", "--max-time", "3", f"http://{WEB_IP}/", pod=CLIENT_POD).stdout
    ):
        assert time.monotonic() < deadline, answer
        time.sleep(1)
    # No agent now: the next intercept injects it (the pods restart with it) and works as before.
    with local_server(lab.ws_netns, "http", 8080, tmp_path / "unused"):
        cli_ok(helper, "intercept", "web", "--port", "8080")
        assert SIDECAR_NAME in [
            c["name"] for c in read(lab, workstation, "Deployment", "web")["spec"]["template"]["spec"]["containers"]
        ]
        assert curl_web(lab_run) == HELLO + "\n"
        cli_ok(helper, "leave", "web")
