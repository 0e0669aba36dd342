"""core.geometry: placement from Image Position / Orientation (Patient), without Qt.

Expected values: the DICOM definition (PS3.3 C.7.6.2.1.1) computed here by hand, and the
README's world frame, napari world = (I, P, L) = (-z, y, x) of DICOM LPS.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from napari_dicom.core.geometry import (
    WORLD_AXES,
    layer_geometry,
    patient_to_world,
    place,
    restore_layer_data,
    world_to_patient,
)
from napari_dicom.core.scan import scan

ECT = get_testdata_file("eCT_Supplemental.dcm")


def test_world_frame_is_lps_with_z_named_inferior() -> None:
    assert WORLD_AXES == ("I", "P", "L")
    np.testing.assert_allclose(patient_to_world([1.0, 2.0, 3.0]), [-3.0, 2.0, 1.0])
    np.testing.assert_allclose(world_to_patient(patient_to_world([[1, 2, 3], [4, 5, 6]])),
                               [[1, 2, 3], [4, 5, 6]])


def _voxel(ori: list[float], p0: list[float], sp: tuple[float, float, float],
           k: int, r: int, c: int) -> np.ndarray:
    row, col = np.asarray(ori[:3]), np.asarray(ori[3:])
    n = np.cross(row, col)
    lps = np.asarray(p0) + k * sp[0] * n + r * sp[1] * col + c * sp[2] * row
    return np.array([-lps[2], lps[1], lps[0]])


@pytest.mark.parametrize(("ori", "axes", "plane"), [
    ([1, 0, 0, 0, 1, 0], (0, 1, 2), "axial"),
    ([-1, 0, 0, 0, -1, 0], (0, 1, 2), "axial"),  # prone / feet-first style flips
    ([1, 0, 0, 0, 0, -1], (1, 0, 2), "coronal"),
    ([0, 1, 0, 0, 0, -1], (1, 2, 0), "sagittal"),
    ([0, -1, 0, 0, 0, -1], (1, 2, 0), "sagittal"),
], ids=["axial", "axial-flipped", "coronal", "sagittal", "sagittal-flipped"])
def test_axis_aligned_by_permutation_and_signs(ori, axes, plane) -> None:
    sp = (3.0, 0.5, 0.8)
    p0 = [10.0, -20.0, 30.0]
    n = np.cross(ori[:3], ori[3:])
    positions = [list(np.asarray(p0) + k * sp[0] * n) for k in range(5)]
    pl = place(6, 7, ori, positions, sp[1:], sp[0])
    assert pl.kind == "aligned" and pl.axes == axes and pl.plane == plane and not pl.warnings
    data = np.arange(5 * 6 * 7).reshape(5, 6, 7)
    shown = pl.arrange(data)
    kw = pl.layer_kwargs()
    scale, translate = np.asarray(kw["scale"]), np.asarray(kw["translate"])
    for k, r, c in [(0, 0, 0), (4, 5, 6), (2, 1, 3)]:
        # the layer's world position of acquisition voxel (k, r, c) is the DICOM one
        idx = np.array((k, r, c))[list(axes)]
        assert shown[tuple(idx)] == data[k, r, c]
        np.testing.assert_allclose(translate + scale * idx, _voxel(ori, p0, sp, k, r, c))
    np.testing.assert_array_equal(pl.restore(shown), data)


def test_small_obliquity_is_snapped_and_said() -> None:
    a = np.radians(0.05)
    ori = [np.cos(a), np.sin(a), 0, -np.sin(a), np.cos(a), 0]
    pl = place(64, 64, ori, [[0, 0, float(k)] for k in range(10)], (1.0, 1.0), 1.0)
    assert pl.kind == "aligned"
    assert "placed as axial" in pl.warnings[0]
    a = np.radians(5)
    ori = [np.cos(a), np.sin(a), 0, -np.sin(a), np.cos(a), 0]
    pl = place(64, 64, ori, [[0, 0, float(k)] for k in range(10)], (1.0, 1.0), 1.0)
    assert pl.kind == "affine" and pl.obliquity_deg == pytest.approx(5.0)
    # the true affine: voxel (k, r, c) where DICOM puts it
    want = _voxel(ori, [0, 0, 0], (1, 1, 1), 3, 10, 20)
    np.testing.assert_allclose(pl.to_world([3, 10, 20]), want)
    # a rotation within the axial plane: napari slices it exactly in the axial 2-D view
    assert "within the axial plane" in pl.warnings[0] and "exact in napari's axial 2-D" in (
        pl.warnings[0])
    # one slice tilted about x (rows rise 5 degrees out of the axial plane)
    ori = [1, 0, 0, 0, np.cos(a), np.sin(a)]
    pl = place(64, 64, ori, [[0.0, 0.0, 0.0]], (1.0, 1.0), 1.0)
    assert pl.kind == "affine" and "oblique, 5.0 degrees" in pl.warnings[0]
    # what napari's 2-D view draws (napari_2d_offset): the slice through the I axis, whose
    # first row is at P = 0, drawn flat by its in-plane projection (P = r cos 5 deg, true):
    # its last row is 63 * sin(5 deg) = 5.49 mm out of the viewed plane
    assert 63 * np.sin(a) == pytest.approx(5.49, abs=0.005)
    assert "up to 5.49 mm from their true place" in pl.warnings[0], pl.warnings[0]


def test_gantry_tilt_keeps_the_shear() -> None:
    ori = [1, 0, 0, 0, 1, 0]
    t = np.tan(np.radians(15))
    positions = [[0.0, k * 2.0 * t, k * 2.0] for k in range(8)]
    pl = place(32, 32, ori, positions, (1.0, 1.0), 2.0)
    assert pl.kind == "affine"
    assert "gantry tilt" in pl.warnings[0]
    # slice 7's first pixel is at its Image Position
    np.testing.assert_allclose(pl.to_world([7, 0, 0]), patient_to_world(positions[7]))


def test_bad_orientation_is_reported_never_raised() -> None:
    pos = [[0, 0, float(k)] for k in range(3)]
    pl = place(8, 8, [1, 0, 0, 0.02, 1.05, 0], pos, (1.0, 1.0), 1.0)
    assert "not orthonormal" in pl.warnings[0] and "orthonormalised" in pl.warnings[0]
    assert pl.kind == "aligned"
    pl = place(8, 8, [1, 0, 0, 1, 0, 0], pos, (1.0, 1.0), 1.0)  # parallel cosines
    assert pl.kind == "index" and "placed by index" in pl.warnings[0]
    pl = place(8, 8, None, pos, (1.0, 1.0), 1.0)  # no orientation: a projection image
    assert pl.kind == "index" and not pl.warnings
    pl = place(8, 8, [1, 0, 0, 0, 1, 0], [None, None, None], (1.0, 1.0), 1.0)
    assert pl.kind == "index"


def test_enhanced_ct_placed_from_functional_groups() -> None:
    """eCT_Supplemental: shared orientation (-1, 0, 0, 0, 1, 0), per-frame positions
    (99.5, -301.5, -159) and (..., -149): rows +y, columns -x; the normal row x column is
    -z, so the scan orders the slices along -z: z = -149 first, then -159 (I = 149, 159)."""
    (s,) = scan([ECT]).series
    data = np.zeros(s.shape, np.int16)
    shown, kw, stored = layer_geometry(s, data)
    sp = s.scale
    assert stored["kind"] == "aligned" and shown.shape == s.shape
    np.testing.assert_allclose(kw["scale"], [10.0, sp[1], -sp[2]])
    np.testing.assert_allclose(kw["translate"], [149.0, -301.5, 99.5], atol=1e-4)
    assert restore_layer_data(shown, stored) is shown


def test_single_plane_is_a_slab_in_patient_space() -> None:
    (s,) = scan([get_testdata_file("CT_small.dcm")]).series
    data = np.zeros(s.shape, np.int16)
    shown, _kw, stored = layer_geometry(s, data)
    assert shown.shape == (1, *s.shape) and stored["added_axis"]
    assert restore_layer_data(shown, stored).shape == s.shape
    # a projection radiograph has no orientation: stays 2-D, by index
    (dx,) = scan([get_testdata_file("RG3_UNCR.dcm")]).series
    shown, _kw, stored = layer_geometry(dx, np.zeros(dx.shape, np.uint16))
    assert shown.ndim == 2 and stored["kind"] == "index"


def test_enhanced_file_with_two_orientations_is_two_placed_series(tmp_path) -> None:
    """An Enhanced CT whose per-frame Plane Orientation differs (axial frames, then
    sagittal frames) becomes one series per orientation, each placed by its own frames:
    every bead's marked voxel is where the bead is."""
    import pydicom

    from napari_dicom.core.geometry import series_placement
    from napari_dicom.core.phantom import bead_volume, write_enhanced_ct
    from napari_dicom.core.pixels import load_series

    n, sp = 12, (2.0, 2.0, 2.0)
    centre = np.array([5.0, 7.0, -9.0])
    beads = centre + np.array([[-3.0, 5.0, 7.0], [9.0, -1.0, -5.0]])
    axial, sag = (1.0, 0, 0, 0, 1.0, 0), (0, 1.0, 0, 0, 0, -1.0)

    def origin(o: tuple[float, ...]) -> np.ndarray:
        row, col = np.asarray(o[:3]), np.asarray(o[3:])
        return centre - (n - 1) / 2 * sp[0] * (row + col + np.cross(row, col))

    vols = [bead_volume(beads, (n, n, n), sp, o, origin(o)) for o in (axial, sag)]
    path = write_enhanced_ct(tmp_path / "two.dcm", np.concatenate(vols), sp, axial,
                             origin(axial), study_uid="1.2.3.4", frame_order=range(2 * n))
    ds = pydicom.dcmread(path)
    normal = np.cross(sag[:3], sag[3:])
    for k in range(n):
        item = ds.PerFrameFunctionalGroupsSequence[n + k]
        item.PlanePositionSequence[0].ImagePositionPatient = list(origin(sag) + k * 2 * normal)
        po = pydicom.Dataset()
        po.ImageOrientationPatient = list(sag)
        item.PlaneOrientationSequence = [po]
    ds.save_as(path)
    result = scan([path])
    assert any("2 different orientations; one layer per orientation" in w
               for w in result.warnings)
    assert len(result.series) == 2
    planes = set()
    for s in result.series:
        pl, _lead = series_placement(s)
        planes.add(pl.plane)
        data = np.asarray(load_series(s))
        for j, b in enumerate(beads):
            k, r, c = np.round(pl.to_index(patient_to_world(b))).astype(int)
            assert data[k, r, c] == 100 * (j + 1) + 50, (pl.plane, j)
    assert planes == {"axial", "sagittal"}
