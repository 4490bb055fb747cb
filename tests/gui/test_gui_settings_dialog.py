"""The Settings dialog (offscreen Qt): fields from the file, inline checks, saving, start at login."""

import json

import pytest
from gui_pem_support import ca_pem
from PySide6.QtWidgets import QCheckBox, QLabel, QLineEdit, QPlainTextEdit, QPushButton

from tests.doubles.fake_autostart import FakeAutostart
from tether.gui.clusters import AddedCluster
from tether.gui.settings import Settings, SettingsStore
from tether.gui.settings_dialog import SettingsDialog


@pytest.fixture
def store(tmp_path):
    return SettingsStore(tmp_path / "tether" / "tray.json")


def open_dialog(qtbot, store, autostart=None):
    dialog = SettingsDialog(store, autostart or FakeAutostart())
    qtbot.addWidget(dialog)
    return dialog


def field(dialog, kind, name):
    found = dialog.findChild(kind, name)
    assert found is not None, name
    return found


def shown(label: QLabel) -> str:
    return "" if label.isHidden() else label.text()


def test_fields_show_the_file(qtbot, store):
    store.save(
        Settings(dns_include_suffixes=(".corp.example",), never_proxy=("10.20.0.0/16",), virtual_subnet="100.64.0.0/16")
    )
    dialog = open_dialog(qtbot, store, FakeAutostart(enabled=True))
    assert field(dialog, QPlainTextEdit, "includeSuffixes").toPlainText() == ".corp.example"
    assert field(dialog, QPlainTextEdit, "neverProxy").toPlainText() == "10.20.0.0/16"
    assert field(dialog, QLineEdit, "virtualSubnet").text() == "100.64.0.0/16"
    assert field(dialog, QCheckBox, "startAtLogin").isChecked()  # what the OS says
    assert field(dialog, QPushButton, "saveButton").isEnabled()


def test_round_trip_through_the_dialog(qtbot, store):
    cluster = AddedCluster("staging", "https://k8s.example.com", ca_pem())
    store.save(Settings(clusters=(cluster,)))
    autostart = FakeAutostart()
    dialog = open_dialog(qtbot, store, autostart)
    field(dialog, QPlainTextEdit, "includeSuffixes").setPlainText(".corp.example\n\ninternal.example\n")
    field(dialog, QPlainTextEdit, "excludeSuffixes").setPlainText(".com")
    field(dialog, QPlainTextEdit, "alsoProxy").setPlainText("192.168.50.0/24")
    field(dialog, QPlainTextEdit, "neverProxy").setPlainText("10.20.0.0/16\nfd00::/64")
    field(dialog, QLineEdit, "virtualSubnet").setText("100.64.0.0/16")
    field(dialog, QCheckBox, "startAtLogin").setChecked(True)
    with qtbot.waitSignal(dialog.settingsSaved) as saved:
        field(dialog, QPushButton, "saveButton").click()
    expected = Settings(
        dns_include_suffixes=(".corp.example", "internal.example"),
        dns_exclude_suffixes=(".com",),
        also_proxy=("192.168.50.0/24",),
        never_proxy=("10.20.0.0/16", "fd00::/64"),
        virtual_subnet="100.64.0.0/16",
        start_at_login=True,
        clusters=(cluster,),  # not edited here, kept as they are
    )
    assert saved.args == [expected]
    assert store.load() == expected
    assert autostart.calls == ["enable"]
    assert dialog.result() == dialog.DialogCode.Accepted


def test_bad_values_are_named_and_disable_save(qtbot, store):
    dialog = open_dialog(qtbot, store)
    save = field(dialog, QPushButton, "saveButton")
    message = field(dialog, QLabel, "validationMessage")
    field(dialog, QPlainTextEdit, "alsoProxy").setPlainText("192.168.50.0/24\n10.1.2.3/16")
    assert not save.isEnabled()
    assert shown(message) == 'also-proxy: "10.1.2.3/16" has host bits set; did you mean 10.1.0.0/16?'
    field(dialog, QPlainTextEdit, "alsoProxy").setPlainText("192.168.50.0/24")
    assert save.isEnabled() and shown(message) == ""
    field(dialog, QPlainTextEdit, "excludeSuffixes").setPlainText(".com\nbad suffix")
    assert not save.isEnabled()
    assert '"bad suffix" is not a domain suffix' in shown(message)
    field(dialog, QPlainTextEdit, "excludeSuffixes").setPlainText("")
    field(dialog, QLineEdit, "virtualSubnet").setText("100.64.0.0")
    assert not save.isEnabled()
    assert shown(message).startswith('virtual subnet: "100.64.0.0" has no prefix length')
    save.click()
    assert not store.path.exists()


def test_a_corrupt_file_is_reported_and_replaced_on_save(qtbot, store):
    store.path.parent.mkdir(parents=True)
    store.path.write_text("{not json")
    dialog = open_dialog(qtbot, store)
    error = field(dialog, QLabel, "loadError")
    assert str(store.path) in shown(error) and "not valid JSON" in shown(error)
    assert field(dialog, QPlainTextEdit, "alsoProxy").toPlainText() == ""
    field(dialog, QPlainTextEdit, "alsoProxy").setPlainText("192.168.50.0/24")
    field(dialog, QPushButton, "saveButton").click()
    assert json.loads(store.path.read_text())["also_proxy"] == ["192.168.50.0/24"]


def test_turning_start_at_login_off(qtbot, store):
    autostart = FakeAutostart(enabled=True)
    dialog = open_dialog(qtbot, store, autostart)
    field(dialog, QCheckBox, "startAtLogin").setChecked(False)
    field(dialog, QPushButton, "saveButton").click()
    assert autostart.calls == ["disable"]
    assert store.load().start_at_login is False


def test_an_autostart_failure_is_shown_after_saving(qtbot, store):
    autostart = FakeAutostart(fail=True)
    dialog = open_dialog(qtbot, store, autostart)
    field(dialog, QCheckBox, "startAtLogin").setChecked(True)
    with qtbot.waitSignal(dialog.settingsSaved):
        field(dialog, QPushButton, "saveButton").click()
    assert "start at login could not be changed: cannot write" in shown(field(dialog, QLabel, "validationMessage"))
    assert dialog.result() != dialog.DialogCode.Accepted  # left open to read the message


def test_clusters_added_while_the_dialog_was_open_are_kept(qtbot, store):
    dialog = open_dialog(qtbot, store)
    cluster = AddedCluster("late", "https://late.example.com", ca_pem())
    store.save(Settings(clusters=(cluster,)))
    field(dialog, QPlainTextEdit, "alsoProxy").setPlainText("192.168.50.0/24")
    field(dialog, QPushButton, "saveButton").click()
    assert store.load().clusters == (cluster,)
