"""The tray's state icons: ``resources/icons/<key>.svg``, one per ``view.IconKey``.

The SVGs ship beside the ``tether.gui`` package as they sit beside ``gui/`` in the source tree
(``tether/resources/icons`` when installed; see pyproject's package-data), so one relative path finds
them in both. They are rendered to pixmaps at the sizes trays ask for rather than handed to Qt as files:
that needs only QtSvg, not the SVG icon-engine plugin, which some bundles leave out.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable

from PySide6.QtCore import QByteArray, Qt
from PySide6.QtGui import QIcon, QPainter, QPixmap
from PySide6.QtSvg import QSvgRenderer

from tether.gui.view import ICON_KEYS, IconKey

SIZES = (16, 22, 24, 32, 48, 64, 128)


def icon_dir() -> Traversable:
    return resources.files("tether.gui").joinpath("..", "resources", "icons")


def icon_file(key: IconKey) -> Traversable:
    if key not in ICON_KEYS:
        raise KeyError(f"no tray icon for {key!r}; expected one of {', '.join(ICON_KEYS)}")
    return icon_dir().joinpath(f"{key}.svg")


def render(key: IconKey, size: int) -> QPixmap:
    renderer = QSvgRenderer(QByteArray(icon_file(key).read_bytes()))
    if not renderer.isValid():
        raise ValueError(f"{icon_file(key)} is not a valid SVG")
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    try:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        renderer.render(painter)
    finally:
        painter.end()
    return pixmap


class IconSet:
    """The five icons, rendered once (a tray asks again on every state change)."""

    def __init__(self) -> None:
        self._icons: dict[IconKey, QIcon] = {}

    def icon(self, key: IconKey) -> QIcon:
        if key not in self._icons:
            icon = QIcon()
            for size in SIZES:
                icon.addPixmap(render(key, size))
            self._icons[key] = icon
        return self._icons[key]
