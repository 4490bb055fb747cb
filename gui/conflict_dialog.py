"""The VPN-conflict dialog: shows each conflict and offers the three ways out (see ``conflict_choice``).

Opened from the tray's Conflicts entry and when a connect fails on a conflict. Apply emits
``resolutionChosen(Resolution)``; the caller reconnects with it. With ``resolutions=`` (a ResolutionStore)
the dialog also remembers the choice for the context and starts from the remembered one.

The workload picker is filled by ``WorkloadSource.list_workloads``, which blocks on the network, so it runs
in the thread pool; the combo box says "loading…" meanwhile, then lists the workloads or shows the error
(the field stays editable, so ``namespace/name`` can be typed when the list cannot be had).
"""

from __future__ import annotations

import html

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QButtonGroup,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QRadioButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from tether.gui import conflict_choice as choice
from tether.gui.conflict_choice import Choice
from tether.gui.dialog_parts import (
    HINT_STYLE,
    WARNING_STYLE,
    BackgroundCall,
    lines_editor,
    message_label,
    set_editor_lines,
    show_message,
)
from tether.gui.workloads import WorkloadSource
from tether.helper.api import helper_pb2 as pb
from tether.helper.api.proxyvia import SYMBOLS
from tether.helper.api.validate import ValidationError
from tether.helper.user.resolutions import Resolution, ResolutionStore

LOADING = "loading…"
_OBJECT_NAMES = {Choice.ALLOW: "allowChoice", Choice.PROXY_VIA: "proxyViaChoice", Choice.AUTO_REMAP: "autoRemapChoice"}
_SYMBOL_ORDER = ("all", "service", "pods", "also")


