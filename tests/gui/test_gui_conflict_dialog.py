"""The VPN-conflict dialog (offscreen Qt): the table, the three choices, validation, the workload picker."""

import threading

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QLabel, QPlainTextEdit, QPushButton, QRadioButton, QTableWidget

from tests.doubles.fake_workloads import FakeWorkloadSource
from tether.gui import conflict_choice
from tether.gui.conflict_dialog import LOADING, ConflictDialog
from tether.helper.api import helper_pb2 as pb
from tether.helper.user.resolutions import Resolution, ResolutionStore

WORKLOADS = {"lab": ["default/echo", "default/web", "shop/gateway"]}


def conflict_state() -> pb.State:
    return pb.State(
        phase=pb.State.DISCONNECTED,
        cluster="lab",
        last_error="10.96.0.0/12 conflicts with the route 10.0.0.0/8 via tun-vpn",
        conflicts=[
            pb.Conflict(subnet="10.96.0.0/12", route="10.0.0.0/8", device="tun-vpn", gateway="10.8.0.1",
                        description="cluster subnet 10.96.0.0/12 overlaps 10.0.0.0/8 on tun-vpn"),
            pb.Conflict(subnet="10.244.0.0/16", route="10.0.0.0/8", device="tun-vpn"),
        ],
    )  # fmt: skip


@pytest.fixture
def source():
    return FakeWorkloadSource(WORKLOADS)


@pytest.fixture
def dialog(qtbot, source):
    widget = ConflictDialog(conflict_state(), "lab", source)
    qtbot.addWidget(widget)
    qtbot.waitUntil(lambda: not widget.loading)
    return widget


def child(dialog, kind, name):
    found = dialog.findChild(kind, name)
    assert found is not None, f"no {kind.__name__} named {name}"
    return found


def apply_enabled(dialog) -> bool:
    return child(dialog, QPushButton, "applyButton").isEnabled()


def message(dialog) -> str:
    label = child(dialog, QLabel, "validationMessage")
    return "" if label.isHidden() else label.text()


def test_table_shows_each_conflict(dialog):
    table = child(dialog, QTableWidget, "conflictTable")
    cells = [[table.item(r, c).text() for c in range(3)] for r in range(table.rowCount())]
    assert cells == [["10.96.0.0/12", "10.0.0.0/8", "tun-vpn"], ["10.244.0.0/16", "10.0.0.0/8", "tun-vpn"]]
    assert [table.horizontalHeaderItem(c).text() for c in range(3)] == ["Cluster subnet", "VPN route", "Device"]
    assert "gateway 10.8.0.1" in table.item(0, 0).toolTip()
    assert dialog.windowTitle() == "VPN conflict: lab"


def test_three_choices_each_with_its_consequence_and_nothing_chosen_yet(dialog):
    for option, name in (
        (conflict_choice.Choice.ALLOW, "allowChoice"),
        (conflict_choice.Choice.PROXY_VIA, "proxyViaChoice"),
        (conflict_choice.Choice.AUTO_REMAP, "autoRemapChoice"),
    ):
        assert not child(dialog, QRadioButton, name).isChecked()
        assert child(dialog, QLabel, f"{name}Consequence").text() == conflict_choice.CONSEQUENCES[option]
    assert not apply_enabled(dialog)
    assert message(dialog) == "Choose one of the three ways out."


