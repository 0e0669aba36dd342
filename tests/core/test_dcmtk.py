"""Fidelity of the PNG export against DCMTK's dcmj2pnm (second opinion) and the standard.

Our PNGs (``core.export.export_stack``, read back with Pillow) against
``dcmj2pnm +on -O <VOI option>`` on real files from pydicom / pydicom-data:

* DCMTK quantises with ``(Uint8)(offset + x * gradient)`` (truncation), we round to
  nearest as PS3.3 C.11.2.1.2.1 intends, so ours minus DCMTK's is 0 or 1 everywhere --
  including MONOCHROME1 files, where both invert after the VOI step (C.7.6.3.1.2).
* Where DCMTK does not follow the standard (Enhanced functional groups, LINEAR_EXACT) the
  expectation is computed here from the standard's text in exact rational arithmetic.

Modality values come from pydicom (``apply_modality_lut``: float64, fine for one slice).
"""

from __future__ import annotations

import math
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut

from napari_dicom.core.export import export_stack
from napari_dicom.core.render import LUT, Display, Window, minmax_window, needs_inversion

DCMJ2PNM = shutil.which("dcmj2pnm")

pytestmark = [
    pytest.mark.dcmtk,
    pytest.mark.skipif(
        DCMJ2PNM is None, reason="DCMTK's dcmj2pnm is not installed (Debian: apt-get install dcmtk)"
    ),
]

#: grayscale files with a stored window: (file, photometric we expect)
STORED_WINDOW = [
    ("693_UNCI.dcm", "MONOCHROME2"),  # CT, rescale -1024, window 40/100
    ("MR_small.dcm", "MONOCHROME2"),
    ("MR-SIEMENS-DICOM-WithOverlays.dcm", "MONOCHROME2"),  # two windows, overlays
    ("RG1_UNCI.dcm", "MONOCHROME1"),
    ("RG3_UNCR.dcm", "MONOCHROME1"),
    ("MR2_UNCI.dcm", "MONOCHROME2"),  # non-integer rescale slope 3.774114
    ("JPGLosslessP14SV1_1s_1f_8b.dcm", "MONOCHROME2"),  # JPEG lossless, 8 bit
    ("bad_sequence.dcm", "MONOCHROME2"),  # CT with a malformed sequence, decodes
]


def _file(name: str) -> str:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} is not in pydicom / pydicom-data")
    return str(path)


def _first(v: Any) -> float:
    return float(v[0] if isinstance(v, (MultiValue, list, tuple)) else v)


def _values(ds: pydicom.Dataset) -> np.ndarray:
    """Modality values of the first frame (C.11.1: rescale or Modality LUT)."""
    arr = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[0]
    return np.asarray(apply_modality_lut(arr, ds))


def _invert(ds: pydicom.Dataset) -> bool:
    return needs_inversion(ds.PhotometricInterpretation, ds.get("PresentationLUTShape"))


def ours(values: np.ndarray, display: Display, tmp_path: Path) -> np.ndarray:
    """Our PNG, through the export path, read back with Pillow."""
    (png,) = export_stack(values, display, tmp_path / "ours.png", jobs=1)
    with Image.open(png) as im:
        assert im.mode == "L"
        return np.asarray(im)


