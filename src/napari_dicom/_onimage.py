"""On-image information: what a PACS viewer writes in the corners of the image, as napari
canvas text overlays (``viewer.canvas.overlays``; nothing is drawn into the data).

* bottom left: the window of the selected DICOM layer and the value under the cursor with
  its unit ("W 400 / L 40 HU", "-1000 HU");
* bottom right: slice number and position ("Slice 12 / 40", "z -45.0 mm");
* the four edges: orientation letters (A/P, R/L, S/I) of the displayed plane;
* top right, only when asked (off by default: screenshots get shared): patient and study.

:class:`OnImageInfo` keeps the overlays up to date from napari's events (selected layer,
its contrast limits, the sliders, the displayed axes and their order, the camera's 2-D
orientation, the cursor); every formula is in :mod:`napari_dicom.core.onimage`.
:class:`OnImageWidget` is the dock that switches the parts on and off.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.components.overlays import TextOverlay
from qtpy.QtCore import QEvent, Qt, QTimer
from qtpy.QtWidgets import QCheckBox, QLabel, QVBoxLayout, QWidget

from .core.meta import dicom_meta
from .core.onimage import (
    edge_letters,
    is_patient_space,
    patient_lines,
    slice_text,
    value_text,
    value_unit,
    window_text,
)

if TYPE_CHECKING:
    import napari

#: the overlays this module adds to ``viewer.canvas.overlays``: key -> canvas position
OVERLAYS = {
    "napari_dicom_window": "bottom_left",
    "napari_dicom_slice": "bottom_right",
    "napari_dicom_patient": "top_right",
    "napari_dicom_top": "top_center",
    "napari_dicom_bottom": "bottom_center",
    "napari_dicom_left": "middle_left",
    "napari_dicom_right": "middle_right",
}
EDGES = ("top", "bottom", "left", "right")
#: the parts a user switches (attribute name -> check box text); patient is off by default
PARTS = {
    "window": "Window (W / L)",
    "value": "Value under the cursor, with its unit",
    "slice": "Slice number and position (mm)",
    "letters": "Orientation letters at the edges",
    "patient": "Patient and study (off: screenshots get shared)",
}
INFO_FONT = 10.0
LETTER_FONT = 14.0


class OnImageInfo:
    """The on-image overlays of one viewer, kept up to date (napari, no Qt).

    ``shown`` switches all of them; ``parts`` (a dict of :data:`PARTS` names to bool)
    switches each. ``texts`` holds what each overlay shows (key of :data:`OVERLAYS` ->
    text), ``note`` says why nothing is shown (no layer, not a DICOM layer, 3-D view).
    """

    def __init__(
        self, viewer: napari.viewer.Viewer,
        later: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        # the real viewer, not napari's PublicOnlyProxy: the callbacks compare layers
        self.viewer = getattr(viewer, "__wrapped__", viewer)
        self.parts = {name: name != "patient" for name in PARTS}
        self.shown = False
        self.note = ""
        self._layer: Any = None
        self._later = later
        v = self.viewer
        self._emitters = [
            (v.layers.selection.events.active, self.update),
            (v.layers.events.removed, self.update),
            (v.dims.events.current_step, self.update),
            (v.dims.events.order, self.update),
            (v.dims.events.ndisplay, self.update),
            (v.scene.camera.events.orientation, self.update),
            (v.cursor.events.position, self._on_cursor),
            (v.events.mouse_over_canvas, self._on_cursor),
        ]
        for emitter, callback in self._emitters:
            emitter.connect(callback)

    # ------------------------------------------------------------------ switching

    def show(self, on: bool = True) -> None:
        """Add the overlays to the canvas (or take them away)."""
        self.shown = on
        overlays = self.viewer.canvas.overlays
        if on:
            for key, position in OVERLAYS.items():
                if key not in overlays:
                    letter = key.rsplit("_", 1)[1] in EDGES
                    overlays[key] = TextOverlay(
                        text="", position=position, visible=False,
                        font_size=LETTER_FONT if letter else INFO_FONT,
                        color="yellow" if letter else "white", box=not letter)
            self.update()
        else:
            for key in OVERLAYS:
                if key in overlays:
                    del overlays[key]
            self._watch(None)

    def set_part(self, name: str, on: bool) -> None:
        if name not in PARTS:
            raise KeyError(f"unknown on-image part {name!r}: one of {', '.join(PARTS)}")
        self.parts[name] = on
        self.update()

    def close(self) -> None:
        """Take the overlays away and stop following the viewer."""
        self.show(False)
        for emitter, callback in self._emitters:
            emitter.disconnect(callback)
        self._emitters = []

    @property
    def texts(self) -> dict[str, str]:
        overlays = self.viewer.canvas.overlays
        return {key: (overlays[key].text if key in overlays and overlays[key].visible else "")
                for key in OVERLAYS}

    # ------------------------------------------------------------------ updating

    def _watch(self, layer: Any) -> None:
        """Follow the contrast limits (the window), name and slicing of the selected layer
        only."""
        if self._layer is layer:
            return
        if self._layer is not None:
            self._layer.events.contrast_limits.disconnect(self._on_limits)
            self._layer.events.name.disconnect(self.update)
            self._layer.events.set_data.disconnect(self.update)
        self._layer = layer
        if layer is not None:
            layer.events.contrast_limits.connect(self._on_limits)
            layer.events.name.connect(self.update)
            # the new slice is in: the value under a still mouse is the new slice's (the
            # dims event reaches us before napari has sliced the layer)
            layer.events.set_data.connect(self.update)

    def _on_limits(self, _event: Any = None) -> None:
        self.update()
        if self._later is not None:
            # the Window / Level dock records the VOI step it applied (its name, function)
            # in the layer's metadata just after setting the limits: read it once more then
            self._later(self.update)

    def _set(self, key: str, text: str) -> None:
        overlays = self.viewer.canvas.overlays
        if key not in overlays:
            return
        overlay = overlays[key]
        if overlay.text != text:
            overlay.text = text
        overlay.visible = bool(text)

    def _dicom_layer(self) -> tuple[Any, dict[str, Any]]:
        """The selected layer and its DICOM metadata; sets :attr:`note` when it has none."""
        layer = self.viewer.layers.selection.active
        if layer is None:
            self.note = "No layer selected: select a DICOM image layer."
            return None, {}
        meta = dicom_meta(layer.metadata)
        if not meta or not hasattr(layer, "contrast_limits"):
            self.note = f"Layer {layer.name!r} is not a DICOM image layer: nothing to show."
            return layer, {}
        self.note = ""
        return layer, meta

    def update(self, _event: Any = None) -> None:
        if not self.shown:
            return
        layer, meta = self._dicom_layer()
        self._watch(layer if meta else None)
        if not meta:
            for key in OVERLAYS:
                self._set(key, "")
            if layer is not None:  # a user who switched the overlay on learns why it is empty
                self._set("napari_dicom_window", f"{layer.name}: not a DICOM image layer")
            return
        unit = value_unit(meta)
        rgb = bool(getattr(layer, "rgb", False))
        lines = []
        if self.parts["window"] and not rgb:
            lines.append(window_text(layer.metadata, layer.contrast_limits, unit))
        value = self._cursor_value(layer, meta) if self.parts["value"] else ""
        if value:
            lines.append(f"Value {value}")
        self._set("napari_dicom_window", "\n".join(lines))
        self._set("napari_dicom_slice",
                  self._slice(layer, meta) if self.parts["slice"] else "")
        self._set("napari_dicom_patient",
                  "\n".join(patient_lines(meta.get("header"))) if self.parts["patient"]
                  else "")
        letters = self._letters(meta) if self.parts["letters"] else None
        for edge in EDGES:
            self._set(f"napari_dicom_{edge}", getattr(letters, edge) if letters else "")

    # ------------------------------------------------------------------ the parts

    def _spatial_start(self, meta: dict[str, Any]) -> int | None:
        """Index of the viewer's first patient axis (I), or None when the layer is not in
        patient space."""
        if not is_patient_space(meta) or self.viewer.dims.ndim < 3:
            return None
        return int(self.viewer.dims.ndim) - 3

    def _letters(self, meta: dict[str, Any]) -> Any:
        start = self._spatial_start(meta)
        dims = self.viewer.dims
        if start is None or dims.ndisplay != 2:
            return None
        displayed = [d - start for d in dims.displayed]
        camera = self.viewer.scene.camera
        return edge_letters(displayed, tuple(str(o) for o in camera.orientation2d))

    def _slice(self, layer: Any, meta: dict[str, Any]) -> str:
        dims = self.viewer.dims
        if dims.ndisplay != 2:
            return "3-D view"
        shape = layer.data[0].shape if layer.multiscale else layer.data.shape
        nd = layer.ndim  # (without an RGB channel)
        shape = shape[:nd]
        hidden = [d for d in dims.not_displayed if d >= dims.ndim - nd]
        if not hidden:
            return ""
        start = self._spatial_start(meta)
        placement = meta.get("placement") or {}
        if start is not None and nd >= 3:
            spatial = [d - start for d in hidden if d >= start]
            if len(spatial) != 1:
                return ""
            j = spatial[0]
            axis = nd - 3 + _data_axis(placement, j)
            world_axis: int | None = j
            world_value: float | None = float(dims.point[start + j])
        else:
            j = 0
            axis = hidden[-1] - (dims.ndim - nd)
            world_axis, world_value = None, None
        data_point = np.asarray(layer.world_to_data(dims.point[-nd:]), dtype=float)
        k = math.floor(float(data_point[axis]) + 0.5)
        n = int(shape[axis])
        if not 0 <= k < n:
            return "\n".join(x for x in ("outside the layer",
                                        slice_text(None, None, world_axis, world_value)) if x)
        # numbered the way the slider runs (world coordinate growing), as the user pages
        ends = np.zeros((2, nd))
        ends[1, axis] = 1.0
        w0, w1 = (np.asarray(layer.data_to_world(e), dtype=float) for e in ends)
        hidden_world = hidden[-1] - (dims.ndim - nd) if world_axis is None else nd - 3 + j
        if w1[hidden_world] < w0[hidden_world]:
            k = n - 1 - k
        return slice_text(k, n, world_axis, world_value)

    def _on_cursor(self, _event: Any = None) -> None:
        if self.shown and self.parts["value"]:
            self.update()

    def _cursor_value(self, layer: Any, meta: dict[str, Any]) -> str:
        """The value under the mouse with its unit; "" when the mouse is off the canvas
        or off the layer, and in the 3-D view."""
        if not self.viewer.mouse_over_canvas or self.viewer.dims.ndisplay != 2:
            return ""
        raw = layer.get_value(self.viewer.cursor.position, world=True)
        if isinstance(raw, tuple) and len(raw) == 2 and layer.multiscale:
            raw = raw[1]  # (level, value)
        return value_text(raw, value_unit(meta))


def _data_axis(placement: dict[str, Any], world_axis: int) -> int:
    """The acquisition-array axis napari slices along world axis ``world_axis``: the same
    axis for an arranged (axis-aligned) layer, the one most along it for an oblique one."""
    if placement.get("kind") != "affine" or "matrix" not in placement:
        return world_axis
    m = np.asarray(placement["matrix"], dtype=float)[:3, :3]
    cols = m / np.linalg.norm(m, axis=0)
    return int(np.argmax(np.abs(cols[world_axis])))


class OnImageWidget(QWidget):
    """Dock widget: switches the on-image information and its parts."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.info = OnImageInfo(napari_viewer, later=lambda f: QTimer.singleShot(0, f))
        self._shown = QCheckBox("Show on the canvas")
        self._shown.setChecked(True)
        self._boxes: dict[str, QCheckBox] = {}
        self._note = QLabel("")
        self._note.setWordWrap(True)
        self._note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout = QVBoxLayout(self)
        layout.addWidget(self._shown)
        for name, text in PARTS.items():
            box = QCheckBox(text)
            box.setChecked(self.info.parts[name])
            box.toggled.connect(lambda on, name=name: self._on_part(name, on))
            layout.addWidget(box)
            self._boxes[name] = box
        layout.addWidget(self._note)
        layout.addStretch(1)
        self._shown.toggled.connect(self._on_shown)
        viewer = self.info.viewer
        self._emitters = [viewer.layers.selection.events.active, viewer.layers.events.removed]
        for emitter in self._emitters:
            emitter.connect(self._say)
        self.info.show(True)
        self._say()

    def event(self, event: QEvent | None) -> bool:
        # napari closes a dock (its x button, Window menu, remove_dock_widget) by taking
        # this widget out of it: the overlays go with it
        if (event is not None and event.type() == QEvent.Type.ParentChange
                and self.parent() is None and self._emitters):
            self.info.close()
            for emitter in self._emitters:
                emitter.disconnect(self._say)
            self._emitters = []
        return bool(super().event(event))

    @property
    def note(self) -> str:
        return str(self._note.text())

    def _say(self, _event: Any = None) -> None:
        self._note.setText(self.info.note if self.info.shown else "")

    def _on_shown(self, on: bool) -> None:
        self.info.show(on)
        for box in self._boxes.values():
            box.setEnabled(on)
        self._say()

    def _on_part(self, name: str, on: bool) -> None:
        self.info.set_part(name, on)
        self._say()


__all__ = ["OVERLAYS", "PARTS", "OnImageInfo", "OnImageWidget"]
