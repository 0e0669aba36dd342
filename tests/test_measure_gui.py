"""The Measure dock as a user reaches it (napari's Plugins menu), on series written with
pydicom in tmp_path with known Pixel Spacing and known values; shapes drawn through the
Shapes layer's API and with real Qt mouse events on the canvas (run under xvfb)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from napari.utils.notifications import NotificationSeverity, notification_manager

from _qtevents import mouse
from napari_dicom.core.measure import HEADERS
from napari_dicom.core.phantom import HU_LIVER, HU_SOFT, ct_phantom_volume, write_ct_phantom

SPACING = (2.0, 0.6, 0.8)  # slice, row, column (mm): rows and columns differ on purpose
SIZE = 64


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The phantom without noise: its regions hold exactly the HU written."""
    folder = tmp_path_factory.mktemp("phantom")
    write_ct_phantom(folder, n_slices=6, size=SIZE, spacing=SPACING, noise=0)
    return folder


def _open(make_napari_viewer: Any, folder: Path, show: bool = False) -> tuple[Any, Any, Any]:
    viewer = make_napari_viewer(show=show)
    (layer,) = viewer.open(str(folder), plugin="napari-dicom")
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-dicom", "Measure")
    return viewer, widget, layer


def _world(layer: Any, k: float, r: float, c: float) -> np.ndarray:
    """The world point of the image layer's data index (k, r, c): where napari draws it."""
    return np.asarray(layer.data_to_world([k, r, c]), dtype=float)


def _box(layer: Any, k: int, r0: float, c0: float, r1: float, c1: float) -> np.ndarray:
    return np.array([_world(layer, k, r0, c0), _world(layer, k, r0, c1),
                     _world(layer, k, r1, c1), _world(layer, k, r1, c0)])


def _in(shapes: Any, world: np.ndarray) -> np.ndarray:
    """World points as the Shapes layer's data (it may be placed like the image)."""
    return np.array([shapes.world_to_data(p) for p in world])


def _show_slice(viewer: Any, layer: Any, k: int) -> None:
    viewer.dims.set_point(0, float(_world(layer, k, 0, 0)[0]))


def _rows(widget: Any) -> list[dict[str, str]]:
    widget.refresh()
    return [dict(zip(HEADERS, r, strict=True)) for r in widget.table_text()]


def _warnings_since(n: int) -> list[str]:
    return [str(r.message) for r in notification_manager.records[n:]
            if r.severity >= NotificationSeverity.WARNING]


def _uniform_block(hu: np.ndarray, value: int, half: int = 3) -> tuple[int, int, int]:
    """A slice and the centre of a (2 half + 1)^2 block of ``hu`` that is all ``value``."""
    for k in range(hu.shape[0]):
        for r in range(half, hu.shape[1] - half):
            for c in range(half, hu.shape[2] - half):
                if np.all(hu[k, r - half:r + half + 1, c - half:c + half + 1] == value):
                    return k, r, c
    raise AssertionError(f"no uniform {value} HU block in the phantom")


# ---------------------------------------------------------------------------------------


def test_line_over_known_pixels_is_the_expected_mm(
    make_napari_viewer: Any, phantom_dir: Path
) -> None:
    viewer, widget, layer = _open(make_napari_viewer, phantom_dir)
    shapes = widget.new_shapes_layer()
    k = 2
    _show_slice(viewer, layer, k)
    # 20 columns along a row, 15 rows down a column, and a 3-4 diagonal
    shapes.add_lines(_in(shapes, np.array([_world(layer, k, 10, 10), _world(layer, k, 10, 30)])))
    shapes.add_lines(_in(shapes, np.array([_world(layer, k, 5, 40), _world(layer, k, 20, 40)])))
    shapes.add_paths(_in(shapes, np.array([_world(layer, k, 30, 30), _world(layer, k, 33, 34),
                               _world(layer, k, 33, 44)])))
    rows = _rows(widget)
    assert [r["Length"] for r in rows[:2]] == [f"{20 * SPACING[2]:.2f} mm",
                                               f"{15 * SPACING[1]:.2f} mm"]
    diagonal = math.hypot(3 * SPACING[1], 4 * SPACING[2]) + 10 * SPACING[2]
    assert rows[2]["Length"] == f"{diagonal:.2f} mm"
    assert rows[2]["Shape"] == "path" and rows[2]["Note"] == "2 segments"
    # where napari's slider and status bar say the slice is: its I position in mm
    assert all(r["Slice"] == f"I {_world(layer, k, 0, 0)[0]:.4g} mm" for r in rows)
    assert "HU" in widget.status and layer.name in widget.status


