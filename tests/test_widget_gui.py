"""The Window / Level dock as a user reaches it: from napari's Plugins menu (so napari's
proxies are in the way), driven by real Qt mouse, wheel and key events (run under xvfb)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from _qtevents import mouse
from napari_dicom.core.phantom import HU_PADDING, write_ct_phantom
from napari_dicom.core.render import window_to_limits


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("phantom")
    write_ct_phantom(folder, n_slices=8, size=64)
    return folder


@pytest.fixture
def docked(make_napari_viewer: Any, phantom_dir: Path, qtbot: Any) -> tuple[Any, Any, Any]:
    viewer = make_napari_viewer(show=True)
    (layer,) = viewer.open(str(phantom_dir), plugin="napari-dicom")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-dicom", "Window / Level")
    qtbot.waitExposed(viewer.window._qt_window)
    return viewer, widget, layer


def _errors_since(n: int) -> list[str]:
    return [
        str(r.message) for r in notification_manager.records[n:]
        if r.severity >= NotificationSeverity.WARNING
    ]


def _inside(layer: Any) -> np.ndarray:
    hu = np.asarray(layer.data)
    return hu[hu != HU_PADDING]


def _drag(canvas: Any, dx: int, dy: int, steps: int = 10) -> None:
    x0, y0 = canvas.width() // 2, canvas.height() // 2
    mouse(canvas, "press", (x0, y0), True)
    for k in range(1, steps + 1):
        mouse(canvas, "move", (x0 + dx * k // steps, y0 + dy * k // steps), True)
    mouse(canvas, "release", (x0 + dx, y0 + dy), False)


def test_widget_from_the_plugins_menu_holds_the_real_layer(docked: tuple[Any, Any, Any]) -> None:
    _viewer, widget, layer = docked
    assert widget.layer is layer  # not a proxy of it: napari's callbacks get the real one
    assert widget._readout.value == "W 400 / L 40"


def test_mouse_drag_on_the_canvas(docked: tuple[Any, Any, Any], qtbot: Any) -> None:
    from qtpy.QtCore import QPoint, Qt

    viewer, widget, layer = docked
    canvas = viewer.window._qt_viewer.canvas.native
    box = widget._drag.native
    qtbot.mouseClick(box, Qt.MouseButton.LeftButton, pos=QPoint(8, box.height() // 2))
    assert widget._drag.value is True
    # independent of the widget: a 1000-pixel drag spans the data's values (no padding)
    inside = _inside(layer)
    per_px = (float(inside.max()) - float(inside.min())) / 1000
    assert 1 < per_px < 5  # a 300-pixel drag: a few hundred HU, not 1 and not 8000
    camera = tuple(viewer.scene.camera.center)

    _drag(canvas, 100, 0)  # right: wider
    assert layer.contrast_limits == pytest.approx(window_to_limits(40, 400 + 100 * per_px))
    _drag(canvas, 0, -50)  # up: higher level
    want = window_to_limits(40 + 50 * per_px, 400 + 100 * per_px)
    assert layer.contrast_limits == pytest.approx(want)
    _drag(canvas, -100000, 0)  # far left: the narrowest LINEAR window, never equal limits
    lo, hi = layer.contrast_limits
    assert widget.window.width == 1 and hi > lo
    assert tuple(viewer.scene.camera.center) == camera  # the drag did not pan
    assert widget._readout.value.startswith("W 1 / L")

    # unticked: the hint goes, a drag pans again and leaves the window alone
    qtbot.mouseClick(box, Qt.MouseButton.LeftButton, pos=QPoint(8, box.height() // 2))
    assert widget._drag.value is False
    qtbot.mouseClick(box, Qt.MouseButton.LeftButton, pos=QPoint(8, box.height() // 2))
    assert widget._status.value.startswith("drag on the canvas")
    qtbot.mouseClick(box, Qt.MouseButton.LeftButton, pos=QPoint(8, box.height() // 2))
    assert widget._drag.value is False and widget._status.value == ""
    before = list(layer.contrast_limits)
    _drag(canvas, 80, 40)
    assert layer.contrast_limits == before
    assert tuple(viewer.scene.camera.center) != camera


def test_typing_a_width(docked: tuple[Any, Any, Any], qtbot: Any) -> None:
    from qtpy.QtCore import Qt

    _viewer, widget, layer = docked
    changes: list[tuple[float, float]] = []
    layer.events.contrast_limits.connect(lambda e: changes.append(tuple(layer.contrast_limits)))
    n = len(notification_manager.records)
    field = widget._width.native
    field.setFocus()
    qtbot.keyClick(field, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClicks(field, "1500")
    qtbot.keyClick(field, Qt.Key.Key_Return)
    assert _errors_since(n) == []
    assert changes == [window_to_limits(40, 1500)]  # no "1", "15", "150" on the way
    assert tuple(layer.contrast_limits) == window_to_limits(40, 1500)
    # a width of 1 (a threshold) is shown, not refused, and never as equal limits
    qtbot.keyClick(field, Qt.Key.Key_A, Qt.KeyboardModifier.ControlModifier)
    qtbot.keyClicks(field, "1")
    qtbot.keyClick(field, Qt.Key.Key_Return)
    assert _errors_since(n) == []
    lo, hi = layer.contrast_limits
    # PS3.3 C.11.2.1.2.1, c 40 w 1: x <= 39.5 black, x > 39.5 white; on integer HU that
    # is 39 black and 40 white, the picture of napari limits (39, 40)
    assert widget.window.width == 1 and (lo, hi) == (39.0, 40.0)


def test_wheel_and_sliders_give_fine_control(docked: tuple[Any, Any, Any], qtbot: Any) -> None:
    from qtpy.QtCore import QPoint, QPointF, Qt
    from qtpy.QtGui import QWheelEvent
    from qtpy.QtWidgets import QApplication

    _viewer, widget, layer = docked
    field = widget._width.native
    pos = QPointF(field.width() / 2, field.height() / 2)
    wheel = QWheelEvent(
        pos, QPointF(field.mapToGlobal(pos.toPoint())), QPoint(0, 0), QPoint(0, 120),
        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase,
        False,
    )
    field.setFocus()
    QApplication.sendEvent(field, wheel)
    step = widget.window.width - 400
    # one wheel notch: a few HU on a CT (about 1/400 of its values), not 1 and not 100
    span = float(np.ptp(_inside(layer)))
    assert span / 1000 <= step <= span / 150
    assert tuple(layer.contrast_limits) == window_to_limits(40, 400 + step)
    # the width slider is logarithmic: one position near a brain window (W 80) moves
    # the width by about 1 %, near a bone window (W 2500) by about 1 % too
    for target in (80, 2500):
        widget._width.value = target
        pos0 = widget._width_slider.value
        widget._width_slider.value = pos0 + 1
        assert 0 < widget.window.width - target < 0.03 * target + 1
    # the centre slider spans the data's own values: a position is 1/1000 of them
    inside = _inside(layer)
    assert widget._center_range == pytest.approx((float(inside.min()), float(inside.max())))
    widget._center_slider.value = 500  # the middle of the data's values
    assert widget.window.center == pytest.approx(
        (float(inside.min()) + float(inside.max())) / 2, abs=float(np.ptp(inside)) / 1000)


def test_contrast_slider_range_spans_the_data(make_napari_viewer: Any, phantom_dir: Path) -> None:
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(phantom_dir), plugin="napari-dicom")
    data = np.asarray(layer.data)
    assert tuple(layer.contrast_limits) == window_to_limits(40, 400)  # the stored window
    assert layer.contrast_limits_range == [float(data.min()), float(data.max())]


def test_no_layer_shows_nothing_of_the_last(docked: tuple[Any, Any, Any]) -> None:
    viewer, widget, layer = docked
    widget._invert.value = True
    rgb = viewer.add_image(np.zeros((8, 8, 3), np.uint8), rgb=True)
    viewer.layers.remove(layer)
    viewer.layers.selection.active = rgb
    assert widget.layer is None and not widget._width.enabled
    assert widget._center.native.text() == "" and widget._width.native.text() == ""
    assert widget._invert.value is False and widget._readout.value == ""
    assert not np.asarray(widget._hist.value).any()  # a blank histogram
    assert "RGB" in widget.reason


def test_long_status_wraps_inside_the_dock(docked: tuple[Any, Any, Any], qtbot: Any) -> None:
    from qtpy.QtWidgets import QApplication

    viewer, widget, _layer = docked
    canvas = viewer.window._qt_viewer.canvas.native
    dock_w, canvas_w = widget.native.width(), canvas.width()
    text = "export failed: " + "/very/long/path/name" * 30 + " is not writable"
    widget._say(text)
    QApplication.processEvents()
    qtbot.wait(50)
    assert widget.native.width() == dock_w and canvas.width() == canvas_w
    # shortened in the middle to the two lines the status has, whole in the tooltip
    label = widget._status.native
    shown = widget._status.value
    assert shown.startswith("export failed: /very/long") and "…" in shown
    assert shown.endswith("is not writable") and label.toolTip() == text
    assert label.heightForWidth(label.width()) <= label.height()  # every line on show


def test_export_without_a_name_asks_for_one(
    docked: tuple[Any, Any, Any], qtbot: Any, tmp_path: Path
) -> None:
    from qtpy.QtCore import Qt, QTimer
    from qtpy.QtWidgets import QApplication, QFileDialog, QLineEdit

    _viewer, widget, layer = docked
    target = tmp_path / "export" / "scan.png"
    target.parent.mkdir()
    seen: list[str] = []

    def answer() -> None:
        dlg = QApplication.activeModalWidget()
        if isinstance(dlg, QFileDialog):  # type the name and press Enter, as a user does
            seen.append(dlg.windowTitle())
            name = dlg.findChild(QLineEdit, "fileNameEdit")
            name.setText(str(target))
            qtbot.keyClick(name, Qt.Key.Key_Return)
        elif len(seen) < 50:
            seen.append("waiting")
            QTimer.singleShot(100, answer)

    QTimer.singleShot(100, answer)
    widget._export.native.click()
    assert [s for s in seen if s != "waiting"] == [f"Export {layer.name} as PNG"]
    pngs = sorted(p.name for p in target.parent.rglob("*.png"))
    assert len(pngs) == layer.data.shape[0] == 8
    assert widget._status.value.startswith(f"wrote {len(pngs)} PNG file(s)")  # no manifest


def test_layers_of_any_value_scale_follow_each_other(docked: tuple[Any, Any, Any]) -> None:
    """Plain float images next to a CT (0..1e-3, 0..1, 0..1e6): the centre slider spans
    each one's values in turn (magicgui's float slider lost its range here: 0..1 became
    0..0.1 and selecting the next layer raised)."""
    viewer, widget, _ct = docked
    n = len(notification_manager.records)
    rng = np.random.default_rng(0)
    for scale in (1e-3, 1.0, 1e6):
        data = rng.random((16, 16)) * scale
        layer = viewer.add_image(data, name=f"x{scale:g}", units="mm")  # as the CT
        assert widget.layer is layer
        lo, hi = widget._center_range
        assert (lo, hi) == pytest.approx((data.min(), data.max()))
        widget._center_slider.value = 250  # a quarter of the way up the values
        c = widget.window.center
        assert c == pytest.approx(lo + (hi - lo) / 4, rel=1e-3)
        assert tuple(layer.contrast_limits) == pytest.approx(
            (c - widget.window.width / 2, c + widget.window.width / 2))
    viewer.layers.selection.active = viewer.layers["x0.001"]  # back to the smallest
    assert widget._center_range == pytest.approx(
        (viewer.layers["x0.001"].data.min(), viewer.layers["x0.001"].data.max()))
    assert _errors_since(n) == []
