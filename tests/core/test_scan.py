"""core.scan: discovery, grouping, slice order, geometry, values; on real and written DICOM."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from napari_dicom.core.phantom import write_ct_phantom, write_text_sr
from napari_dicom.core.scan import header_dict, is_dicom_file, scan

CT_SMALL = get_testdata_file("CT_small.dcm")
MR_TRUNCATED = get_testdata_file("MR_truncated.dcm")
ECT = get_testdata_file("eCT_Supplemental.dcm")
EMRI = get_testdata_file("emri_small.dcm")
SIEMENS = get_testdata_file("MR-SIEMENS-DICOM-WithOverlays.dcm")
VLUT = get_testdata_file("vlut_04.dcm")
MLUT = get_testdata_file("mlut_18.dcm")
RG1 = get_testdata_file("RG1_UNCI.dcm")
YBR = get_testdata_file("examples_ybr_color.dcm")
US_RGB = get_testdata_file("US1_UNCI.dcm")

SIZE = 32


def _ct(folder: Path, **kw) -> list[Path]:
    kw.setdefault("n_slices", 12)
    kw.setdefault("size", SIZE)
    kw.setdefault("noise", 0.0)
    return write_ct_phantom(folder, **kw)


def _only(result):
    assert len(result.series) == 1, result.summary()
    return result.series[0]


# ---------------------------------------------------------------------------------------
# a mixed folder
# ---------------------------------------------------------------------------------------


def _dicomdir_like(path: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.FileSetID = "PHANTOM"
    ds.DirectoryRecordSequence = []
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    root = tmp_path / "mixed"
    a = _ct(root / "a", series_number=2, series_description="Thorax")
    # a localizer in the same series: other size and a sagittal orientation
    series_uid = str(pydicom.dcmread(a[0], stop_before_pixels=True).SeriesInstanceUID)
    _ct(root / "a", n_slices=1, size=24, series_number=2, series_description="Thorax",
        series_uid=series_uid, orientation=(0, 1, 0, 0, 0, -1), file_names="LOC%02d",
        image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    _ct(root / "b", n_slices=5, series_number=3, series_description="Abdomen", seed=3)
    (root / "README.txt").write_text("Phantom study, not a patient.\n")
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "thumb.png")
    write_text_sr(root / "report.dcm")
    _dicomdir_like(root / "DICOMDIR")
    data = a[4].read_bytes()
    (root / "broken.dcm").write_bytes(data[: len(data) - 500])
    return root


def test_mixed_folder(mixed_folder: Path):
    calls = []
    res = scan([mixed_folder], progress=lambda done, total: calls.append((done, total)))
    assert [(s.number, s.description, s.shape) for s in res.series] == [
        (2, "Thorax", (12, SIZE, SIZE)),
        (2, "Thorax (2)", (24, 24)),
        (3, "Abdomen", (5, SIZE, SIZE)),
    ]
    assert res.series[0].name == "2 CT Thorax"
    assert res.non_dicom == 2  # README.txt, thumb.png
    reasons = sorted(s.reason for s in res.non_image)
    assert len(reasons) == 2
    assert reasons[0].startswith("DICOMDIR: Media Storage Directory Storage")
    assert reasons[1] == "report.dcm: Basic Text SR Storage (no pixel data)"
    assert len(res.skipped) == 1
    assert res.skipped[0].reason == (
        "broken.dcm: the file is truncated: header says 2048 bytes of pixel data "
        "(32 x 32 x 1 frame x 16 bits), the file holds 1548 (500 missing)"
    )
    assert calls[-1] == (calls[-1][1], calls[-1][1]) and calls[-1][1] >= 23
    assert res.summary() == (
        "3 series (12 + 1 + 5 images); 1 skipped; 2 non-DICOM objects; 2 non-DICOM files; "
        "1 warnings"
    ).replace("2 non-DICOM objects", "2 non-image DICOM objects")


def test_empty_folder(tmp_path: Path):
    res = scan([tmp_path])
    assert res.series == [] and res.skipped == [] and res.non_dicom == 0
    assert res.summary() == "0 series"


def test_missing_path_is_reported(tmp_path: Path):
    res = scan([tmp_path / "nope"])
    assert res.skipped[0].reason.endswith("nope: no such file or folder")


# ---------------------------------------------------------------------------------------
# order and geometry
# ---------------------------------------------------------------------------------------


def test_order_scale_translate(tmp_path: Path):
    _ct(tmp_path, spacing=(2.5, 0.7, 0.6), slice_thickness=5.0, origin=(-10.0, -20.0, 100.0))
    s = _only(scan([tmp_path]))
    locs = [p.location for p in s.planes]
    assert locs == pytest.approx([100 + 2.5 * i for i in range(12)])
    numbers = [p.instance_number for p in s.planes]
    assert numbers != sorted(numbers)  # shuffled: position wins over Instance Number
    assert s.axis_labels == ("z", "y", "x")
    assert s.scale == pytest.approx((2.5, 0.7, 0.6))  # measured, not SliceThickness 5
    assert s.translate == pytest.approx((100.0, -20.0, -10.0))
    assert s.units == ("mm", "mm", "mm")
    assert s.orientation == (1, 0, 0, 0, 1, 0)
    assert s.warnings == []
    assert s.value_unit == "HU"
    assert s.padding == [(-3024.0, -3024.0)]
    assert [(w.center, w.width, w.explanation) for w in s.windows] == [
        (40, 400, "SOFT TISSUE"), (-600, 1500, "LUNG")]
    assert (s.patient_id, s.study_date, s.modality) == ("PHANTOM", "20240101", "CT")
    assert s.transfer_syntax == "1.2.840.10008.1.2.1"  # the UID; .name gives the words
    assert (s.bits_allocated, s.pixel_representation) == (16, 1)
    assert s.planes[0].intercept == -1024 and s.planes[0].slope == 1


def test_reversed_normal_sorts_along_normal(tmp_path: Path):
    # row direction -x: the normal is -z, so slices run from high z to low z
    _ct(tmp_path, n_slices=4, orientation=(-1, 0, 0, 0, 1, 0), origin=(0.0, 0.0, 0.0))
    s = _only(scan([tmp_path]))
    assert [p.position[2] for p in s.planes] == pytest.approx([0.0, -2.5, -5.0, -7.5])
    assert [p.location for p in s.planes] == pytest.approx([0.0, 2.5, 5.0, 7.5])
    assert s.scale[0] == pytest.approx(2.5)


def test_gap_warning(tmp_path: Path):
    _ct(tmp_path, skip=(5,), origin=(0.0, 0.0, 0.0))
    s = _only(scan([tmp_path]))
    assert s.shape == (11, SIZE, SIZE)
    assert s.scale[0] == pytest.approx(2.5)
    assert s.warnings == [
        "Phantom CT: slice spacing varies from 2.5 to 5 mm: a gap after slice 4 "
        "(z = 10.0 mm); shown with the median spacing 2.5 mm"
    ]


def test_tilt_warning(tmp_path: Path):
    _ct(tmp_path, tilt_deg=15.0)
    s = _only(scan([tmp_path]))
    assert len(s.warnings) == 1
    assert "gantry tilt of 15.0 degrees" in s.warnings[0]
    assert s.scale[0] == pytest.approx(2.5)  # spacing along the normal


def _mr(folder: Path, name: str, z: float, echo: float, inst: int, series_uid: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.SeriesInstanceUID = series_uid
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesNumber = 7
    ds.SeriesDescription = "Dual echo"
    ds.InstanceNumber = inst
    ds.EchoTime = echo
    ds.ImagePositionPatient = [0, 0, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [1, 1]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 4
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelData = np.full((4, 4), inst, np.uint16).tobytes()
    ds.save_as(folder / name, enforce_file_format=True)


def test_two_echoes_make_4d(tmp_path: Path):
    uid = generate_uid()
    inst = 0
    for z in (6.0, 0.0, 3.0):
        for te in (80.0, 10.0):
            inst += 1
            _mr(tmp_path, f"im{inst}", z, te, inst, uid)
    s = _only(scan([tmp_path]))
    assert s.shape == (2, 3, 4, 4)
    assert s.axis_labels == ("echo", "z", "y", "x")
    assert s.scale[1:] == pytest.approx((3.0, 1.0, 1.0))
    order = [(p.location, pydicom.dcmread(p.path).EchoTime) for p in s.planes]
    assert order == [(0, 10), (3, 10), (6, 10), (0, 80), (3, 80), (6, 80)]


def test_unequal_repeats_are_split(tmp_path: Path):
    uid = generate_uid()
    _mr(tmp_path, "a", 0.0, 10.0, 1, uid)
    _mr(tmp_path, "b", 3.0, 10.0, 2, uid)
    _mr(tmp_path, "c", 0.0, 80.0, 3, uid)
    res = scan([tmp_path])
    assert [(s.description, s.shape) for s in res.series] == [
        ("Dual echo (TE 10)", (2, 4, 4)), ("Dual echo (TE 80)", (4, 4))]
    assert any("split into 2 layers" in w for w in res.warnings)


# ---------------------------------------------------------------------------------------
# real files
# ---------------------------------------------------------------------------------------


def test_enhanced_ct_per_frame_values():
    s = _only(scan([ECT]))
    assert s.shape == (2, 512, 512)
    assert [p.frame for p in s.planes] == [1, 0]  # sorted along the normal (0, 0, -1)
    assert [p.position for p in s.planes] == [(99.5, -301.5, -149.0), (99.5, -301.5, -159.0)]
    assert s.scale == pytest.approx((10.0, 0.388672, 0.388672))
    assert s.translate == pytest.approx((149.0, -301.5, -99.5))
    assert all((p.slope, p.intercept) == (1.0, -1024.0) for p in s.planes)
    assert [(w.center, w.width) for w in s.planes[0].windows] == [(49.0, 102.0)]
    assert s.value_unit == "HU"  # Rescale Type "US" (unspecified) on a CT


def test_legacy_multiframe_mr():
    s = _only(scan([EMRI]))
    assert s.shape == (10, 64, 64)
    assert [p.frame for p in s.planes] == list(range(10))
    assert s.scale[0] == pytest.approx(1.2)  # Spacing Between Slices
    assert "no Image Position (Patient)" in s.warnings[0]


def test_cine_colour_multiframe():
    s = _only(scan([YBR]))
    assert s.shape == (30, 240, 320, 3)
    assert s.axis_labels == ("t", "y", "x")
    assert s.units[0] == "ms" and s.scale[0] == pytest.approx(33.333)
    assert s.rgb


def test_rgb_single_frame():
    s = _only(scan([US_RGB]))
    assert s.shape == (480, 640, 3) and s.axis_labels == ("y", "x")


def test_windows_and_explanations():
    s = _only(scan([SIEMENS]))
    assert [(w.center, w.width, w.explanation) for w in s.windows] == [
        (450, 790, "WINDOW1"), (200, 443, "WINDOW2")]
    # (y, x) = (position . column direction, position . row direction)
    assert s.translate == pytest.approx((-175.32202350207, -159.82565509386))


def test_voi_lut_sequence():
    s = _only(scan([VLUT]))
    assert len(s.voi_luts) == 1
    lut = s.voi_luts[0]
    assert (lut.first, lut.entries, lut.bits) == (0, 256, 16)


def test_modality_lut_sequence():
    s = _only(scan([MLUT]))
    lut = s.planes[0].modality_lut
    assert lut is not None
    assert lut.input_range() == (-2048, 2047)
    assert lut.bits == 16


def test_monochrome1_inverts():
    s = _only(scan([RG1]))
    assert s.photometric == "MONOCHROME1" and s.invert
    assert [(w.center, w.width) for w in s.windows] == [(15000, 30000)]
    assert s.units == ("pixel", "pixel")  # Pixel Spacing 0\0 is no spacing


def test_truncated_file_skipped_with_figures():
    res = scan([MR_TRUNCATED])
    assert res.series == []
    assert [s.reason for s in res.skipped] == [
        "MR_truncated.dcm: the file is truncated: header says 8192 bytes of pixel data "
        "(64 x 64 x 1 frame x 16 bits), the file holds 8130 (62 missing)"
    ]


def test_absurd_size_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A header claiming more pixel data than the memory budget is refused at the scan,
    before anything is allocated (the budget is set by its environment variable)."""
    ds = pydicom.dcmread(CT_SMALL)
    ds.NumberOfFrames = 3_000
    ds.save_as(tmp_path / "huge.dcm")
    monkeypatch.setenv("NAPARI_DICOM_MEMORY_BUDGET", "64M")
    res = scan([tmp_path / "huge.dcm"])
    assert res.series == []
    # 128 x 128 x 3000 frames x 2 bytes = 93.75 MiB
    assert res.skipped[0].reason == (
        "huge.dcm: the pixel data its header claims (128 x 128 x 3000 frames x 16 bits) "
        "needs 94 MiB, more than the memory budget of 64 MiB (set NAPARI_DICOM_MEMORY_BUDGET "
        "to change it)")


