"""RT Structure Sets in napari: pydicom's rtstruct.dcm and a structure set written over a
CT series in tmp_path; contour vertices and filled ROIs checked in world coordinates
against the patient coordinates that were written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from napari.utils.notifications import notification_manager
from pydicom.data import get_testdata_file

from napari_dicom.core.phantom import write_ct_phantom
from napari_dicom.core.rtstruct import fill_polygons
from segdata import write_ct, write_rtstruct

PLUGIN = "napari-dicom"
RTSTRUCT = get_testdata_file("rtstruct.dcm")
N, SIZE, DZ, PX = 8, 48, 2.5, 0.7
#: the phantom's first pixel (write_ct_phantom centres the image), slice k at z = k * DZ
X0 = Y0 = -SIZE / 2 * PX


def _circle(cx: float, cy: float, radius: float, z: float, n: int = 256) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + radius * np.cos(t), cy + radius * np.sin(t), np.full(n, z)], axis=1)


def _warnings() -> list[str]:
    return [str(r.message) for r in notification_manager.records]


def _index(p: np.ndarray) -> np.ndarray:
    """Image index (k, r, c) of patient point(s), from how the CT was written."""
    p = np.atleast_2d(p)
    return np.stack([p[:, 2] / DZ, (p[:, 1] - Y0) / PX, (p[:, 0] - X0) / PX], axis=1)


@pytest.fixture
def planned(tmp_path: Path):
    ct = write_ct(tmp_path / "ct", n=N, size=SIZE)
    body = [np.array([[-10.0, -8.0, z], [10.0, -8.0, z], [10.0, 9.0, z], [-10.0, 9.0, z]])
            for z in (2 * DZ, 3 * DZ, 4 * DZ, 5 * DZ)]
    ring = [_circle(3.0, 2.0, 6.0, 3 * DZ), _circle(3.0, 2.0, 2.5, 3 * DZ)]  # with a hole
    off = [_circle(0.0, 0.0, 4.0, 3.5 * DZ)]  # half-way between two slices
    write_rtstruct(tmp_path / "rs.dcm", ct, [("Body", (255, 0, 0), body),
                                             ("Ring", (0, 255, 0), ring),
                                             ("Off", (0, 0, 255), off)])
    return tmp_path, body, ring


def test_rtstruct_over_ct(make_napari_viewer, planned) -> None:
    folder, body, ring = planned
    viewer = make_napari_viewer()
    viewer.open(str(folder), plugin=PLUGIN)
    image = next(ly for ly in viewer.layers if type(ly).__name__ == "Image")
    shapes = next(ly for ly in viewer.layers if type(ly).__name__ == "Shapes")
    filled = next(ly for ly in viewer.layers if type(ly).__name__ == "Labels")
    assert not filled.visible  # the contours are what is shown; the fill is for saving
    # every contour vertex, through world coordinates, lands on its patient point
    written = [*body, *ring]
    assert len(shapes.data) == len(written)
    for verts, pts in zip(shapes.data, written, strict=True):
        world = np.asarray([shapes.data_to_world(v) for v in verts])
        got = np.asarray([image.world_to_data(w) for w in world])
        np.testing.assert_allclose(got, _index(pts), atol=1e-3)
    assert shapes.features["roi"].tolist() == ["Body"] * 4 + ["Ring"] * 2
    np.testing.assert_allclose(shapes.edge_color[0], [1, 0, 0, 1])
    np.testing.assert_allclose(shapes.edge_color[-1], [0, 1, 0, 1])
    # filled: pixel centres inside the body rectangle are 1; the ring (value 2) has a hole
    k = 3
    rr, cc = np.mgrid[0:SIZE, 0:SIZE]
    x, y = X0 + cc * PX, Y0 + rr * PX
    in_body = (x >= -10) & (x < 10) & (y >= -8) & (y < 9)
    d = np.hypot(x - 3.0, y - 2.0)
    in_ring = (d < 6.0) & (d > 2.5)
    sure = (np.abs(d - 6.0) > 0.05) & (np.abs(d - 2.5) > 0.05)
    expected = np.where(in_ring, 2, np.where(in_body, 1, 0))
    for r, c in zip(rr[sure].ravel(), cc[sure].ravel(), strict=True):
        world = image.data_to_world(np.array([k, r, c], float))
        idx = tuple(np.round(filled.world_to_data(world)).astype(int))
        assert filled.data[idx] == expected[r, c], (r, c)
    assert filled.data[0].max() == 0 and filled.data[6].max() == 0
    warns = _warnings()
    assert any("rs.dcm" in w and "ROI 'Off'" in w and "off every slice" in w for w in warns)
    assert any("rs.dcm" in w and "ROIs overlap" in w for w in warns)


def test_pydicom_rtstruct_alone_in_patient_space(make_napari_viewer, tmp_path) -> None:
    """pydicom's rtstruct.dcm has no CT: its contours (a 400 x 300 mm box at z = -200,
    -190, -180 mm) go on a grid of their own, in patient space: a CT written over the
    same region, opened next, puts each vertex on its patient point."""
    viewer = make_napari_viewer()
    viewer.open(RTSTRUCT, plugin=PLUGIN)
    shapes = next(ly for ly in viewer.layers if type(ly).__name__ == "Shapes")
    filled = next(ly for ly in viewer.layers if type(ly).__name__ == "Labels")
    assert shapes.features["roi"].tolist() == ["patient"] * 3
    np.testing.assert_allclose(shapes.edge_color[0][:3], np.array([220, 160, 120]) / 255)
    warns = _warnings()
    assert any("rtstruct.dcm" in w and "grid of their own" in w for w in warns)
    assert any("rtstruct.dcm" in w and "'Isocenter 1'" in w and "POINT" in w for w in warns)
    ct = write_ct_phantom(tmp_path / "ct", n_slices=3, size=128, spacing=(10.0, 4.0, 4.0),
                          origin=(-256.0, -256.0, -200.0), noise=0.0)
    viewer.open(str(ct[0].parent), plugin=PLUGIN)
    image = next(ly for ly in viewer.layers if type(ly).__name__ == "Image")
    import pydicom

    ds = pydicom.dcmread(RTSTRUCT, force=True)
    contours = [np.asarray(c.ContourData, float).reshape(-1, 3)
                for c in ds.ROIContourSequence[0].ContourSequence]
    for verts, pts in zip(shapes.data, contours, strict=True):
        got = np.asarray([image.world_to_data(shapes.data_to_world(v)) for v in verts])
        want = np.stack([(pts[:, 2] + 200) / 10, (pts[:, 1] + 256) / 4,
                         (pts[:, 0] + 256) / 4], axis=1)
        np.testing.assert_allclose(got, want, atol=1e-3)
    # the filled box: a CT voxel centre inside (x=0, y=0) is 1, outside (x=-220) is 0
    for (x, y, z), want in [((0.0, 0.0, -190.0), 1), ((-220.0, 0.0, -190.0), 0),
                            ((190.0, 140.0, -200.0), 1)]:
        world = image.data_to_world(np.array([(z + 200) / 10, (y + 256) / 4, (x + 256) / 4]))
        idx = np.round(filled.world_to_data(world)).astype(int)
        inside = bool(np.all((idx >= 0) & (idx < filled.data.shape)))
        assert (filled.data[tuple(idx)] if inside else 0) == want


def test_fill_polygons_even_odd() -> None:
    square = np.array([[1.0, 1.0], [1.0, 5.0], [5.0, 5.0], [5.0, 1.0]])
    hole = np.array([[2.0, 2.0], [2.0, 4.0], [4.0, 4.0], [4.0, 2.0]])
    m = fill_polygons([square, hole], 7, 7)
    want = np.zeros((7, 7), bool)
    want[1:5, 1:5] = True      # centres in [1, 5): the half-open rule
    want[2:4, 2:4] = False     # the inner contour is a hole
    np.testing.assert_array_equal(m, want)
