"""Decoding fidelity on files pydicom and pydicom-data ship (issue 10, decoding part).

Every expectation is computed here from the standard (PS3.3 C.7.6.3 Image Pixel Module,
PS3.5 8 and A.4) over the file's raw bytes, or by an independent decoder; never from the
project's own output. The pictures are checked where users see them: the PNGs of
``napari-dicom export`` (the same ``export_stack`` the napari writer calls) and the values
``load_series`` hands to the napari layer.

Where DCMTK is no reference, the standard is, and the test says why: ``dcmj2pnm``
refuses 32-bit RGB ("'PixelData' has a value representation other than OB ... or OW")
and cannot parse SC_rgb_jpeg.dcm's Implicit VR data set under an explicit VR syntax (its
JPEG stream is compared through a twin written as the syntax says); it ignores the
Per-frame Functional Groups, so per-frame windows (C.7.6.16.2.10) are checked against
the LINEAR formula of C.11.2.1.2.1. For lossy JPEG, DCMTK's ``dcmdjpeg`` (IJG libjpeg,
colour transform by Photometric Interpretation) is the reference decoder.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut

from napari_dicom import cli
from napari_dicom.core.pixels import default_display, load_plane, load_series
from napari_dicom.core.render import render_uint8
from napari_dicom.core.scan import scan
from napari_dicom.core.series import Series

DCMJ2PNM = shutil.which("dcmj2pnm")


def _file(name: str) -> str:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} is not in pydicom / pydicom-data")
    return str(path)


def one_series(path: str | Path) -> Series:
    result = scan([Path(path)])
    assert len(result.series) == 1, result.summary()
    return result.series[0]


def exported(path: str | Path, out: Path, *extra: str) -> list[np.ndarray]:
    """The PNGs ``napari-dicom export`` writes for ``path``, in plane order."""
    assert cli.main(["export", str(path), "-o", str(out), "-q", *extra]) == 0
    pngs = sorted(p for p in out.rglob("*.png"))
    assert pngs, "nothing exported"
    return [np.asarray(Image.open(p)) for p in pngs]


def raw_pixels(path: str) -> tuple[pydicom.Dataset, bytes]:
    """The data set and its Pixel Data bytes exactly as stored (no decoding)."""
    ds = pydicom.dcmread(path)
    return ds, bytes(ds.PixelData)


def to8(values: np.ndarray, bits: int) -> np.ndarray:
    """``round(v * 255 / (2^bits - 1))`` in exact integer arithmetic (half up)."""
    top = (1 << bits) - 1
    v = values.astype(object)
    return np.asarray((v * 510 + top) // (2 * top), dtype=np.uint8)


# --------------------------------------------------------------------------------------
# 1. 32-bit RGB
# --------------------------------------------------------------------------------------

RGB32 = [
    ("SC_rgb_32bit.dcm", "SC_rgb_32bit.dcm"),
    ("SC_rgb_32bit_2frame.dcm", "SC_rgb_32bit_2frame.dcm"),
    ("SC_rgb_expb_32bit.dcm", "SC_rgb_expb_32bit.dcm"),
    ("SC_rgb_expb_32bit_2frame.dcm", "SC_rgb_expb_32bit_2frame.dcm"),
    # RLE files: their native twin's raw bytes are the reference (same picture)
    ("SC_rgb_rle_32bit.dcm", "SC_rgb_32bit.dcm"),
    ("SC_rgb_rle_32bit_2frame.dcm", "SC_rgb_32bit_2frame.dcm"),
]


@pytest.mark.parametrize(("name", "native"), RGB32, ids=[n for n, _ in RGB32])
def test_rgb_32bit_exported_scaled_from_32_bits(name: str, native: str, tmp_path: Path) -> None:
    ds, raw = raw_pixels(_file(native))
    order = ">u4" if ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRBigEndian else "<u4"
    nf = int(ds.get("NumberOfFrames", 1) or 1)
    assert ds.BitsStored == 32 and ds.PlanarConfiguration == 0
    stored = np.frombuffer(raw, order).reshape(nf, ds.Rows, ds.Columns, 3)  # PS3.5 8.1.1
    want = to8(stored, 32)
    assert 64 in want  # the grey 0x40404040 is 64/255 exactly (0x40 * 0x01010101)

    pngs = exported(_file(name), tmp_path / "out")
    assert len(pngs) == nf
    for k in range(nf):
        np.testing.assert_array_equal(pngs[k], want[k])
    grey = np.argwhere((stored[0] == 0x40404040).all(-1))[0]
    assert tuple(pngs[0][tuple(grey)]) == (64, 64, 64)

    # what the napari layer gets: the samples as stored, limits over the 32-bit range
    s = one_series(_file(name))
    data = load_series(s, lazy=False)
    assert data.dtype == np.uint32
    np.testing.assert_array_equal(data.reshape(stored.shape), stored)
    display, _ = default_display(s, data)
    assert display.window.limits() == (0.0, float(2**32 - 1))


# --------------------------------------------------------------------------------------
# 2. big-endian palette
# --------------------------------------------------------------------------------------


def _palette_reference(path: str) -> np.ndarray:
    """PALETTE COLOR per C.7.6.3.1.5/6 from the raw bytes: 8-bit indices, 16-bit LUT
    entries in the file's byte order, high byte kept (the tables are ``x << 8``)."""
    ds, raw = raw_pixels(path)
    big = ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRBigEndian
    entries, first, bits = (int(v) for v in ds.RedPaletteColorLookupTableDescriptor)
    assert bits == 16 and ds.BitsAllocated == 8
    nf = int(ds.get("NumberOfFrames", 1) or 1)
    index = np.frombuffer(raw, np.uint8)
    if big and ds["PixelData"].VR == "OW":  # 8-bit samples in big-endian 16-bit words
        index = index.reshape(-1, 2)[:, ::-1].ravel()  # PS3.5 8.1.1, 7.3
    index = index[: nf * ds.Rows * ds.Columns]
    index = index.reshape(nf, ds.Rows, ds.Columns).astype(np.int64)
    index = np.clip(index - first, 0, (entries or 65536) - 1)
    luts = []
    for c in ("Red", "Green", "Blue"):
        data = ds[f"{c}PaletteColorLookupTableData"].value
        lut = np.frombuffer(data, ">u2" if big else "<u2")
        assert (lut & 0xFF).max() == 0  # 8-bit values shifted up: exact in 8 bits
        luts.append((lut >> 8).astype(np.uint8))
    return np.stack([lut[index] for lut in luts], -1)


