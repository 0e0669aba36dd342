"""Keyboard and mouse habits of the Window / Level dock, through napari's own doors (run
under xvfb): preset keys pressed on the canvas go through napari's key handling, wheel
events on the vispy canvas, napari's roll key for reformats, and real X mouse input
(xdotool) for the window/level drag; plus the "current slice" statistics, which must be
the plane napari shows (sagittal acquisitions, rolled dims)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from napari_dicom.core.phantom import write_ct_phantom
from napari_dicom.core.presets import CT_PRESETS
from napari_dicom.core.render import window_to_limits

PLUGIN = "napari-dicom"
WIDGET = "Window / Level"


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("phantom")
    write_ct_phantom(folder, n_slices=8, size=64)
    return folder


@pytest.fixture
def docked(make_napari_viewer: Any, phantom_dir: Path, qtbot: Any) -> tuple[Any, Any, Any, Any]:
    viewer = make_napari_viewer(show=True)
    (layer,) = viewer.open(str(phantom_dir), plugin=PLUGIN)
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    qtbot.waitExposed(viewer.window._qt_window)
    return viewer, dock, widget, layer


def _errors_since(n: int) -> list[str]:
    return [
        str(r.message) for r in notification_manager.records[n:]
        if r.severity >= NotificationSeverity.WARNING
    ]


def _canvas(viewer: Any) -> Any:
    return viewer.window._qt_viewer.canvas.native


def _key(viewer: Any, qtbot: Any, key: Any, ctrl: bool = False) -> None:
    """A real key press and release on the canvas: Qt -> vispy -> napari's keymap."""
    from qtpy.QtCore import Qt

    mod = Qt.KeyboardModifier.ControlModifier if ctrl else Qt.KeyboardModifier.NoModifier
    qtbot.keyClick(_canvas(viewer), key, mod)


def _digit(n: int) -> Any:
    from qtpy.QtCore import Qt

    return getattr(Qt.Key, f"Key_{n}")


