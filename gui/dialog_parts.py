"""Small Qt pieces the tray's dialogs share: message labels, list editors, and running a call off the GUI thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal
from PySide6.QtWidgets import QLabel, QPlainTextEdit, QWidget

ERROR_STYLE = "color: #b00020;"
WARNING_STYLE = "color: #8a5a00;"
HINT_STYLE = "color: palette(mid);"


def message_label(name: str, parent: QWidget | None = None) -> QLabel:
    """An initially hidden, word-wrapped label for inline validation messages."""
    label = QLabel(parent)
    label.setObjectName(name)
    label.setWordWrap(True)
    label.setVisible(False)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


def show_message(label: QLabel, text: str, style: str = ERROR_STYLE) -> None:
    label.setText(text)
    label.setStyleSheet(style)
    # isHidden, not isVisible: the label of a dialog that is not shown yet is never "visible".
    label.setHidden(not text)


def lines_editor(name: str, placeholder: str, parent: QWidget | None = None) -> QPlainTextEdit:
    """A plain-text box holding one value per line."""
    editor = QPlainTextEdit(parent)
    editor.setObjectName(name)
    editor.setPlaceholderText(placeholder)
    editor.setTabChangesFocus(True)
    editor.setMaximumHeight(90)
    return editor


def editor_lines(editor: QPlainTextEdit) -> list[str]:
    """The non-blank lines of a lines_editor, stripped."""
    return [line.strip() for line in editor.toPlainText().splitlines() if line.strip()]


def set_editor_lines(editor: QPlainTextEdit, values: tuple[str, ...] | list[str]) -> None:
    editor.setPlainText("\n".join(values))


class _Relay(QObject):
    """Carries a background call's outcome to the GUI thread (it is created there, so slots run there)."""

    succeeded = Signal(object)
    failed = Signal(object)


class _Call(QRunnable):
    def __init__(self, fn: Callable[[], Any], relay: _Relay) -> None:
        super().__init__()
        self.fn = fn
        self.relay = relay

    def run(self) -> None:
        try:
            result = self.fn()
        except Exception as exc:  # every failure is the caller's to show
            self.relay.failed.emit(exc)
        else:
            self.relay.succeeded.emit(result)


class BackgroundCall(QObject):
    """Run ``fn`` in the global thread pool; ``on_result``/``on_error`` are called on the GUI thread.

    Keep the returned object as long as the answer matters: dropping it (or starting another call) does not
    stop the thread, but its answer is then ignored.
    """

    def __init__(
        self,
        fn: Callable[[], Any],
        on_result: Callable[[Any], None],
        on_error: Callable[[BaseException], None],
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self._relay = _Relay()  # no parent: the worker still holds it if our parent goes away first
        self._relay.succeeded.connect(self._finish_ok)
        self._relay.failed.connect(self._finish_error)
        self._on_result = on_result
        self._on_error = on_error
        self.done = False
        self.cancelled = False
        QThreadPool.globalInstance().start(_Call(fn, self._relay))

    def cancel(self) -> None:
        self.cancelled = True

    def _finish_ok(self, result: object) -> None:
        self.done = True
        if not self.cancelled:
            self._on_result(result)

    def _finish_error(self, error: object) -> None:
        self.done = True
        if not self.cancelled:
            self._on_error(error if isinstance(error, BaseException) else RuntimeError(str(error)))
