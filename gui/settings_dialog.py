"""The Settings dialog: DNS suffixes, also-proxy and never-proxy ranges, the virtual subnet, start at login.

Values are checked as they are typed (``tether.gui.settings`` checks, which use the helper's own CIDR
rules); Save stays disabled and the bad value is named until every field is valid. Saving writes the
settings file through the store (keeping the added clusters as they are in the file at that moment), then
turns start-at-login on or off through ``autostart``, whose state is what the OS says, not what the file
says. A settings file that cannot be read is reported at the top; the fields then start from the defaults
and saving replaces the file.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Protocol

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from tether.gui.dialog_parts import (
    WARNING_STYLE,
    editor_lines,
    lines_editor,
    message_label,
    set_editor_lines,
    show_message,
)
from tether.gui.settings import Settings, SettingsError, SettingsStore, validate
from tether.helper.api.validate import ValidationError


class Autostart(Protocol):
    def is_enabled(self) -> bool: ...

    def enable(self) -> None: ...

    def disable(self) -> None: ...


class SettingsDialog(QDialog):
    settingsSaved = Signal(object)  # the new Settings

    def __init__(self, store: SettingsStore, autostart: Autostart, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("settingsDialog")
        self.setWindowTitle("Tether settings")
        self.setMinimumWidth(480)
        self.store = store
        self.autostart = autostart

        layout = QVBoxLayout(self)
        self.loadError = message_label("loadError")
        layout.addWidget(self.loadError)
        form = QFormLayout()
        self.includeSuffixes = lines_editor("includeSuffixes", "one per line, e.g. .corp.example")
        self.excludeSuffixes = lines_editor("excludeSuffixes", "one per line, e.g. .com")
        self.alsoProxy = lines_editor("alsoProxy", "one CIDR per line, e.g. 192.168.50.0/24")
        self.neverProxy = lines_editor("neverProxy", "one CIDR per line, e.g. 10.20.0.0/16")
        self.virtualSubnet = QLineEdit()
        self.virtualSubnet.setObjectName("virtualSubnet")
        self.virtualSubnet.setPlaceholderText("the platform default")
        self.startAtLogin = QCheckBox("Start Tether when I log in")
        self.startAtLogin.setObjectName("startAtLogin")
        form.addRow("Include DNS suffixes\n(resolved in the cluster)", self.includeSuffixes)
        form.addRow("Exclude DNS suffixes\n(never resolved in the cluster)", self.excludeSuffixes)
        form.addRow("Also-proxy ranges\n(also routed to the cluster)", self.alsoProxy)
        form.addRow("Never-proxy ranges\n(never routed to the cluster)", self.neverProxy)
        form.addRow("Virtual subnet (for remapped IPs)", self.virtualSubnet)
        form.addRow("", self.startAtLogin)
        layout.addLayout(form)
        self.validationMessage = message_label("validationMessage")
        layout.addWidget(self.validationMessage)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        self.saveButton = buttons.button(QDialogButtonBox.StandardButton.Save)
        self.saveButton.setObjectName("saveButton")
        cancel = buttons.button(QDialogButtonBox.StandardButton.Cancel)
        cancel.setObjectName("cancelButton")
        self.saveButton.clicked.connect(self.save)
        cancel.clicked.connect(self.reject)
        layout.addWidget(buttons)

        self._loaded = self._load()
        for editor in (self.includeSuffixes, self.excludeSuffixes, self.alsoProxy, self.neverProxy):
            editor.textChanged.connect(self._revalidate)
        self.virtualSubnet.textChanged.connect(self._revalidate)
        self._revalidate()

    def _load(self) -> Settings:
        settings, error = self.store.load_or_defaults()
        if error is not None:
            show_message(self.loadError, f"{error}\nThe fields below show the defaults; Save replaces that file.")
        set_editor_lines(self.includeSuffixes, settings.dns_include_suffixes)
        set_editor_lines(self.excludeSuffixes, settings.dns_exclude_suffixes)
        set_editor_lines(self.alsoProxy, settings.also_proxy)
        set_editor_lines(self.neverProxy, settings.never_proxy)
        self.virtualSubnet.setText(settings.virtual_subnet)
        try:
            enabled = self.autostart.is_enabled()
        except Exception as exc:  # whatever the platform's autostart raises: show it, keep the file's value
            enabled = settings.start_at_login
            show_message(self.validationMessage, f"Cannot tell whether Tether starts at login: {exc}", WARNING_STYLE)
        self.startAtLogin.setChecked(enabled)
        return settings

    def edited(self) -> Settings:
        """The settings as the fields show them (not checked), with the clusters as loaded."""
        return replace(
            self._loaded,
            dns_include_suffixes=tuple(editor_lines(self.includeSuffixes)),
            dns_exclude_suffixes=tuple(editor_lines(self.excludeSuffixes)),
            also_proxy=tuple(editor_lines(self.alsoProxy)),
            never_proxy=tuple(editor_lines(self.neverProxy)),
            virtual_subnet=self.virtualSubnet.text().strip(),
            start_at_login=self.startAtLogin.isChecked(),
        )

    def _revalidate(self, *_: object) -> bool:
        try:
            validate(self.edited())
        except ValidationError as exc:
            show_message(self.validationMessage, str(exc))
            self.saveButton.setEnabled(False)
            return False
        show_message(self.validationMessage, "")
        self.saveButton.setEnabled(True)
        return True

    def save(self) -> None:
        if not self._revalidate():
            return
        settings = self.edited()
        # Clusters may have been added since the dialog opened: keep the file's list. An unusable file was
        # reported when the dialog opened; it is replaced with what the dialog holds.
        with contextlib.suppress(SettingsError):
            settings = replace(settings, clusters=self.store.load().clusters)
        try:
            self.store.save(settings)
        except (OSError, ValidationError) as exc:
            show_message(self.validationMessage, f"Cannot save the settings: {exc}")
            return
        self._loaded = settings
        show_message(self.loadError, "")
        self.settingsSaved.emit(settings)
        try:
            if settings.start_at_login and not self.autostart.is_enabled():
                self.autostart.enable()
            elif not settings.start_at_login and self.autostart.is_enabled():
                self.autostart.disable()
        except Exception as exc:  # whatever the platform's autostart raises, the user must see it
            show_message(self.validationMessage, f"Settings saved, but start at login could not be changed: {exc}")
            return
        self.accept()
