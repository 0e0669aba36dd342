"""Every series in one patient space: beads written as axial, coronal, sagittal, oblique
and Enhanced multi-frame series with one Frame of Reference, opened as a user does, land
on the same napari world points (needs Qt: xvfb-run).

Expected positions come from the DICOM definition of Image Position / Orientation
(Patient) (PS3.3 C.7.6.2.1.1, :func:`napari_dicom.core.phantom.voxel_positions`) and the
README's world frame, napari world = ``(-z, y, x)`` of DICOM LPS, written out here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from napari.utils.notifications import notification_manager
from pydicom.uid import generate_uid

from napari_dicom.core.phantom import (
    bead_volume,
    write_ct_phantom,
    write_enhanced_ct,
)

PLUGIN = "napari-dicom"
SIZE, SPACING = 24, (2.0, 2.0, 2.0)
CENTRE = np.array([10.0, -20.0, 30.0])  # LPS mm, off the origin to catch translate errors
#: bead centres, LPS mm: odd mm offsets from the centre are voxel centres of every
#: axis-aligned grid below (even size, 2 mm spacing, centred)
BEADS = CENTRE + np.array([[-9.0, -5.0, 7.0], [7.0, 11.0, -3.0], [3.0, -13.0, -11.0]])
STUDY = "1.2.826.0.1.3680043.8.498.1313"


def _rotation(axis: np.ndarray, deg: float) -> np.ndarray:
    a = axis / np.linalg.norm(axis)
    t = math.radians(deg)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(t) * k + (1 - math.cos(t)) * (k @ k)


_R = _rotation(np.array([1.0, 1.0, 0.0]), 30.0)
ORIENTATIONS = {
    "axial": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "coronal": (1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
    "sagittal": (0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
    "oblique": (*(_R @ [1.0, 0.0, 0.0]), *(_R @ [0.0, 1.0, 0.0])),
}


def _origin(orientation: tuple[float, ...]) -> np.ndarray:
    row, col = np.asarray(orientation[:3]), np.asarray(orientation[3:])
    half = (SIZE - 1) / 2 * SPACING[0]
    return CENTRE - half * (row + col + np.cross(row, col))


def _world(lps: np.ndarray) -> np.ndarray:
    """README: napari world = (I, P, L) = (-z, y, x) of DICOM LPS."""
    return np.array([-lps[2], lps[1], lps[0]])


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("beads")
    for number, (name, ori) in enumerate(ORIENTATIONS.items(), start=1):
        o = _origin(ori)
        vol = bead_volume(BEADS, (SIZE, SIZE, SIZE), SPACING, ori, o)
        write_ct_phantom(root / name, n_slices=SIZE, size=SIZE, spacing=SPACING,
                         orientation=[round(v, 6) for v in ori], origin=tuple(o), volume=vol,
                         study_uid=STUDY, series_number=number, series_description=name,
                         noise=0.0)
    ori = ORIENTATIONS["sagittal"]
    o = _origin(ori)
    write_enhanced_ct(root / "enhanced" / "enhanced.dcm",
                      bead_volume(BEADS, (SIZE, SIZE, SIZE), SPACING, ori, o), SPACING, ori, o,
                      study_uid=STUDY)
    return root


def _by_name(viewer: Any) -> dict[str, Any]:
    return {layer.metadata["dicom"]["header"]["SeriesDescription"]: layer
            for layer in viewer.layers}


def _bead_voxel_world(layer: Any, j: int) -> np.ndarray:
    hits = np.argwhere(np.asarray(layer.data) == 100 * (j + 1) + 50)
    assert len(hits) == 1
    return np.asarray(layer.data_to_world(hits[0]), dtype=float)


def test_beads_land_on_their_voxels_in_every_orientation(make_napari_viewer, study: Path):
    viewer = make_napari_viewer()
    notification_manager.records.clear()
    # napari 0.9 cannot slice the rotated (oblique) layer exactly in 2-D and says so
    with pytest.warns(UserWarning, match="Non-orthogonal slicing"):
        viewer.open(str(study), plugin=PLUGIN)
    layers = _by_name(viewer)
    assert set(layers) == {*ORIENTATIONS, "Enhanced CT"}
    for name, layer in layers.items():
        assert tuple(layer.axis_labels) == ("I", "P", "L"), name
        assert tuple(str(u) for u in layer.units) == ("millimeter",) * 3, name
        for j, bead in enumerate(BEADS):
            idx = np.asarray(layer.world_to_data(_world(bead)))
            # the bead's voxel (marked) is the one napari finds at the bead's world point
            assert layer.data[tuple(np.round(idx).astype(int))] == 100 * (j + 1) + 50, (name, j)
    # axis-aligned series: exact, by permutation and flips (napari slices them exactly)
    for name in ("axial", "coronal", "sagittal", "Enhanced CT"):
        layer = layers[name]
        assert np.allclose(layer.affine.affine_matrix, np.eye(4)), name
        for j, bead in enumerate(BEADS):
            np.testing.assert_allclose(_bead_voxel_world(layer, j), _world(bead), atol=1e-3)
    # the beads of two layers coincide: aligned ones exactly, the oblique one within its
    # half-voxel diagonal (its grid does not pass through the bead centres)
    oblique = layers["oblique"]
    for j in range(len(BEADS)):
        d = np.linalg.norm(_bead_voxel_world(oblique, j) - _bead_voxel_world(layers["axial"], j))
        assert d <= math.sqrt(3) * SPACING[0] / 2 + 1e-6
    # the user is told what the 2-D view does with the oblique series
    msgs = [str(r.message) for r in notification_manager.records]
    assert any("oblique" in m and "3-D" in m and "Non-orthogonal" in m for m in msgs), msgs
    # sagittal data are shown transposed into (I, P, L); the writer gets them back as
    # acquired: planes along the slice normal, as the files hold them
    sag = layers["sagittal"]
    assert sag.data.shape == (SIZE, SIZE, SIZE)
    from napari_dicom.core.geometry import restore_layer_data
    from napari_dicom.core.phantom import read_hu

    first = sorted(sag.metadata["dicom"]["files"])[0]
    back = restore_layer_data(sag.data, sag.metadata["dicom"]["placement"])
    k = sag.metadata["dicom"]["files"].index(first)
    np.testing.assert_array_equal(np.asarray(back[k]), read_hu(first))


@pytest.fixture(scope="module")
def axial_and_sagittal(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The CT phantom as an axial series, and resliced (by hand, from the same HU volume)
    as a sagittal series of the same Frame of Reference: same voxels, other files."""
    from napari_dicom.core.phantom import ct_phantom_volume

    root = tmp_path_factory.mktemp("ax_sag")
    n, dz, dxy = 32, 3.0, 1.5
    write_ct_phantom(root / "ax", n_slices=n, size=n, spacing=(dz, dxy, dxy), study_uid=STUDY,
                     series_number=1, series_description="axial", noise=0.0)
    hu = ct_phantom_volume(n, n, noise=0.0)  # [k: +z, r: +y, c: +x], first pixel (-24, -24, 0)
    # sagittal (0,1,0 / 0,0,-1): normal row x column = -x, so slice k is at x = 22.5 - 1.5 k;
    # rows go down in z from the top slice, columns along +y
    sag = np.ascontiguousarray(hu[::-1, :, ::-1].transpose(2, 0, 1))
    write_ct_phantom(root / "sag", n_slices=n, size=n, spacing=(dxy, dz, dxy),
                     orientation=(0, 1, 0, 0, 0, -1), origin=(-n / 2 * dxy + (n - 1) * dxy,
                                                              -n / 2 * dxy, (n - 1) * dz),
                     volume=sag, study_uid=STUDY, series_number=2,
                     series_description="sagittal", noise=0.0)
    return root / "ax", root / "sag"