@pytest.mark.parametrize("name", ["OBXXXX1A_expb.dcm", "OBXXXX1A_expb_2frame.dcm", "OBXXXX1A.dcm"])
def test_palette_of_big_endian_file(name: str, tmp_path: Path) -> None:
    want = _palette_reference(_file(name))
    assert want.max() == 255 and want.mean() > 10  # a picture, not black
    pngs = exported(_file(name), tmp_path / "out")
    assert len(pngs) == len(want)
    for k, png in enumerate(pngs):
        np.testing.assert_array_equal(png, want[k])
    # the big-endian file shows what its little-endian twin shows
    if name != "OBXXXX1A.dcm":
        twin = _palette_reference(_file("OBXXXX1A.dcm"))[0]
        np.testing.assert_array_equal(pngs[0], twin)
    # and the same in what the layer gets, on every decode path (1 thread: one read of
    # a multi-frame file for all its frames; 2 threads: one read per frame)
    for jobs in (1, 2):
        data = load_series(one_series(_file(name)), lazy=False, jobs=jobs)
        np.testing.assert_array_equal(data.reshape(want.shape), want)


@pytest.mark.skipif(DCMJ2PNM is None, reason="DCMTK's dcmj2pnm is not installed")
def test_big_endian_palette_like_dcmtk(tmp_path: Path) -> None:
    name = _file("OBXXXX1A_expb.dcm")
    subprocess.run([DCMJ2PNM, "+on", "-O", name, str(tmp_path / "dcmtk.png")], check=True,
                   capture_output=True)
    ref = np.asarray(Image.open(tmp_path / "dcmtk.png"))
    np.testing.assert_array_equal(exported(name, tmp_path / "out")[0], ref)


