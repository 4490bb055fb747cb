"""The client library's errors: each failure to reach the helper says what is wrong and how to fix it."""

import errno
import json
import os
import socket
import threading

import grpc
import pytest

from tether.helper.api.paths import auth_socket_for, default_socket
from tether.helper.api.validate import ValidationError
from tether.helper.user import client as client_module
from tether.helper.user.client import (
    HelperCallError,
    HelperClient,
    HelperNotInstalledError,
    HelperNotRunningError,
    HelperPermissionError,
    HelperProtocolError,
    TokenSource,
    build_connect_request,
)
from tether.helper.user.kubeconfig import KubeconfigError


def test_socket_paths(monkeypatch):
    monkeypatch.delenv("TETHER_HELPER_SOCKET", raising=False)
    assert str(default_socket()) == "/run/tether/helper.sock"
    assert str(default_socket({"TETHER_HELPER_SOCKET": "/tmp/t/h.sock"})) == "/tmp/t/h.sock"
    assert str(auth_socket_for(default_socket())) == "/run/tether/helper-auth.sock"


def test_no_socket_directory_means_not_installed(tmp_path):
    with HelperClient(tmp_path / "nothing" / "helper.sock") as helper, pytest.raises(HelperNotInstalledError) as info:
        helper.status()
    assert "not installed or not running" in info.value.message
    assert "does not exist" in info.value.message
    assert "sudo tether helper start" in info.value.fix


def test_no_socket_means_not_installed(tmp_path):
    with HelperClient(tmp_path / "helper.sock") as helper, pytest.raises(HelperNotInstalledError) as info:
        helper.status()
    assert f"no socket at {tmp_path}/helper-auth.sock" in info.value.message


def test_a_socket_nobody_listens_on_means_not_running(tmp_path):
    for name in ("helper.sock", "helper-auth.sock"):
        leftover = socket.socket(socket.AF_UNIX)
        leftover.bind(str(tmp_path / name))
        leftover.close()
    with HelperClient(tmp_path / "helper.sock") as helper, pytest.raises(HelperNotRunningError) as info:
        helper.status()
    assert "not running" in info.value.message
    assert "systemctl restart tether-helper" in info.value.fix


def test_eacces_means_not_in_the_group(tmp_path):
    path = tmp_path / "helper-auth.sock"
    path.touch()
    os.chown(path, -1, os.getegid())
    error = client_module.connection_error(PermissionError(errno.EACCES, "Permission denied"), path)
    assert isinstance(error, HelperPermissionError)
    group = client_module._group_of(path)
    assert error.message.startswith(f'permission denied: you are not in the "{group}" group')
    assert f"sudo usermod -aG {group} $USER" in error.fix


def serve_once(path, reply: bytes) -> threading.Thread:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen(1)

    def answer():
        conn, _ = listener.accept()
        with conn:
            conn.sendall(reply)
        listener.close()

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return thread


def test_token_replies(tmp_path):
    path = tmp_path / "auth.sock"
    serve_once(path, json.dumps({"token": "ab" * 32, "expires_in": 600}).encode() + b"\n")
    tokens = TokenSource(path)
    assert tokens.get() == "ab" * 32
    assert tokens.cached() == "ab" * 32  # cached until shortly before it expires
    path.unlink()
    serve_once(path, b'{"error": "the helper could not identify you"}\n')
    tokens.invalidate()
    with pytest.raises(HelperCallError, match="could not identify you"):
        tokens.get()
    path.unlink()
    serve_once(path, b"SSH-2.0-OpenSSH\r\n")
    with pytest.raises(HelperProtocolError):
        tokens.get()


def test_call_errors_carry_code_and_fix():
    class Fake(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.PERMISSION_DENIED

        def details(self):
            return "session is owned by uid 1000: only that user or root may disconnect it"

    error = client_module.call_error(Fake(), client_module.default_socket())
    assert isinstance(error, HelperCallError)
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    assert "uid 1000" in str(error)


def test_build_connect_request(tmp_path):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        "apiVersion: v1\ncurrent-context: lab\nclusters: [{name: k, cluster: {server: 'https://k'}}]\n"
        "contexts: [{name: lab, context: {cluster: k}}]\n"
    )
    env = {"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin", "BASH_FUNC_f%%": "() {}"}
    request = build_connect_request(also_proxy=["10.0.0.0/8"], environment=env, namespace="apps")
    assert request.context == "lab"
    assert "server: https://k" in request.kubeconfig
    assert dict(request.environment) == {"KUBECONFIG": str(kubeconfig), "PATH": "/usr/bin"}
    assert request.client_name == "tether"
    with pytest.raises(ValidationError, match=r"did you mean 10\.0\.0\.0/8"):
        build_connect_request(also_proxy=["10.0.0.1/8"], environment=env)
    with pytest.raises(KubeconfigError, match='context "prod" not found'):
        build_connect_request(context="prod", environment=env)


def test_connect_request_carries_the_callers_proxy_variables(tmp_path):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        "apiVersion: v1\ncurrent-context: lab\nclusters: [{name: k, cluster: {server: 'https://k'}}]\n"
        "contexts: [{name: lab, context: {cluster: k}}]\n"
    )
    env = {"KUBECONFIG": str(kubeconfig), "https_proxy": "http://p:3128", "NO_PROXY": ".corp", "no_proxy": "x"}
    request = build_connect_request(environment=env)
    assert request.proxy_environment.https_proxy == "http://p:3128"
    assert request.proxy_environment.no_proxy == ".corp"  # the upper-case name wins, as in Go
    assert request.proxy_environment.http_proxy == ""
    with pytest.raises(ValidationError, match=r'HTTPS_PROXY "socks4://\*\*\*@p:1080" has scheme "socks4"'):
        build_connect_request(environment={**env, "HTTPS_PROXY": "socks4://me:pw@p:1080"})


IN_MEMORY_CONFIG = (
    "apiVersion: v1\ncurrent-context: added\n"
    "clusters: [{name: added, cluster: {server: 'https://added:6443', certificate-authority-data: Q0E=}}]\n"
    "users: [{name: added, user: {token: s3cret-token}}]\n"
    "contexts: [{name: added, context: {cluster: added, user: added, namespace: apps}}]\n"
)


def test_build_connect_request_from_kubeconfig_text(tmp_path):
    # No kubeconfig file anywhere: the text alone must be enough, and no file is read or written.
    env = {"KUBECONFIG": str(tmp_path / "missing"), "HOME": str(tmp_path)}
    request = build_connect_request(kubeconfig_text=IN_MEMORY_CONFIG, environment=env, client_name="tether-tray")
    assert request.context == "added"
    assert "server: https://added:6443" in request.kubeconfig
    assert "token: s3cret-token" in request.kubeconfig
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="not both"):
        build_connect_request(kubeconfig=tmp_path / "config", kubeconfig_text=IN_MEMORY_CONFIG, environment=env)
    with pytest.raises(
        KubeconfigError, match='context "prod" not found in <kubeconfig text>; available contexts: added'
    ):
        build_connect_request(context="prod", kubeconfig_text=IN_MEMORY_CONFIG, environment=env)
