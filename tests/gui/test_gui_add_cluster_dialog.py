"""The "Add cluster…" dialog (offscreen Qt): inline checks, the token to the keychain only, vault failures."""

import ssl

import pytest
from gui_keyring_support import BrokenKeyring, MemoryKeyring, using_keyring
from gui_pem_support import ca_pem
from PySide6.QtWidgets import QFileDialog, QLabel, QLineEdit, QPlainTextEdit, QPushButton

from tests.doubles.fake_vault import MemoryVault
from tether.gui.add_cluster_dialog import AddClusterDialog
from tether.gui.clusters import AddedCluster, KeyringVault
from tether.gui.settings import Settings, SettingsStore

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhZGQtY2x1c3RlciJ9.c2lnbmF0dXJl"


@pytest.fixture
def store(tmp_path):
    return SettingsStore(tmp_path / "tether" / "tray.json")


def open_dialog(qtbot, store, vault):
    dialog = AddClusterDialog(store, vault)
    qtbot.addWidget(dialog)
    return dialog


def field(dialog, kind, name):
    found = dialog.findChild(kind, name)
    assert found is not None, name
    return found


def shown(label: QLabel) -> str:
    return "" if label.isHidden() else label.text()


def fill(dialog, name="staging", server="https://k8s.example.com:6443", ca=None, token=TOKEN, namespace=""):
    field(dialog, QLineEdit, "clusterName").setText(name)
    field(dialog, QLineEdit, "serverUrl").setText(server)
    field(dialog, QPlainTextEdit, "caPem").setPlainText(ca_pem() if ca is None else ca)
    field(dialog, QLineEdit, "token").setText(token)
    field(dialog, QLineEdit, "namespace").setText(namespace)


def test_the_token_goes_to_the_keychain_and_never_to_the_file(qtbot, store):
    with using_keyring(MemoryKeyring()) as backend:
        dialog = open_dialog(qtbot, store, KeyringVault())
        assert field(dialog, QLineEdit, "token").echoMode() == QLineEdit.EchoMode.Password
        fill(dialog, namespace="apps")
        add = field(dialog, QPushButton, "addButton")
        assert add.isEnabled()
        with qtbot.waitSignal(dialog.clusterAdded) as added:
            add.click()
        assert added.args == ["staging"]
        assert backend.passwords == {("tether", "staging"): TOKEN}
    text = store.path.read_text()
    assert TOKEN not in text
    assert store.load().clusters == (AddedCluster("staging", "https://k8s.example.com:6443", ca_pem(), "apps"),)
    assert field(dialog, QLineEdit, "token").text() == ""
    assert dialog.result() == dialog.DialogCode.Accepted


def test_a_keychain_failure_is_shown_and_nothing_is_saved(qtbot, store):
    store.save(Settings(also_proxy=("192.168.50.0/24",)))
    before = store.path.read_bytes()
    with using_keyring(BrokenKeyring()):
        dialog = open_dialog(qtbot, store, KeyringVault())
        fill(dialog)
        with qtbot.assertNotEmitted(dialog.clusterAdded):
            field(dialog, QPushButton, "addButton").click()
    error = shown(field(dialog, QLabel, "errorMessage"))
    assert error.startswith('the OS keychain is unavailable (storing the token of "staging")')
    assert error.endswith("Nothing was saved.")
    assert TOKEN not in error
    assert store.path.read_bytes() == before
    assert dialog.result() != dialog.DialogCode.Accepted


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "Staging"}, 'name: "Staging" is not a valid cluster name'),
        ({"server": "http://k8s.example.com"}, 'server: "http://k8s.example.com" must start with https://'),
        ({"ca": "not a certificate"}, "CA: not a PEM certificate"),
        ({"token": "two words"}, "token: contains spaces"),
        ({"namespace": "Apps"}, 'namespace: "Apps" is not a valid namespace name'),
    ],
)
def test_bad_values_are_named_and_block_add(qtbot, store, changes, message):
    dialog = open_dialog(qtbot, store, MemoryVault())
    fill(dialog, **changes)
    assert not field(dialog, QPushButton, "addButton").isEnabled()
    text = shown(field(dialog, QLabel, "validationMessage"))
    assert message in text
    assert TOKEN not in text


def test_missing_fields_are_listed(qtbot, store):
    dialog = open_dialog(qtbot, store, MemoryVault())
    assert not field(dialog, QPushButton, "addButton").isEnabled()
    assert shown(field(dialog, QLabel, "validationMessage")) == "Still needed: name, server URL, CA certificate, token."
    field(dialog, QLineEdit, "clusterName").setText("staging")
    assert shown(field(dialog, QLabel, "validationMessage")) == "Still needed: server URL, CA certificate, token."


def test_a_name_already_added_is_refused_in_the_dialog(qtbot, store):
    vault = MemoryVault()
    dialog = open_dialog(qtbot, store, vault)
    fill(dialog)
    dialog.add()
    again = open_dialog(qtbot, store, vault)
    fill(again, token="another-token")
    again.add()
    assert 'a cluster named "staging" is already added' in shown(field(again, QLabel, "errorMessage"))
    assert vault.tokens == {"staging": TOKEN}


def test_load_ca_from_a_pem_or_der_file(qtbot, store, tmp_path, monkeypatch):
    dialog = open_dialog(qtbot, store, MemoryVault())
    pem_file = tmp_path / "ca.crt"
    pem_file.write_text(ca_pem())
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *args, **kwargs: (str(pem_file), ""))
    field(dialog, QPushButton, "loadCaButton").click()
    assert field(dialog, QPlainTextEdit, "caPem").toPlainText() == ca_pem()

    der_file = tmp_path / "ca.der"
    der_file.write_bytes(ssl.PEM_cert_to_DER_cert(ca_pem("der-ca")))
    dialog.load_ca_file(der_file)
    assert field(dialog, QPlainTextEdit, "caPem").toPlainText() == ca_pem("der-ca")

    dialog.load_ca_file(tmp_path / "missing.crt")
    assert "CA: cannot read" in shown(field(dialog, QLabel, "errorMessage"))
    assert not (store.path.exists() and "ca.crt" in store.path.read_text())  # the path is not remembered