def test_mean_hu_in_a_uniform_region_is_the_written_value(
    make_napari_viewer: Any, phantom_dir: Path
) -> None:
    viewer, widget, layer = _open(make_napari_viewer, phantom_dir)
    hu = ct_phantom_volume(6, SIZE, noise=0)
    np.testing.assert_array_equal(np.asarray(layer.data), hu)  # the layer holds what was written
    k, r, c = _uniform_block(hu, HU_LIVER)
    _show_slice(viewer, layer, k)
    shapes = widget.new_shapes_layer()
    # a rectangle over pixel edges: exactly the 7 x 7 block's pixel centres are inside
    shapes.add_rectangles(_in(shapes, _box(layer, k, r - 3.5, c - 3.5, r + 3.5, c + 3.5)))
    shapes.add_ellipses(_in(shapes, _box(layer, k, r - 3.5, c - 3.5, r + 3.5, c + 3.5)))
    rect, ell = _rows(widget)
    pixel = SPACING[1] * SPACING[2]
    assert rect["Mean"] == f"{HU_LIVER:.2f}" and rect["SD"] == "0.00"
    assert rect["Min"] == rect["Max"] == f"{HU_LIVER}" and rect["Unit"] == "HU"
    assert rect["Pixels"] == "49"
    assert rect["Area"] == f"{49 * pixel:.2f} mm²" == rect["Pixel area"]
    assert ell["Mean"] == f"{HU_LIVER:.2f}" and ell["SD"] == "0.00"
    # the drawn ellipse's area is exact (pi a b); its pixels' area differs by the outline
    assert ell["Area"] == f"{math.pi * 3.5 * 3.5 * pixel:.2f} mm²"
    assert 0 < int(ell["Pixels"]) < 49


def test_rotated_series_maps_shapes_through_its_affine(
    make_napari_viewer: Any, tmp_path: Path
) -> None:
    """A series rotated 30 degrees within the axial plane is placed by its affine: shapes
    drawn on it (in world) are mapped back to its pixels and its spacing."""
    a = math.radians(30)
    write_ct_phantom(tmp_path, n_slices=4, size=SIZE, spacing=SPACING, noise=0,
                     orientation=(math.cos(a), math.sin(a), 0.0, -math.sin(a), math.cos(a), 0.0))
    viewer, widget, layer = _open(make_napari_viewer, tmp_path)
    assert layer.metadata["dicom"]["placement"]["kind"] == "affine"
    hu = ct_phantom_volume(4, SIZE, noise=0)
    k, r, c = _uniform_block(hu, HU_SOFT, half=2)
    _show_slice(viewer, layer, k)
    shapes = widget.new_shapes_layer()
    shapes.add_polygons(_in(shapes, _box(layer, k, r - 2.5, c - 2.5, r + 2.5, c + 2.5)))
    ends = np.array([_world(layer, k, r - 2, c - 2), _world(layer, k, r + 1, c + 2)])
    shapes.add_lines(_in(shapes, ends))
    poly, line = _rows(widget)
    assert poly["Mean"] == f"{HU_SOFT:.2f}" and poly["SD"] == "0.00" and poly["Pixels"] == "25"
    assert poly["Area"] == f"{25 * SPACING[1] * SPACING[2]:.2f} mm²"
    assert line["Length"] == f"{math.hypot(3 * SPACING[1], 4 * SPACING[2]):.2f} mm"


def test_table_follows_the_slider_for_a_2d_shapes_layer(
    make_napari_viewer: Any, tmp_path: Path, qtbot: Any
) -> None:
    """Slice k holds 100 + 10 k HU everywhere: a rectangle in a 2-D Shapes layer (shown on
    every slice) reads the slice the slider shows, and the table updates by itself."""
    volume = (100 + 10 * np.arange(5, dtype=np.int16))[:, None, None] * np.ones(
        (5, 32, 32), dtype=np.int16)
    write_ct_phantom(tmp_path, n_slices=5, size=32, spacing=SPACING, volume=volume, noise=0)
    viewer, widget, layer = _open(make_napari_viewer, tmp_path)
    corners = _box(layer, 0, 4.5, 4.5, 10.5, 12.5)[:, 1:]
    viewer.add_shapes(corners, shape_type="rectangle", name="2-D shapes")
    for k in (1, 4, 2):
        _show_slice(viewer, layer, k)
        want = f"{100 + 10 * k:.2f}"
        qtbot.waitUntil(lambda want=want: [r[HEADERS.index("Mean")]
                                           for r in widget.table_text()] == [want],
                        timeout=3000)
        assert widget.rows[0].slice == f"I {_world(layer, k, 0, 0)[0]:.4g} mm"
        assert widget.rows[0].pixels == 6 * 8


