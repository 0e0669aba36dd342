"""The napari reader on real files, through napari's own viewer.open (needs Qt: xvfb-run)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut

from napari_dicom._reader import napari_get_reader, read_dicom
from napari_dicom.core.phantom import ct_phantom_volume, write_ct_phantom, write_text_sr

CT_SMALL = get_testdata_file("CT_small.dcm")
MR_SMALL = get_testdata_file("MR_small.dcm")
RG3 = get_testdata_file("RG3_UNCR.dcm")
VLUT_04 = get_testdata_file("vlut_04.dcm")
PLUGIN = "napari-dicom"


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("phantom")
    write_ct_phantom(folder, n_slices=20, size=96, spacing=(2.5, 0.7, 0.7))
    return folder


def test_get_reader_declines_non_dicom(tmp_path: Path) -> None:
    txt = tmp_path / "notes.txt"
    txt.write_text("not DICOM\n" * 20)
    png = tmp_path / "picture.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(png)
    fake = tmp_path / "fake.dcm"
    fake.write_bytes(b"\x00" * 10)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert napari_get_reader(str(txt)) is None
    assert napari_get_reader(str(png)) is None
    assert napari_get_reader(str(fake)) is None
    assert napari_get_reader(str(empty)) is None
    assert napari_get_reader(str(tmp_path)) is None  # a folder of non-DICOM files
    assert napari_get_reader(str(tmp_path / "missing.dcm")) is None
    assert napari_get_reader([]) is None
    assert napari_get_reader(CT_SMALL) is read_dicom
    assert napari_get_reader([CT_SMALL, str(txt)]) is read_dicom


def test_phantom_folder_one_layer(make_napari_viewer, phantom: Path) -> None:
    assert napari_get_reader(str(phantom)) is read_dicom
    viewer = make_napari_viewer()
    layers = viewer.open(str(phantom), plugin=PLUGIN)
    assert len(layers) == 1 and len(viewer.layers) == 1
    layer = viewer.layers[0]
    assert layer.data.shape == (20, 96, 96)
    np.testing.assert_array_equal(np.asarray(layer.data), ct_phantom_volume(20, 96))
    # napari world = patient (I, P, L) = (-z, y, x) mm (core.geometry): slices go up in z,
    # so down the I axis; rows along +y (posterior), columns along +x (patient left)
    np.testing.assert_allclose(layer.scale, (-2.5, 0.7, 0.7))
    # phantom origin centres the image: first pixel at -size/2 * spacing, first slice z = 0
    np.testing.assert_allclose(layer.translate, (0.0, -96 / 2 * 0.7, -96 / 2 * 0.7), atol=1e-4)
    assert tuple(layer.axis_labels) == ("I", "P", "L")
    # stored window 40/400 (SOFT TISSUE) as LINEAR contrast limits
    assert tuple(layer.contrast_limits) == (-160.0, 239.0)
    assert layer.colormap.name == "gray"
    meta = layer.metadata["dicom"]
    assert meta["display"]["window"]["center"] == 40.0
    assert meta["modality"] == "CT" and meta["value_unit"] == "HU"
    assert len(meta["files"]) == 20
    assert json.loads(json.dumps(meta)) == meta


def test_monochrome1_gray_r_unaltered(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    viewer.open(RG3, plugin=PLUGIN)
    layer = viewer.layers[0]
    ds = pydicom.dcmread(RG3)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    assert layer.colormap.name == "gray_r"
    np.testing.assert_array_equal(np.asarray(layer.data), ds.pixel_array)
    assert layer.metadata["dicom"]["invert"] is True
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    assert tuple(layer.contrast_limits) == (c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2)


def test_ct_small_hu_under_known_pixel(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    viewer.open(CT_SMALL, plugin=PLUGIN)
    layer = viewer.layers[0]
    ds = pydicom.dcmread(CT_SMALL)
    hu = apply_modality_lut(ds.pixel_array, ds)
    # one slice placed in patient space: a slab of one plane (core.geometry), axial so
    # not transposed
    assert layer.data.shape == (1, 128, 128)
    assert layer.data[0, 64, 64] == hu[64, 64]
    assert layer.data[0, 0, 0] == int(ds.pixel_array[0, 0]) - 1024
    # the value napari reports under the cursor at data coordinate (64, 64)
    world = layer.data_to_world((0, 64, 64))
    assert layer.get_value(world, world=True) == hu[64, 64]


def test_mixed_folder_layers_in_series_order(make_napari_viewer, tmp_path: Path) -> None:
    write_ct_phantom(tmp_path / "a", n_slices=4, size=32, series_number=3,
                     series_description="Late")
    write_ct_phantom(tmp_path / "b", n_slices=3, size=32, series_number=2,
                     series_description="Early", seed=5)
    shutil.copy(MR_SMALL, tmp_path / "mr.dcm")
    (tmp_path / "readme.txt").write_text("hello")
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path), plugin=PLUGIN)
    shapes = [layer.data.shape for layer in viewer.layers]
    assert len(viewer.layers) == 3
    # MR_small is one axial slice: a slab of one plane in patient space
    assert (3, 32, 32) in shapes and (4, 32, 32) in shapes and (1, 64, 64) in shapes
    names = [layer.name for layer in viewer.layers]
    assert names.index("2 CT Early") < names.index("3 CT Late")


def test_voi_lut_curve_colormap(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    viewer.open(VLUT_04, plugin=PLUGIN)
    layer = viewer.layers[0]
    ds = pydicom.dcmread(VLUT_04)
    lut = ds.VOILUTSequence[0]
    entries, first, _bits = (int(v) for v in lut.LUTDescriptor)
    assert "VOI LUT" in layer.colormap.name and "curve" in layer.colormap.name
    assert tuple(layer.contrast_limits) == (first, first + (entries or 65536) - 1)
    meta = layer.metadata["dicom"]
    assert meta["display"] == {"window": None, "voi_lut": 0}
    assert json.loads(json.dumps(meta)) == meta


def test_nothing_readable_raises_clear_error(tmp_path: Path) -> None:
    from napari_dicom.core.pixels import DicomLoadError

    paths = write_ct_phantom(tmp_path, n_slices=2, size=32)
    for p in paths:
        p.write_bytes(p.read_bytes()[:-400])
    with pytest.raises(DicomLoadError, match=r"could not|could be decoded|no DICOM"):
        read_dicom(str(tmp_path))



def test_folder_without_images_is_not_claimed(tmp_path: Path) -> None:
    """A folder of reports only is not offered to napari as an image folder; one with an
    image next to the report is, and the report is listed, not opened."""
    write_text_sr(tmp_path / "report.dcm")
    (tmp_path / "README.txt").write_text("CD contents")
    assert napari_get_reader(str(tmp_path)) is None
    shutil.copy(MR_SMALL, tmp_path / "IM0001")  # an extensionless image beside it
    assert napari_get_reader(str(tmp_path)) is read_dicom


def test_single_non_image_file_gets_a_clear_message(tmp_path: Path) -> None:
    from napari_dicom.core.pixels import DicomLoadError

    sr = tmp_path / "report.dcm"
    write_text_sr(sr)
    assert napari_get_reader(str(sr)) is read_dicom
    with pytest.raises(DicomLoadError, match=r"report\.dcm: Basic Text SR Storage \(no pixel"):
        read_dicom(str(sr))