def _rows_dark(shot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per screen row, the fraction of black pixels inside the body's bounding box, and
    the mean brightness; the body is whatever is not black (fat and soft tissue are grey)."""
    grey = shot[..., :3].astype(float).mean(axis=-1)
    lit = np.argwhere(grey > 10)
    (r0, c0), (r1, c1) = lit.min(axis=0), lit.max(axis=0)
    box = grey[r0:r1 + 1, c0:c1 + 1]
    return (box <= 10).mean(axis=1), box.mean(axis=1)


def test_axial_and_sagittal_overlay_and_radiological_reformats(
    make_napari_viewer, axial_and_sagittal: tuple[Path, Path], tmp_path: Path
) -> None:
    from PIL import Image

    ax_dir, sag_dir = axial_and_sagittal
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(700, 700)
    (ax,) = viewer.open(str(ax_dir), plugin=PLUGIN)
    (sag,) = viewer.open(str(sag_dir), plugin=PLUGIN)
    assert sag.data.shape == (32, 32, 32)
    # point for point the same HU at the same world position (voxel grids coincide)
    rng = np.random.default_rng(1)
    lo = np.maximum(ax.extent.world[0], sag.extent.world[0]) + 1
    hi = np.minimum(ax.extent.world[1], sag.extent.world[1]) - 1
    for w in rng.uniform(lo, hi, size=(200, 3)):
        assert ax.get_value(w, world=True) == sag.get_value(w, world=True), w
    # complementary colours, added: grey where the two series agree, green or magenta
    # where they do not
    ax.colormap, ax.blending = "green", "additive"
    sag.colormap, sag.blending = "magenta", "additive"
    assert tuple(viewer.scene.camera.orientation2d) == ("down", "right")  # napari's default
    viewer.dims.set_point(0, -20 * 3.0)  # an axial plane through the lungs, z = 60 mm
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True)
    Image.fromarray(shot).save(tmp_path / "axial_overlay.png")
    rgb = shot[..., :3].astype(int)
    assert np.abs(rgb[..., 0] - rgb[..., 1]).max() <= 2  # no green/magenta fringe
    # axial: anterior up, so the vertebra (the brightest part) is in the lower half
    frac_dark, mean = _rows_dark(shot)
    half = len(mean) // 2
    assert mean[half:].max() > mean[:half].max()
    # coronal reformat (napari's roll + transpose): displayed (I, L); superior up, so the
    # lungs (black inside the body) are at the top, the liver at the bottom
    viewer.dims.roll()  # once: sagittal (I, P), superior up, anterior on the left
    assert [viewer.dims.axis_labels[i] for i in viewer.dims.displayed] == ["I", "P"]
    viewer.dims.roll()
    viewer.dims.transpose()  # roll, roll, transpose: coronal (I, L)
    assert [viewer.dims.axis_labels[i] for i in viewer.dims.displayed] == ["I", "L"]
    viewer.dims.set_point(1, 0.0)
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True)
    Image.fromarray(shot).save(tmp_path / "coronal.png")
    frac_dark, _ = _rows_dark(shot)
    quarter = len(frac_dark) // 4
    assert frac_dark[:quarter].mean() > 0.2 > frac_dark[-quarter:].mean()
    # positions in mm: P = 0 is the middle of the phantom; the status bar reads the
    # cursor's world position in mm (here z = 60 mm, the axial plane shown above)
    assert viewer.dims.point[1] == pytest.approx(0.0, abs=1.5)
    status = ax.get_status((-60.0, 3.0, -10.5), world=True)
    assert status["coords"] == "[-60.00, 3.00, -10.50]"


def test_writer_exports_planes_as_acquired(make_napari_viewer, study: Path, tmp_path: Path):
    """A sagittal layer is shown transposed into (I, P, L); File > Save still writes its
    sagittal planes, byte for byte what ``napari-dicom export`` writes for the folder,
    with the same manifest (positions in mm)."""
    from napari_dicom.cli import main

    viewer = make_napari_viewer()
    (sag,) = viewer.open(str(study / "sagittal"), plugin=PLUGIN)
    assert sag.metadata["dicom"]["placement"]["axes"] == [1, 2, 0]
    viewer.layers.selection.active = sag
    written = viewer.layers.save(str(tmp_path / "napari" / "sag.png"), selected=True,
                                 plugin=PLUGIN)
    assert main(["export", str(study / "sagittal"), "-o", str(tmp_path / "cli"), "-q"]) == 0
    ours = sorted(p for p in map(Path, written) if p.suffix == ".png")
    cli = sorted((tmp_path / "cli").rglob("*.png"))
    assert len(ours) == len(cli) == SIZE
    for a, b in zip(ours, cli, strict=True):
        assert a.read_bytes() == b.read_bytes(), (a, b)
    manifest = next(p for p in map(Path, written) if p.name == "manifest.csv").read_text()
    cli_manifest = next(p for p in (tmp_path / "cli").rglob("manifest.csv")
                        if p.parent != tmp_path / "cli").read_text()  # the series' one
    assert manifest.splitlines()[0] == cli_manifest.splitlines()[0]
    col = manifest.splitlines()[0].split(",").index("location_mm")
    assert ([r.split(",")[col] for r in manifest.splitlines()[1:]]
            == [r.split(",")[col] for r in cli_manifest.splitlines()[1:]])


def test_bad_geometry_is_said_never_fatal(make_napari_viewer, tmp_path: Path) -> None:
    """A gap, duplicated positions, cosines that are not orthonormal and a missing
    orientation: every series still opens, and each problem is named with what was done."""
    import pydicom

    write_ct_phantom(tmp_path / "gap", n_slices=8, size=16, spacing=(2.0, 1.0, 1.0),
                     orientation=(0, 1, 0, 0, 0, -1), skip=[4], series_number=1,
                     series_description="gap", noise=0.0)
    write_ct_phantom(tmp_path / "skew", n_slices=4, size=16, orientation=(1, 0, 0, 0.02, 1.05, 0),
                     series_number=2, series_description="skew", noise=0.0)
    for p in write_ct_phantom(tmp_path / "noori", n_slices=3, size=16, series_number=3,
                              series_description="noori", noise=0.0):
        ds = pydicom.dcmread(p)
        del ds.ImageOrientationPatient
        ds.save_as(p, enforce_file_format=True)
    dup = write_ct_phantom(tmp_path / "dup", n_slices=4, size=16, series_number=4,
                           series_description="dup", noise=0.0)
    ds = pydicom.dcmread(dup[1])  # another image at slice 1's position
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceNumber = 99
    ds.save_as(tmp_path / "dup" / "extra", enforce_file_format=True)
    viewer = make_napari_viewer()
    notification_manager.records.clear()
    viewer.open(str(tmp_path), plugin=PLUGIN)
    msgs = " | ".join(str(r.message) for r in notification_manager.records)
    names = [layer.name for layer in viewer.layers]
    assert any("gap" in n for n in names) and any("noori" in n for n in names), names
    assert "slice spacing varies from 2 to 4 mm" in msgs and "median spacing 2 mm" in msgs
    assert "not orthonormal" in msgs and "orthonormalised" in msgs
    assert "no Image Orientation (Patient); not placed in patient space" in msgs
    assert "split into" in msgs  # the duplicated position: two layers, said
    gap = next(layer for layer in viewer.layers if "gap" in layer.name)
    assert tuple(gap.axis_labels) == ("I", "P", "L")
    noori = next(layer for layer in viewer.layers if "noori" in layer.name)
    assert tuple(noori.axis_labels) == ("z", "y", "x")  # by index, not in patient space


def test_four_d_series_keeps_its_extra_axis(make_napari_viewer, tmp_path: Path) -> None:
    """Two phases of a sagittal bead series in one Series Instance UID: a (phase, I, P, L)
    layer, the phase axis in front, the beads on their voxels in both phases."""
    import pydicom

    ori = ORIENTATIONS["sagittal"]
    o = _origin(ori)
    vol = bead_volume(BEADS, (SIZE, SIZE, SIZE), SPACING, ori, o)
    uid = "1.2.826.0.1.3680043.8.498.1315"
    for phase in (1, 2):
        for p in write_ct_phantom(tmp_path / f"p{phase}", n_slices=SIZE, size=SIZE,
                                  spacing=SPACING, orientation=ori, origin=tuple(o),
                                  volume=vol, study_uid=STUDY, series_uid=uid, noise=0.0,
                                  file_names=f"P{phase}_%04d"):
            ds = pydicom.dcmread(p)
            ds.SOPInstanceUID = generate_uid()
            ds.TemporalPositionIdentifier = phase
            ds.save_as(p, enforce_file_format=True)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path), plugin=PLUGIN)
    assert layer.data.shape == (2, SIZE, SIZE, SIZE)
    assert tuple(layer.axis_labels) == ("t", "I", "P", "L")
    for t in (0, 1):
        for j, bead in enumerate(BEADS):
            idx = np.round(layer.world_to_data([t, *_world(bead)])).astype(int)
            assert idx[0] == t
            assert layer.data[tuple(idx)] == 100 * (j + 1) + 50
