"""Clusters added by hand: checks, the keychain (through keyring), all-or-nothing adds, in-memory kubeconfigs."""

import base64
import json

import pytest
import yaml
from gui_keyring_support import BrokenKeyring, MemoryKeyring, using_keyring
from gui_pem_support import ca_pem

from tests.doubles.fake_vault import MemoryVault
from tether.gui import cluster_store, clusters
from tether.gui.clusters import AddedCluster, ClusterError, KeyringVault, VaultError
from tether.gui.settings import Settings, SettingsStore
from tether.helper.user.client import build_connect_request

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.c2lnbmF0dXJl"


@pytest.fixture
def store(tmp_path):
    return SettingsStore(tmp_path / "tether" / "tray.json")


def staging() -> AddedCluster:
    return AddedCluster("staging", "https://k8s.example.com:6443", ca_pem(), "apps")


def test_a_good_cluster_validates_and_counts_its_certificates():
    staging().validate()
    assert clusters.check_ca(ca_pem() + ca_pem("second-ca")) == 2


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("name", "Staging", 'name: "Staging" is not a valid cluster name'),
        ("name", "a_b", 'name: "a_b" is not a valid cluster name'),
        ("server", "http://k8s.example.com", 'server: "http://k8s.example.com" must start with https://'),
        ("server", "https://", 'server: "https://" has no host name'),
        ("server", "https://k8s:99999", 'server: "https://k8s:99999" is not a valid URL'),
        ("server", "https://k8s/?x=1", "must not have a query"),
        ("ca_pem", "hello", "CA: not a PEM certificate"),
        ("ca_pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "does not parse as certificate"),
        ("ca_pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "this is a private key"),
        ("namespace", "Apps", 'namespace: "Apps" is not a valid namespace name'),
    ],
)
def test_bad_fields_are_named(field, value, message):
    cluster = AddedCluster(**{**staging().to_json(), field: value})
    with pytest.raises(ClusterError) as caught:
        cluster.validate()
    assert message in str(caught.value)


def test_a_password_in_the_server_url_is_not_repeated():
    with pytest.raises(ClusterError) as caught:
        clusters.check_server("https://admin:hunter2@k8s.example.com")
    assert "hunter2" not in str(caught.value)
    assert "https://admin:***@k8s.example.com" in str(caught.value)


def test_token_checks_never_show_the_token():
    for bad in ("", "abc def", "abc\n"):
        with pytest.raises(ClusterError) as caught:
            clusters.check_token(bad)
        assert "token:" in str(caught.value)
        assert not bad.strip() or bad.strip() not in str(caught.value)


def test_kubeconfig_text_has_one_cluster_user_and_context_and_the_helper_accepts_it():
    text = clusters.kubeconfig_text(staging(), TOKEN)
    doc = yaml.safe_load(text)
    assert doc["current-context"] == "staging"
    assert doc["clusters"] == [
        {
            "name": "staging",
            "cluster": {
                "server": "https://k8s.example.com:6443",
                "certificate-authority-data": base64.b64encode(ca_pem().encode()).decode(),
            },
        }
    ]
    assert doc["users"] == [{"name": "staging", "user": {"token": TOKEN}}]
    assert doc["contexts"] == [
        {"name": "staging", "context": {"cluster": "staging", "user": "staging", "namespace": "apps"}}
    ]
    request = build_connect_request(kubeconfig_text=text, environment={}, client_name="tether-tray")
    assert request.context == "staging"
    assert yaml.safe_load(request.kubeconfig)["users"][0]["user"]["token"] == TOKEN


def test_keyring_vault_uses_service_tether_and_the_cluster_name():
    with using_keyring(MemoryKeyring()) as backend:
        vault = KeyringVault()
        assert vault.get("staging") is None
        vault.set("staging", TOKEN)
        assert backend.passwords == {("tether", "staging"): TOKEN}
        assert vault.get("staging") == TOKEN
        vault.delete("staging")
        vault.delete("staging")  # already gone: fine
        assert backend.passwords == {}


def test_keyring_failures_say_the_keychain_is_unavailable_without_the_token():
    with using_keyring(BrokenKeyring()):
        vault = KeyringVault()
        with pytest.raises(VaultError) as caught:
            vault.set("staging", TOKEN)
        assert str(caught.value).startswith('the OS keychain is unavailable (storing the token of "staging")')
        assert TOKEN not in str(caught.value)
        with pytest.raises(VaultError, match="the OS keychain is unavailable"):
            vault.get("staging")


def test_add_cluster_puts_the_token_in_the_vault_and_the_rest_in_the_settings(store):
    vault = MemoryVault()
    cluster_store.add_cluster(staging(), TOKEN, store, vault)
    assert vault.tokens == {"staging": TOKEN}
    assert cluster_store.added_clusters(store) == [staging()]
    assert TOKEN not in store.path.read_text()
    assert json.loads(store.path.read_text())["clusters"][0]["server"] == "https://k8s.example.com:6443"
    assert yaml.safe_load(cluster_store.kubeconfig_for("staging", store, vault))["users"][0]["user"]["token"] == TOKEN
    with pytest.raises(ClusterError, match='a cluster named "staging" is already added'):
        cluster_store.add_cluster(staging(), "other", store, vault)
    assert vault.tokens == {"staging": TOKEN}


def test_add_cluster_changes_nothing_when_the_vault_fails(store):
    store.save(Settings(also_proxy=("10.9.0.0/16",)))
    before = store.path.read_bytes()
    with pytest.raises(VaultError):
        cluster_store.add_cluster(staging(), TOKEN, store, MemoryVault(unavailable=True))
    assert store.path.read_bytes() == before


def test_add_cluster_takes_the_token_back_when_the_settings_cannot_be_saved(store, monkeypatch):
    vault = MemoryVault()

    def refuse(settings):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "save", refuse)
    with pytest.raises(OSError, match="No space left"):
        cluster_store.add_cluster(staging(), TOKEN, store, vault)
    assert vault.tokens == {}


def test_remove_cluster(store):
    vault = MemoryVault()
    cluster_store.add_cluster(staging(), TOKEN, store, vault)
    cluster_store.remove_cluster("staging", store, vault)
    assert cluster_store.added_clusters(store) == []
    assert vault.tokens == {}
    with pytest.raises(ClusterError, match='no added cluster is named "staging"'):
        cluster_store.remove_cluster("staging", store, vault)


def test_kubeconfig_for_a_cluster_without_a_token(store):
    vault = MemoryVault()
    cluster_store.add_cluster(staging(), TOKEN, store, vault)
    vault.tokens.clear()
    with pytest.raises(ClusterError, match='no token for "staging" in the keychain'):
        cluster_store.kubeconfig_for("staging", store, vault)


def test_added_clusters_default_store_is_the_user_config(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    cluster_store.add_cluster(staging(), TOKEN, None, MemoryVault())
    assert (tmp_path / "tether" / "tray.json").exists()
    assert [c.name for c in cluster_store.added_clusters()] == ["staging"]
