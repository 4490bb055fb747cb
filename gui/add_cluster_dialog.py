""" "Add cluster…": a cluster reached with a server URL, a CA and a token that are in no kubeconfig.

The token goes to the OS keychain and the rest to the settings file (``cluster_store.add_cluster``, which
changes neither if the keychain fails; the failure is shown here and the dialog stays open). The CA can
be pasted or loaded from a file, which is read into the text box (the file itself is not remembered).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from tether.gui.cluster_store import add_cluster
from tether.gui.clusters import (
    MAX_CA_BYTES,
    AddedCluster,
    ClusterError,
    KeyringVault,
    TokenVault,
    VaultError,
    check_ca,
    check_name,
    check_namespace,
    check_server,
    check_token,
)
from tether.gui.dialog_parts import HINT_STYLE, message_label, show_message
from tether.gui.settings import SettingsError, SettingsStore


def read_ca_file(path: Path) -> str:
    """A CA file as PEM text: PEM as it is, a single DER certificate converted. ClusterError otherwise."""
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_CA_BYTES + 1)
    except OSError as exc:
        raise ClusterError(f"CA: cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_CA_BYTES:
        raise ClusterError(f"CA: {path} is larger than {MAX_CA_BYTES} bytes; is it a certificate?")
    if b"-----BEGIN" in data:
        try:
            return data.decode("ascii")
        except UnicodeDecodeError:
            raise ClusterError(f"CA: {path} is not a PEM text file") from None
    try:
        return ssl.DER_cert_to_PEM_cert(data)  # the check below tells whether it was a certificate
    except (ValueError, TypeError):
        raise ClusterError(f"CA: {path} is neither PEM nor a DER certificate") from None


class AddClusterDialog(QDialog):
    clusterAdded = Signal(str)  # the cluster's name

    def __init__(
        self, store: SettingsStore | None = None, vault: TokenVault | None = None, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self.setObjectName("addClusterDialog")
        self.setWindowTitle("Add cluster")
        self.setMinimumWidth(520)
        self.store = store if store is not None else SettingsStore()
        self.vault: TokenVault = vault if vault is not None else KeyringVault()

        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.clusterName = QLineEdit()
        self.clusterName.setObjectName("clusterName")
        self.clusterName.setPlaceholderText("e.g. staging-eu")
        self.serverUrl = QLineEdit()
        self.serverUrl.setObjectName("serverUrl")
        self.serverUrl.setPlaceholderText("https://k8s.example.com:6443")
        self.caPem = QPlainTextEdit()
        self.caPem.setObjectName("caPem")
        self.caPem.setPlaceholderText("-----BEGIN CERTIFICATE-----\n…\n-----END CERTIFICATE-----")
        self.caPem.setTabChangesFocus(True)
        self.caPem.setMaximumHeight(110)
        self.loadCaButton = QPushButton("Load from file…")
        self.loadCaButton.setObjectName("loadCaButton")
        self.loadCaButton.clicked.connect(self._choose_ca_file)
        ca_row = QWidget()
        ca_layout = QHBoxLayout(ca_row)
        ca_layout.setContentsMargins(0, 0, 0, 0)
        ca_layout.addWidget(self.caPem, 1)
        ca_layout.addWidget(self.loadCaButton)
        self.token = QLineEdit()
        self.token.setObjectName("token")
        self.token.setEchoMode(QLineEdit.EchoMode.Password)
        self.token.setPlaceholderText("stored in the OS keychain, never in a file")
        self.namespace = QLineEdit()
        self.namespace.setObjectName("namespace")
        self.namespace.setPlaceholderText("optional; default: default")
        form.addRow("Name", self.clusterName)
        form.addRow("Server URL", self.serverUrl)
        form.addRow("CA certificate", ca_row)
        form.addRow("Token", self.token)
        form.addRow("Namespace", self.namespace)
        layout.addLayout(form)
        self.validationMessage = message_label("validationMessage")
        self.errorMessage = message_label("errorMessage")
        layout.addWidget(self.validationMessage)
        layout.addWidget(self.errorMessage)
        buttons = QDialogButtonBox()
        self.addButton = buttons.addButton("Add", QDialogButtonBox.ButtonRole.AcceptRole)
        self.addButton.setObjectName("addButton")
        cancel = buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        cancel.setObjectName("cancelButton")
        self.addButton.clicked.connect(self.add)
        cancel.clicked.connect(self.reject)
        layout.addWidget(buttons)

        for field in (self.clusterName, self.serverUrl, self.token, self.namespace):
            field.textChanged.connect(self._revalidate)
        self.caPem.textChanged.connect(self._revalidate)
        self._revalidate()

    def cluster(self) -> AddedCluster:
        return AddedCluster(
            name=self.clusterName.text().strip(),
            server=self.serverUrl.text().strip(),
            ca_pem=self.caPem.toPlainText().strip() + "\n",
            namespace=self.namespace.text().strip(),
        )

    def _revalidate(self, *_: object) -> bool:
        show_message(self.errorMessage, "")
        cluster = self.cluster()
        missing = [
            label
            for label, value in (
                ("name", cluster.name),
                ("server URL", cluster.server),
                ("CA certificate", cluster.ca_pem.strip()),
                ("token", self.token.text()),
            )
            if not value
        ]
        try:
            # Check what has been typed so far, in form order, so the first message is about the first field.
            if cluster.name:
                check_name(cluster.name)
            if cluster.server:
                check_server(cluster.server)
            if cluster.ca_pem.strip():
                check_ca(cluster.ca_pem)
            if self.token.text():
                check_token(self.token.text())
            check_namespace(cluster.namespace)
        except ClusterError as exc:
            show_message(self.validationMessage, str(exc))
            self.addButton.setEnabled(False)
            return False
        if missing:
            show_message(self.validationMessage, f"Still needed: {', '.join(missing)}.", HINT_STYLE)
            self.addButton.setEnabled(False)
            return False
        show_message(self.validationMessage, "")
        self.addButton.setEnabled(True)
        return True

    def _choose_ca_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "CA certificate", str(Path.home()), "Certificates (*.crt *.pem *.cer *.der);;All files (*)"
        )
        if path:
            self.load_ca_file(Path(path))

    def load_ca_file(self, path: Path) -> None:
        """Read a CA file into the CA box (in memory; the path is not kept)."""
        try:
            self.caPem.setPlainText(read_ca_file(path))
        except ClusterError as exc:
            show_message(self.errorMessage, str(exc))

    def add(self) -> None:
        if not self._revalidate():
            return
        cluster = self.cluster()
        try:
            add_cluster(cluster, self.token.text(), self.store, self.vault)
        except VaultError as exc:
            show_message(self.errorMessage, f"{exc}\nNothing was saved.")
            return
        except (ClusterError, SettingsError, OSError) as exc:
            show_message(self.errorMessage, f"Cannot add the cluster: {exc}")
            return
        self.token.clear()  # the keychain has it now; do not keep it in the widget
        self.clusterAdded.emit(cluster.name)
        self.accept()