def _wheel(viewer: Any, notches: int, ctrl: bool = False, at: tuple[float, float] | None = None
           ) -> None:
    """A real QWheelEvent (120 units a notch; > 0 away from the user) on the canvas."""
    from qtpy.QtCore import QPoint, QPointF, Qt
    from qtpy.QtGui import QWheelEvent
    from qtpy.QtWidgets import QApplication

    canvas = _canvas(viewer)
    pos = QPointF(*(at or (canvas.width() / 2, canvas.height() / 2)))
    mod = Qt.KeyboardModifier.ControlModifier if ctrl else Qt.KeyboardModifier.NoModifier
    ev = QWheelEvent(pos, QPointF(canvas.mapToGlobal(pos.toPoint())), QPoint(0, 0),
                     QPoint(0, 120 * notches), Qt.MouseButton.NoButton, mod,
                     Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(canvas, ev)
    QApplication.processEvents()


def _stored_window(folder: Path) -> tuple[float, float]:
    """The first Window Center / Width of the series, read with pydicom."""
    ds = pydicom.dcmread(next(p for p in sorted(folder.iterdir()) if p.is_file()),
                         stop_before_pixels=True)
    c = ds.WindowCenter[0] if ds["WindowCenter"].VM > 1 else ds.WindowCenter
    w = ds.WindowWidth[0] if ds["WindowWidth"].VM > 1 else ds.WindowWidth
    return float(c), float(w)


# ------------------------------------------------------------------------------ keys


def test_number_keys_apply_the_presets_the_list_shows(
    docked: tuple[Any, Any, Any, Any], phantom_dir: Path, qtbot: Any
) -> None:
    viewer, _dock, widget, layer = docked
    n = len(notification_manager.records)
    combo = widget._preset.native
    shown = {combo.itemData(i): combo.itemText(i) for i in range(combo.count())}
    # the list shows each keyed preset's key; the entries keep their names as values
    brain = "CT Brain: W 80 / L 40"
    key_of_brain = next(int(t.split("Ctrl+")[1].rstrip("]")) for v, t in shown.items()
                        if v == brain)
    assert shown["reset to file default"].endswith("[Ctrl+0]")
    assert "Ctrl+1" in widget._keys_hint.value and "Ctrl+0" in widget._keys_hint.value

    _key(viewer, qtbot, _digit(key_of_brain), ctrl=True)
    b = CT_PRESETS["brain"]
    assert tuple(layer.contrast_limits) == pytest.approx(window_to_limits(b.center, b.width))
    assert widget._preset.value == brain

    # key 1: the first entry, the file's own first window (as pydicom reads it)
    _key(viewer, qtbot, _digit(1), ctrl=True)
    c, w = _stored_window(phantom_dir)
    assert tuple(layer.contrast_limits) == pytest.approx(window_to_limits(c, w))

    # a lung window, then Ctrl+0: back to the file default
    lung = next(v for v, t in shown.items() if v and v.startswith("CT Lung"))
    key_of_lung = int(shown[lung].split("Ctrl+")[1].rstrip("]"))
    _key(viewer, qtbot, _digit(key_of_lung), ctrl=True)
    lw = CT_PRESETS["lung"]
    assert tuple(layer.contrast_limits) == pytest.approx(window_to_limits(lw.center, lw.width))
    _key(viewer, qtbot, _digit(0), ctrl=True)
    assert tuple(layer.contrast_limits) == pytest.approx(window_to_limits(c, w))
    assert _errors_since(n) == []


def test_preset_keys_leave_napari_keys_alone_and_go_with_the_widget(
    docked: tuple[Any, Any, Any, Any], qtbot: Any
) -> None:
    from napari._qt.widgets.qt_keyboard_settings import ShortcutEditor

    viewer, dock, _widget, layer = docked
    start = tuple(layer.contrast_limits)
    # napari 0.9's own Image-layer keys 2 (transform) and 1 (pan/zoom) still work
    _key(viewer, qtbot, _digit(2))
    assert layer.mode == "transform"
    _key(viewer, qtbot, _digit(1))
    assert layer.mode == "pan_zoom"
    assert tuple(layer.contrast_limits) == start

    # napari's shortcut editor (Preferences > Shortcuts) lists them in the Image layer group
    editor = ShortcutEditor()
    listed = {a.description for a in editor.key_bindings_strs["Image layer"].values()}
    assert "Window / Level: preset 1 (napari-dicom)" in listed
    assert "Window / Level: reset to file default (napari-dicom)" in listed
    editor.deleteLater()

    # another layer selected (not an image): the key does nothing to the image
    points = viewer.add_points([[0, 10, 10]])
    viewer.layers.selection.active = points
    _key(viewer, qtbot, _digit(3), ctrl=True)
    assert tuple(layer.contrast_limits) == start
    viewer.layers.selection.active = layer
    _key(viewer, qtbot, _digit(3), ctrl=True)
    assert tuple(layer.contrast_limits) != start

    # the dock closed with napari's close button: the keys go with it, and the wheel
    # option gives napari its wheel back
    _widget._wheel.value = True
    assert all(getattr(cb, "__name__", "") != "dims_scroll"
               for cb in viewer.mouse_wheel_callbacks)
    before = tuple(layer.contrast_limits)
    dock.title.close_button.click()
    qtbot.wait(10)
    _key(viewer, qtbot, _digit(4), ctrl=True)
    assert tuple(layer.contrast_limits) == before
    names = [getattr(cb, "__name__", "") for cb in viewer.mouse_wheel_callbacks]
    assert "dims_scroll" in names and "wheel_page" not in names


def test_a_key_the_user_chose_in_napari_settings_is_used(
    make_napari_viewer: Any, phantom_dir: Path, qtbot: Any
) -> None:
    """Preferences > Shortcuts keeps a user's choice in napari's settings and rebinds the
    action: bare 3 for preset 3 (free on Image layers) replaces Ctrl+3, in the list and on
    the canvas, also for a widget opened later."""
    from napari.settings import get_settings
    from napari.utils.action_manager import action_manager

    viewer = make_napari_viewer(show=True)
    (layer,) = viewer.open(str(phantom_dir), plugin=PLUGIN)
    dock, _ = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    viewer.window.remove_dock_widget(dock)
    name = "napari-dicom:window_preset_3"
    shortcuts = get_settings().shortcuts
    shortcuts.shortcuts = {**shortcuts.shortcuts, name: ["3"]}
    action_manager.unbind_shortcut(name)  # what the shortcut editor does on a change
    try:
        _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
        qtbot.waitExposed(viewer.window._qt_window)
        combo = widget._preset.native
        third = combo.itemData(3)
        assert combo.itemText(3) == f"{third}    [3]"
        start = tuple(layer.contrast_limits)
        _key(viewer, qtbot, _digit(3), ctrl=True)
        assert tuple(layer.contrast_limits) == start  # Ctrl+3 is not bound any more
        _key(viewer, qtbot, _digit(3))
        assert widget._preset.value == third
        assert tuple(layer.contrast_limits) != start
    finally:  # back to the default for the tests that follow
        shortcuts.shortcuts = {k: v for k, v in shortcuts.shortcuts.items() if k != name}
        action_manager.unbind_shortcut(name)
        action_manager.bind_shortcut(name, "Ctrl-3")


# ------------------------------------------------------------------------------ wheel


def test_wheel_pages_slices_when_ticked_and_ctrl_wheel_zooms(
    docked: tuple[Any, Any, Any, Any], qtbot: Any
) -> None:
    from qtpy.QtCore import QPoint, Qt

    viewer, _dock, widget, _layer = docked
    axis = viewer.dims.not_displayed[0]
    step0 = viewer.dims.current_step[axis]
    z0 = viewer.scene.camera.zoom
    # unticked: napari's own wheel zooms, and gives the zoom of one notch
    _wheel(viewer, 1)
    napari_notch = viewer.scene.camera.zoom / z0
    assert napari_notch > 1.05 and viewer.dims.current_step[axis] == step0

    box = widget._wheel.native
    qtbot.mouseClick(box, Qt.MouseButton.LeftButton, pos=QPoint(8, box.height() // 2))
    assert widget._wheel.value is True
    z1 = viewer.scene.camera.zoom
    _wheel(viewer, -1)  # towards the user: next slice
    assert viewer.dims.current_step[axis] == step0 + 1
    _wheel(viewer, 1)
    _wheel(viewer, 1)
    assert viewer.dims.current_step[axis] == step0 - 1
    assert viewer.scene.camera.zoom == z1  # paging does not zoom
    for _ in range(viewer.dims.nsteps[axis] + 2):  # past the last slice: stops there
        _wheel(viewer, -1)
    assert viewer.dims.current_step[axis] == viewer.dims.nsteps[axis] - 1

    # Ctrl+wheel zooms by napari's own notch, about the cursor, and does not page
    last = viewer.dims.current_step[axis]
    canvas = _canvas(viewer)
    _wheel(viewer, 1, ctrl=True, at=(canvas.width() * 0.75, canvas.height() * 0.5))
    assert viewer.scene.camera.zoom / z1 == pytest.approx(napari_notch, rel=1e-6)
    assert viewer.dims.current_step[axis] == last

    # unticked again: napari's wheel zooms, its Ctrl+wheel pages
    qtbot.mouseClick(box, Qt.MouseButton.LeftButton, pos=QPoint(8, box.height() // 2))
    z2 = viewer.scene.camera.zoom
    _wheel(viewer, 1)
    assert viewer.scene.camera.zoom == pytest.approx(z2 * napari_notch)
    _wheel(viewer, 1, ctrl=True)
    assert viewer.dims.current_step[axis] == last - 1


def test_ctrl_wheel_keeps_the_point_under_the_cursor(
    docked: tuple[Any, Any, Any, Any], qtbot: Any
) -> None:
    """The world point under the cursor is where it was after a Ctrl+wheel zoom."""
    viewer, _dock, widget, _layer = docked
    widget._wheel.value = True
    canvas = _canvas(viewer)
    at = (canvas.width() * 0.7, canvas.height() * 0.3)
    qt_canvas = viewer.window._qt_viewer.canvas

    def world_at() -> np.ndarray:
        return np.asarray(qt_canvas._map_canvas2world(at, qt_canvas.view))

    before = world_at()
    _wheel(viewer, 2, ctrl=True, at=at)
    assert world_at() == pytest.approx(before, abs=0.05)


# ------------------------------------------------------------------- shown plane


@pytest.fixture(scope="module")
def ramp_series(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One HU volume ``100 k + 10 r + c`` written with pydicom as an axial, a sagittal and
    a coronal acquisition: every plane along every axis has its own value range."""
    root = tmp_path_factory.mktemp("ramp")
    n = 12
    k, r, c = np.meshgrid(np.arange(n), np.arange(n), np.arange(n), indexing="ij")
    vol = (100 * k + 10 * r + c).astype(np.int16)
    write_ct_phantom(root / "axial", n_slices=n, size=n, volume=vol, noise=0.0,
                     spacing=(2.0, 1.0, 1.0))
    write_ct_phantom(root / "sagittal", n_slices=n, size=n, volume=vol, noise=0.0,
                     spacing=(1.0, 2.0, 1.0), orientation=(0, 1, 0, 0, 0, -1))
    write_ct_phantom(root / "coronal", n_slices=n, size=n, volume=vol, noise=0.0,
                     spacing=(1.5, 2.0, 1.0), orientation=(1, 0, 0, 0, 0, -1))
    return {name: root / name for name in ("axial", "sagittal", "coronal")}


def _shown_values(viewer: Any, layer: Any) -> np.ndarray:
    """The values napari shows: ``layer.get_value`` (napari's own world to data mapping)
    at every pixel centre of the displayed plane at the slider point."""
    dims = viewer.dims
    a, b = dims.displayed
    point = np.asarray(dims.point, dtype=float)
    values = []
    for x in np.arange(dims.range[a].start, dims.range[a].stop + 1e-9, dims.range[a].step):
        for y in np.arange(dims.range[b].start, dims.range[b].stop + 1e-9, dims.range[b].step):
            p = point.copy()
            p[a], p[b] = x, y
            v = layer.get_value(p, world=True)
            if v is not None:
                values.append(float(v))
    assert len(values) >= 100
    return np.asarray(values)


def _shown_range(viewer: Any, layer: Any) -> tuple[float, float]:
    values = _shown_values(viewer, layer)
    return float(values.min()), float(values.max())


@pytest.mark.parametrize("plane", ["axial", "sagittal", "coronal"])
def test_current_slice_statistics_use_the_plane_napari_shows(
    make_napari_viewer: Any, ramp_series: dict[str, Path], plane: str, qtbot: Any
) -> None:
    viewer = make_napari_viewer(show=True)
    (layer,) = viewer.open(str(ramp_series[plane]), plugin=PLUGIN)
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    qtbot.waitExposed(viewer.window._qt_window)
    widget._scope.value = "current slice"
    seen = set()
    for roll in range(3):
        if roll:
            _key(viewer, qtbot, _ctrl_e(), ctrl=True)  # napari's "roll axes" key
        assert tuple(viewer.dims.order) == tuple(np.roll([0, 1, 2], roll))
        viewer.dims.set_current_step(viewer.dims.not_displayed[0], 3)
        lo, hi = _shown_range(viewer, layer)
        seen.add((lo, hi))
        widget._preset.value = "(custom)"
        widget._preset.value = "min-max"
        assert tuple(layer.contrast_limits) == pytest.approx((lo, hi)), viewer.dims.order
        assert widget._hist_note.value.startswith(f"slice: {lo:g} .. {hi:g}")
        # the percentile stretch of the current slice: numpy's percentiles of what is shown
        widget._apply.native.click()
        want = np.percentile(_shown_values(viewer, layer), [1, 99])
        assert tuple(layer.contrast_limits) == pytest.approx(tuple(want))
        # live: the histogram follows the slider on the rolled axis too
        viewer.dims.set_current_step(viewer.dims.not_displayed[0], 5)
        lo5, hi5 = _shown_range(viewer, layer)
        assert widget._hist_note.value.startswith(f"slice: {lo5:g} .. {hi5:g}")
    assert len(seen) == 3  # three different planes were checked


def _ctrl_e() -> Any:
    from qtpy.QtCore import Qt

    return Qt.Key.Key_E


# ------------------------------------------------------------ real X mouse input


def _xdotool_reason() -> str:
    if shutil.which("xdotool") is None:
        return "xdotool is not installed (scripts/setup-debian.sh installs it)"
    if not os.environ.get("DISPLAY"):
        return "no X display (run under xvfb-run)"
    return ""


def test_drag_on_canvas_with_real_x_mouse_input(
    docked: tuple[Any, Any, Any, Any], qtbot: Any
) -> None:
    """xdotool moves the X server's pointer and presses its button: X -> Qt -> vispy ->
    napari -> the widget's drag callback, as a user's mouse would."""
    from qtpy.QtCore import QPoint, Qt
    from qtpy.QtGui import QGuiApplication

    reason = _xdotool_reason()
    if reason or QGuiApplication.platformName() != "xcb":
        pytest.skip(reason or f"Qt runs on {QGuiApplication.platformName()!r}, not on X")
    viewer, _dock, widget, layer = docked
    window = viewer.window._qt_window
    window.raise_()
    window.activateWindow()
    box = widget._drag.native
    qtbot.mouseClick(box, Qt.MouseButton.LeftButton, pos=QPoint(8, box.height() // 2))
    assert widget._drag.value is True
    w0 = widget.window
    hu = np.asarray(layer.data)
    inside = hu[hu != hu.min()]
    per_px = (float(inside.max()) - float(inside.min())) / 1000  # DRAG_SPAN_PIXELS
    canvas = _canvas(viewer)
    centre = canvas.mapToGlobal(QPoint(canvas.width() // 2, canvas.height() // 2))
    x0, y0 = centre.x(), centre.y()

    def xdo(*args: object) -> None:
        subprocess.run(["xdotool", *map(str, args)], check=True, timeout=10)
        qtbot.wait(30)  # let Qt read the X events

    xdo("mousemove", x0, y0)
    xdo("mousedown", 1)
    for k in range(1, 11):
        xdo("mousemove", x0 + 12 * k, y0 - 5 * k)  # right 120 px, up 50 px
    xdo("mouseup", 1)
    qtbot.waitUntil(lambda: widget.window is not None and widget.window.width != w0.width,
                    timeout=3000)
    # right widens, up raises the level; X pointer moves land on whole pixels
    assert widget.window.width == pytest.approx(w0.width + 120 * per_px, abs=2 * per_px)
    assert widget.window.center == pytest.approx(w0.center + 50 * per_px, abs=2 * per_px)
    assert tuple(layer.contrast_limits) == pytest.approx(
        window_to_limits(widget.window.center, widget.window.width))
