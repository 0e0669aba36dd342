"""core.measure without Qt: mapping world shapes to a slice's pixels, areas, masks and
statistics, on arrays whose values and geometry are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_dicom.core.geometry import place
from napari_dicom.core.measure import (
    HEADERS,
    DrawnShape,
    ImageInfo,
    ViewInfo,
    affine_from_map,
    image_info_from_meta,
    measure_shape,
    to_tsv,
)

SPACING = (3.0, 0.5, 0.75)


def _image(values: np.ndarray, m: np.ndarray | None = None, **kw: object) -> ImageInfo:
    if m is None:
        m = np.diag([*SPACING, 1.0])
    return ImageInfo("ct", m, values.shape, ("mm",) * 3, ("I", "P", "L"), "HU", **kw)  # type: ignore[arg-type]


def _to_world(m: np.ndarray, pts: list[tuple[float, float, float]]) -> np.ndarray:
    p = np.asarray(pts, dtype=float)
    return p @ m[:3, :3].T + m[:3, 3]


def _view(m: np.ndarray, k: int, displayed: tuple[int, int] = (1, 2)) -> ViewInfo:
    return ViewInfo(2, displayed, tuple(_to_world(m, [(k, 0, 0)])[0]))


def test_affine_from_map_reads_the_matrix() -> None:
    m = np.array([[0, 0, -2.0, 5], [0.3, 0.4, 0, 1], [0.4, -0.3, 0, -2], [0, 0, 0, 1]])
    got = affine_from_map(lambda p: tuple(m[:3, :3] @ np.asarray(p) + m[:3, 3]), 3)
    np.testing.assert_allclose(got, m)


def test_triangle_area_is_exact_and_its_pixels_are_those_inside() -> None:
    values = np.arange(20 * 30, dtype=np.float64).reshape(1, 20, 30)
    values = np.repeat(values, 3, axis=0)
    m = np.diag([*SPACING, 1.0])
    tri = [(1, 2.2, 3.1), (1, 15.7, 3.1), (1, 2.2, 24.9)]
    row = measure_shape(DrawnShape("s", 1, "polygon", _to_world(m, tri)), _image(values, m),
                        _view(m, 1), values)
    # independent: shoelace in mm, and the pixel centres strictly inside the right triangle
    legs = (15.7 - 2.2) * SPACING[1], (24.9 - 3.1) * SPACING[2]
    assert row.area == pytest.approx(legs[0] * legs[1] / 2)
    r, c = np.mgrid[0:20, 0:30]
    inside = (r > 2.2) & (c > 3.1) & ((r - 2.2) / 13.5 + (c - 3.1) / 21.8 < 1)
    assert row.pixels == int(inside.sum())
    assert row.mean == pytest.approx(values[1][inside].mean())
    assert row.sd == pytest.approx(values[1][inside].std(ddof=1))
    assert (row.min, row.max) == (values[1][inside].min(), values[1][inside].max())
    assert row.pixel_area == pytest.approx(row.pixels * SPACING[1] * SPACING[2])


def test_ellipse_pixels_and_area() -> None:
    values = np.zeros((2, 40, 40))
    m = np.diag([*SPACING, 1.0])
    corners = [(0, 10, 5), (0, 10, 35), (0, 30, 35), (0, 30, 5)]  # semi-axes 10 and 15 px
    row = measure_shape(DrawnShape("s", 1, "ellipse", _to_world(m, corners)),
                        _image(values, m), _view(m, 0), values)
    r, c = np.mgrid[0:40, 0:40]
    inside = ((r - 20) / 10) ** 2 + ((c - 20) / 15) ** 2 <= 1
    assert row.pixels == int(inside.sum())
    assert row.area == pytest.approx(math.pi * 10 * SPACING[1] * 15 * SPACING[2])


def test_rotated_in_plane_placement_measures_in_mm() -> None:
    """The placement core.geometry makes for a series rotated 40 degrees in the axial plane
    (an affine): a line and a square are measured with the true spacing."""
    a = math.radians(40)
    orient = (math.cos(a), math.sin(a), 0, -math.sin(a), math.cos(a), 0)
    pl = place(32, 32, orient, [(0, 0, z) for z in (0.0, 3.0, 6.0)], SPACING[1:], SPACING[0])
    assert pl.kind == "affine"
    m = pl.matrix
    values = np.zeros((3, 32, 32))
    values[2, 10:16, 8:14] = 77
    view = ViewInfo(2, (1, 2), tuple(pl.to_world([(2, 0, 0)])[0]))
    img = _image(values, m)
    line = measure_shape(DrawnShape("s", 1, "line", pl.to_world([(2, 1, 1), (2, 7, 9)])),
                         img, view, values)
    assert line.length == pytest.approx(math.hypot(6 * SPACING[1], 8 * SPACING[2]))
    assert line.slice == "I -6 mm"  # slice 2 at z = 6 mm: napari's I = -z
    sq = pl.to_world([(2, 9.5, 7.5), (2, 9.5, 13.5), (2, 15.5, 13.5), (2, 15.5, 7.5)])
    row = measure_shape(DrawnShape("s", 2, "rectangle", sq), img, view, values)
    assert (row.pixels, row.mean, row.sd) == (36, 77.0, 0.0)
    assert row.area == pytest.approx(36 * SPACING[1] * SPACING[2])


def test_transposed_view_reads_the_layer_axes_in_view_order() -> None:
    """The viewer shows the layer's columns vertically (dims order rolled): rows and
    columns of the plane are swapped, the pixels read are still the right ones."""
    values = np.zeros((2, 20, 30))
    values[1, 2:5, 20:28] = 9  # rows 2-4, columns 20-27
    m = np.diag([*SPACING, 1.0])
    view = _view(m, 1, displayed=(2, 1))
    box = [(1, 1.5, 19.5), (1, 1.5, 27.5), (1, 4.5, 27.5), (1, 4.5, 19.5)]
    row = measure_shape(DrawnShape("s", 1, "rectangle", _to_world(m, box)), _image(values, m),
                        view, values)
    assert (row.pixels, row.mean, row.sd) == (24, 9.0, 0.0)


def test_padding_is_left_out_and_said() -> None:
    values = np.full((1, 10, 10), 40.0)
    values[0, :, :3] = -3024
    m = np.diag([*SPACING, 1.0])
    box = [(0, -0.5, -0.5), (0, -0.5, 9.5), (0, 9.5, 9.5), (0, 9.5, -0.5)]
    img = _image(values, m, padding=((-3024.0, -3024.0),))
    row = measure_shape(DrawnShape("s", 1, "rectangle", _to_world(m, box)), img,
                        _view(m, 0), values)
    assert row.pixels == 100 and row.mean == 40.0 and row.min == 40.0
    assert "30 padding pixels (no image) left out" in row.note


def test_why_not_measured() -> None:
    values = np.zeros((3, 10, 10))
    m = np.diag([*SPACING, 1.0])
    box = _to_world(m, [(1, 1, 1), (1, 1, 4), (1, 4, 4), (1, 4, 1)])
    img = _image(values, m)
    shape = DrawnShape("s", 1, "rectangle", box)
    assert measure_shape(shape, None, _view(m, 1)).note.startswith("not measured: no image")
    three_d = ViewInfo(3, (0, 1, 2), (0.0, 0.0, 0.0))
    assert "3-D view" in measure_shape(shape, img, three_d, values).note
    slanted = box.copy()
    slanted[0, 0] += 5.0  # one vertex on another slice
    row = measure_shape(DrawnShape("s", 1, "rectangle", slanted), img, _view(m, 1), values)
    assert "does not lie in the viewed plane" in row.note and not row.measured
    far = _to_world(m, [(7, 1, 1), (7, 1, 4), (7, 4, 4), (7, 4, 1)])
    row = measure_shape(DrawnShape("s", 1, "rectangle", far), img, _view(m, 7), values)
    assert "outside the image: I 21 mm is beyond its 3 slices" in row.note
    assert row.mean is None and row.area == pytest.approx(9 * SPACING[1] * SPACING[2])


def test_image_info_from_meta_and_tsv() -> None:
    m = np.diag([*SPACING, 1.0])
    info = image_info_from_meta("x", m, (2, 4, 4), ["millimeter"] * 3, ["I", "P", "L"], False,
                                {"value_unit": "HU", "padding": [[-3024, -3024]]})
    assert info.dicom and info.value_unit == "HU" and info.padding == ((-3024.0, -3024.0),)
    plain = image_info_from_meta("y", m, (2, 4, 4), ["pixel"] * 3, [], False, None)
    values = np.ones((2, 4, 4))
    line = DrawnShape("s", 1, "line", _to_world(m, [(0, 0, 0), (0, 0, 3)]))
    row = measure_shape(line, plain, _view(m, 0), values)
    assert row.length_unit == "px" and "no physical spacing" in row.note
    assert not plain.dicom
    text = to_tsv([measure_shape(line, info, _view(m, 0), values)])
    head, body = text.splitlines()
    assert head.split("\t") == list(HEADERS)
    assert dict(zip(HEADERS, body.split("\t"), strict=True))["Length"] == "2.25 mm"


def test_oblique_series_measures_the_acquired_pixels_napari_draws() -> None:
    """An oblique series (20 degrees out of the axial plane) is drawn by napari 0.9's 2-D
    view flat, the acquired slice its slider picks, through the displayed block of its
    affine (core.geometry.napari_2d_offset). A shape drawn over the pixels as drawn reads
    those pixels, and its length is their true distance in mm, not the foreshortened one
    on the screen."""
    a = math.radians(20)
    orient = (1.0, 0.0, 0.0, 0.0, math.cos(a), math.sin(a))
    normal = np.cross(orient[:3], orient[3:])
    pl = place(32, 32, orient, [tuple(normal * 3.0 * k) for k in range(4)], SPACING[1:],
               SPACING[0])
    assert pl.kind == "affine" and pl.plane == "oblique"
    m = pl.matrix
    inv = np.linalg.inv(m)
    k = 2
    slider = (k - inv[0, 3]) / inv[0, 0]  # where napari's slider picks slice k
    assert round(inv[0, 0] * slider + inv[0, 3]) == k

    def drawn(r: float, c: float) -> tuple[float, float, float]:
        p, q = m[1:3, 1:3] @ (r, c) + m[1:3, 3]  # napari's flat drawing of pixel (r, c)
        return (slider, float(p), float(q))

    values = np.zeros((4, 32, 32))
    values[k, 10:14, 6:12] = 33.0
    img = _image(values, m)
    view = ViewInfo(2, (1, 2), (slider, 0.0, 0.0))
    line = measure_shape(DrawnShape("s", 1, "line", np.array([drawn(4, 4), drawn(10, 12)])),
                         img, view, values)
    assert line.length == pytest.approx(math.hypot(6 * SPACING[1], 8 * SPACING[2]))
    on_screen = float(np.linalg.norm(np.subtract(drawn(10, 12), drawn(4, 4))))
    # the screen foreshortens the rows by cos 20 degrees; the measurement does not
    assert on_screen == pytest.approx(math.hypot(6 * SPACING[1] * math.cos(a), 8 * SPACING[2]))
    assert line.length > on_screen + 0.05
    box = np.array([drawn(9.5, 5.5), drawn(9.5, 11.5), drawn(13.5, 11.5), drawn(13.5, 5.5)])
    row = measure_shape(DrawnShape("s", 2, "rectangle", box), img, view, values)
    assert (row.pixels, row.mean, row.sd) == (24, 33.0, 0.0)
    assert row.area == pytest.approx(24 * SPACING[1] * SPACING[2])