def test_invalid_window_dropped_with_warning(tmp_path: Path):
    ds = pydicom.dcmread(CT_SMALL)
    ds.WindowCenter = [40, 50]
    ds.WindowWidth = [0, 350]
    ds.save_as(tmp_path / "w.dcm")
    s = _only(scan([tmp_path]))
    assert [(w.center, w.width) for w in s.windows] == [(50, 350)]
    assert any("width of at least 1" in w for w in s.warnings)


# ---------------------------------------------------------------------------------------
# probe and header dict
# ---------------------------------------------------------------------------------------


def test_is_dicom_file(tmp_path: Path):
    text = tmp_path / "notes.txt"
    text.write_text("hello " * 100)
    from PIL import Image

    png = tmp_path / "x.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(png)
    raw = tmp_path / "raw.dcm"
    ds = pydicom.dcmread(CT_SMALL)
    del ds.file_meta
    ds.preamble = None
    ds.save_as(raw, enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert raw.read_bytes()[:2] == struct.pack("<H", 0x0008)
    assert is_dicom_file(CT_SMALL)
    assert is_dicom_file(raw)
    assert not is_dicom_file(text)
    assert not is_dicom_file(png)
    assert not is_dicom_file(tmp_path / "missing")
    assert not is_dicom_file(tmp_path)
    # the preamble-less file scans like the original
    s = _only(scan([raw]))
    assert s.shape == (128, 128) and s.value_unit == "HU"


def test_header_dict_is_json():
    ds = pydicom.dcmread(SIEMENS, stop_before_pixels=True)
    h = header_dict(ds)
    text = json.dumps(h)
    assert "PixelData" not in h
    assert h["Modality"] == "MR"
    assert h["WindowCenter"] == [450.0, 200.0]
    assert h["Rows"] == 484
    assert isinstance(h["PatientName"], str)
    assert len(text) < 200_000
    # overlay data (> 1 kB) is replaced by its size
    big = [v for v in h.values() if isinstance(v, str) and v.endswith(" bytes>")]
    assert big
    e = _only(scan([ECT])).header
    assert isinstance(e["PerFrameFunctionalGroupsSequence"], list)
    json.dumps(e)


def test_dicomdir_path_scans_its_folder(mixed_folder: Path):
    res = scan([mixed_folder / "DICOMDIR"])
    assert len(res.series) == 3


def test_copy_of_real_file_in_folder(tmp_path: Path):
    shutil.copy(CT_SMALL, tmp_path / "ct")
    s = _only(scan([tmp_path]))
    assert s.value_unit == "HU" and s.padding == [(-3024.0, -3024.0)]


def test_a_study_copied_twice_is_read_once(tmp_path: Path) -> None:
    """The same images twice (a CD copied into two folders): one 3-D series, not a 4-D
    stack with a made-up echo axis, and one warning that says so."""
    write_ct_phantom(tmp_path / "CD", n_slices=5, size=32)
    shutil.copytree(tmp_path / "CD", tmp_path / "CD copy")
    result = scan([tmp_path])
    (series,) = result.series
    assert series.shape == (5, 32, 32)
    assert len({p.sop_instance_uid for p in series.planes}) == 5
    (warning,) = [w for w in result.warnings if "same SOP Instance UID" in w]
    assert warning.startswith("5 file(s) repeat images already read")


def test_stack_without_positions_or_spacing_says_so(tmp_path: Path) -> None:
    """Slices with no Image Position, Slice Thickness or Spacing Between Slices: ordered by
    Instance Number, the slice axis counted in pixel steps, and a warning in plain words
    (not a made-up spacing in mm)."""
    paths = write_ct_phantom(tmp_path, n_slices=3, size=16)
    for p in paths:
        ds = pydicom.dcmread(p)
        for kw in ("ImagePositionPatient", "SliceThickness", "SpacingBetweenSlices"):
            if kw in ds:
                delattr(ds, kw)
        ds.save_as(p, enforce_file_format=True)
    (series,) = scan([tmp_path]).series
    assert series.shape == (3, 16, 16)
    assert series.units[0] == "pixel" and series.scale[0] == 1.0
    numbers = [pydicom.dcmread(p.path, stop_before_pixels=True).InstanceNumber
               for p in series.planes]
    assert numbers == sorted(numbers)
    (w,) = [w for w in series.warnings if "no Image Position" in w]
    assert w.endswith("no slice spacing in the header: 1 slice per pixel step")


_SCAN_BOTH_WAYS = r"""
import json, sys, threading
from napari_dicom.core import scan as sc

def digest(r):
    series = [{
        "uid": s.uid, "shape": list(s.shape), "windows": [w.label() for w in s.windows],
        "voi_luts": len(s.voi_luts), "warnings": s.warnings, "scale": list(s.scale),
        "planes": [[p.path, p.frame, p.sop_instance_uid, p.location, p.slope, p.intercept,
                    [w.label() for w in p.windows], p.fragments_at, p.file_frames]
                   for p in s.planes]} for s in r.series]
    return {"series": series, "skipped": [[s.path, s.reason] for s in r.skipped],
            "non_image": [[s.path, s.reason] for s in r.non_image],
            "non_dicom": r.non_dicom, "warnings": r.warnings}

assert threading.active_count() == 1 and sc._can_fork()
steps = []
one = sc.scan([sys.argv[1]], processes=1)
two = sc.scan([sys.argv[1]], processes=2, progress=lambda d, t: steps.append((d, t)))
assert steps[-1][0] == steps[-1][1] and steps == sorted(steps), steps
print(json.dumps({"same": digest(one) == digest(two), "files": steps[-1][1],
                  "series": len(two.series), "skipped": len(two.skipped)}))
"""


def test_scan_in_forked_processes_equals_one_process(tmp_path: Path) -> None:
    """The command line reads headers in forked processes (pure-Python parsing holds the
    GIL); the result must be the same. Run in a fresh interpreter: a fork needs a process
    without other threads, which a pytest-qt session is not."""
    import subprocess
    import sys

    root = tmp_path / "tree"
    _ct(root / "a", n_slices=120, size=16, series_number=1)
    _ct(root / "b", n_slices=110, size=16, series_number=2, seed=1,
        transfer_syntax="1.2.840.10008.1.2.4.70")
    for name in (CT_SMALL, VLUT, EMRI, SIEMENS):
        shutil.copy(name, root / Path(name).name)
    (root / "notes.txt").write_text("not DICOM\n")
    cut = root / "cut.dcm"
    raw = Path(CT_SMALL).read_bytes()
    cut.write_bytes(raw[: len(raw) - 1000])
    proc = subprocess.run([sys.executable, "-c", _SCAN_BOTH_WAYS, str(root)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out == {"same": True, "files": 236, "series": 6, "skipped": 1}


def test_median_is_numpys() -> None:
    """The scan's median (slice spacing, frame time) equals ``np.median`` exactly."""
    from napari_dicom.core.scan import _median

    rng = np.random.default_rng(0)
    for n in range(1, 30):
        for scale in (1e-3, 1.0, 1e6):
            v = rng.normal(size=n) * scale
            assert _median(v) == float(np.median(v))
    assert np.isnan(_median(np.array([1.0, np.nan, 2.0])))
    assert np.isnan(_median(np.array([])))


def _plain(o: object) -> object:
    """A record as nested builtins (dataclasses, arrays and LUTs by value) for ``==``."""
    import dataclasses

    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return (type(o).__name__, {f.name: _plain(getattr(o, f.name))
                                   for f in dataclasses.fields(o)})
    if isinstance(o, np.ndarray):
        return ("array", str(o.dtype), o.shape, o.tolist())
    if isinstance(o, list | tuple):
        return [_plain(x) for x in o]
    return o


def test_fast_header_parse_gives_what_pydicom_gives(tmp_path: Path) -> None:
    """The scan's own parse of explicit VR little endian headers (~3x faster than
    ``dcmread``) yields the same record as pydicom's parse, file by file: every test
    file of pydicom and pydicom-data (CT, MR, enhanced multi-frame with functional
    groups, Modality and VOI LUT sequences, JPEG, RLE, colour, SR, and the implicit, big
    endian and deflated ones it leaves to pydicom) and written JPEG-LL and raw CT."""
    from napari_dicom.core import scan as sc
    from napari_dicom.core.phantom import JPEGLosslessSV1

    write_ct_phantom(tmp_path / "raw", n_slices=2, size=32)
    write_ct_phantom(tmp_path / "jpeg", n_slices=2, size=32, transfer_syntax=JPEGLosslessSV1)
    # the folders of pydicom's own test files and of pydicom-data's (listed directly:
    # get_testdata_files("*") first tries to download what is missing)
    folders = {Path(get_testdata_file(n)).parent for n in ("CT_small.dcm", "emri_small.dcm")}
    files = [str(p) for d in sorted(folders) for p in sorted(d.iterdir()) if p.is_file()]
    files += [str(p) for p in sorted(tmp_path.rglob("*.dcm"))]
    fast = 0
    for f in files:
        with open(f, "rb") as fp:
            fast += sc._fast_header(fp.read(sc.HEADER_BYTES)) is not None
        ours = sc._read_record(f, sc._WindowCache(), fast=True)
        theirs = sc._read_record(f, sc._WindowCache(), fast=False)
        assert _plain(ours) == _plain(theirs), f
    assert fast >= 100  # most test files take the fast parse


def _nested_sequences(depth: int, syntax: bytes = b"1.2.840.10008.1.2.1\0") -> bytes:
    """A Part 10 header (Explicit VR Little Endian) holding Content Sequences nested
    ``depth`` deep, all of undefined length, each innermost item with a Text Value."""
    ts = syntax
    out = b"\0" * 128 + b"DICM" + struct.pack("<HH2sH", 2, 0x10, b"UI", len(ts)) + ts
    sq = struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF)
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    text = struct.pack("<HH2sHI", 0x0040, 0xA160, b"UT", 0, 4) + b"leaf"
    end_item = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    end_sq = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    out += (sq + item) * depth + text + (end_item + end_sq) * depth
    return out + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, 0)


def test_fast_header_nested_sequences_and_depth_limit() -> None:
    """Undefined-length sequences nested 3 deep are parsed like pydicom parses them;
    nested 300 deep, the parse leaves the file to pydicom instead of recursing."""
    import io

    from napari_dicom.core import scan as sc

    buf = _nested_sequences(3)
    parsed = sc._fast_header(buf)
    assert parsed is not None
    ds, pixels_at = parsed
    assert buf[pixels_at : pixels_at + 4] == struct.pack("<HH", 0x7FE0, 0x0010)
    ref = pydicom.dcmread(io.BytesIO(buf), stop_before_pixels=True)
    ours, theirs = ds, ref
    for _ in range(3):
        ours, theirs = ours.ContentSequence[0], theirs.ContentSequence[0]
    assert ours.TextValue == theirs.TextValue == "leaf"
    assert sc._fast_header(_nested_sequences(300)) is None
    # the syntax decides, not the bytes: these data sets would parse, but are not ours
    for other in (b"1.2.840.10008.1.2\0", b"1.2.840.10008.1.2.2\0", b"1.2.840.10008.1.2.1.99",
                  b"1.2.840.10008.1.2.4.95"):  # implicit, big endian, deflate, JPIP deflate
        assert sc._fast_header(_nested_sequences(3, other)) is None
    assert sc._fast_header(_nested_sequences(3, b"1.2.840.10008.1.2.4.70")) is not None
