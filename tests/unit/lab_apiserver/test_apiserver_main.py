"""The emulator as a process: seeding, the ready file, a clean exit on SIGTERM, and a refused seed."""

import argparse
import json
import signal
import subprocess
import sys
import time

import kubernetes
import pytest
from apiserver_support import CIDR, Watcher
from kubernetes import client

from tether.lab.apiserver.main import _listen_address, _load_seed, _service_cidr
from tether.lab.apiserver.server import kubeconfig_for


def _start_runner(tmp_path, *extra):
    ready = tmp_path / "ready"
    command = [
        sys.executable,
        "-m",
        "tether.lab.apiserver",
        "--listen",
        "127.0.0.1:0",
        "--service-cidr",
        CIDR,
        "--ready-file",
        str(ready),
        *extra,
    ]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), ready


def _wait_ready(proc, ready) -> str:
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the ready file never appeared"
        time.sleep(0.05)
    return ready.read_text().strip()


def test_runner_seeds_serves_and_exits_cleanly(tmp_path):
    seed = tmp_path / "seed.json"
    seed.write_text(
        json.dumps(
            [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "lab"}},
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "web", "namespace": "lab"},
                    "spec": {"containers": [{"name": "web", "image": "web"}]},
                    "status": {"phase": "Running", "podIP": "10.1.0.2"},
                },
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "web", "namespace": "lab"},
                    "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]},
                },
            ]
        )
    )
    proc, ready = _start_runner(tmp_path, "--seed", str(seed))
    try:
        url = _wait_ready(proc, ready)
        assert url.startswith("http://127.0.0.1:")
        api = kubernetes.config.new_client_from_config_dict(kubeconfig_for(url))
        v1 = client.CoreV1Api(api)
        assert [p.status.pod_ip for p in v1.list_namespaced_pod("lab").items] == ["10.1.0.2"]
        assert v1.read_namespaced_service("web", "lab").spec.cluster_ip == "10.96.0.10"
        # An open watch must not hold up the exit.
        watcher = Watcher(v1.list_namespaced_pod, "lab", timeout=60)
        watcher.take(1)
        api.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert not ready.exists()


def test_runner_rejects_a_bad_seed(tmp_path):
    seed = tmp_path / "seed.json"
    seed.write_text(
        json.dumps(
            [
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "x"},
                    "spec": {"clusterIP": "1.1.1.1", "ports": [{"port": 80}]},
                }
            ]
        )
    )
    proc, ready = _start_runner(tmp_path, "--seed", str(seed))
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "seed object #0 (Service default/x)" in err and "The range of valid IPs is 10.96.0.0/16" in err
    assert "Traceback" not in err
    assert not ready.exists()


def test_command_line_values():
    assert _listen_address("172.30.0.1:6443") == ("172.30.0.1", 6443)
    assert _listen_address("[::1]:0") == ("::1", 0)
    for bad in ("6443", ":6443", "host:", "host:http", "host:65536"):
        with pytest.raises(argparse.ArgumentTypeError):
            _listen_address(bad)
    assert _service_cidr("10.96.0.0/16") == "10.96.0.0/16"
    with pytest.raises(argparse.ArgumentTypeError):
        _service_cidr("10.96.0.1/16")  # host bits set: not a range


def test_the_seed_file_must_be_a_list_of_objects(tmp_path):
    seed = tmp_path / "seed.json"
    seed.write_text('[{"kind": "Namespace"}]')
    assert _load_seed(seed) == [{"kind": "Namespace"}]
    for wrong in ('{"kind": "Namespace"}', '["Namespace"]'):
        seed.write_text(wrong)
        with pytest.raises(ValueError, match="a JSON list of Kubernetes objects"):
            _load_seed(seed)


def test_runner_authorizes_with_the_users_file(tmp_path):
    users = tmp_path / "users.json"
    users.write_text(json.dumps({"users": [{"name": "alice", "token": "alice-token", "allowed": ["list pods"]}]}))
    proc, ready = _start_runner(tmp_path, "--users", str(users))
    try:
        url = _wait_ready(proc, ready)
        config = kubeconfig_for(url)
        config["users"][0]["user"] = {"token": "alice-token"}
        with kubernetes.config.new_client_from_config_dict(config) as api:
            v1 = client.CoreV1Api(api)
            assert v1.list_namespaced_pod("default").items == []
            with pytest.raises(client.ApiException) as refused:
                v1.list_namespaced_service("default")
            assert refused.value.status == 403
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err


def test_runner_refuses_a_bad_users_file(tmp_path):
    users = tmp_path / "users.json"
    users.write_text(json.dumps({"users": [{"name": "alice"}]}))
    proc, ready = _start_runner(tmp_path, "--users", str(users))
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert f"error: {users}: users[0]: needs a non-empty name and token" in err
    assert "Traceback" not in err
    assert not ready.exists()
