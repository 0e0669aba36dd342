"""The Measure dock widget: lengths (mm) of lines and paths, and area (mm²), mean, SD, min,
max and pixel count of rectangles, ellipses and polygons drawn in napari Shapes layers,
on the slice of an image layer they lie on.

Layout and signal wiring only: every formula (world -> pixel mapping, masks, areas,
statistics, the table's text) is :mod:`napari_dicom.core.measure`. The table follows the
shapes as they are drawn and edited (each Shapes layer's ``data`` / ``set_data`` events),
the slider and the view (``viewer.dims`` events) and the layer list; "Copy table" puts it
on the clipboard as tab-separated text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtGui import QGuiApplication, QKeySequence
from qtpy.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .core.measure import (
    HEADERS,
    DrawnShape,
    ImageInfo,
    Measurement,
    ViewInfo,
    affine_from_map,
    image_info_from_meta,
    measure_shapes,
    to_tsv,
)
from .core.meta import dicom_meta

if TYPE_CHECKING:
    import napari

#: the image combo's first entry: the topmost visible DICOM image (else any image)
AUTO = "(top visible DICOM image)"
#: coalesce the bursts of events a mouse drag sends into one update
_DELAY_MS = 30


class MeasureWidget(QWidget):
    """Dock widget: a live table of measurements of the viewer's Shapes layers."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.rows: list[Measurement] = []
        self._watched: dict[int, Any] = {}  # id(layer) -> layer whose events we follow

        self._status = QLabel("")
        self._status.setWordWrap(True)
        self._status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self._image = QComboBox()
        self._image.setToolTip("The image layer whose slice, spacing and values are measured")
        self._new = QPushButton("New shapes layer")
        self._new.setToolTip("Add a Shapes layer to draw lines, rectangles, ellipses and "
                             "polygons in")
        self._copy = QPushButton("Copy table")
        self._copy.setToolTip("Copy the table as tab-separated text (pastes into a "
                              "spreadsheet)")
        self._table = _Table(self)
        self._table.setColumnCount(len(HEADERS))
        self._table.setHorizontalHeaderLabels(list(HEADERS))
        self._table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        rows_header, columns_header = (self._table.verticalHeader(),
                                       self._table.horizontalHeader())
        if rows_header is not None:
            rows_header.setVisible(False)
        if columns_header is not None:
            columns_header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.setMinimumWidth(520)

        top = QHBoxLayout()
        top.addWidget(QLabel("Image:"))
        top.addWidget(self._image, 1)
        buttons = QHBoxLayout()
        buttons.addWidget(self._new)
        buttons.addWidget(self._copy)
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self._status)
        layout.addWidget(self._table, 1)
        layout.addLayout(buttons)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(_DELAY_MS)
        self._timer.timeout.connect(self.refresh)

        self._image.currentIndexChanged.connect(self._schedule)
        self._new.clicked.connect(self.new_shapes_layer)
        self._copy.clicked.connect(self.copy_table)
        layers = napari_viewer.layers
        layers.events.inserted.connect(self._layers_changed)
        layers.events.removed.connect(self._layers_changed)
        layers.events.reordered.connect(self._layers_changed)
        dims = napari_viewer.dims
        for name in ("current_step", "ndisplay", "order"):
            getattr(dims.events, name).connect(self._schedule)
        self._layers_changed()
        self.refresh()

    # ------------------------------------------------------------------ wiring

    def _layers_changed(self, _event: Any = None) -> None:
        from napari.layers import Image, Shapes

        current = {id(layer): layer for layer in self.viewer.layers
                   if isinstance(layer, Shapes | Image)}
        for key in set(self._watched) - set(current):
            self._follow(self._watched.pop(key), False)
        for key, layer in current.items():
            if key not in self._watched:
                self._watched[key] = layer
                self._follow(layer, True)
        self._fill_images()
        self._schedule()

    def _follow(self, layer: Any, on: bool) -> None:
        for name in ("data", "set_data", "name", "visible"):
            emitter = getattr(layer.events, name, None)
            if emitter is None:
                continue
            if on:
                emitter.connect(self._schedule)
            else:
                emitter.disconnect(self._schedule)

    def _fill_images(self) -> None:
        from napari.layers import Image

        names = [AUTO] + [lay.name for lay in reversed(self.viewer.layers)
                          if isinstance(lay, Image)]
        keep = self._image.currentText()
        self._image.blockSignals(True)
        self._image.clear()
        self._image.addItems(names)
        self._image.setCurrentIndex(names.index(keep) if keep in names else 0)
        self._image.blockSignals(False)

    def _schedule(self, _event: Any = None) -> None:
        self._timer.start()

    # ------------------------------------------------------------------ measuring

    def image_layer(self) -> Any:
        """The image layer measured on: the one chosen, else the topmost visible DICOM
        image layer, else the topmost visible image layer (``None`` when there is none)."""
        from napari.layers import Image

        chosen = self._image.currentText()
        images = [lay for lay in reversed(self.viewer.layers) if isinstance(lay, Image)]
        if chosen != AUTO:
            for lay in images:
                if lay.name == chosen:
                    return lay
        visible = [lay for lay in images if lay.visible]
        dicom = [lay for lay in visible if dicom_meta(lay.metadata)]
        return (dicom or visible or [None])[0]

    def _image_info(self, layer: Any) -> tuple[ImageInfo | None, Any]:
        if layer is None:
            return None, None
        data = layer.data[0] if layer.multiscale else layer.data
        n = layer.ndim
        info = image_info_from_meta(
            layer.name, affine_from_map(layer.data_to_world, n), data.shape[:n],
            [str(u) for u in layer.units], [str(a) for a in layer.axis_labels],
            bool(getattr(layer, "rgb", False)), dicom_meta(layer.metadata))
        return info, data

    def _shapes(self) -> list[DrawnShape]:
        from napari.layers import Shapes

        out: list[DrawnShape] = []
        for layer in self.viewer.layers:
            if not isinstance(layer, Shapes):
                continue
            m = affine_from_map(layer.data_to_world, layer.ndim)
            d = layer.ndim
            for i, (verts, kind) in enumerate(zip(layer.data, layer.shape_type, strict=False)):
                v = np.asarray(verts, dtype=np.float64)
                out.append(DrawnShape(layer.name, i + 1, str(kind),
                                      v @ m[:d, :d].T + m[:d, d]))
        return out

    def refresh(self) -> None:
        """Measure every shape now and show the table (the events call this, coalesced)."""
        self._timer.stop()
        layer = self.image_layer()
        info, data = self._image_info(layer)
        dims = self.viewer.dims
        view = ViewInfo(int(dims.ndisplay), tuple(int(a) for a in dims.displayed),
                        tuple(float(v) for v in dims.point))
        shapes = self._shapes()
        self.rows = measure_shapes(shapes, info, view, data)
        if info is None:
            status = "No image layer: open a DICOM series to measure on."
        else:
            if info.rgb:
                kind = "RGB: lengths and areas only"
            elif info.dicom:
                kind = "DICOM, values" + (f" in {info.value_unit}" if info.value_unit else "")
            else:
                kind = "not DICOM: values as stored"
            status = f"Measuring on {info.name!r} ({kind})."
        if not shapes:
            status += (" Draw lines, paths, rectangles, ellipses or polygons in a Shapes "
                       "layer (New shapes layer).")
        if int(dims.ndisplay) != 2:
            status += " 3-D view: measurements are made in the 2-D view."
        self._status.setText(status)
        self._fill_table()

    def _fill_table(self) -> None:
        self._table.setRowCount(len(self.rows))
        for r, row in enumerate(self.rows):
            for c, text in enumerate(row.cells()):
                item = QTableWidgetItem(text)
                if HEADERS[c] == "Note":
                    item.setToolTip(text)
                self._table.setItem(r, c, item)

    @property
    def status(self) -> str:
        return str(self._status.text())

    def table_text(self) -> list[list[str]]:
        """What the table shows, row by row (as a user reads it)."""
        def text(r: int, c: int) -> str:
            item = self._table.item(r, c)
            return "" if item is None else str(item.text())

        return [[text(r, c) for c in range(self._table.columnCount())]
                for r in range(self._table.rowCount())]

    # ------------------------------------------------------------------ actions

    def new_shapes_layer(self) -> Any:
        """Add an empty Shapes layer over the viewer's dimensions, selected for drawing.

        It is placed like the measured image (same scale, translate, rotation, shear,
        affine, units and axis names): a shape drawn on a slice then sits on that slice's
        index, and shows on it, whatever the slice spacing."""
        ndim = max(2, int(self.viewer.dims.ndim))
        kwargs: dict[str, Any] = {}
        image = self.image_layer()
        if image is not None and image.ndim == ndim:
            kwargs = {"units": [str(u) for u in image.units],
                      "axis_labels": list(image.axis_labels),
                      "scale": image.scale, "translate": image.translate,
                      "rotate": image.rotate, "shear": image.shear,
                      "affine": image.affine.affine_matrix}
        return self.viewer.add_shapes(ndim=ndim, name="Measurements", edge_color="yellow",
                                      face_color="transparent", edge_width=1.0, **kwargs)

    def copy_table(self) -> None:
        """The table, tab-separated with its header line, onto the clipboard."""
        board = QGuiApplication.clipboard()
        if board is not None:
            board.setText(to_tsv(self.rows))


class _Table(QTableWidget):
    """Ctrl+C copies the whole table (tab-separated), not one cell."""

    def __init__(self, owner: MeasureWidget) -> None:
        super().__init__()
        self._owner = owner

    def keyPressEvent(self, event: Any) -> None:
        if event.matches(QKeySequence.StandardKey.Copy):
            self._owner.copy_table()
            event.accept()
            return
        super().keyPressEvent(event)