def test_bad_input_says_what_was_measured_or_why_not(
    make_napari_viewer: Any, phantom_dir: Path
) -> None:
    seen = len(notification_manager.records)
    viewer, widget, layer = _open(make_napari_viewer, phantom_dir)
    k = 1
    _show_slice(viewer, layer, k)
    shapes = widget.new_shapes_layer()
    # far outside the image's rows and columns, and partly outside
    shapes.add_rectangles(_in(shapes, _box(layer, k, 200, 200, 210, 210)))
    shapes.add_rectangles(_in(shapes, _box(layer, k, -5.5, -5.5, 2.5, 2.5)))
    out, part = _rows(widget)
    assert out["Note"].startswith("outside the image: no pixel") and out["Mean"] == ""
    assert out["Area"] == f"{100 * SPACING[1] * SPACING[2]:.2f} mm²"
    assert "partly outside the image" in part["Note"] and part["Pixels"] == "9"
    # 3-D view
    viewer.dims.ndisplay = 3
    assert all(r["Note"].startswith("not measured: 3-D view") for r in _rows(widget))
    assert "3-D view" in widget.status
    viewer.dims.ndisplay = 2
    # a layer that is not DICOM, and an RGB one, chosen in the combo
    viewer.add_image(np.full((6, SIZE, SIZE), 7.0), name="plain", scale=layer.scale,
                     translate=layer.translate, units=("mm",) * 3)
    widget._image.setCurrentText("plain")
    row = _rows(widget)[1]
    assert row["Mean"] == "7.00" and "plain is not a DICOM layer" in row["Note"]
    viewer.add_image(np.zeros((SIZE, SIZE, 3), dtype=np.uint8), name="photo", rgb=True,
                     units=("mm",) * 2)
    widget._image.setCurrentText("photo")
    _rows(widget)
    assert widget.status == "Measuring on 'photo' (RGB: lengths and areas only)."
    # no image at all
    for name in ("plain", "photo", layer.name):
        viewer.layers.remove(name)
    rows = _rows(widget)
    assert {r["Note"] for r in rows} == {"not measured: no image layer to measure on"}
    assert widget.status.startswith("No image layer")
    assert _warnings_since(seen) == []


def test_rgb_layer_gives_area_but_no_values(make_napari_viewer: Any) -> None:
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((40, 50, 3), dtype=np.uint8), name="photo", rgb=True,
                     scale=(0.5, 0.5), units=("mm", "mm"))
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-dicom", "Measure")
    shapes = viewer.add_shapes(ndim=2)
    shapes.add_rectangles(np.array([[4.75, 4.75], [4.75, 9.75], [9.75, 9.75], [9.75, 4.75]]))
    (row,) = _rows(widget)
    assert row["Note"].startswith("RGB image: no value statistics")
    assert row["Pixels"] == "100" and row["Area"] == "25.00 mm²" and row["Mean"] == ""


def test_copy_table_puts_tab_separated_rows_on_the_clipboard(
    make_napari_viewer: Any, phantom_dir: Path, qtbot: Any
) -> None:
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication

    viewer, widget, layer = _open(make_napari_viewer, phantom_dir)
    hu = ct_phantom_volume(6, SIZE, noise=0)
    k, r, c = _uniform_block(hu, HU_LIVER)
    _show_slice(viewer, layer, k)
    shapes = widget.new_shapes_layer()
    shapes.add_rectangles(_in(shapes, _box(layer, k, r - 1.5, c - 1.5, r + 1.5, c + 1.5)))
    widget.refresh()
    qtbot.mouseClick(widget._copy, Qt.MouseButton.LeftButton)
    text = QApplication.clipboard().text()
    head, row, *rest = text.splitlines()
    assert rest == []
    assert head.split("\t") == list(HEADERS)
    cells = dict(zip(HEADERS, row.split("\t"), strict=True))
    assert cells["Mean"] == f"{HU_LIVER:.2f}" and cells["Pixels"] == "9"
    assert cells["Unit"] == "HU" and cells["Shape"] == "rectangle"
    # Ctrl+C in the table copies the same table
    QApplication.clipboard().setText("")
    widget._table.setFocus()
    qtbot.keyClick(widget._table, Qt.Key.Key_C, Qt.KeyboardModifier.ControlModifier)
    assert QApplication.clipboard().text() == text


def test_measure_in_napari_layers_measure_menu(make_napari_viewer: Any) -> None:
    from napari._app_model import get_app_model
    from napari._app_model.constants import MenuId

    make_napari_viewer()
    items = get_app_model().menus.get_menu(MenuId.LAYERS_MEASURE)
    assert "napari-dicom.measure" in [i.command.id for i in items if hasattr(i, "command")]


