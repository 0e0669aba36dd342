"""Real Qt input events for GUI tests (delivered by Qt, as a user's mouse would be)."""

from __future__ import annotations

from typing import Any


def mouse(widget: Any, kind: str, xy: tuple[int, int], pressed: bool) -> None:
    """A real QMouseEvent (``kind``: press, move or release; left button) delivered by Qt
    to ``widget`` (e.g. the vispy canvas), then the event loop run once."""
    from qtpy.QtCore import QEvent, QPoint, QPointF, Qt
    from qtpy.QtGui import QMouseEvent
    from qtpy.QtWidgets import QApplication

    types = {"press": QEvent.Type.MouseButtonPress, "move": QEvent.Type.MouseMove,
             "release": QEvent.Type.MouseButtonRelease}
    left = Qt.MouseButton.LeftButton
    ev = QMouseEvent(
        types[kind], QPointF(*xy), QPointF(widget.mapToGlobal(QPoint(*xy))),
        Qt.MouseButton.NoButton if kind == "move" else left,
        left if pressed else Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier,
    )
    QApplication.sendEvent(widget, ev)
    QApplication.processEvents()