def test_allow_list_prefilled_validated_and_applied(qtbot, dialog):
    allow = child(dialog, QPlainTextEdit, "allowList")
    assert allow.toPlainText() == "10.96.0.0/12\n10.244.0.0/16"
    child(dialog, QRadioButton, "allowChoice").setChecked(True)
    assert apply_enabled(dialog)
    assert message(dialog) == ""

    allow.setPlainText("10.96.0.0/12\n10.244.0.1/16")
    assert not apply_enabled(dialog)
    assert '"10.244.0.1/16" has host bits set' in message(dialog)

    allow.setPlainText("10.96.0.0/12\n192.168.0.0/16")
    assert not apply_enabled(dialog)
    assert '"192.168.0.0/16" is not inside a conflicting VPN route (10.0.0.0/8 on tun-vpn)' in message(dialog)

    allow.setPlainText("10.96.0.0/12")  # valid, but leaves 10.244.0.0/16 conflicting: warned, not blocked
    assert apply_enabled(dialog)
    warning = child(dialog, QLabel, "allowWarning")
    assert not warning.isHidden() and "10.244.0.0/16" in warning.text()

    allow.setPlainText("10.0.0.0/8")
    assert warning.isHidden()
    with qtbot.waitSignal(dialog.resolutionChosen) as emitted:
        qtbot.mouseClick(child(dialog, QPushButton, "applyButton"), Qt.MouseButton.LeftButton)
    assert emitted.args == [Resolution(allow_conflicting_subnets=("10.0.0.0/8",))]
    assert dialog.result() == dialog.DialogCode.Accepted


def test_only_the_chosen_options_fields_are_enabled(dialog):
    child(dialog, QRadioButton, "autoRemapChoice").setChecked(True)
    assert not dialog.allowPanel.isEnabled() and not dialog.proxyViaPanel.isEnabled()
    child(dialog, QRadioButton, "proxyViaChoice").setChecked(True)
    assert dialog.proxyViaPanel.isEnabled() and not dialog.allowPanel.isEnabled()


def test_workloads_load_off_the_gui_thread(qtbot):
    source = FakeWorkloadSource(WORKLOADS)
    source.release.clear()  # hold the answer to see "loading…"
    widget = ConflictDialog(conflict_state(), "lab", source)
    qtbot.addWidget(widget)
    combo = child(widget, QComboBox, "proxyViaWorkload")
    status = child(widget, QLabel, "workloadStatus")
    assert widget.loading
    assert combo.count() == 0 and combo.lineEdit().placeholderText() == LOADING
    assert LOADING in status.text() and not status.isHidden()
    child(widget, QRadioButton, "proxyViaChoice").setChecked(True)
    assert not apply_enabled(widget)
    assert message(widget) == "Waiting for the workload list…"
    source.release.set()
    qtbot.waitUntil(lambda: combo.count() == 3)
    assert [combo.itemText(i) for i in range(combo.count())] == WORKLOADS["lab"]
    assert status.isHidden()
    assert source.calls == [("lab", False)]  # not on the main (GUI) thread
    assert threading.current_thread() is threading.main_thread()


def test_proxy_via_symbol_and_workload_make_the_value(qtbot, dialog):
    child(dialog, QRadioButton, "proxyViaChoice").setChecked(True)
    symbol = child(dialog, QComboBox, "proxyViaSymbol")
    assert [symbol.itemData(i) for i in range(symbol.count())] == ["all", "service", "pods", "also"]
    symbol.setCurrentIndex(symbol.findData("service"))
    combo = child(dialog, QComboBox, "proxyViaWorkload")
    combo.setCurrentIndex(combo.findText("default/echo"))
    assert apply_enabled(dialog)
    with qtbot.waitSignal(dialog.resolutionChosen) as emitted:
        child(dialog, QPushButton, "applyButton").click()
    assert emitted.args == [Resolution(proxy_via=("service=default/echo",))]


def test_a_typed_workload_is_checked_by_the_proxy_via_rules(dialog):
    child(dialog, QRadioButton, "proxyViaChoice").setChecked(True)
    combo = child(dialog, QComboBox, "proxyViaWorkload")
    combo.setEditText("Default/Echo")
    assert not apply_enabled(dialog)
    assert 'namespace "Default" is not a valid name' in message(dialog)
    combo.setEditText("")
    assert "pick the workload" in message(dialog)


