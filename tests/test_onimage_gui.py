"""On-image information as a user meets it: the "On-image Info" dock from napari's plugin
menu, napari's canvas overlays, real Qt mouse events on the vispy canvas, the Window /
Level dock, and the tag browser from Layers > Metadata (run under xvfb)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from napari._app_model import get_app_model
from napari._app_model.constants import MenuId
from napari.utils.notifications import NotificationSeverity, notification_manager
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut

from napari_dicom.core.phantom import ct_phantom_volume, write_ct_phantom
from napari_dicom.core.tags import plane_file

PLUGIN = "napari-dicom"
INFO = "On-image Info"
N, SIZE = 6, 64
MARKER_HU = 3000  # brighter than anything in the phantom (cortical bone is 1500)


def _series(folder: Path, orientation: tuple[float, ...]) -> list[Path]:
    """An axial phantom series whose file pixel (row 0, column 0) holds a bright marker."""
    volume = ct_phantom_volume(N, SIZE, seed=0, noise=0.0)
    volume += (10 * np.arange(N, dtype=np.int16))[:, None, None]  # each slice its own values
    volume[:, :6, :6] = MARKER_HU
    return write_ct_phantom(folder, n_slices=N, size=SIZE, orientation=orientation,
                            volume=volume, patient_id="PID-0042")


@pytest.fixture
def opened(make_napari_viewer: Any, tmp_path: Path, qtbot: Any) -> tuple[Any, Any, Any]:
    viewer = make_napari_viewer(show=True)
    _series(tmp_path / "axial", (1.0, 0.0, 0.0, 0.0, 1.0, 0.0))
    (layer,) = viewer.open(str(tmp_path / "axial"), plugin=PLUGIN)
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, INFO)
    qtbot.waitExposed(viewer.window._qt_window)
    return viewer, widget, layer


def _errors_since(n: int) -> list[str]:
    return [str(r.message) for r in notification_manager.records[n:]
            if r.severity >= NotificationSeverity.ERROR]


def _letters(widget: Any) -> dict[str, str]:
    texts = widget.info.texts
    return {e: texts[f"napari_dicom_{e}"] for e in ("top", "bottom", "left", "right")}


def _window(widget: Any) -> str:
    """The window lines of the bottom-left overlay (without the value under the mouse)."""
    lines = widget.info.texts["napari_dicom_window"].split("\n")
    return "\n".join(line for line in lines if not line.startswith("Value "))


def _mouse_move(canvas: Any, xy: tuple[int, int]) -> None:
    """Real Qt mouse events delivered to the vispy canvas: the pointer enters it (napari's
    ``mouse_over_canvas``, which its status bar needs) if it is not in yet, then moves
    (no button) to ``xy``."""
    from qtpy.QtCore import QEvent, QPoint, QPointF, Qt
    from qtpy.QtGui import QEnterEvent, QMouseEvent
    from qtpy.QtWidgets import QApplication

    def move(x: int, y: int) -> None:
        ev = QMouseEvent(QEvent.Type.MouseMove, QPointF(x, y),
                         QPointF(canvas.mapToGlobal(QPoint(x, y))), Qt.MouseButton.NoButton,
                         Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
        QApplication.sendEvent(canvas, ev)
        QApplication.processEvents()

    viewer = canvas.parent()
    while viewer is not None and not hasattr(viewer, "viewer"):
        viewer = viewer.parent()
    if viewer is not None and not viewer.viewer.mouse_over_canvas:
        where = QPointF(xy[0] + 1, xy[1])
        QApplication.sendEvent(canvas, QEnterEvent(where, where, QPointF(
            canvas.mapToGlobal(where.toPoint()))))
        move(xy[0] + 1, xy[1])
    move(*xy)


def _marker_quadrant(viewer: Any, layer: Any) -> tuple[str, str]:
    """Where the marker is drawn on the canvas: ("top"|"bottom", "left"|"right")."""
    layer.contrast_limits = (MARKER_HU - 100, MARKER_HU - 50)  # only the marker is white
    shot = np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3]
    layer.contrast_limits = (-160, 239)
    ys, xs = np.nonzero(shot.min(axis=-1) > 250)
    assert len(ys) > 0, "the marker is not on the canvas"
    h, w = shot.shape[:2]
    return ("top" if ys.mean() < h / 2 else "bottom", "left" if xs.mean() < w / 2 else "right")


@pytest.mark.parametrize(
    ("orientation", "marker_sides"),
    [
        # rows run to the patient's left, columns to posterior: pixel (0, 0) is the most
        # right and anterior one
        ((1.0, 0.0, 0.0, 0.0, 1.0, 0.0), {"R", "A"}),
        # rows run to the right, columns anterior (e.g. a prone or rotated acquisition):
        # pixel (0, 0) is the most left and posterior one
        ((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0), {"L", "P"}),
    ],
    ids=["standard", "flipped"],
)
def test_letters_stand_where_the_patient_is(
    make_napari_viewer: Any, tmp_path: Path, qtbot: Any,
    orientation: tuple[float, ...], marker_sides: set[str],
) -> None:
    viewer = make_napari_viewer(show=True)
    _series(tmp_path / "s", orientation)
    (layer,) = viewer.open(str(tmp_path / "s"), plugin=PLUGIN)
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, INFO)
    qtbot.waitExposed(viewer.window._qt_window)
    letters = _letters(widget)
    # napari's default axial view: radiological convention whatever the file's orientation
    assert letters == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    vertical, horizontal = _marker_quadrant(viewer, layer)
    assert {letters[vertical], letters[horizontal]} == marker_sides


def test_letters_follow_a_dims_roll_and_transpose(opened: tuple[Any, Any, Any]) -> None:
    viewer, widget, _layer = opened
    # each world axis (I, P, L) and its (top/left, bottom/right) letters in napari's
    # default camera, where a displayed axis grows downwards / to the right
    ends = {0: ("S", "I"), 1: ("A", "P"), 2: ("R", "L")}
    seen = set()
    for change in ("roll", "roll", "roll", "transpose", "roll"):
        getattr(viewer.dims, change)()
        v, h = viewer.dims.displayed
        seen.add((v, h))
        assert _letters(widget) == {"top": ends[v][0], "bottom": ends[v][1],
                                    "left": ends[h][0], "right": ends[h][1]}
    assert len(seen) == 5  # the three planes, and two of them transposed
    viewer.dims.ndisplay = 3
    assert set(_letters(widget).values()) == {""}  # no edges in a rotating 3-D view
    assert widget.info.texts["napari_dicom_slice"] == "3-D view"


def test_slice_number_and_position_follow_the_slider(
    opened: tuple[Any, Any, Any], tmp_path: Path,
) -> None:
    viewer, widget, layer = opened
    meta = layer.metadata["dicom"]
    for step in (0, 2, N - 1):
        viewer.dims.set_current_step(0, step)
        path, _frame, _plane = plane_file(meta, layer.data.shape,
                                          layer.world_to_data(viewer.dims.point), False)
        z = float(pydicom.dcmread(path, stop_before_pixels=True).ImagePositionPatient[2])
        # slices numbered as the slider runs (from the top of the patient down)
        assert widget.info.texts["napari_dicom_slice"] == f"Slice {step + 1} / {N}\nz {z:.1f} mm"


def test_window_text_follows_the_window_level_dock(
    opened: tuple[Any, Any, Any], qtbot: Any,
) -> None:
    viewer, widget, layer = opened
    assert _window(widget).startswith("W 400 / L 40 HU")
    _dock, wl = viewer.window.add_plugin_dock_widget(PLUGIN, "Window / Level")
    brain = next(c for c in wl._preset.choices if c.startswith("CT Brain"))
    wl._preset.value = brain
    qtbot.waitUntil(lambda: _window(widget) == "W 80 / L 40 HU\nBrain",
                    timeout=2000)
    wl._width.value = 350.0  # typed by the user: no longer the preset
    qtbot.waitUntil(lambda: _window(widget) == "W 350 / L 40 HU",
                    timeout=2000)
    layer.contrast_limits = (0.0, 99.0)  # the layer controls' slider
    assert _window(widget) == "W 100 / L 50 HU"


def test_value_under_the_cursor_with_its_unit(
    opened: tuple[Any, Any, Any], qtbot: Any,
) -> None:
    viewer, widget, layer = opened
    meta = layer.metadata["dicom"]
    assert meta["placement"]["axes"] == [0, 1, 2]  # axial: layer (k, r, c) = the file's
    canvas = viewer.window._qt_viewer.canvas.native
    for xy in ((canvas.width() // 2, canvas.height() // 2),
               (canvas.width() // 2 + 40, canvas.height() // 2 - 25)):
        _mouse_move(canvas, xy)
        k, r, c = (int(np.floor(v + 0.5)) for v in layer.world_to_data(viewer.cursor.position))
        path, _frame, _plane = plane_file(meta, layer.data.shape, (k, r, c), False)
        ds = pydicom.dcmread(path)
        hu = int(apply_modality_lut(ds.pixel_array, ds)[r, c])
        qtbot.waitUntil(lambda: isinstance(viewer.status, dict)
                        and viewer.status.get("value") not in (None, ""), timeout=5000)
        # napari's status bar: the bare value; the overlay: the value with its unit
        qtbot.waitUntil(lambda hu=hu: float(viewer.status["value"]) == hu, timeout=5000)
        assert widget.info.texts["napari_dicom_window"].endswith(f"\nValue {hu} HU")
    # paging with the mouse still: the value of each new slice under it
    seen = set()
    for step in range(N):
        viewer.dims.set_current_step(0, step)
        k2, r2, c2 = (int(np.floor(v + 0.5))
                      for v in layer.world_to_data(viewer.cursor.position))
        assert (r2, c2) == (r, c)
        path, _frame, _plane = plane_file(meta, layer.data.shape, (k2, r, c), False)
        ds = pydicom.dcmread(path)
        hu = int(apply_modality_lut(ds.pixel_array, ds)[r, c])
        qtbot.waitUntil(lambda hu=hu: widget.info.texts["napari_dicom_window"].endswith(
            f"\nValue {hu} HU"), timeout=2000)
        seen.add(hu)
    assert len(seen) > 1  # (the slices differ there: a stale value would have shown)
    viewer.scene.camera.zoom /= 4  # the image shrinks to the middle of the canvas
    qtbot.wait(100)  # (drawn: vispy maps the next mouse position through the new camera)
    _mouse_move(canvas, (2, 2))  # outside the image: no value
    assert "Value" not in widget.info.texts["napari_dicom_window"]


def test_window_text_after_a_preset_key(opened: tuple[Any, Any, Any], qtbot: Any) -> None:
    from qtpy.QtCore import Qt

    viewer, widget, layer = opened
    _dock, wl = viewer.window.add_plugin_dock_widget(PLUGIN, "Window / Level")
    combo = wl._preset.native
    shown = {combo.itemData(i): combo.itemText(i) for i in range(combo.count())}
    brain = next(v for v in shown if v and v.startswith("CT Brain"))
    key = int(shown[brain].split("Ctrl+")[1].rstrip("]"))
    canvas = viewer.window._qt_viewer.canvas.native
    # a real key press on the canvas: Qt -> vispy -> napari's keymap -> the dock's action
    qtbot.keyClick(canvas, getattr(Qt.Key, f"Key_{key}"), Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: _window(widget) == "W 80 / L 40 HU\nBrain", timeout=2000)
    qtbot.keyClick(canvas, Qt.Key.Key_0, Qt.KeyboardModifier.ControlModifier)  # file default
    ds = pydicom.dcmread(next(iter(layer.metadata["dicom"]["files"])), stop_before_pixels=True)
    first = [v[0] if isinstance(v, MultiValue) else v for v in (ds.WindowWidth, ds.WindowCenter)]
    want = f"W {float(first[0]):g} / L {float(first[1]):g} HU"  # the file's first window
    qtbot.waitUntil(lambda: _window(widget).split("\n")[0] == want, timeout=2000)


def test_closing_the_dock_takes_the_overlays_away(opened: tuple[Any, Any, Any]) -> None:
    viewer, widget, _layer = opened
    assert [k for k in viewer.canvas.overlays if k.startswith("napari_dicom_")]
    viewer.window.remove_dock_widget(widget)
    assert not [k for k in viewer.canvas.overlays if k.startswith("napari_dicom_")]
    viewer.dims.set_current_step(0, 1)  # nothing left listening
    assert not [k for k in viewer.canvas.overlays if k.startswith("napari_dicom_")]
    _dock, again = viewer.window.add_plugin_dock_widget(PLUGIN, INFO)
    assert _letters(again)["top"] == "A"


def test_patient_text_is_off_until_asked(opened: tuple[Any, Any, Any], qtbot: Any) -> None:
    from qtpy.QtCore import QPoint, Qt

    viewer, widget, _layer = opened
    assert "PID-0042" not in "".join(widget.info.texts.values())
    box = widget._boxes["patient"]
    assert not box.isChecked()
    qtbot.mouseClick(box, Qt.MouseButton.LeftButton, pos=QPoint(8, box.height() // 2))
    assert "(PID-0042)" in widget.info.texts["napari_dicom_patient"]
    shown = QPoint(8, widget._shown.height() // 2)
    qtbot.mouseClick(widget._shown, Qt.MouseButton.LeftButton, pos=shown)  # all off
    assert not [k for k in viewer.canvas.overlays if k.startswith("napari_dicom_")]
    qtbot.mouseClick(widget._shown, Qt.MouseButton.LeftButton, pos=shown)
    assert _letters(widget)["top"] == "A"


def test_a_layer_that_is_not_dicom(opened: tuple[Any, Any, Any]) -> None:
    viewer, widget, layer = opened
    n = len(notification_manager.records)
    viewer.add_image(np.zeros((8, 8)), name="plain")
    note = "Layer 'plain' is not a DICOM image layer: nothing to show."
    assert widget.note == note
    assert widget.info.texts["napari_dicom_window"] == "plain: not a DICOM image layer"
    assert not any(widget.info.texts[k] for k in widget.info.texts if k != "napari_dicom_window")
    viewer.layers.selection.active = layer
    assert widget.note == ""
    assert _letters(widget)["right"] == "L"
    assert _errors_since(n) == []


# ------------------------------------------------------------------ tag browser by menu


def _menu_commands(menu: str) -> list[str]:
    return [item.command.id for item in get_app_model().menus.get_menu(menu)
            if hasattr(item, "command")]


def test_tag_browser_from_layers_metadata(opened: tuple[Any, Any, Any], tmp_path: Path) -> None:
    viewer, _widget, layer = opened
    assert "napari-dicom.tag_browser" in _menu_commands(MenuId.LAYERS_METADATA)
    assert "napari-dicom.on_image_info" in _menu_commands(MenuId.LAYERS_VISUALIZE)
    other = viewer.add_image(np.zeros((8, 8)), name="plain")
    viewer.layers.selection.active = layer
    get_app_model().commands.execute_command("napari-dicom.tag_browser").result()
    [name] = [k for k in viewer.window.dock_widgets if "DICOM Tags" in k]
    browser = viewer.window.dock_widgets[name]
    path, _frame, _plane = plane_file(layer.metadata["dicom"], layer.data.shape,
                                      layer.world_to_data(viewer.dims.point), False)
    assert browser.status.endswith(path)  # the selected layer's current file
    viewer.layers.selection.active = other
    assert browser.status == "Layer 'plain' is not a DICOM layer: no DICOM header to show."
    # the files moved away: the browser says it cannot re-read them; the layer is intact
    before = np.asarray(layer.data).copy()
    shutil.move(tmp_path / "axial", tmp_path / "moved")
    viewer.layers.selection.active = layer
    viewer.dims.set_current_step(0, (viewer.dims.current_step[0] + 1) % N)
    assert browser.status.startswith("cannot re-read ") and "no longer there" in browser.status
    assert np.array_equal(np.asarray(layer.data), before)
