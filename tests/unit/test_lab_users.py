"""The lab's restricted users: their rules, the API server's users file, their kubeconfigs and token files,
checked through the emulator with the official client."""

import json
import stat

import kubernetes
import pytest
import yaml
from kubernetes import client

from tether.lab import objects, specs, users
from tether.lab.apiserver import authz
from tether.lab.apiserver.server import LabApiServerThread
from tether.lab.topology import StatePaths

TOKENS = {"viewer": "viewer-token", "deployer": "deployer-token"}
CONFIGMAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}}
ROLE = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "r"}, "rules": []}


def test_the_users_document_keeps_the_admin_all_powerful_and_the_users_bounded():
    authorizer = authz.from_document(users.users_document(TOKENS))
    assert authorizer.admins == {users.ADMIN}
    assert authorizer.tokens[objects.ADMIN_TOKEN] == users.ADMIN
    viewer, deployer = authorizer.allowed["viewer"], authorizer.allowed["deployer"]
    for rule in ("get deployments", "list pods", "watch services", "list namespaces", "get nodes",
                 "get pods/portforward", "create pods/portforward", "get clusterroles"):  # fmt: skip
        assert rule in viewer, rule
    assert not {r for r in viewer if r.split()[0] not in ("get", "list", "watch")} - set(users._PORT_FORWARD)
    assert not {r for r in viewer if r.split()[1] == "secrets"}
    assert "create configmaps" in deployer and "delete deployments" in deployer
    assert {"patch deployments", "create roles", "create rolebindings"}.isdisjoint(deployer)


def test_a_user_kubeconfig_carries_its_token_and_context():
    config = users.user_kubeconfig("http://10.0.0.1:6443", "viewer", "t0k")
    assert config["current-context"] == "tether-lab-viewer"
    assert config["users"][0]["user"] == {"token": "t0k"}
    assert config["clusters"][0]["cluster"]["server"] == "http://10.0.0.1:6443"


def test_an_unknown_user_is_refused_naming_the_users_there_are():
    with pytest.raises(ValueError, match='no lab user "root"; the lab has: viewer, deployer'):
        users.user_named("root")


def test_the_files_are_root_only_and_the_tokens_fresh(tmp_path):
    paths = StatePaths(root=tmp_path / "lab")
    users.write_files(paths, "http://10.0.0.1:6443")
    first = json.loads(paths.users.read_text())
    assert stat.S_IMODE(paths.users.stat().st_mode) == 0o600
    assert stat.S_IMODE(paths.tokens.stat().st_mode) == 0o700
    tokens = {u["name"]: u["token"] for u in first["users"]}
    for user in users.USERS:
        path = paths.user_kubeconfig(user.name)
        assert path == tmp_path / "lab" / f"kubeconfig-{user.name}.yaml"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert yaml.safe_load(path.read_text())["users"][0]["user"]["token"] == tokens[user.name]
        assert len(tokens[user.name]) >= 32
    users.write_files(paths, "http://10.0.0.1:6443")
    again = {u["name"]: u["token"] for u in json.loads(paths.users.read_text())["users"]}
    assert again["viewer"] != tokens["viewer"] and again[users.ADMIN] == objects.ADMIN_TOKEN


def test_the_api_server_process_is_given_the_users_file():
    paths = StatePaths()
    argv = specs.apiserver_spec(paths, "python3").argv
    assert argv[argv.index("--users") + 1] == str(paths.users)


def _api(url: str, token: str) -> client.ApiClient:
    return kubernetes.config.new_client_from_config_dict(users.user_kubeconfig(url, "someone", token))


def test_through_the_api_server_the_viewer_reads_and_the_admin_writes():
    authorizer = authz.from_document(users.users_document(TOKENS))
    with LabApiServerThread(authorizer=authorizer) as server:
        with _api(server.url, "viewer-token") as api:
            v1 = client.CoreV1Api(api)
            assert "default" in [n.metadata.name for n in v1.list_namespace().items]
            with pytest.raises(client.ApiException) as refused:
                v1.create_namespaced_config_map("default", CONFIGMAP)
            assert refused.value.status == 403
            assert 'User "viewer" cannot create resource "configmaps"' in json.loads(refused.value.body)["message"]
        with _api(server.url, "deployer-token") as api:
            assert client.CoreV1Api(api).create_namespaced_config_map("default", CONFIGMAP).metadata.name == "c"
            with pytest.raises(client.ApiException) as refused:
                client.RbacAuthorizationV1Api(api).create_namespaced_role("default", ROLE)
            assert refused.value.status == 403
        admin = kubernetes.config.new_client_from_config_dict(objects.kubeconfig(server.url))
        with admin:
            assert client.RbacAuthorizationV1Api(admin).create_namespaced_role("default", ROLE).metadata.name == "r"