def test_listing_errors_are_shown_and_typing_still_works(qtbot):
    widget = ConflictDialog(conflict_state(), "lab", FakeWorkloadSource(error="the API server answered 403 Forbidden"))
    qtbot.addWidget(widget)
    status = child(widget, QLabel, "workloadStatus")
    qtbot.waitUntil(lambda: "403 Forbidden" in status.text())
    assert status.text().startswith("Cannot list workloads: the API server answered 403 Forbidden.")
    child(widget, QRadioButton, "proxyViaChoice").setChecked(True)
    assert child(widget, QPushButton, "reloadWorkloadsButton").isEnabled()
    child(widget, QComboBox, "proxyViaWorkload").setEditText("default/echo")
    assert apply_enabled(widget)
    assert widget.resolution() == Resolution(proxy_via=("all=default/echo",))


def test_reload_asks_again(qtbot, dialog, source):
    child(dialog, QRadioButton, "proxyViaChoice").setChecked(True)
    child(dialog, QPushButton, "reloadWorkloadsButton").click()
    qtbot.waitUntil(lambda: not dialog.loading)
    assert [call[0] for call in source.calls] == ["lab", "lab"]


def test_auto_remap(qtbot, dialog):
    child(dialog, QRadioButton, "autoRemapChoice").setChecked(True)
    assert apply_enabled(dialog)
    with qtbot.waitSignal(dialog.resolutionChosen) as emitted:
        child(dialog, QPushButton, "applyButton").click()
    assert emitted.args == [Resolution(auto_resolve=True)]


def test_set_resolution_preselects(qtbot, dialog):
    dialog.set_resolution(Resolution(allow_conflicting_subnets=("10.0.0.0/8",)))
    assert child(dialog, QRadioButton, "allowChoice").isChecked()
    assert child(dialog, QPlainTextEdit, "allowList").toPlainText() == "10.0.0.0/8"
    dialog.set_resolution(Resolution(proxy_via=("pods=shop/gateway",)))
    assert child(dialog, QRadioButton, "proxyViaChoice").isChecked()
    assert dialog.selected_symbol() == "pods" and dialog.selected_workload() == "shop/gateway"
    assert dialog.resolution() == Resolution(proxy_via=("pods=shop/gateway",))
    dialog.set_resolution(Resolution(auto_resolve=True))
    assert child(dialog, QRadioButton, "autoRemapChoice").isChecked()


def test_a_remembered_choice_is_loaded_and_apply_remembers(qtbot, tmp_path, source):
    store = ResolutionStore(tmp_path / "resolutions.json")
    store.remember("lab", Resolution(proxy_via=("service=default/web",)))
    widget = ConflictDialog(conflict_state(), "lab", source, resolutions=store)
    qtbot.addWidget(widget)
    qtbot.waitUntil(lambda: not widget.loading)
    assert child(widget, QRadioButton, "proxyViaChoice").isChecked()
    assert widget.selected_workload() == "default/web"  # kept while the list loaded
    assert apply_enabled(widget)
    child(widget, QRadioButton, "autoRemapChoice").setChecked(True)
    child(widget, QPushButton, "applyButton").click()
    assert store.get("lab") == Resolution(auto_resolve=True)


def test_a_remembered_workload_missing_from_the_cluster_is_still_offered(qtbot, source):
    widget = ConflictDialog(conflict_state(), "lab", source)
    qtbot.addWidget(widget)
    widget.set_resolution(Resolution(proxy_via=("all=old/gone",)))
    qtbot.waitUntil(lambda: not widget.loading)
    assert widget.selected_workload() == "old/gone"


def test_cancel_emits_nothing(qtbot, dialog):
    child(dialog, QRadioButton, "autoRemapChoice").setChecked(True)
    with qtbot.assertNotEmitted(dialog.resolutionChosen):
        child(dialog, QPushButton, "cancelButton").click()
    assert dialog.result() == dialog.DialogCode.Rejected
