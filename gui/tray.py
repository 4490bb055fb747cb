"""The tray icon and its menu, rendered from a ``view.TrayView``.

``TrayIcon.render(view)`` changes only what differs: the icon and tooltip when they change, and the
menu's actions in place while its shape (the sequence of keys) stays the same, so a new State every few
seconds neither flickers nor closes an open menu. Only a change of shape (say, connected -> disconnected)
rebuilds the menu, and never while it is open (rebuilding an open menu empties it under the pointer, say when
the workload list arrives as the user opens it): then once it has closed. Every action's object name is its
entry's key (``view.KEY_*``).
"""

from __future__ import annotations

import functools

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

from tether.gui.icons import IconSet
from tether.gui.view import STATUS_WINDOW, Entry, Item, Separator, Submenu, TrayView

Shape = tuple[object, ...]


def shape(items: tuple[Item, ...]) -> Shape:
    """What must match for an in-place update: kinds and keys, submenus included."""
    return tuple(
        (type(item).__name__, item.key, shape(item.items) if isinstance(item, Submenu) else ()) for item in items
    )


class TrayIcon(QObject):
    actionTriggered = Signal(str, str)  # the entry's action id and argument
    menuAboutToShow = Signal()

    def __init__(self, icons: IconSet | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.icons = icons or IconSet()
        self.tray = QSystemTrayIcon(self)
        self.tray.setObjectName("tether-tray-icon")
        self.menu = QMenu()
        self.menu.setObjectName("tether-menu")
        self.menu.aboutToShow.connect(self.menuAboutToShow)
        self.menu.aboutToHide.connect(self._menu_hidden)
        self.tray.setContextMenu(self.menu)
        self.tray.activated.connect(self._activated)
        self.view: TrayView | None = None
        self._built: tuple[Item, ...] | None = None  # the menu the actions were made from
        self.deferred = False  # a rebuild waits for the open menu to close
        self._actions: dict[str, QAction] = {}
        self._submenus: list[QMenu] = []
        self.rebuilds = 0  # how often the menu was built from scratch (tests check it stays put)

    def show(self) -> None:
        self.tray.show()

    def hide(self) -> None:
        self.tray.hide()

    def action(self, key: str) -> QAction | None:
        """The rendered action (or submenu action) for an entry key."""
        return self._actions.get(key)

    def render(self, view: TrayView) -> None:
        old, self.view = self.view, view
        if old is not None and old == view:
            return
        if old is None or old.icon != view.icon:
            self.tray.setIcon(self.icons.icon(view.icon))
        if old is None or old.tooltip != view.tooltip:
            self.tray.setToolTip(view.tooltip)
        if self._built is not None and shape(self._built) == shape(view.menu):
            self._update(view.menu)
        elif self._built is not None and self.menu.isVisible():
            self.deferred = True
        else:
            self._rebuild(view.menu)

    # --- building ---

    def _menu_hidden(self) -> None:
        # After the event: the click that closes the menu must reach its action before the action goes.
        if self.deferred:
            QTimer.singleShot(0, self._rebuild_deferred)

    def _rebuild_deferred(self) -> None:
        if self.deferred and self.view is not None and not self.menu.isVisible():
            self._rebuild(self.view.menu)

    def _rebuild(self, items: tuple[Item, ...]) -> None:
        self.deferred = False
        self._built = items
        self.rebuilds += 1
        self.menu.clear()
        for submenu in self._submenus:
            submenu.deleteLater()
        self._submenus.clear()
        self._actions.clear()
        self._fill(self.menu, items)

    def _fill(self, menu: QMenu, items: tuple[Item, ...]) -> None:
        for item in items:
            if isinstance(item, Separator):
                separator = menu.addSeparator()
                separator.setObjectName(item.key)
            elif isinstance(item, Submenu):
                submenu = QMenu(item.label, menu)
                submenu.setObjectName(item.key)
                self._submenus.append(submenu)
                menu.addMenu(submenu)
                action = submenu.menuAction()
                action.setObjectName(item.key)
                action.setEnabled(item.enabled)
                self._actions[item.key] = action
                self._fill(submenu, item.items)
            else:
                action = QAction(item.label, menu)
                action.setObjectName(item.key)
                action.triggered.connect(functools.partial(self._triggered, item.key))
                menu.addAction(action)
                self._actions[item.key] = action
                self._apply(action, item)

    def _update(self, items: tuple[Item, ...], top: bool = True) -> None:
        if top:
            self._built = items
        for item in items:
            if isinstance(item, Submenu):
                action = self._actions[item.key]
                action.setText(item.label)
                action.setEnabled(item.enabled)
                self._update(item.items, top=False)
            elif isinstance(item, Entry):
                self._apply(self._actions[item.key], item)

    @staticmethod
    def _apply(action: QAction, entry: Entry) -> None:
        if action.text() != entry.label:
            action.setText(entry.label)
        action.setEnabled(entry.enabled and bool(entry.action))
        action.setCheckable(entry.checkable)
        if entry.checkable:
            action.setChecked(entry.checked)

    # --- events ---

    def _triggered(self, key: str) -> None:
        # Look the entry up now: an in-place update may have changed its argument since it was built.
        entry = self.view.find(key) if self.view is not None else None
        if isinstance(entry, Entry) and entry.action and entry.enabled:
            if entry.checkable:
                action = self._actions.get(key)
                if action is not None:
                    action.setChecked(entry.checked)  # the helper's state decides the mark, not the click
            self.actionTriggered.emit(entry.action, entry.argument)

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        # A left click opens the status window; the right click shows the menu (Qt does that itself).
        if reason in (QSystemTrayIcon.ActivationReason.Trigger, QSystemTrayIcon.ActivationReason.DoubleClick):
            self.actionTriggered.emit(STATUS_WINDOW, "")
