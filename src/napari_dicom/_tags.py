"""The DICOM tag browser dock widget: the full header of the file the current slice came
from, as a tree (tag, keyword, VR, value; sequences expandable; private elements with
their creator), with a filter box and Copy (Ctrl+C or the context menu).

Layout and signal wiring only: which file a plane came from and its rows are
:mod:`napari_dicom.core.tags`. It follows the selected layer
(``viewer.layers.selection.events.active``) and the slice sliders
(``viewer.dims.events.current_step``); it only reads the file (never the layer).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt
from qtpy.QtGui import QGuiApplication, QKeySequence
from qtpy.QtWidgets import (
    QHeaderView,
    QLabel,
    QLineEdit,
    QMenu,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .core.meta import META_KEY, dicom_meta
from .core.tags import TagReadError, TagRow, filter_rows, plane_file, read_rows

if TYPE_CHECKING:
    import napari

COLUMNS = ("Tag", "Keyword", "VR", "Value", "Private Creator")
VALUE = COLUMNS.index("Value")


class TagBrowserWidget(QWidget):
    """Dock widget: the DICOM header of the current slice's file."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._rows: tuple[TagRow, ...] = ()
        self._shown: tuple[str, int | None] | None = None  # (file, frame) on display
        self._cache: dict[str, tuple[TagRow, ...]] = {}

        self._status = QLabel("")
        self._status.setWordWrap(True)
        self._status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._filter = QLineEdit()
        self._filter.setPlaceholderText("Filter: tag, keyword, VR, value or creator")
        self._filter.setClearButtonEnabled(True)
        self._tree = _TagTree(self)
        self._tree.setColumnCount(len(COLUMNS))
        self._tree.setHeaderLabels(list(COLUMNS))
        self._tree.setUniformRowHeights(True)
        self.setMinimumWidth(560)  # room for the value column beside tag and keyword
        header = self._tree.header()
        if header is not None:
            header.setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
            header.setStretchLastSection(False)
        self._tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)

        layout = QVBoxLayout(self)
        layout.addWidget(self._status)
        layout.addWidget(self._filter)
        layout.addWidget(self._tree)

        self._filter.textChanged.connect(self._fill)
        self._tree.customContextMenuRequested.connect(self._context_menu)

        napari_viewer.dims.events.current_step.connect(self._update)
        napari_viewer.layers.selection.events.active.connect(self._update)
        napari_viewer.layers.events.removed.connect(self._update)
        self._update()

    # ------------------------------------------------------------------ what is shown

    @property
    def status(self) -> str:
        return str(self._status.text())

    def _say(self, text: str) -> None:
        self._status.setText(text)

    def _update(self, _event: Any = None) -> None:
        layer = self.viewer.layers.selection.active
        if layer is None:
            self._show_nothing("No layer selected: select a DICOM image layer.")
            return
        meta = dicom_meta(layer.metadata)
        if not meta.get("files"):
            why = ("was opened from a DICOMweb server (no file to read)"
                   if META_KEY in (layer.metadata or {}) else "is not a DICOM layer")
            self._show_nothing(f"Layer {layer.name!r} {why}: no DICOM header to show.")
            return
        point = self.viewer.dims.point[-layer.ndim:]
        where = plane_file(meta, layer.data.shape if not layer.multiscale
                           else layer.data[0].shape,
                           layer.world_to_data(point), bool(getattr(layer, "rgb", False)))
        if where is None:
            self._show_nothing(f"Layer {layer.name!r}: the current slice is outside it.")
            return
        path, frame, plane = where
        frame_text = "" if frame is None else f", frame {frame + 1}"
        head = (f"{layer.name}: plane {plane + 1} of {len(meta['files'])}, "
                f"{path}{frame_text}")
        if self._shown == (path, frame):
            self._say(head)
            return
        try:
            rows = self._cache.get(path) or read_rows(path)
        except TagReadError as err:
            self._show_nothing(f"{err} (the layer is unaffected)")
            self._shown = None
            return
        self._cache = {path: rows}  # one file at a time: the slider moves on
        self._rows = rows
        self._shown = (path, frame)
        self._say(head)
        self._fill()

    def _show_nothing(self, text: str) -> None:
        self._rows = ()
        self._shown = None
        self._say(text)
        self._fill()

    def _fill(self, _text: Any = None) -> None:
        rows = filter_rows(self._rows, self._filter.text())
        self._tree.clear()
        self._tree.addTopLevelItems([_item(r) for r in rows])
        if self._filter.text().strip():
            self._tree.expandAll()  # show where the matches sit in sequences
        metrics = self._tree.fontMetrics()
        # a tag three sequence levels deep stays readable; keywords up to a sensible width
        self._tree.setColumnWidth(
            0, metrics.horizontalAdvance("(0000,0000)") + 4 * self._tree.indentation())
        self._tree.resizeColumnToContents(1)
        self._tree.setColumnWidth(1, min(self._tree.columnWidth(1), 200))
        self._tree.resizeColumnToContents(2)
        self._tree.setColumnWidth(VALUE, 300)  # full value in the tooltip and on Copy

    # ------------------------------------------------------------------ copying

    def copy_value(self) -> None:
        """Put the value of the current row on the clipboard."""
        item = self._tree.currentItem()
        board = QGuiApplication.clipboard()
        if item is not None and board is not None:
            board.setText(item.text(VALUE))

    def copy_row(self) -> None:
        item = self._tree.currentItem()
        board = QGuiApplication.clipboard()
        if item is not None and board is not None:
            board.setText(
                "\t".join(item.text(c) for c in range(len(COLUMNS))).rstrip("\t"))

    def _context_menu(self, pos: Any) -> None:
        if self._tree.itemAt(pos) is None:
            return
        menu = QMenu(self)
        menu.addAction("Copy value", self.copy_value)
        menu.addAction("Copy row", self.copy_row)
        menu.exec(self._tree.mapToGlobal(pos))


class _TagTree(QTreeWidget):
    """The tree; Ctrl+C (the platform's Copy key) copies the current row's value, not the
    cell Qt's item views copy by default (the tag)."""

    def __init__(self, owner: TagBrowserWidget) -> None:
        super().__init__()
        self._owner = owner

    def keyPressEvent(self, event: Any) -> None:
        if event.matches(QKeySequence.StandardKey.Copy):
            self._owner.copy_value()
            event.accept()
            return
        super().keyPressEvent(event)


def _item(row: TagRow) -> QTreeWidgetItem:
    item = QTreeWidgetItem([row.tag, row.keyword, row.vr, row.value, row.creator])
    item.setToolTip(VALUE, row.value)
    item.addChildren([_item(c) for c in row.children])
    return item
