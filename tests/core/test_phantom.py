"""The synthetic CT phantom: real DICOM files whose decoded HU equal the model volume."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from napari_dicom.core.phantom import (
    HU_PADDING,
    STORED_PADDING,
    ct_phantom_volume,
    read_hu,
    write_ct_phantom,
)


def test_volume_tissues():
    v = ct_phantom_volume(20, 64)
    assert v.dtype == np.int16 and v.shape == (20, 64, 64)
    # corners are outside the reconstruction circle
    assert v[0, 0, 0] == HU_PADDING == -3024
    # lungs only in the upper slices, liver in the lower ones
    def lung(a):
        return int(((a > -950) & (a < -750)).sum())

    assert lung(v[-1]) > 300
    assert lung(v[0]) == 0
    assert (v[0] > 1400).sum() > 0  # vertebral cortex
    body = v[10][(v[10] > -200) & (v[10] < 200)]
    assert abs(float(np.median(body)) - 40) < 15  # soft tissue around 40 HU
    # deterministic
    assert np.array_equal(v, ct_phantom_volume(20, 64))


def test_written_files(tmp_path):
    paths = write_ct_phantom(tmp_path, n_slices=8, size=32, spacing=(2.5, 0.7, 0.6),
                             slice_thickness=5.0)
    assert len(paths) == 8
    vol = ct_phantom_volume(8, 32)
    ds = pydicom.dcmread(paths[3])
    assert ds.SOPClassUID == CTImageStorage
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert [float(x) for x in ds.WindowCenter] == [40, -600]
    assert [float(x) for x in ds.WindowWidth] == [400, 1500]
    assert list(ds.WindowCenterWidthExplanation) == ["SOFT TISSUE", "LUNG"]
    assert ds.PixelPaddingValue == STORED_PADDING
    assert float(ds.RescaleIntercept) == -1024 and float(ds.RescaleSlope) == 1
    assert [float(x) for x in ds.PixelSpacing] == [0.7, 0.6]
    assert float(ds.SliceThickness) == 5.0
    assert [float(x) for x in ds.ImagePositionPatient] == pytest.approx([-9.6, -11.2, 7.5])
    # stored = HU + 1024
    assert np.array_equal(ds.pixel_array.astype(np.int32) - 1024, vol[3])
    # instance numbers are shuffled against position
    numbers = [int(pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber) for p in paths]
    assert sorted(numbers) == list(range(1, 9)) and numbers != sorted(numbers)


@pytest.mark.parametrize(
    "ts", [JPEGLosslessSV1, RLELossless, JPEGLSLossless, JPEG2000Lossless],
    ids=["jpeg-lossless-sv1", "rle", "jpeg-ls", "j2k"],
)
def test_compressed_output_decodes_identically(tmp_path, ts):
    paths = write_ct_phantom(tmp_path, n_slices=3, size=48, transfer_syntax=ts)
    vol = ct_phantom_volume(3, 48)
    for i, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        assert ds.file_meta.TransferSyntaxUID == ts
        assert np.array_equal(read_hu(p), vol[i])
    if ts == JPEGLosslessSV1:
        frame = next(pydicom.encaps.generate_frames(pydicom.dcmread(paths[0]).PixelData))
        sos = frame.index(b"\xff\xda")
        # SOS: Ns=1, Cs, Td/Ta, then Ss = predictor selection value 1, Se 0, Ah/Al 0
        assert frame[sos + 7] == 1 and frame[sos + 9] == 0
