"""core.pixels on real DICOM files: modality values, colour, decoders, lazy/eager, errors."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, get_frame
from pydicom.pixels import apply_color_lut, apply_modality_lut, pixel_array
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLosslessSV1,
    generate_uid,
)

from napari_dicom.core import pixels
from napari_dicom.core.phantom import STORED_PADDING, ct_phantom_volume, write_ct_phantom
from napari_dicom.core.pixels import DicomLoadError, load_plane, load_series, value_dtype
from napari_dicom.core.render import Display, Window, render_uint8
from napari_dicom.core.scan import scan
from napari_dicom.core.series import Series

CT_SMALL = get_testdata_file("CT_small.dcm")
MR_SMALL = get_testdata_file("MR_small.dcm")
MR2_UNCI = get_testdata_file("MR2_UNCI.dcm")
MLUT_18 = get_testdata_file("mlut_18.dcm")
ECT = get_testdata_file("eCT_Supplemental.dcm")
PALETTE = get_testdata_file("OBXXXX1A.dcm")
YBR = get_testdata_file("examples_ybr_color.dcm")
JPEG_LL = get_testdata_file("JPEG-LL.dcm")
DEFLATE = get_testdata_file("image_dfl.dcm")
EMRI = get_testdata_file("emri_small.dcm")
US_RGB = get_testdata_file("US1_UNCI.dcm")
TWINS = ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"]


def one_series(*paths: str | Path) -> Series:
    result = scan([Path(p) for p in paths])
    assert len(result.series) == 1, result.summary()
    return result.series[0]


# --------------------------------------------------------------------------------------
# modality values
# --------------------------------------------------------------------------------------


def test_ct_small_hounsfield_units_int16() -> None:
    s = one_series(CT_SMALL)
    ds = pydicom.dcmread(CT_SMALL)
    ref = apply_modality_lut(ds.pixel_array, ds)
    data = load_series(s, lazy=False)
    assert data.shape == (128, 128) == s.shape
    # Bits Stored 16 + intercept -1024 needs int32 in theory; the decoded values fit int16
    assert data.dtype == np.int16
    np.testing.assert_array_equal(data, ref)
    # stored 128 at the corner -> -896 HU; the centre pixel of the image
    assert data[0, 0] == int(ds.pixel_array[0, 0]) - 1024
    assert data[64, 64] == ref[64, 64]


def test_value_dtype_header_rules() -> None:
    assert value_dtype(one_series(CT_SMALL)) == np.int32  # -32768..32767 - 1024 from header
    assert value_dtype(one_series(MR_SMALL)) == np.int16  # identity: the stored dtype
    assert value_dtype(one_series(MR2_UNCI)) == np.float32
    assert value_dtype(one_series(US_RGB)) == np.uint8
    assert value_dtype(one_series(PALETTE)) == np.uint8


def test_mr_float_slope_float32() -> None:
    s = one_series(MR2_UNCI)
    ds = pydicom.dcmread(MR2_UNCI)
    data = load_series(s, lazy=False)
    assert data.dtype == np.float32
    ref = apply_modality_lut(ds.pixel_array, ds)
    np.testing.assert_allclose(data, ref, rtol=1e-6, atol=1e-3)
    y, x = np.unravel_index(int(np.argmax(ds.pixel_array)), ds.pixel_array.shape)
    assert data[y, x] == pytest.approx(3.774114 * int(ds.pixel_array[y, x]) + 0.000061, rel=1e-6)


def _write_slice(path: Path, stored: np.ndarray, z: float, intercept: float, slope: float,
                 series_uid: str, instance: int) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.PatientID = "P"
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = 5
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [0, 0, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1, 1]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = f"{intercept:g}"
    ds.RescaleSlope = f"{slope:g}"
    ds.PixelData = stored.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_per_slice_rescale(tmp_path: Path) -> None:
    stored = np.arange(16, dtype=np.uint16).reshape(4, 4) * 100
    uid = generate_uid()
    intercepts = [-1024, -1000, 0]
    for k, icpt in enumerate(intercepts):
        _write_slice(tmp_path / f"s{k}.dcm", stored, float(k), icpt, 1, uid, k + 1)
    s = one_series(tmp_path)
    assert [p.intercept for p in s.planes] == intercepts
    data = load_series(s, lazy=False)
    assert data.dtype == np.int16
    for k, icpt in enumerate(intercepts):
        np.testing.assert_array_equal(data[k], stored.astype(np.int32) + icpt)
    np.testing.assert_array_equal(np.asarray(load_series(s, lazy=True)), data)


def test_per_slice_float_slope(tmp_path: Path) -> None:
    stored = np.arange(16, dtype=np.uint16).reshape(4, 4)
    uid = generate_uid()
    _write_slice(tmp_path / "a.dcm", stored, 0.0, 0, 1, uid, 1)
    _write_slice(tmp_path / "b.dcm", stored, 1.0, 0.5, 2.5, uid, 2)
    s = one_series(tmp_path)
    data = load_series(s, lazy=False)
    assert data.dtype == np.float32  # one plane's rescale is not integer: the whole series
    np.testing.assert_array_equal(data[0], stored.astype(np.float32))
    np.testing.assert_array_equal(data[1], stored.astype(np.float32) * 2.5 + 0.5)


def test_modality_lut_sequence() -> None:
    s = one_series(MLUT_18)
    ds = pydicom.dcmread(MLUT_18)
    assert s.planes[0].modality_lut is not None
    ref = apply_modality_lut(ds.pixel_array, ds)
    data = load_series(s, lazy=False)
    assert data.dtype.kind == "i"
    np.testing.assert_array_equal(data, ref)


def test_enhanced_ct_per_frame_values() -> None:
    s = one_series(ECT)
    ds = pydicom.dcmread(ECT)
    pvt = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    slope, intercept = float(pvt.RescaleSlope), float(pvt.RescaleIntercept)
    assert (slope, intercept) == (1.0, -1024.0)
    data = load_series(s, lazy=False)
    assert data.shape == (2, 512, 512)
    assert data.dtype == np.int16
    frames = [s.planes[k].frame for k in range(2)]
    for k, f in enumerate(frames):
        stored = pixel_array(ECT, index=f)
        np.testing.assert_array_equal(data[k], stored.astype(np.int32) - 1024)
    # load_plane decodes only the asked frame, with the same values
    np.testing.assert_array_equal(load_plane(s, 1), data[1])


def test_multiframe_mr_eager_reads_frames_in_order() -> None:
    s = one_series(EMRI)
    ds = pydicom.dcmread(EMRI)
    data = load_series(s, lazy=False, jobs=2)
    assert data.shape == (10, 64, 64)
    for k, p in enumerate(s.planes):
        np.testing.assert_array_equal(data[k], ds.pixel_array[p.frame])


# --------------------------------------------------------------------------------------
# colour
# --------------------------------------------------------------------------------------


def test_palette_colour_to_rgb() -> None:
    s = one_series(PALETTE)
    ds = pydicom.dcmread(PALETTE)
    ref16 = apply_color_lut(ds.pixel_array, ds)  # 16-bit palette: entries x << 8
    data = load_series(s, lazy=False)
    assert data.shape == (600, 800, 3) and data.dtype == np.uint8
    np.testing.assert_array_equal(data, (ref16 >> 8).astype(np.uint8))
    assert data.max() == 255  # 255 << 8 stays 255, not 254


def test_ybr_jpeg_converted_to_rgb() -> None:
    from PIL import Image

    s = one_series(YBR)
    data = load_series(s, lazy=False)
    assert data.shape == (30, 240, 320, 3) and data.dtype == np.uint8
    ds = pydicom.dcmread(YBR)
    frame0 = get_frame(ds.PixelData, 0, number_of_frames=30)
    with Image.open(io.BytesIO(frame0)) as im:  # Pillow decodes YCbCr JPEG to RGB
        ref = np.asarray(im.convert("RGB"))
    k0 = [p.frame for p in s.planes].index(0)
    diff = np.abs(data[k0].astype(int) - ref.astype(int))
    assert diff.mean() < 1.0 and diff.max() <= 8  # same picture, decoder rounding only
    # not left in YCbCr: a YBR image of red-ish content would differ in every channel
    assert np.abs(data[k0].astype(int) - _ycbcr(ref)).mean() > 10


def _ycbcr(rgb: np.ndarray) -> np.ndarray:
    r, g, b = (rgb[..., i].astype(float) for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return np.stack([y, cb, cr], -1)


def test_rgb_as_stored() -> None:
    s = one_series(US_RGB)
    ds = pydicom.dcmread(US_RGB)
    np.testing.assert_array_equal(load_series(s, lazy=False), ds.pixel_array)


# --------------------------------------------------------------------------------------
# compressed transfer syntaxes
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TWINS)
def test_compressed_twin_equals_uncompressed(name: str) -> None:
    ref = load_series(one_series(MR_SMALL), lazy=False)
    data = load_series(one_series(get_testdata_file(name)), lazy=False)
    assert data.dtype == ref.dtype
    np.testing.assert_array_equal(data, ref)


def test_jpeg_lossless_fast_path_equals_pydicom() -> None:
    s = one_series(JPEG_LL)
    ref = pydicom.dcmread(JPEG_LL).pixel_array
    assert pixels._use_fast(s) == "jpeg"  # imagecodecs is installed in the dev environment
    np.testing.assert_array_equal(load_series(s, lazy=False), ref)
    np.testing.assert_array_equal(load_plane(s, 0, fast=None), ref)


def test_jpeg_lossless_series_equals_uncompressed(tmp_path: Path) -> None:
    hu = ct_phantom_volume(6, 64)
    write_ct_phantom(tmp_path / "raw", 6, 64, volume=hu)
    write_ct_phantom(tmp_path / "jll", 6, 64, volume=hu, transfer_syntax=JPEGLosslessSV1)
    raw = load_series(one_series(tmp_path / "raw"), lazy=False)
    jll = load_series(one_series(tmp_path / "jll"), lazy=False)
    np.testing.assert_array_equal(raw, hu)
    np.testing.assert_array_equal(jll, hu)


def test_deflated_file() -> None:
    s = one_series(DEFLATE)
    ref = pydicom.dcmread(DEFLATE).pixel_array
    data = load_series(s, lazy=False)
    assert data.dtype == np.uint8
    np.testing.assert_array_equal(data, ref)


# --------------------------------------------------------------------------------------
# lazy / eager, errors
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("phantom")
    write_ct_phantom(folder, n_slices=12, size=64)
    return folder


def test_lazy_equals_eager(phantom: Path) -> None:
    import dask.array as da

    s = one_series(phantom)
    eager = load_series(s, lazy=False)
    lazy = load_series(s, lazy=True)
    assert isinstance(lazy, da.Array)
    assert lazy.shape == eager.shape == (12, 64, 64)
    assert lazy.chunks[0] == (1,) * 12
    np.testing.assert_array_equal(np.asarray(lazy[5]), eager[5])
    np.testing.assert_array_equal(lazy.compute(), eager)
    np.testing.assert_array_equal(eager, ct_phantom_volume(12, 64))


def test_progress_reports_every_plane(phantom: Path) -> None:
    seen: list[tuple[int, int]] = []
    load_series(one_series(phantom), lazy=False, jobs=2, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (12, 12)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_lazy_default_on_memory_not_planes(phantom: Path) -> None:
    """lazy=None is decided on the bytes the array needs against the budget."""
    import dask.array as da

    s = one_series(phantom)
    need = 12 * 64 * 64 * 2  # int16 HU
    assert isinstance(load_series(s), np.ndarray)
    assert isinstance(load_series(s, budget=need), np.ndarray)
    assert isinstance(load_series(s, budget=need - 1), da.Array)


def test_corrupt_plane_skipped_with_warning(tmp_path: Path) -> None:
    paths = write_ct_phantom(tmp_path, n_slices=5, size=32, shuffle_instance_numbers=False)
    s = one_series(tmp_path)
    bad = paths[2]
    raw = bad.read_bytes()
    bad.write_bytes(raw[: len(raw) - 500])  # pixel data cut short
    data = load_series(s, lazy=False)
    good = ct_phantom_volume(5, 32)
    k_bad = [p.path for p in s.planes].index(str(bad))
    for k in range(5):
        if k != k_bad:
            np.testing.assert_array_equal(data[k], good[k])
    lowest = min(good[k].min() for k in range(5) if k != k_bad)
    assert (data[k_bad] == lowest).all()
    notes = [w for w in s.warnings if "skipped damaged image" in w]
    assert len(notes) == 1 and str(bad) in notes[0]


def test_all_planes_corrupt_raises(tmp_path: Path) -> None:
    paths = write_ct_phantom(tmp_path, n_slices=2, size=32)
    s = one_series(tmp_path)
    for p in paths:
        p.write_bytes(p.read_bytes()[:-300])
    with pytest.raises(DicomLoadError, match="could be decoded"):
        load_series(s, lazy=False)


def test_missing_decoder_names_syntax_and_package(tmp_path: Path) -> None:
    jxl = UID("1.2.840.10008.1.2.4.110")  # JPEG XL Lossless: no pydicom 3.0 decoder
    paths = write_ct_phantom(tmp_path, n_slices=2, size=32, transfer_syntax=JPEGLosslessSV1)
    for p in paths:
        # pydicom 3.0 refuses to write a syntax it does not know: write MPEG2 (same UID
        # length) and patch the bytes of the Transfer Syntax UID
        ds = pydicom.dcmread(p)
        ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")
        ds.PixelData = encapsulate([b"\xff\x0a" + b"\x00" * 30])
        ds.save_as(p, enforce_file_format=True)
        raw = p.read_bytes()
        assert raw.count(b"1.2.840.10008.1.2.4.100\x00") == 1
        p.write_bytes(raw.replace(b"1.2.840.10008.1.2.4.100\x00", jxl.encode() + b"\x00"))
    s = one_series(tmp_path)
    with pytest.raises(DicomLoadError, match="JPEG XL") as info:
        load_series(s, lazy=False)
    assert str(s.planes[0].path) in str(info.value)
    msg = pixels.missing_decoder_message("1.2.840.10008.1.2.4.91")
    assert msg is None  # installed here
    j2k = pixels._DECODER_PACKAGES["1.2.840.10008.1.2.4.91"]
    assert j2k == ("JPEG 2000", "pylibjpeg-openjpeg or python-gdcm")


# --------------------------------------------------------------------------------------
# default display and metadata
# --------------------------------------------------------------------------------------


def test_default_display_stored_window_and_metadata(phantom: Path) -> None:
    s = one_series(phantom)
    data = load_series(s, lazy=False)
    display, note = pixels.default_display(s, data)
    assert (display.window.center, display.window.width) == (40.0, 400.0)
    assert display.window.limits() == (-160.0, 239.0)
    assert "W 400 / L 40" in note
    meta = pixels.series_metadata(s, display, note)
    assert json.loads(json.dumps(meta)) == meta
    assert meta["display"] == meta["default"]
    assert meta["display"]["window"]["center"] == 40.0
    assert meta["files"] == [p.path for p in s.planes]
    assert meta["padding"] == [[STORED_PADDING - 1024.0, STORED_PADDING - 1024.0]]
    assert "12 images of 64 x 64" in meta["summary"] and "HU" in meta["summary"]


def test_default_display_minmax_excludes_padding_lazy(phantom: Path) -> None:
    s = one_series(phantom)
    s.windows = []
    # another modality than CT (a CT in HU opens in the soft-tissue window instead:
    # tests/core/test_ct_window.py): the min-max window over the data without padding
    s.modality = "MR"
    display, note = pixels.default_display(s, load_series(s, lazy=True))
    hu = ct_phantom_volume(12, 64)
    assert "lazy" in note and "padding" in note
    lo, hi = display.window.limits()
    inside = hu[hu != STORED_PADDING - 1024]
    assert inside.min() <= lo and hi <= inside.max()
    assert lo > STORED_PADDING - 1024  # the -3024 padding does not stretch the window


def test_file_without_file_meta_opens_like_pydicom_reads_it() -> None:
    """OT-PAL-8-face.dcm (pydicom-data) has no File Meta Information, so no Transfer Syntax
    UID: pydicom's file-based reader refuses it. The encoding pydicom detects (implicit VR
    little endian) decides; its 16-bit palette gives the same 8-bit RGB as pydicom's
    ``apply_color_lut`` keeps in its high byte."""
    path = get_testdata_file("OT-PAL-8-face.dcm")
    (series,) = scan([path]).series
    assert series.transfer_syntax == "" and series.rgb
    data = load_series(series, lazy=False)
    ds = pydicom.dcmread(path, force=True)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ref = apply_color_lut(ds.pixel_array, ds)
    assert data.shape == (480, 640, 3) and data.dtype == np.uint8
    np.testing.assert_array_equal(data, (ref >> 8).astype(np.uint8))
    assert int(data.max()) == 255


# --------------------------------------------------------------------------------------
# PlaneStack (the batch export's plane-by-plane source) and the JPEG frame offsets
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, JPEGLosslessSV1])
def test_plane_stack_equals_eager_load(tmp_path: Path, ts: str) -> None:
    hu = ct_phantom_volume(7, 48)
    write_ct_phantom(tmp_path, 7, 48, volume=hu, transfer_syntax=ts)
    s = one_series(tmp_path)
    eager = load_series(s, lazy=False)
    stack = pixels.PlaneStack(s)
    assert stack.shape == eager.shape == (7, 48, 48) and len(stack) == 7
    assert stack.dtype == np.int32  # what the header allows ...
    assert stack[0:3].dtype == eager.dtype == np.int16  # ... narrowed as the eager load does
    np.testing.assert_array_equal(stack[2:5], eager[2:5])
    np.testing.assert_array_equal(stack[6], eager[6])
    np.testing.assert_array_equal(np.asarray(stack), hu)
    picked = pixels.PlaneStack(s, [5, 1])
    assert picked.shape == (2, 48, 48)
    np.testing.assert_array_equal(picked[0:2], eager[[5, 1]])


def test_plane_stack_names_the_damaged_file(tmp_path: Path) -> None:
    paths = write_ct_phantom(tmp_path, n_slices=4, size=32, shuffle_instance_numbers=False)
    s = one_series(tmp_path)  # scanned while intact, damaged afterwards
    bad = paths[2]
    bad.write_bytes(bad.read_bytes()[:-500])
    k_bad = [p.path for p in s.planes].index(str(bad))
    stack = pixels.PlaneStack(s)
    good = [k for k in range(4) if k != k_bad]
    np.testing.assert_array_equal(stack[good[0]], ct_phantom_volume(4, 32)[good[0]])
    with pytest.raises(DicomLoadError, match="the file is truncated: 500 of the 2048") as info:
        stack[0:4]
    assert str(bad) in str(info.value)


#: grey series whose modality values are integers: PlaneStack renders them by stored value
#: (CT rescale, identity MR, Modality LUT Sequence, JPEG Lossless 16 and 8 bit, a VOI LUT,
#: an enhanced multi-frame CT with per-frame rescale)
BY_STORED = ["CT_small.dcm", "MR_small.dcm", "mlut_18.dcm", "JPEG-LL.dcm", "emri_small.dcm",
             "eCT_Supplemental.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm", "vlut_04.dcm"]


def _display_variants(base: Display) -> list[Display]:
    """The stored display and what the widget can make of it: other VOI functions,
    inversion, gamma, a colour palette."""
    w = base.window
    ramp = np.arange(256)
    palette = np.stack([ramp, 255 - ramp, (ramp * 7) % 256], axis=1).astype(np.uint8)
    return [
        base,
        Display(Window(w.center, w.width, "SIGMOID")),
        Display(Window(w.center + 0.5, max(w.width / 3, 1.0), "LINEAR_EXACT"), invert=True),
        Display(w, invert=True, gamma=0.6),
        Display(w, gamma=1.7, palette=palette),
    ]


def _assert_renders_like_values(stack: pixels.PlaneStack, s: Series) -> None:
    base, _ = pixels.default_display(s, np.asarray(stack))
    n = len(stack)
    for d in [*_display_variants(base), *([base] if base.voi_lut is None else [])]:
        want = render_uint8(stack[0:n], d)
        np.testing.assert_array_equal(stack.render_uint8(slice(0, n), d), want)
        np.testing.assert_array_equal(stack.render_uint8(n - 1, d), want[n - 1])


@pytest.mark.parametrize("name", BY_STORED)
def test_plane_stack_renders_stored_values_like_the_values(name: str) -> None:
    s = one_series(get_testdata_file(name))
    stack = pixels.PlaneStack(s)
    assert stack._by_stored  # the stored-value lookup is what this test checks
    _assert_renders_like_values(stack, s)


def test_plane_stack_renders_per_slice_rescale_and_float_slope(tmp_path: Path) -> None:
    stored = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 61) % 4096
    uid = generate_uid()
    (tmp_path / "int").mkdir()
    for k, icpt in enumerate([-1024, -1000, 0, 7]):  # four transforms, four tables
        _write_slice(tmp_path / "int" / f"s{k}.dcm", stored, float(k), icpt, 1 + k % 2, uid, k)
    s = one_series(tmp_path / "int")
    stack = pixels.PlaneStack(s)
    assert stack._by_stored and len({(p.slope, p.intercept) for p in s.planes}) == 4
    _assert_renders_like_values(stack, s)
    floaty = one_series(MR2_UNCI)  # float modality values: rendered from the values
    stack = pixels.PlaneStack(floaty)
    assert not stack._by_stored
    _assert_renders_like_values(stack, floaty)


def test_fast_check_holds_for_the_same_writer(tmp_path: Path) -> None:
    """A passed fast-decode check is kept for later series from the same writer
    (Implementation Class UID and Version Name), syntax and pixel layout, as it holds
    for a series' other planes; another writer's series is checked on its own, and a
    series without file meta is never taken on trust."""
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        write_ct_phantom(tmp_path / name, 1, 32, transfer_syntax=JPEGLosslessSV1, seed=seed,
                         series_number=seed)
    (c_file,) = (tmp_path / "c").iterdir()
    ds = pydicom.dcmread(c_file)
    ds.file_meta.ImplementationClassUID = "1.2.826.0.1.3680043.10.1234"
    ds.file_meta.ImplementationVersionName = "OTHER_WRITER"
    ds.save_as(c_file, enforce_file_format=True)
    sa, sb, sc = (one_series(tmp_path / n) for n in "abc")
    assert sa.implementation == sb.implementation != sc.implementation
    assert sc.implementation == "1.2.826.0.1.3680043.10.1234 OTHER_WRITER"
    pixels._FAST_CHECKED.clear()
    assert pixels._use_fast(sa) == pixels._use_fast(sb) == "jpeg"
    assert len(pixels._FAST_CHECKED) == 1  # b took a's check
    assert pixels._use_fast(sc) == "jpeg"
    assert len(pixels._FAST_CHECKED) == 2  # c was checked on its own
    unknown = dataclasses.replace(sb, implementation="")
    assert pixels._fast_signature(unknown, "jpeg") is None
    for s in (sb, sc):  # and the trusted decode gives pydicom's values
        (plane,) = s.planes
        ref = pydicom.dcmread(plane.path)
        want = ref.pixel_array.astype(np.int32) * int(ref.RescaleSlope) + int(ref.RescaleIntercept)
        np.testing.assert_array_equal(pixels.PlaneStack(s)[0], want)


def _multiframe_jpeg_ll(path: Path, frames: np.ndarray, with_offsets: bool) -> None:
    """A legacy multi-frame CT, JPEG Lossless SV1, one fragment per frame."""
    from napari_dicom.core.phantom import encode_jpeg_lossless

    src = write_ct_phantom(path.parent / "one", 1, frames.shape[-1])[0]
    ds = pydicom.dcmread(src)
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.NumberOfFrames = len(frames)
    ds.PixelData = encapsulate([encode_jpeg_lossless(f, 16) for f in frames],
                               has_bot=with_offsets)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.save_as(path, enforce_file_format=True)


@pytest.mark.parametrize("with_offsets", [True, False])
def test_jpeg_frames_read_at_the_scanned_offset(tmp_path: Path, with_offsets: bool) -> None:
    stored = (ct_phantom_volume(5, 32).astype(np.int32) + 1024).astype(np.int16)
    path = tmp_path / "multi.dcm"
    _multiframe_jpeg_ll(path, stored, with_offsets)
    s = one_series(path)
    raw = path.read_bytes()
    ref = pixel_array(str(path))
    assert ref.shape == (5, 32, 32)
    for p in s.planes:
        assert p.file_frames == 5 and p.fragments_at is not None
        # the scan points at the Basic Offset Table item (FFFE,E000), empty or not
        assert raw[p.fragments_at : p.fragments_at + 4] == b"\xfe\xff\x00\xe0"
        np.testing.assert_array_equal(pixels._fast_decode(str(path), p.frame, s, p),
                                      ref[p.frame])
    assert pixels._use_fast(s) == "jpeg"
    np.testing.assert_array_equal(load_series(s, lazy=False), ref - 1024)


def test_single_frame_jpeg_offset_matches_pydicom(tmp_path: Path) -> None:
    paths = write_ct_phantom(tmp_path, 3, 32, transfer_syntax=JPEGLosslessSV1)
    s = one_series(tmp_path)
    for p in s.planes:
        assert p.file_frames == 1 and p.fragments_at is not None
        np.testing.assert_array_equal(pixels._fast_decode(p.path, None, s, p),
                                      pydicom.dcmread(p.path).pixel_array)
    assert {p.path for p in s.planes} == {str(q) for q in paths}


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned-12", "signed-12"])
def test_jpeg_lossless_decoders_agree_with_unused_high_bits(tmp_path: Path,
                                                            signed: bool) -> None:
    """12 bits stored in 16, the unused high bits set to garbage (PS3.5 8.1.1 allows it)
    and the stream encoded with all 16 bits: libjpeg-turbo (the fast path, masking or
    sign-extending the decoded plane in place), imagecodecs' other lossless decoders and
    pydicom's pylibjpeg give the same stored values, and the loaded volume holds them."""
    from napari_dicom.core.phantom import encode_jpeg_lossless

    rng = np.random.default_rng(3)
    low = rng.integers(-2048 if signed else 0, 2048 if signed else 4096, (3, 32, 32))
    garbage = rng.integers(0, 16, (3, 32, 32)) << 12
    bits = ((low & 0xFFF) | garbage).astype(np.uint16)  # what the file holds
    paths = write_ct_phantom(tmp_path, n_slices=3, size=32, shuffle_instance_numbers=False)
    for path, plane in zip(paths, bits, strict=True):
        ds = pydicom.dcmread(path)
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, int(signed)
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
        ds.PixelData = encapsulate([encode_jpeg_lossless(plane, 16)])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
        ds.save_as(path, enforce_file_format=True)
    s = one_series(tmp_path)
    assert pixels._use_fast(s) == "jpeg"
    for k, p in enumerate(s.planes):
        fast, _ = pixels._decode(p.path, p.frame, s, fast="jpeg", plane=p)
        ref, _ = pixels._decode(p.path, p.frame, s, fast=None, plane=p)  # pydicom
        np.testing.assert_array_equal(fast, low[k])
        np.testing.assert_array_equal(ref, low[k])
        for decoder in ("ljpeg_decode", "jpegsof3_decode"):
            other = pixels._fast_decode(p.path, p.frame, s, p, decoder=decoder)
            np.testing.assert_array_equal(other, low[k])
    np.testing.assert_array_equal(load_series(s, lazy=False), low)
