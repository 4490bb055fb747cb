"""The Intercept dialog: the ports, where to write the pod's environment, and the mount point.

It names the workload and offers the CLI's options as fields (empty fields: the CLI's defaults). The
fields are checked as they are typed (``intercept_form``); Intercept stays disabled and the bad value is
named until they are valid. Accepting emits ``interceptChosen`` with an ``InterceptChoice``; the controller
runs the intercept, and its outcome is a notification and a line in the menu and the status window.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from tether.gui.dialog_parts import HINT_STYLE, message_label, show_message
from tether.gui.intercept_form import FormError, InterceptChoice, intercept_choice


class InterceptDialog(QDialog):
    interceptChosen = Signal(object)  # an InterceptChoice

    def __init__(self, namespace: str, name: str, kind: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("interceptDialog")
        self.setWindowTitle(f"Intercept {name}")
        self.setMinimumWidth(460)
        self.namespace, self.name = namespace, name
        self.choice: InterceptChoice | None = None

        layout = QVBoxLayout(self)
        what = QLabel(f"Send all traffic for a port of {kind + ' ' if kind else ''}{namespace}/{name} to this machine.")
        what.setObjectName("interceptWhat")
        what.setWordWrap(True)
        layout.addWidget(what)

        form = QFormLayout()
        self.localPort = self._line(form, "interceptLocalPort", "Local port", "default: the service port's number")
        self.servicePort = self._line(
            form, "interceptServicePort", "Service port", "number or name; default: the Service's only port"
        )
        self.service = self._line(form, "interceptService", "Service", "default: the only Service selecting it")
        self.envFile = self._line(form, "interceptEnvFile", "Env file", "write the pod's environment here (KEY=VALUE)")
        self.envJson = self._line(form, "interceptEnvJson", "Env JSON file", "write the pod's environment as JSON")
        self.mount = QCheckBox("Mount the pod's volumes")
        self.mount.setObjectName("interceptMount")
        self.mount.setChecked(True)
        form.addRow("", self.mount)
        self.mountDir = self._line(form, "interceptMountDir", "Mount point", "default: a new temporary directory")
        layout.addLayout(form)

        hint = QLabel("The local port must have a server listening; end the intercept with Leave in the menu.")
        hint.setObjectName("interceptHint")
        hint.setWordWrap(True)
        hint.setStyleSheet(HINT_STYLE)
        layout.addWidget(hint)
        self.error = message_label("interceptError")
        layout.addWidget(self.error)

        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Cancel)
        self.interceptButton = self.buttons.addButton("Intercept", QDialogButtonBox.ButtonRole.AcceptRole)
        self.interceptButton.setObjectName("interceptButton")
        self.interceptButton.setDefault(True)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout.addWidget(self.buttons)

        for field in (self.localPort, self.servicePort, self.service, self.envFile, self.envJson, self.mountDir):
            field.textChanged.connect(self._check)
        self.mount.toggled.connect(self._check)
        self._check()

    @staticmethod
    def _line(form: QFormLayout, name: str, label: str, placeholder: str) -> QLineEdit:
        edit = QLineEdit()
        edit.setObjectName(name)
        edit.setPlaceholderText(placeholder)
        form.addRow(label, edit)
        return edit

    def _check(self) -> None:
        self.mountDir.setEnabled(self.mount.isChecked())
        try:
            self.choice = intercept_choice(
                self.namespace,
                self.name,
                local_port=self.localPort.text(),
                service_port=self.servicePort.text(),
                service=self.service.text(),
                env_file=self.envFile.text(),
                env_json=self.envJson.text(),
                mount=self.mount.isChecked(),
                mount_dir=self.mountDir.text(),
            )
        except FormError as exc:
            self.choice = None
            show_message(self.error, str(exc))
        else:
            show_message(self.error, "")
        self.interceptButton.setEnabled(self.choice is not None)

    def accept(self) -> None:
        if self.choice is None:
            return
        self.interceptChosen.emit(self.choice)
        super().accept()