# ---------------------------------------------------------------------------------------
# real mouse events on the canvas


def _drag(canvas: Any, start: tuple[int, int], end: tuple[int, int], steps: int = 8) -> None:
    mouse(canvas, "move", start, False)
    mouse(canvas, "press", start, True)
    for i in range(1, steps + 1):
        mouse(canvas, "move", (start[0] + (end[0] - start[0]) * i // steps,
                                start[1] + (end[1] - start[1]) * i // steps), True)
    mouse(canvas, "release", end, False)


def test_shapes_drawn_with_the_mouse_are_measured(
    make_napari_viewer: Any, tmp_path: Path, qtbot: Any
) -> None:
    """A rectangle and a line drawn with real mouse drags in the Shapes layer's add modes:
    the rectangle over a uniform 55 HU region reads 55 HU, SD 0, and exactly the pixels
    whose centres napari's world-to-data map puts inside it; the line's length is the
    distance between its ends."""
    volume = np.full((3, SIZE, SIZE), 55, dtype=np.int16)
    volume[:, :4, :] = -1000
    write_ct_phantom(tmp_path, n_slices=3, size=SIZE, spacing=SPACING, volume=volume, noise=0)
    viewer, widget, layer = _open(make_napari_viewer, tmp_path, show=True)
    qtbot.waitExposed(viewer.window._qt_window)
    viewer.reset_view()
    shapes = widget.new_shapes_layer()
    canvas = viewer.window._qt_viewer.canvas.native
    x0, y0 = canvas.width() // 2, canvas.height() // 2
    shapes.mode = "add_rectangle"
    _drag(canvas, (x0 - 40, y0 - 30), (x0 + 50, y0 + 35))
    shapes.mode = "add_line"
    _drag(canvas, (x0 - 60, y0 + 60), (x0 + 70, y0 + 60))
    assert list(shapes.shape_type) == ["rectangle", "line"]
    qtbot.waitUntil(lambda: len(widget.table_text()) == 2, timeout=3000)
    rect, line = _rows(widget)
    # independent: the pixels whose centres lie between the rectangle's corners
    corners = np.array([layer.world_to_data(shapes.data_to_world(v)) for v in shapes.data[0]])
    lo, hi = corners[:, 1:].min(axis=0), corners[:, 1:].max(axis=0)
    rows = np.arange(SIZE)[(np.arange(SIZE) > lo[0]) & (np.arange(SIZE) < hi[0])]
    cols = np.arange(SIZE)[(np.arange(SIZE) > lo[1]) & (np.arange(SIZE) < hi[1])]
    assert len(rows) > 5 and len(cols) > 5
    assert rect["Pixels"] == str(len(rows) * len(cols))
    assert rect["Mean"] == "55.00" and rect["SD"] == "0.00" and rect["Unit"] == "HU"
    ends = np.array([shapes.data_to_world(v) for v in shapes.data[1]])
    assert line["Length"] == f"{float(np.linalg.norm(ends[1] - ends[0])):.2f} mm"
    assert float(line["Length"].split()[0]) > 5


def test_coronal_view_reads_the_plane_the_dims_order_shows(
    make_napari_viewer: Any, phantom_dir: Path
) -> None:
    """napari's dims order rolled to a coronal view (I and L displayed, the slider on P):
    a rectangle drawn there reads the image's rows at that P, across its slices, and its
    area uses the slice spacing and the column spacing."""
    viewer, widget, layer = _open(make_napari_viewer, phantom_dir)
    viewer.dims.order = (1, 0, 2)
    assert tuple(viewer.dims.displayed) == (0, 2)
    hu = ct_phantom_volume(6, SIZE, noise=0)
    r = 40
    viewer.dims.set_point(1, float(_world(layer, 0, r, 0)[1]))
    shapes = widget.new_shapes_layer()
    corners = np.array([_world(layer, k, r, c) for k, c in
                        ((0.5, 20.5), (0.5, 30.5), (4.5, 30.5), (4.5, 20.5))])
    shapes.add_rectangles(_in(shapes, corners))
    (row,) = _rows(widget)
    block = hu[1:5, r, 21:31].astype(float)  # slices 1-4, columns 21-30 at row r
    assert row["Pixels"] == str(block.size)
    assert row["Mean"] == f"{block.mean():.2f}" and row["SD"] == f"{block.std(ddof=1):.2f}"
    assert (row["Min"], row["Max"]) == (f"{block.min():g}", f"{block.max():g}")
    assert row["Area"] == f"{4 * SPACING[0] * 10 * SPACING[2]:.2f} mm²"
    assert row["Slice"] == f"P {_world(layer, 0, r, 0)[1]:.4g} mm"