# --------------------------------------------------------------------------------------
# 3. uncompressed YBR_FULL_422
# --------------------------------------------------------------------------------------


def _ybr_full_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """YBR_FULL -> RGB, the inverse of PS3.3 C.7.6.3.1.2's equations (ITU-R BT.601
    full range), rounded and clipped to 8 bits."""
    y, cb, cr = (a.astype(np.float64) for a in (y, cb, cr))
    r = y + 1.402 * (cr - 128)
    g = y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128)
    b = y + 1.772 * (cb - 128)
    return np.clip(np.floor(np.stack([r, g, b], -1) + 0.5), 0, 255).astype(np.uint8)


def test_uncompressed_ybr_full_422(tmp_path: Path) -> None:
    name = _file("SC_ybr_full_422_uncompressed.dcm")
    ds, raw = raw_pixels(name)
    assert ds.PhotometricInterpretation == "YBR_FULL_422" and ds.BitsAllocated == 8
    # PS3.3 C.7.6.3.1.2: each pair of pixels of a row is stored Y1 Y2 Cb Cr
    quads = np.frombuffer(raw, np.uint8)[: ds.Rows * ds.Columns * 2]
    quads = quads.reshape(ds.Rows, ds.Columns // 2, 4)
    y = quads[..., :2].reshape(ds.Rows, ds.Columns)
    cb = np.repeat(quads[..., 2], 2, axis=1)
    cr = np.repeat(quads[..., 3], 2, axis=1)
    want = _ybr_full_to_rgb(y, cb, cr)
    assert len(np.unique(want.reshape(-1, 3), axis=0)) > 4  # colour bands, not one grey

    png = exported(name, tmp_path / "out")[0]
    assert png.shape == (ds.Rows, ds.Columns, 3)
    diff = np.abs(png.astype(int) - want.astype(int))
    assert diff.max() <= 1  # float rounding of the colour transform only
    data = load_series(one_series(name), lazy=False)
    np.testing.assert_array_equal(data, png)


# --------------------------------------------------------------------------------------
# 4, 5, 10. lossy JPEG: libjpeg-turbo, compared with DCMTK's decompression (dcmdjpeg)
# --------------------------------------------------------------------------------------

DCMDJPEG = shutil.which("dcmdjpeg")
needs_dcmdjpeg = pytest.mark.skipif(DCMDJPEG is None, reason="DCMTK's dcmdjpeg is not installed")


def dcmtk_decoded(path: str | Path, tmp_path: Path) -> pydicom.Dataset:
    """The file decompressed by DCMTK (IJG libjpeg; YCbCr converted to RGB as its
    Photometric Interpretation says, dcmdjpeg's default ``+cp``), as a native data set."""
    out = tmp_path / f"dcmdjpeg_{Path(path).name}"
    assert DCMDJPEG is not None
    subprocess.run([DCMDJPEG, str(path), str(out)], check=True, capture_output=True)
    return pydicom.dcmread(out)


def _explicit_twin(src: str, dst: Path) -> None:
    """``src``'s image in a data set encoded as its (explicit VR) transfer syntax says."""
    from pydicom.dataset import Dataset, FileMetaDataset

    ds = pydicom.dcmread(src)
    new = Dataset()
    for kw in ("SOPClassUID", "SOPInstanceUID", "Rows", "Columns", "SamplesPerPixel",
               "PhotometricInterpretation", "BitsAllocated", "BitsStored", "HighBit",
               "PixelRepresentation", "PlanarConfiguration"):
        setattr(new, kw, ds[kw].value)
    new.PixelData = ds.PixelData
    new["PixelData"].VR = "OB"
    new.file_meta = FileMetaDataset()
    new.file_meta.TransferSyntaxUID = ds.file_meta.TransferSyntaxUID
    new.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    new.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    new.save_as(dst, enforce_file_format=True)


@needs_dcmdjpeg
@pytest.mark.filterwarnings("ignore:Expected explicit VR, but found implicit VR")
def test_implicit_vr_data_set_under_explicit_jpeg_syntax(tmp_path: Path) -> None:
    name = _file("SC_rgb_jpeg.dcm")  # Implicit VR data set, JPEG Baseline syntax
    # DCMTK cannot read the file as it is: the reference decodes the same JPEG stream
    # from a twin written as the syntax says
    _explicit_twin(name, tmp_path / "twin.dcm")
    want = dcmtk_decoded(tmp_path / "twin.dcm", tmp_path).pixel_array
    assert want.shape == (256, 256, 3)

    s = one_series(name)
    np.testing.assert_array_equal(load_series(s, lazy=False), want)
    np.testing.assert_array_equal(exported(name, tmp_path / "out")[0], want)
    # the pydicom path (used when imagecodecs is missing) reads the file whole: it
    # decodes too, with pylibjpeg's rounding
    pyd = load_plane(s, 0, fast=None)
    assert np.abs(pyd.astype(int) - want).max() <= 1


@needs_dcmdjpeg
@pytest.mark.parametrize("name", ["JPEG-lossy.dcm", "JPGExtended.dcm"])
def test_12_bit_lossy_jpeg_decoded_like_dcmtk(name: str, tmp_path: Path) -> None:
    path = _file(name)
    ref = dcmtk_decoded(path, tmp_path)
    assert ref.BitsStored == 12
    want = apply_modality_lut(ref.pixel_array, ref)  # C.11.1 on DCMTK's stored values
    s = one_series(path)
    data = load_series(s, lazy=False)
    np.testing.assert_array_equal(data, want)
    # the export renders those values: what the file's window (or min-max) shows
    display, _ = default_display(s, data)
    np.testing.assert_array_equal(exported(path, tmp_path / "out")[0],
                                  render_uint8(want, display))


#: colour JPEG Baseline in every colour model pydicom's test files use
COLOUR_JPEG = [
    "examples_ybr_color.dcm",  # YBR_FULL_422, 30 frames
    "SC_rgb_jpeg_lossy_gdcm.dcm",  # YBR_FULL (GDCM)
    "SC_rgb_dcmtk_+eb+cy+np.dcm",  # YBR_FULL_422 (DCMTK)
    "SC_rgb_small_odd_jpeg.dcm",  # YBR_FULL, odd size
    "SC_jpeg_no_color_transform.dcm",  # RGB components, no Adobe marker
    "SC_rgb_jpeg_app14_dcmd.dcm",  # RGB, Adobe marker
]


@needs_dcmdjpeg
@pytest.mark.parametrize("name", COLOUR_JPEG)
def test_colour_lossy_jpeg_decoded_like_dcmtk(name: str, tmp_path: Path) -> None:
    path = _file(name)
    want = dcmtk_decoded(path, tmp_path).pixel_array
    s = one_series(path)
    data = load_series(s, lazy=False)
    np.testing.assert_array_equal(data.reshape(want.shape), want)
    pngs = exported(path, tmp_path / "out")
    np.testing.assert_array_equal(pngs[0], want.reshape(-1, *want.shape[-3:])[0])


# --------------------------------------------------------------------------------------
# 8, 9. multi-frame files with frames that do not decode: the others load
# --------------------------------------------------------------------------------------


def _multiframe(path: Path, frames: list[np.ndarray], syntax: str, size: int = 32,
                cut: int = 0) -> None:
    """A multi-frame MR of uint16 ``frames`` (header: ``size`` x ``size``) in ``syntax``,
    each frame encoded at its own size; ``cut`` bytes taken off the end of the file."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.pixels.encoders import RLELosslessEncoder
    from pydicom.uid import MRImageStorage, generate_uid

    from napari_dicom.core.phantom import encode_jpeg_lossless

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MR", 1, 1
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.NumberOfFrames = len(frames)
    ds.WindowCenter, ds.WindowWidth = 2000, 4000
    if syntax == pydicom.uid.ExplicitVRLittleEndian:
        ds.PixelData = b"".join(f.astype("<u2").tobytes() for f in frames)
        ds["PixelData"].VR = "OW"
    else:
        def encode(f: np.ndarray) -> bytes:
            if syntax == pydicom.uid.RLELossless:
                return bytes(RLELosslessEncoder.encode(
                    f, rows=f.shape[0], columns=f.shape[1], samples_per_pixel=1,
                    bits_allocated=16, bits_stored=16, pixel_representation=0,
                    photometric_interpretation="MONOCHROME2", number_of_frames=1))
            return encode_jpeg_lossless(f, 16)

        ds.PixelData = encapsulate([encode(f) for f in frames], has_bot=True)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    if cut:
        path.write_bytes(path.read_bytes()[:-cut])


def _frames(n: int, size: int = 32) -> list[np.ndarray]:
    rng = np.random.default_rng(n)
    return [rng.integers(100 * k, 100 * k + 3000, (size, size), dtype=np.uint16)
            for k in range(n)]


@pytest.mark.parametrize("syntax", [pydicom.uid.JPEGLosslessSV1, pydicom.uid.RLELossless],
                         ids=["jpeg-lossless", "rle"])
@pytest.mark.parametrize("jobs", [1, 2])
def test_multiframe_with_frames_of_another_size(tmp_path: Path, syntax: str, jobs: int) -> None:
    frames = _frames(7)
    odd = {2, 3, 5}  # frames 3, 4 and 6 are encoded at 16 x 16, the header says 32 x 32
    encoded = [f[:16, :16] if k in odd else f for k, f in enumerate(frames)]
    path = tmp_path / "mixed.dcm"
    _multiframe(path, encoded, syntax)
    s = one_series(path)
    data = load_series(s, lazy=False, jobs=jobs)
    lowest = min(int(frames[k].min()) for k in range(7) if k not in odd)
    for k, p in enumerate(s.planes):
        if p.frame in odd:
            assert (data[k] == lowest).all()
        else:
            np.testing.assert_array_equal(data[k], frames[p.frame])
    assert sorted(s.planes[k].frame for k in s.damaged) == sorted(odd)
    told = [w for w in s.warnings if "damaged" in w]
    assert told and all(str(path) in w for w in told)
    if jobs == 1:  # one run over the file: one warning naming the frames
        assert len(told) == 1 and "frames 3-4, 6 of" in told[0]

    # the export writes the frames that decode and names the others (exit 1: not every
    # image was converted)
    out = tmp_path / "out"
    assert cli.main(["export", str(path), "-o", str(out), "-q"]) == 1
    pngs = sorted(out.rglob("*.png"))
    assert len(pngs) == 4


def test_truncated_multiframe_decodes_its_complete_frames(tmp_path: Path) -> None:
    frames = _frames(5)
    path = tmp_path / "cut.dcm"
    # 5 frames of 2048 bytes; 3000 bytes cut: frame 4 is incomplete, frame 5 gone
    _multiframe(path, frames, pydicom.uid.ExplicitVRLittleEndian, cut=3000)
    why = ("the file is truncated: 3000 of the 10240 bytes of its pixel data are missing; "
           "frames 4-5 of 5 are incomplete")
    for jobs, lazy in ((1, False), (2, False), (1, True)):
        s = one_series(path)
        data = np.asarray(load_series(s, lazy=lazy, jobs=jobs))
        for k in range(3):
            np.testing.assert_array_equal(data[k], frames[k])
        assert sorted(s.damaged) == [3, 4]
        assert all(why in reason for reason in s.damaged.values())
        assert not any("reshape" in w for w in s.warnings)
        if not lazy:  # one warning naming the frames, not one per frame
            told = [w for w in s.warnings if "truncated" in w]
            assert told == [f"skipped damaged frames 4-5 of {path} ({why}); their planes "
                            f"are filled with the lowest value {min(f.min() for f in frames[:3])}"]

    out = tmp_path / "out"
    assert cli.main(["export", str(path), "-o", str(out), "-q"]) == 1  # 2 images left out
    pngs = sorted(out.rglob("*.png"))
    assert len(pngs) == 3  # the complete frames, windowed as the file says (C 2000 W 4000)
    lo = 2000 - 0.5 - 3999 / 2
    want = np.clip(np.floor(((frames[0] - lo) / 3999) * 255 + 0.5), 0, 255)
    assert np.abs(np.asarray(Image.open(pngs[0])).astype(int) - want).max() <= 1


def test_truncated_single_frame_says_how_much_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "cut1.dcm"
    _multiframe(path, _frames(1), pydicom.uid.ExplicitVRLittleEndian, cut=100)
    res = scan([path])
    assert res.series == []
    assert [s.reason for s in res.skipped] == [
        "cut1.dcm: the file is truncated: header says 2048 bytes of pixel data "
        "(32 x 32 x 1 frame x 16 bits), the file holds 1948 (100 missing)"]


# --------------------------------------------------------------------------------------
# 6. per-frame VOI of Enhanced multi-frame images (C.7.6.16.2.10)
# --------------------------------------------------------------------------------------

#: (centre, width) of each frame's Frame VOI LUT: far apart, so that one frame's window
#: on another frame is plainly a different picture
FRAME_WINDOWS = [(1531.0, 2784.0), (600.0, 400.0), (2400.0, 1000.0), (1200.0, 2000.0)]


def write_enhanced_mr(path: Path, frames: np.ndarray,
                      windows: list[tuple[float, float]] = FRAME_WINDOWS) -> None:
    """An Enhanced MR Image Storage file (PS3.3 A.36.2): positions and the Frame VOI LUT
    (window) per frame in the Per-frame Functional Groups, orientation, pixel measures
    and an identity rescale in the Shared Functional Groups (C.7.6.16)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as Seq
    from pydicom.uid import EnhancedMRImageStorage, ExplicitVRLittleEndian, generate_uid

    def item(**kw: object) -> Dataset:
        d = Dataset()
        for k, v in kw.items():
            setattr(d, k, v)
        return d

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = EnhancedMRImageStorage, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MR", 5, 1
    ds.Rows, ds.Columns = frames.shape[1:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.NumberOfFrames = len(frames)
    ds.SharedFunctionalGroupsSequence = Seq([item(
        PlaneOrientationSequence=Seq([item(ImageOrientationPatient=[1, 0, 0, 0, 1, 0])]),
        PixelMeasuresSequence=Seq([item(PixelSpacing=[0.8, 0.8], SliceThickness=3.0)]),
        PixelValueTransformationSequence=Seq([item(
            RescaleSlope=1, RescaleIntercept=0, RescaleType="US")]),
    )])
    ds.PerFrameFunctionalGroupsSequence = Seq([item(
        PlanePositionSequence=Seq([item(ImagePositionPatient=[0, 0, 3.0 * k])]),
        FrameContentSequence=Seq([item(InStackPositionNumber=k + 1)]),
        FrameVOILUTSequence=Seq([item(WindowCenter=c, WindowWidth=w)]),
    ) for k, (c, w) in enumerate(windows)])
    ds.PixelData = frames.astype("<u2").tobytes()
    ds["PixelData"].VR = "OW"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)


def linear_window_8bit(x: np.ndarray, c: float, w: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 LINEAR into 0..255, rounded to nearest (its note's intent)."""
    x = x.astype(np.float64)
    y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255
    y = np.where(x <= c - 0.5 - (w - 1) / 2, 0, np.where(x > c - 0.5 + (w - 1) / 2, 255, y))
    return np.floor(y + 0.5).astype(np.uint8)


def enhanced_frames() -> np.ndarray:
    yy, xx = np.mgrid[0:48, 0:40]
    return np.stack([(xx * 90 + yy * 7 + 150 * k) % 4096 for k in range(4)]).astype(np.uint16)


def assert_frames_windowed_each(pngs: list[np.ndarray], frames: np.ndarray) -> None:
    assert len(pngs) == len(frames)
    for k, (c, w) in enumerate(FRAME_WINDOWS):
        want = linear_window_8bit(frames[k], c, w)
        diff = np.abs(pngs[k].astype(int) - want)
        assert diff.max() <= 1 and (diff == 0).mean() > 0.99  # float ties only
        if k:  # frame 1's window on this frame is another picture
            other = linear_window_8bit(frames[k], *FRAME_WINDOWS[0])
            assert np.abs(pngs[k].astype(int) - other).mean() > 20


def test_enhanced_per_frame_window_in_the_cli_export(tmp_path: Path) -> None:
    frames = enhanced_frames()
    path = tmp_path / "emr.dcm"
    write_enhanced_mr(path, frames)
    s = one_series(path)
    assert [p.frame for p in s.planes] == [0, 1, 2, 3]
    pngs = exported(path, tmp_path / "out")
    assert_frames_windowed_each(pngs, frames)
    # the manifest names each frame's window
    manifest = next((tmp_path / "out").rglob("*/manifest.csv")).read_text().splitlines()
    rows = [r.split(",") for r in manifest[1:]]
    head = manifest[0].split(",")
    got = [(float(r[head.index("window_center")]), float(r[head.index("window_width")]))
           for r in rows]
    assert got == FRAME_WINDOWS
    # an explicit window is one window for every frame
    pngs = exported(path, tmp_path / "out2", "--window", "600,400")
    for k in range(4):
        assert np.abs(pngs[k].astype(int) - linear_window_8bit(frames[k], 600, 400)).max() <= 1


def test_enhanced_per_frame_window_in_the_core_export(tmp_path: Path) -> None:
    """The napari writer's path: export_stack with the layer's values and metadata."""
    from napari_dicom.core.export import export_stack
    from napari_dicom.core.pixels import plane_windows_note, series_metadata

    frames = enhanced_frames()
    path = tmp_path / "emr.dcm"
    write_enhanced_mr(path, frames)
    s = one_series(path)
    data = load_series(s, lazy=False)
    display, note = default_display(s, data)
    assert (display.window.center, display.window.width) == FRAME_WINDOWS[0]
    meta = series_metadata(s, display, note)
    assert [(w["center"], w["width"]) for w in meta["plane_windows"]] == FRAME_WINDOWS
    assert "its 4 frames carry their own stored windows (W 400 to 2784 / L 600 to 2400)" in (
        plane_windows_note(s) or "")
    export_stack(data, display, tmp_path / "w", meta=meta)
    pngs = [np.asarray(Image.open(p)) for p in sorted((tmp_path / "w").glob("*.png"))]
    assert_frames_windowed_each(pngs, frames)
    # once the user shows another window, that window is exported on every plane
    from napari_dicom.core.render import Display

    export_stack(data, Display.from_limits(0, 4095), tmp_path / "v", meta=meta)
    pngs = [np.asarray(Image.open(p)) for p in sorted((tmp_path / "v").glob("*.png"))]
    for k in range(4):
        want = linear_window_8bit(frames[k], 2048.5, 4096)
        assert np.abs(pngs[k].astype(int) - want).max() <= 1