class ConflictDialog(QDialog):
    resolutionChosen = Signal(object)  # a Resolution

    def __init__(
        self,
        state: pb.State,
        context: str,
        workloads: WorkloadSource,
        parent: QWidget | None = None,
        *,
        resolutions: ResolutionStore | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("conflictDialog")
        self.context = context
        self.conflicts = choice.rows(state.conflicts)
        self._workloads = workloads
        self._resolutions = resolutions
        self._load: BackgroundCall | None = None
        self._wanted_workload = ""  # from a remembered choice, selected once the list arrives
        self.setWindowTitle(f"VPN conflict: {context}")
        self.setMinimumWidth(560)

        layout = QVBoxLayout(self)
        intro = QLabel(
            f"Connecting to <b>{html.escape(context)}</b> would route cluster subnets that another interface "
            "(usually a VPN) already routes. Choose how Tether should share them:"
        )
        intro.setWordWrap(True)
        layout.addWidget(intro)
        layout.addWidget(self._table())

        self._group = QButtonGroup(self)
        self._radios: dict[Choice, QRadioButton] = {}
        for option in Choice:
            radio = QRadioButton(choice.TITLES[option])
            radio.setObjectName(_OBJECT_NAMES[option])
            self._group.addButton(radio)
            self._radios[option] = radio
            consequence = QLabel(choice.CONSEQUENCES[option])
            consequence.setObjectName(f"{_OBJECT_NAMES[option]}Consequence")
            consequence.setWordWrap(True)
            consequence.setIndent(24)
            layout.addWidget(radio)
            layout.addWidget(consequence)
            if option is Choice.ALLOW:
                layout.addWidget(self._allow_panel())
            elif option is Choice.PROXY_VIA:
                layout.addWidget(self._proxy_panel())
        self._group.buttonToggled.connect(self._revalidate)

        self.validationMessage = message_label("validationMessage")
        layout.addWidget(self.validationMessage)
        buttons = QDialogButtonBox()
        self.applyButton = buttons.addButton("Apply and reconnect", QDialogButtonBox.ButtonRole.AcceptRole)
        self.applyButton.setObjectName("applyButton")
        cancel = buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        cancel.setObjectName("cancelButton")
        self.applyButton.clicked.connect(self._apply)
        cancel.clicked.connect(self.reject)
        layout.addWidget(buttons)

        remembered = resolutions.get(context) if resolutions is not None else None
        if remembered is not None:
            self.set_resolution(remembered)
        self.load_workloads()
        self._revalidate()

    # --- building ---

    def _table(self) -> QTableWidget:
        table = QTableWidget(len(self.conflicts), 3)
        table.setObjectName("conflictTable")
        table.setHorizontalHeaderLabels(["Cluster subnet", "VPN route", "Device"])
        table.verticalHeader().setVisible(False)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        for row, conflict in enumerate(self.conflicts):
            tip = conflict.description or ""
            if conflict.gateway:
                tip = f"{tip}\ngateway {conflict.gateway}".strip()
            for column, text in enumerate((conflict.subnet, conflict.route, conflict.device or "?")):
                item = QTableWidgetItem(text)
                item.setToolTip(tip)
                table.setItem(row, column, item)
        table.resizeRowsToContents()
        # Tall enough for every row without a scroll bar, up to six rows.
        rows = sum(table.rowHeight(r) for r in range(min(len(self.conflicts), 6)))
        table.setFixedHeight(table.horizontalHeader().sizeHint().height() + rows + 2 * table.frameWidth())
        self.conflictTable = table
        return table

    def _allow_panel(self) -> QWidget:
        panel = QWidget()
        panel.setObjectName("allowPanel")
        column = QVBoxLayout(panel)
        column.setContentsMargins(24, 0, 0, 0)
        self.allowList = lines_editor("allowList", "one CIDR per line, e.g. 10.96.0.0/12")
        set_editor_lines(self.allowList, choice.default_allow_list(self.conflicts))
        self.allowList.textChanged.connect(self._revalidate)
        reset = QPushButton("Reset to the cluster's subnets")
        reset.setObjectName("allowResetButton")
        reset.clicked.connect(lambda: set_editor_lines(self.allowList, choice.default_allow_list(self.conflicts)))
        self.allowWarning = message_label("allowWarning")
        column.addWidget(self.allowList)
        column.addWidget(reset)
        column.addWidget(self.allowWarning)
        self.allowPanel = panel
        return panel

    def _proxy_panel(self) -> QWidget:
        panel = QWidget()
        panel.setObjectName("proxyViaPanel")
        form = QFormLayout(panel)
        form.setContentsMargins(24, 0, 0, 0)
        self.proxyViaSymbol = QComboBox()
        self.proxyViaSymbol.setObjectName("proxyViaSymbol")
        for symbol in _SYMBOL_ORDER:
            self.proxyViaSymbol.addItem(f"{symbol} ({choice.SYMBOL_MEANINGS[symbol]})", symbol)
        self.proxyViaWorkload = QComboBox()
        self.proxyViaWorkload.setObjectName("proxyViaWorkload")
        self.proxyViaWorkload.setEditable(True)
        self.proxyViaWorkload.setMinimumContentsLength(24)
        self.proxyViaWorkload.lineEdit().setPlaceholderText("namespace/name")
        self.reloadWorkloadsButton = QPushButton("Reload")
        self.reloadWorkloadsButton.setObjectName("reloadWorkloadsButton")
        self.reloadWorkloadsButton.clicked.connect(self.load_workloads)
        self.workloadStatus = message_label("workloadStatus")
        self.proxyViaSymbol.currentIndexChanged.connect(self._revalidate)
        self.proxyViaWorkload.currentTextChanged.connect(self._revalidate)
        workload_row = QHBoxLayout()
        workload_row.addWidget(self.proxyViaWorkload, 1)
        workload_row.addWidget(self.reloadWorkloadsButton)
        form.addRow("Subnets", self.proxyViaSymbol)
        form.addRow("Via workload", workload_row)
        form.addRow("", self.workloadStatus)
        self.proxyViaPanel = panel
        return panel

    # --- the workload list ---

    def load_workloads(self) -> None:
        """(Re)load the workload list in the background; the combo shows "loading…" until it arrives."""
        if self._load is not None:
            self._load.cancel()
        keep = self.selected_workload() or self._wanted_workload
        self._wanted_workload = keep
        self.proxyViaWorkload.blockSignals(True)
        self.proxyViaWorkload.clear()
        self.proxyViaWorkload.setEditText("")
        self.proxyViaWorkload.lineEdit().setPlaceholderText(LOADING)
        self.proxyViaWorkload.blockSignals(False)
        self.reloadWorkloadsButton.setEnabled(False)
        show_message(self.workloadStatus, f"Workloads of {self.context}: {LOADING}", HINT_STYLE)
        context, source = self.context, self._workloads
        self._load = BackgroundCall(
            lambda: source.list_workloads(context), self._workloads_loaded, self._workloads_failed, self
        )
        self._revalidate()

    @property
    def loading(self) -> bool:
        return self._load is not None and not self._load.done

    def _workloads_loaded(self, names: object) -> None:
        items = [str(name) for name in names] if isinstance(names, list) else []
        self.reloadWorkloadsButton.setEnabled(True)
        self.proxyViaWorkload.blockSignals(True)
        self.proxyViaWorkload.clear()
        self.proxyViaWorkload.addItems(items)
        self.proxyViaWorkload.lineEdit().setPlaceholderText("namespace/name")
        wanted = self._wanted_workload
        if wanted:
            if wanted not in items:
                self.proxyViaWorkload.addItem(wanted)
            self.proxyViaWorkload.setCurrentText(wanted)
        elif not items:
            self.proxyViaWorkload.setEditText("")
        self.proxyViaWorkload.blockSignals(False)
        if items:
            show_message(self.workloadStatus, "")
        else:
            show_message(
                self.workloadStatus,
                f"{self.context} has no Deployment, StatefulSet or ReplicaSet you may list; type namespace/name.",
                WARNING_STYLE,
            )
        self._revalidate()

    def _workloads_failed(self, error: BaseException) -> None:
        self.reloadWorkloadsButton.setEnabled(True)
        self.proxyViaWorkload.lineEdit().setPlaceholderText("namespace/name")
        if self._wanted_workload and not self.proxyViaWorkload.currentText():
            self.proxyViaWorkload.setEditText(self._wanted_workload)
        show_message(self.workloadStatus, f"Cannot list workloads: {error}. You can type namespace/name.")
        self._revalidate()

    # --- state ---

    def selected_choice(self) -> Choice | None:
        for option, radio in self._radios.items():
            if radio.isChecked():
                return option
        return None

    def selected_workload(self) -> str:
        return self.proxyViaWorkload.currentText().strip()

    def selected_symbol(self) -> str:
        return str(self.proxyViaSymbol.currentData())

    def set_resolution(self, resolution: Resolution) -> None:
        """Start from a remembered choice (anything the dialog cannot show is left as it is)."""
        pre = choice.preselection(resolution)
        if pre is None:
            return
        self._radios[pre.choice].setChecked(True)
        if pre.choice is Choice.ALLOW:
            set_editor_lines(self.allowList, pre.allow)
        elif pre.choice is Choice.PROXY_VIA:
            index = self.proxyViaSymbol.findData(pre.symbol)
            if index >= 0 and pre.symbol in SYMBOLS:
                self.proxyViaSymbol.setCurrentIndex(index)
            self._wanted_workload = pre.workload
            if self.proxyViaWorkload.findText(pre.workload) < 0 and not self.loading:
                self.proxyViaWorkload.addItem(pre.workload)
            self.proxyViaWorkload.setCurrentText(pre.workload)
        self._revalidate()

    def resolution(self) -> Resolution:
        """The Resolution the dialog's fields stand for; ValidationError naming the bad value."""
        selected = self.selected_choice()
        if selected is None:
            raise ValidationError("Choose one of the three ways out.")
        return choice.build_resolution(
            selected,
            self.conflicts,
            allow=choice.parse_allow_text(self.allowList.toPlainText()),
            symbol=self.selected_symbol(),
            workload=self.selected_workload(),
        )

    def _revalidate(self, *_: object) -> None:
        selected = self.selected_choice()
        self.allowPanel.setEnabled(selected is Choice.ALLOW)
        self.proxyViaPanel.setEnabled(selected is Choice.PROXY_VIA)
        show_message(self.allowWarning, "")
        try:
            resolution = self.resolution()
        except ValidationError as exc:
            waiting = selected is Choice.PROXY_VIA and self.loading and not self.selected_workload()
            show_message(self.validationMessage, "Waiting for the workload list…" if waiting else str(exc))
            self.applyButton.setEnabled(False)
            return
        show_message(self.validationMessage, "")
        self.applyButton.setEnabled(True)
        left = choice.still_conflicting(resolution.allow_conflicting_subnets, self.conflicts)
        if selected is Choice.ALLOW and left:
            show_message(
                self.allowWarning,
                f"Not covered, so still conflicting: {', '.join(left)}. The connect will fail on them again.",
                WARNING_STYLE,
            )

    def _apply(self) -> None:
        try:
            resolution = self.resolution()
        except ValidationError as exc:
            show_message(self.validationMessage, str(exc))
            return
        if self._resolutions is not None:
            try:
                self._resolutions.remember(self.context, resolution)
            except OSError as exc:
                show_message(self.validationMessage, f"Cannot remember the choice: {exc}")
                return
        self.resolutionChosen.emit(resolution)
        self.accept()

    def done(self, result: int) -> None:
        if self._load is not None:
            self._load.cancel()  # a late answer must not touch a closed dialog
        super().done(result)