def dcmtk(path: str, voi: list[str], tmp_path: Path) -> np.ndarray:
    out = tmp_path / "dcmtk.png"
    cmd = [str(DCMJ2PNM), "+on", "-O", *voi, path, str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert run.returncode == 0, f"{' '.join(cmd)} failed: {run.stderr}"
    with Image.open(out) as im:
        assert im.mode == "L"
        return np.asarray(im)


def assert_rounding_vs_truncation(a: np.ndarray, b: np.ndarray) -> None:
    """``a`` (rounded) minus ``b`` (truncated) is 0 or 1 everywhere, on a real picture."""
    assert a.shape == b.shape
    d = a.astype(np.int16) - b.astype(np.int16)
    assert d.min() >= 0 and d.max() <= 1, f"differences from {d.min()} to {d.max()}"
    assert len(np.unique(a)) > 20, "the picture is nearly flat: the comparison would say nothing"


@pytest.mark.parametrize(("name", "photometric"), STORED_WINDOW, ids=[n for n, _ in STORED_WINDOW])
def test_first_stored_window_matches_dcmtk(name: str, photometric: str, tmp_path: Path) -> None:
    path = _file(name)
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == photometric
    window = Window(_first(ds.WindowCenter), _first(ds.WindowWidth))
    display = Display(window, invert=_invert(ds))
    assert display.invert == (photometric == "MONOCHROME1")
    a = ours(_values(ds), display, tmp_path)
    b = dcmtk(path, ["+Wi", "1"], tmp_path)
    assert_rounding_vs_truncation(a, b)


def test_monochrome1_inversion_agrees(tmp_path: Path) -> None:
    """RG3_UNCR (CR, MONOCHROME1): the lowest values are white in both, and not inverting
    would be far from DCMTK."""
    path = _file("RG3_UNCR.dcm")
    ds = pydicom.dcmread(path)
    values = _values(ds)
    window = Window(_first(ds.WindowCenter), _first(ds.WindowWidth))
    a = ours(values, Display(window, invert=True), tmp_path)
    b = dcmtk(path, ["+Wi", "1"], tmp_path)
    low = values <= window.limits()[0]
    assert low.any() and (a[low] == 255).all() and (b[low] == 255).all()
    wrong = ours(values, Display(window, invert=False), tmp_path)
    assert np.abs(wrong.astype(int) - b.astype(int)).mean() > 50


def test_voi_lut_matches_dcmtk(tmp_path: Path) -> None:
    """vlut_04.dcm: VOI LUT Sequence (C.11.2.1.1), ``+Wl 1``."""
    path = _file("vlut_04.dcm")
    ds = pydicom.dcmread(path)
    lut = LUT.from_item(ds.VOILUTSequence[0])
    lo, hi = lut.input_range()
    display = Display(Window.from_limits(lo, hi), voi_lut=lut, invert=_invert(ds))
    a = ours(_values(ds), display, tmp_path)
    b = dcmtk(path, ["+Wl", "1"], tmp_path)
    assert_rounding_vs_truncation(a, b)


@pytest.mark.parametrize("name", ["693_UNCI.dcm", "MR_small.dcm", "RG3_UNCR.dcm"])
def test_minmax_window_matches_dcmtk(name: str, tmp_path: Path) -> None:
    """``+Wm``: the window spanning the data's minimum to maximum (C.11.2.1.2.1 note 4)."""
    path = _file(name)
    ds = pydicom.dcmread(path)
    values = _values(ds)
    display = Display(minmax_window(float(values.min()), float(values.max())), invert=_invert(ds))
    a = ours(values, display, tmp_path)
    b = dcmtk(path, ["+Wm"], tmp_path)
    assert_rounding_vs_truncation(a, b)


@pytest.mark.parametrize(
    ("name", "center", "width"),
    [("693_UNCI.dcm", 300, 1500), ("MR_small.dcm", 500.5, 801), ("RG1_UNCI.dcm", 9000, 12000)],
    ids=str,
)
def test_explicit_window_matches_dcmtk(name: str, center: float, width: float,
                                       tmp_path: Path) -> None:
    path = _file(name)
    ds = pydicom.dcmread(path)
    display = Display(Window(center, width), invert=_invert(ds))
    a = ours(_values(ds), display, tmp_path)
    b = dcmtk(path, ["+Ww", f"{center:g}", f"{width:g}"], tmp_path)
    assert_rounding_vs_truncation(a, b)


# --------------------------------------------------------------------------------------
# where DCMTK is not the reference: the standard's formulas, in exact arithmetic
# --------------------------------------------------------------------------------------


def std_linear_exact(x: Fraction, c: Fraction, w: Fraction) -> Fraction:
    """PS3.3 C.11.2.1.3.2 with ymin = 0, ymax = 255."""
    if x <= c - w / 2:
        return Fraction(0)
    if x > c + w / 2:
        return Fraction(255)
    return ((x - c) / w + Fraction(1, 2)) * 255


def std_linear(x: Fraction, c: Fraction, w: Fraction) -> Fraction:
    """PS3.3 C.11.2.1.2.1 with ymin = 0, ymax = 255."""
    half = Fraction(1, 2)
    if x <= c - half - (w - 1) / 2:
        return Fraction(0)
    if x > c - half + (w - 1) / 2:
        return Fraction(255)
    return ((x - (c - half)) / (w - 1) + half) * 255


def expected_png(values: np.ndarray, fn: Any, c: float, w: float, invert: bool) -> np.ndarray:
    """The standard's output rounded to nearest (ties up), per distinct value."""
    uniq, inverse = np.unique(values, return_inverse=True)
    levels = []
    for v in uniq.tolist():
        y = fn(Fraction(v), Fraction(c), Fraction(w))
        if invert:
            y = 255 - y  # C.7.6.3.1.2: ymax + ymin - y
        levels.append(math.floor(y + Fraction(1, 2)))
    return np.asarray(levels, np.uint8)[inverse].reshape(values.shape)


def test_linear_exact_follows_the_standard(tmp_path: Path) -> None:
    """LINEAR_EXACT (C.11.2.1.3.2): dcmj2pnm does not know it and applies LINEAR, so the
    reference is the formula. 693_UNCI CT values with the window 40/100."""
    ds = pydicom.dcmread(_file("693_UNCI.dcm"))
    values = _values(ds)
    a = ours(values, Display(Window(40, 100, "LINEAR_EXACT")), tmp_path)
    np.testing.assert_array_equal(a, expected_png(values, std_linear_exact, 40, 100, False))
    # and it is not what LINEAR gives: the ramps differ by half a step at each end
    b = ours(values, Display(Window(40, 100, "LINEAR")), tmp_path)
    assert (a != b).any()


def test_non_integer_rescale_follows_the_standard(tmp_path: Path) -> None:
    """MR2_UNCI: Rescale Slope 3.774114 (C.11.1.1.2). DCMTK truncates the rescaled values
    to integers before windowing; the standard keeps them, so the reference is the formula
    on the exact rescaled values."""
    ds = pydicom.dcmread(_file("MR2_UNCI.dcm"))
    values = _values(ds)  # float64, slope * SV + intercept
    c, w = _first(ds.WindowCenter), _first(ds.WindowWidth)
    a = ours(values, Display(Window(c, w)), tmp_path)
    np.testing.assert_array_equal(a, expected_png(values, std_linear, c, w, False))


def test_enhanced_ct_functional_groups_follow_the_standard(tmp_path: Path) -> None:
    """eCT_Supplemental (Enhanced CT, C.7.6.16): Rescale and window live in the Shared
    Functional Groups (Pixel Value Transformation, Frame VOI LUT); dcmj2pnm ignores them
    for the window (``+Wi 1`` finds no top-level window), so the reference is the formula
    with the values read here from the functional groups. Loaded through our pipeline
    (core.scan + core.pixels), which must read them itself."""
    scan_mod = pytest.importorskip("napari_dicom.core.scan")
    from napari_dicom.core.pixels import default_display, load_series

    path = _file("eCT_Supplemental.dcm")
    ds = pydicom.dcmread(path)
    shared = ds.SharedFunctionalGroupsSequence[0]
    pvt = shared.PixelValueTransformationSequence[0]
    voi = shared.FrameVOILUTSequence[0]
    slope, intercept = float(pvt.RescaleSlope), float(pvt.RescaleIntercept)
    c, w = _first(voi.WindowCenter), _first(voi.WindowWidth)
    assert (slope, intercept, c, w) == (1.0, -1024.0, 49.0, 102.0)

    (series,) = scan_mod.scan([path]).series
    # planes are sorted along the slice normal (0, 0, -1): the first plane is file frame 1
    first = series.planes[0].frame
    assert first == 1
    stored = ds.pixel_array[first]
    hu = stored.astype(np.int64) * int(slope) + int(intercept)
    data = np.asarray(load_series(series, lazy=False))
    display, _ = default_display(series, data)
    assert (display.window.center, display.window.width) == (c, w)
    np.testing.assert_array_equal(data[0], hu)
    (png,) = export_stack(data[0], display, tmp_path / "ect.png", jobs=1)
    with Image.open(png) as im:
        got = np.asarray(im)
    np.testing.assert_array_equal(got, expected_png(hu, std_linear, c, w, False))
