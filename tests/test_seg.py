"""DICOM SEG (written by highdicom over CT series written in tmp_path) opened in napari:
label values at known voxels, found through world coordinates, equal the masks written."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from napari.utils.notifications import notification_manager

from segdata import SEGMENTS, lab_to_dicom, write_ct, write_seg

PLUGIN = "napari-dicom"
N, SIZE = 8, 40


def _masks() -> np.ndarray:
    """Two overlapping segments and one apart, per CT slice (position order)."""
    m = np.zeros((N, SIZE, SIZE, 3), bool)
    m[1:5, 5:20, 5:20, 0] = True      # Liver
    m[3:7, 15:30, 15:30, 1] = True    # Tumour: overlaps Liver on slices 3-4
    m[6:8, 30:36, 2:8, 2] = True      # Vessel: apart from both
    return m


def _by_frames(masks: np.ndarray, order: list[int]) -> np.ndarray:
    return masks[order]


@pytest.fixture
def study(tmp_path: Path) -> tuple[Path, list[Path], np.ndarray]:
    """CT + binary SEG whose frames follow a shuffled source order (not slice order)."""
    ct = write_ct(tmp_path / "study" / "ct", n=N, size=SIZE)
    order = [5, 2, 7, 0, 3, 1, 6, 4]
    masks = _masks()
    write_seg(tmp_path / "study" / "seg.dcm", [ct[i] for i in order], _by_frames(masks, order))
    return tmp_path / "study", ct, masks


def _warnings() -> list[str]:
    return [str(r.message) for r in notification_manager.records]


def _layers(viewer, kind: str) -> list:
    return [ly for ly in viewer.layers if type(ly).__name__.lower() == kind]


def _check_voxels(image, labels, expected: np.ndarray) -> int:
    """Every voxel (k, r, c) of the image grid: its world point, mapped into the label
    layer, holds ``expected[k, r, c]``. Returns the number of labelled voxels checked."""
    rng = np.random.default_rng(0)
    idx = np.argwhere(expected > 0)
    idx = np.concatenate([idx, rng.integers(0, expected.shape, (200, expected.ndim))])
    for k in map(tuple, idx):
        world = image.data_to_world(np.asarray(k, float))
        d = np.round(labels.world_to_data(world)).astype(int)
        inside = bool(np.all((d >= 0) & (d < labels.data.shape)))
        assert (labels.data[tuple(d)] if inside else 0) == expected[k], (k, d)
    return int((expected > 0).sum())


def test_binary_overlapping_seg_on_its_ct(make_napari_viewer, study) -> None:
    folder, _ct, masks = study
    viewer = make_napari_viewer()
    viewer.open(str(folder), plugin=PLUGIN)
    (image,) = _layers(viewer, "image")
    labels = _layers(viewer, "labels")
    # Liver and Tumour overlap: two layers, no voxel loses a segment; Vessel joins the
    # first layer it does not overlap (Liver's)
    assert len(labels) == 2
    first, second = labels
    assert [s["label"] for s in first.metadata["segmentation"]["segments"]] == ["Liver",
                                                                                "Vessel"]
    assert [s["label"] for s in second.metadata["segmentation"]["segments"]] == ["Tumour"]
    exp_first = masks[..., 0] * 1 + masks[..., 2] * 3
    exp_second = masks[..., 1] * 2
    assert _check_voxels(image, first, exp_first) > 0
    assert _check_voxels(image, second, exp_second) > 0
    assert any("segments overlap" in w and "seg.dcm" in w for w in _warnings())
    # colours: Recommended Display CIELab -> sRGB; Liver is the red one
    liver = first.colormap.map(np.array([1]))[0]
    assert liver[0] > 0.8 and liver[1] < 0.3 and liver[2] < 0.3
    vessel = first.colormap.map(np.array([3]))[0]
    assert vessel[2] > 0.8 and vessel[0] < 0.3
    assert first.features["label"].tolist() == ["Liver", "Vessel"]


def test_labelmap_and_fractional(make_napari_viewer, tmp_path: Path) -> None:
    ct = write_ct(tmp_path / "ct", n=N, size=SIZE)
    lab = np.zeros((N, SIZE, SIZE), np.uint8)
    lab[1:3, 2:10, 2:10] = 1
    lab[3:6, 12:20, 12:20] = 3
    lab[2, 20:25, 20:25] = 2
    rev = ct[::-1]
    write_seg(tmp_path / "lm.dcm", rev, lab[::-1], "LABELMAP", n_segments=3)
    frac = np.zeros((N, SIZE, SIZE, 1), np.float32)
    frac[2, 5:10, 5:10, 0] = 0.5
    frac[3, 5:10, 5:12, 0] = 1.0
    write_seg(tmp_path / "fr.dcm", ct, frac, "FRACTIONAL", series_number=51,
              description="probability")
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path), plugin=PLUGIN)
    images = _layers(viewer, "image")
    ct_layer = next(ly for ly in images if "CT" in ly.name)
    (lm,) = _layers(viewer, "labels")
    assert lm.metadata["segmentation"]["object_type"] == "SEG"
    assert _check_voxels(ct_layer, lm, lab) == int((lab > 0).sum())
    fr = next(ly for ly in images if "probability" in ly.name)
    for k in [(2, 6, 6), (3, 6, 11), (3, 6, 12), (0, 0, 0)]:
        world = ct_layer.data_to_world(np.asarray(k, float))
        d = tuple(np.round(fr.world_to_data(world)).astype(int))
        # stored as fractions of Maximum Fractional Value 255 (C.8.20.2.3), shown / 255
        assert fr.data[d] == pytest.approx(np.floor(frac[(*k, 0)] * 255 + 0.5) / 255,
                                           abs=1e-6)
    assert fr.colormap.colors[-1][0] > 0.8  # Liver's red, opaque at 1


def test_seg_alone_finds_its_ct_in_the_folder(make_napari_viewer, study) -> None:
    folder, _ct, masks = study
    viewer = make_napari_viewer()
    viewer.open(str(folder / "seg.dcm"), plugin=PLUGIN)
    (image,) = _layers(viewer, "image")
    assert image.data.shape == (N, SIZE, SIZE)
    first = _layers(viewer, "labels")[0]
    assert _check_voxels(image, first, masks[..., 0] * 1 + masks[..., 2] * 3) > 0


def test_seg_without_its_ct_on_own_geometry(make_napari_viewer, study, tmp_path) -> None:
    folder, _ct, masks = study
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(folder / "seg.dcm", alone / "seg.dcm")
    viewer = make_napari_viewer()
    viewer.open(str(alone / "seg.dcm"), plugin=PLUGIN)
    labels = _layers(viewer, "labels")
    assert len(labels) == 2
    assert any("seg.dcm" in w and "not among the opened images" in w
               and "own geometry" in w for w in _warnings())
    # placed in patient space on its own: the CT opened next lines up with it
    viewer.open(str(folder / "ct"), plugin=PLUGIN)
    (image,) = _layers(viewer, "image")
    assert _check_voxels(image, labels[0], masks[..., 0] * 1 + masks[..., 2] * 3) > 0


def test_bad_segs_warn_and_the_image_opens(make_napari_viewer, tmp_path: Path) -> None:
    ct = write_ct(tmp_path / "a" / "ct", n=N, size=SIZE)
    m = np.zeros((N, SIZE, SIZE, 2), bool)
    m[1:7, 5:9, 5:9, 0] = True  # segment 2 stays empty
    seg = write_seg(tmp_path / "a" / "empty.dcm", ct, m)
    ds = pydicom.dcmread(seg)
    ds.SegmentSequence[0].RecommendedDisplayCIELabValue = [30000, 1]  # malformed: 2 values
    ds.save_as(seg)
    # frames of a second SEG lie half a slice off every CT plane
    off = write_seg(tmp_path / "a" / "off.dcm", ct, m[..., :1], series_number=52)
    ds = pydicom.dcmread(off)
    for item in ds.PerFrameFunctionalGroupsSequence:
        pos = item.PlanePositionSequence[0].ImagePositionPatient
        item.PlanePositionSequence[0].ImagePositionPatient = [pos[0], pos[1], pos[2] + 1.25]
    ds.save_as(off)
    # only 6 of the 8 CT slices are opened: the third SEG's frame on slice 6 matches nothing
    part = tmp_path / "part"
    part.mkdir()
    for p in ct[:6]:
        shutil.copy(p, part / p.name)
    write_seg(part / "full.dcm", ct, m[..., :1], series_number=53)
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "a"), plugin=PLUGIN)
    warns = _warnings()
    assert any("empty.dcm" in w and "segment 2 'Tumour' is empty" in w for w in warns)
    assert any("empty.dcm" in w and "CIELab" in w for w in warns)
    assert any("off.dcm" in w and "lie on no plane" in w for w in warns)
    assert len(_layers(viewer, "image")) == 1
    assert len(_layers(viewer, "labels")) == 2
    viewer2 = make_napari_viewer()
    viewer2.open(str(part), plugin=PLUGIN)
    assert any("full.dcm" in w and "1 frame(s)" in w and "left out" in w for w in _warnings())
    (image,) = _layers(viewer2, "image")
    (labels,) = _layers(viewer2, "labels")
    assert _check_voxels(image, labels, m[:6, ..., 0].astype(np.uint8)) > 0


def test_cielab_reference_value() -> None:
    """The CIELab scaling the tests write follows PS3.3 C.10.7.1.1 (checked on the
    standard's end points)."""
    assert lab_to_dicom(100, 127, 127) == [65535, 65535, 65535]
    assert lab_to_dicom(0, -128, -128) == [0, 0, 0]
    assert SEGMENTS[0][0] == "Liver"


def test_seg_on_a_sagittal_series_follows_its_placement(make_napari_viewer, tmp_path) -> None:
    """A sagittal CT is shown with its axes permuted onto the patient axes; its SEG,
    placed by the same function, still holds the written mask at every voxel."""
    ct = write_ct(tmp_path / "sag", n=N, size=SIZE, orientation=(0, 1, 0, 0, 0, -1),
                  origin=(-10.0, -14.0, 14.0))
    m = np.zeros((N, SIZE, SIZE, 1), bool)
    m[2:6, 3:12, 20:35, 0] = True
    write_seg(tmp_path / "sag.dcm", ct[::-1], m[::-1])
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path), plugin=PLUGIN)
    (image,) = _layers(viewer, "image")
    (labels,) = _layers(viewer, "labels")
    assert image.metadata["dicom"]["placement"]["plane"] == "sagittal"
    # patient point of written voxel (k, r, c), from how the CT was written; napari's
    # world is (-z, y, x) of DICOM LPS (core.geometry)
    row, col = np.array([0.0, 1.0, 0.0]), np.array([0.0, 0.0, -1.0])
    normal = np.cross(row, col)
    origin = np.array([-10.0, -14.0, 14.0])
    rng = np.random.default_rng(1)
    idx = np.concatenate([np.argwhere(m[..., 0]), rng.integers(0, (N, SIZE, SIZE), (300, 3))])
    for k, r, c in idx:
        p = origin + k * 2.5 * normal + r * 0.7 * col + c * 0.7 * row
        world = np.array([-p[2], p[1], p[0]])
        d = tuple(np.round(labels.world_to_data(world)).astype(int))
        assert labels.data[d] == m[k, r, c, 0], (k, r, c)
        # and the image layer shows CT slice k's pixel (r, c) there
        assert tuple(np.round(image.world_to_data(world)).astype(int)) == d
