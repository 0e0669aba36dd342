"""Overlay planes (60xx) as Labels layers beside the unaltered picture: pydicom's overlay
test files and an overlay with an origin offset written into a CT slice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.pixels import pack_bits

from napari_dicom.core.phantom import write_ct_phantom

PLUGIN = "napari-dicom"
FILES = ["MR-SIEMENS-DICOM-WithOverlays.dcm", "examples_overlay.dcm"]


def _layers(viewer, kind: str) -> list:
    return [ly for ly in viewer.layers if type(ly).__name__.lower() == kind]


def _check(image, labels, expected: np.ndarray) -> None:
    """Every pixel of the image plane: its world point holds ``expected`` in the overlay
    layer (both layers may carry a slab axis in front: the last two are row, column)."""
    rows, cols = expected.shape
    lead = image.data.ndim - 2
    rr, cc = np.mgrid[0:rows, 0:cols]
    idx = np.stack([*(np.zeros(rr.size) for _ in range(lead)), rr.ravel(), cc.ravel()], 1)
    world = np.asarray([image.data_to_world(i) for i in idx])
    got = np.asarray([labels.world_to_data(w) for w in world])
    got = np.round(got).astype(int)
    values = labels.data[tuple(got.T)]
    np.testing.assert_array_equal(values.reshape(rows, cols), expected)


@pytest.mark.parametrize("name", FILES)
def test_overlay_files(make_napari_viewer, name: str) -> None:
    path = get_testdata_file(name)
    ds = pydicom.dcmread(path)
    viewer = make_napari_viewer()
    viewer.open(path, plugin=PLUGIN)
    (image,) = _layers(viewer, "image")
    (overlay,) = _layers(viewer, "labels")
    assert "overlay 6000" in overlay.name
    assert overlay.metadata["segmentation"]["object_type"] == "overlay"
    # the picture is not altered: the stored pixels (no rescale in these MR files)
    np.testing.assert_array_equal(np.squeeze(np.asarray(image.data)), ds.pixel_array)
    expected = np.zeros((ds.Rows, ds.Columns), np.uint8)
    bits = ds.overlay_array(0x6000)
    expected[:bits.shape[0], :bits.shape[1]] = bits  # Overlay Origin 1\1
    assert expected.sum() > 100
    _check(image, overlay, expected)


def test_overlay_origin_offset(make_napari_viewer, tmp_path: Path) -> None:
    """An 8 x 12 overlay at Overlay Origin (row 5, column 9) of a 32 x 32 CT slice lands
    on image pixels [4:12, 8:20] (the origin is 1-based, PS3.3 C.9.2.1.1)."""
    (path,) = write_ct_phantom(tmp_path, n_slices=1, size=32)
    ds = pydicom.dcmread(path)
    bits = np.zeros((8, 12), np.uint8)
    bits[1:7, 2:10] = 1
    bits[3, 3] = 0
    ds.add_new((0x6000, 0x0010), "US", 8)
    ds.add_new((0x6000, 0x0011), "US", 12)
    ds.add_new((0x6000, 0x0040), "CS", "G")
    ds.add_new((0x6000, 0x0050), "SS", [5, 9])
    ds.add_new((0x6000, 0x0100), "US", 1)
    ds.add_new((0x6000, 0x0102), "US", 0)
    ds.add_new((0x6000, 0x1500), "LO", "ruler")
    ds.add_new((0x6000, 0x3000), "OW", pack_bits(bits.ravel()))
    ds.save_as(path)
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin=PLUGIN)
    (image,) = _layers(viewer, "image")
    (overlay,) = _layers(viewer, "labels")
    assert overlay.name.endswith("overlay 6000 ruler")
    expected = np.zeros((32, 32), np.uint8)
    expected[4:12, 8:20] = bits
    _check(image, overlay, expected)
    hu = pydicom.dcmread(path).pixel_array.astype(np.int32) - 1024
    np.testing.assert_array_equal(np.squeeze(np.asarray(image.data)), hu)
