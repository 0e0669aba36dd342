"""Independent checks of core/render.py against the standard's formulas, written out here.

Every expected value below is computed in the test from the text of DICOM PS3.3 (C.11.2.1.2.1
LINEAR, C.11.2.1.3.1 SIGMOID, C.11.2.1.3.2 LINEAR_EXACT, C.11.2.1.1 VOI LUT, C.11.1 Modality
LUT, C.7.6.3.1.2 / C.11.6 polarity) or from numpy (percentiles), never by calling render.py.
"""

from __future__ import annotations

import math
import warnings
from fractions import Fraction
from typing import Any

import numpy as np
import pytest

from napari_dicom.core.render import (
    LUT,
    Display,
    IntHistogram,
    Window,
    WindowError,
    limits_to_window,
    minmax_window,
    percentile_limits,
    render_uint8,
    to_uint8,
    voi_lut_output,
    voi_window,
    window_to_limits,
)

# --------------------------------------------------------------------------------------
# the standard's formulas, transcribed (scalar, plain Python floats)
# --------------------------------------------------------------------------------------


def std_linear(x: float, c: float, w: float, ymin: float = 0.0, ymax: float = 255.0) -> Fraction:
    """PS3.3 C.11.2.1.2.1, in exact rational arithmetic."""
    x, c, w = Fraction(x), Fraction(c), Fraction(w)
    half = Fraction(1, 2)
    if x <= c - half - (w - 1) / 2:
        return Fraction(ymin)
    if x > c - half + (w - 1) / 2:
        return Fraction(ymax)
    return ((x - (c - half)) / (w - 1) + half) * (Fraction(ymax) - Fraction(ymin)) + Fraction(ymin)


def std_linear_exact(
    x: float, c: float, w: float, ymin: float = 0.0, ymax: float = 255.0
) -> Fraction:
    """PS3.3 C.11.2.1.3.2, in exact rational arithmetic."""
    x, c, w = Fraction(x), Fraction(c), Fraction(w)
    if x <= c - w / 2:
        return Fraction(ymin)
    if x > c + w / 2:
        return Fraction(ymax)
    return ((x - c) / w + Fraction(1, 2)) * (Fraction(ymax) - Fraction(ymin)) + Fraction(ymin)


def std_sigmoid(x: float, c: float, w: float, ymin: float = 0.0, ymax: float = 255.0) -> float:
    """PS3.3 C.11.2.1.3.1."""
    return (ymax - ymin) / (1 + math.exp(-4 * (x - c) / w)) + ymin


def round_half_up(y: float | Fraction) -> int:
    """The 8-bit quantisation render.py documents: nearest, ties up (exact for Fractions)."""
    return math.floor(Fraction(y) + Fraction(1, 2))


XS = np.arange(-1200, 1600, dtype=np.int16)

LINEAR_WINDOWS = [(40, 400), (-600, 1500), (0.5, 511), (40.25, 81.5), (100, 2), (1000, 4096)]


@pytest.mark.parametrize(("c", "w"), LINEAR_WINDOWS, ids=str)
def test_linear_matches_standard(c: float, w: float) -> None:
    got = voi_window(XS, c, w, "LINEAR")
    exact = [std_linear(int(x), c, w) for x in XS]
    np.testing.assert_allclose(got, np.array(exact, dtype=np.float64), rtol=0, atol=1e-9)
    # the 8-bit picture: rounding to nearest, ties up -- exactly, ties included
    px = render_uint8(XS, Display(Window(c, w)))
    assert px.tolist() == [round_half_up(v) for v in exact]


def test_linear_bounds_exactly() -> None:
    # c=40, w=400: black up to and including 40 - 0.5 - 199.5 = -160, white above 239
    y = voi_window(np.array([-161, -160, -159, 238, 239, 240]), 40, 400)
    assert y[0] == 0 and y[1] == 0 and 0 < y[2] < 1
    assert 254 < y[3] < 255 and y[4] == 255 and y[5] == 255
    assert window_to_limits(40, 400) == (-160.0, 239.0)


def test_linear_width_one_is_a_threshold_at_c_minus_half() -> None:
    x = np.array([-2, -1, 0, 1, 2, 3], np.int16)
    # c = 1.5, w = 1: x <= 1 -> ymin, x > 1 -> ymax
    assert voi_window(x, 1.5, 1).tolist() == [0, 0, 0, 0, 255, 255]
    assert render_uint8(x, Display(Window(1.5, 1))).tolist() == [0, 0, 0, 0, 255, 255]
    # integer centre: threshold at 0.5
    assert render_uint8(x, Display(Window(1, 1))).tolist() == [0, 0, 0, 255, 255, 255]


@pytest.mark.parametrize(("c", "w"), [(40, 400), (0, 1), (0.5, 0.25), (100, 3)], ids=str)
def test_linear_exact_matches_standard(c: float, w: float) -> None:
    xs = np.linspace(-300, 400, 2801)
    got = voi_window(xs, c, w, "LINEAR_EXACT")
    exact = [std_linear_exact(float(x), c, w) for x in xs]
    np.testing.assert_allclose(got, np.array(exact, dtype=np.float64), rtol=0, atol=1e-9)
    px = render_uint8(xs.astype(np.float32), Display(Window(c, w, "LINEAR_EXACT")))
    assert px.tolist() == [round_half_up(v) for v in exact]


def test_linear_exact_differs_from_linear_where_the_standard_says() -> None:
    # LINEAR_EXACT c=0, w=10 spans -5..5; LINEAR c=0, w=10 spans -5..4
    assert voi_window(np.array([4.0]), 0, 10, "LINEAR")[0] == 255
    assert voi_window(np.array([4.0]), 0, 10, "LINEAR_EXACT")[0] == pytest.approx(229.5)


@pytest.mark.parametrize(("c", "w"), [(40, 400), (0, 0.5), (-500, 3000)], ids=str)
def test_sigmoid_matches_standard(c: float, w: float) -> None:
    xs = np.arange(-2000, 2000, dtype=np.int16)
    got = voi_window(xs, c, w, "SIGMOID")
    with np.errstate(over="ignore"):
        want = np.array(
            [std_sigmoid(float(x), c, w) if -4 * (x - c) / w < 700 else 0.0 for x in xs]
        )
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    px = render_uint8(xs, Display(Window(c, w, "SIGMOID")))
    assert px.tolist() == [round_half_up(v) for v in want]


@pytest.mark.parametrize(
    ("fn", "width", "needle"),
    [
        ("LINEAR", 0.5, "at least 1"),
        ("LINEAR", 0, "at least 1"),
        ("LINEAR", -3, "at least 1"),
        ("LINEAR_EXACT", 0, "above 0"),
        ("SIGMOID", -1, "above 0"),
    ],
)
def test_refuses_undefined_windows_with_the_reason(fn: str, width: float, needle: str) -> None:
    with pytest.raises(WindowError, match=needle) as info:
        Window(40, width, fn)
    assert "C.11.2.1" in str(info.value)
    with pytest.raises(WindowError, match=needle):
        voi_window(np.zeros(3), 40, width, fn)


def test_linear_exact_and_sigmoid_accept_widths_below_one() -> None:
    assert Window(0, 0.5, "LINEAR_EXACT").width == 0.5
    assert Window(0, 0.5, "SIGMOID").width == 0.5


@pytest.mark.parametrize("fn", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
@pytest.mark.parametrize(("c", "w"), [(40, 400), (-600.5, 1500.25), (3, 1)], ids=str)
def test_window_limits_round_trip(fn: str, c: float, w: float) -> None:
    lo, hi = window_to_limits(c, w, fn)
    c2, w2 = limits_to_window(lo, hi, fn)
    assert c2 == pytest.approx(c, abs=1e-9) and w2 == pytest.approx(w, abs=1e-9)
    assert Window.from_limits(*Window(c, w, fn).limits(), fn).limits() == pytest.approx((lo, hi))


def test_limits_below_each_other_are_refused() -> None:
    with pytest.raises(WindowError, match="below"):
        limits_to_window(10, 5)


@pytest.mark.parametrize(("lo", "hi"), [(-160, 239), (0, 1), (-1000.5, 2999.25), (7, 7)], ids=str)
def test_napari_ramp_equals_linear_pixel_for_pixel(lo: float, hi: float) -> None:
    """napari maps contrast limits linearly: t = clip((x - lo) / (hi - lo), 0, 1)."""
    x = np.arange(-1100, 3100, dtype=np.int16)
    if hi > lo:
        t = np.clip((x.astype(np.float64) - lo) / (hi - lo), 0.0, 1.0)
    else:  # equal limits: a threshold, values above are white
        t = (x > lo).astype(np.float64)
    want = np.floor(t * 255 + 0.5).astype(np.uint8)
    got = render_uint8(x, Display.from_limits(lo, hi))
    np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------------------
# percentiles, min-max, padding
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dtype", "lo", "hi"),
    [(np.int16, -1024, 3071), (np.uint16, 0, 4095), (np.int32, -70000, 90000)],
    ids=["int16", "uint16", "int32"],
)
@pytest.mark.parametrize(("plo", "phi"), [(1, 99), (0.5, 99.5), (0, 100), (2.5, 97.5), (33.3, 50)])
def test_percentiles_are_exactly_numpy(
    dtype: type, lo: int, hi: int, plo: float, phi: float
) -> None:
    rng = np.random.default_rng(7)
    a = rng.integers(lo, hi, (3, 61, 47)).astype(dtype)
    assert percentile_limits(a, plo, phi) == (np.percentile(a, plo), np.percentile(a, phi))


def test_percentiles_ignore_extremes() -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(-200, 300, (64, 64)).astype(np.int16)
    a[:10] = -2000  # black margin
    a[-3:, :5] = 3000  # burned-in label
    inner = a[(a != a.min()) & (a != a.max())]
    assert percentile_limits(a, 1, 99, ignore_extremes=True) == (
        np.percentile(inner, 1),
        np.percentile(inner, 99),
    )
    # floats follow the same rule
    f = a.astype(np.float32)
    assert percentile_limits(f, 1, 99, ignore_extremes=True) == pytest.approx(
        (np.percentile(inner, 1), np.percentile(inner, 99))
    )


def test_percentiles_exclude_padding() -> None:
    rng = np.random.default_rng(5)
    a = rng.integers(-1000, 1500, (80, 80)).astype(np.int16)
    yy, xx = np.mgrid[:80, :80]
    a[(yy - 40) ** 2 + (xx - 40) ** 2 > 40**2] = -3024  # outside the reconstruction circle
    kept = a[a != -3024]
    assert percentile_limits(a, 1, 99, exclude=[(-3024, -3024)]) == (
        np.percentile(kept, 1),
        np.percentile(kept, 99),
    )
    # without the exclusion, padding (a fifth of the pixels) takes the low percentile
    assert percentile_limits(a, 1, 99)[0] == -3024
    # the same through a histogram summed slice by slice
    h = IntHistogram.of(a[:40]) + IntHistogram.of(a[40:])
    assert percentile_limits(h, 1, 99, exclude=[(-3024, -3024)]) == (
        np.percentile(kept, 1),
        np.percentile(kept, 99),
    )


def test_minmax_window_limits_are_the_data_range() -> None:
    w = minmax_window(-1000, 3000)
    # C.11.2.1.2.1 note: c = (x1 + x2 + 1) / 2, w = x2 - x1 + 1
    assert (w.center, w.width) == (1000.5, 4001)
    assert w.limits() == (-1000, 3000)
    x = np.array([-1000, 3000], np.int16)
    assert render_uint8(x, Display(w)).tolist() == [0, 255]


# --------------------------------------------------------------------------------------
# polarity, rounding, LUTs, edge values
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", [Window(40, 400), Window(40, 400, "SIGMOID"), Window(3, 1)])
def test_invert_is_exact_output_inversion(window: Window) -> None:
    """C.7.6.3.1.2 / C.11.6: y' = ymax + ymin - y on the output range, whatever the data."""
    x = np.arange(-500, 500, dtype=np.int16).reshape(10, 100)
    plain = render_uint8(x, Display(window))
    inv = render_uint8(x, Display(window, invert=True))
    # rounding half up of 255 - y is 255 - rounding half down of y: equal except at ties
    y = voi_window(x, window.center, window.width, window.function)
    want = np.floor(255.0 - y + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(inv, want)
    assert np.abs(inv.astype(int) - (255 - plain.astype(int))).max() <= 1
    # not data dependent (pydicom's apply_presentation_lut uses arr.max() - arr): a crop
    # without the maximum gives the same pixels
    crop = x[:3, :40]
    np.testing.assert_array_equal(render_uint8(crop, Display(window, invert=True)), inv[:3, :40])


def test_ties_round_up_exactly() -> None:
    """Outputs that are exactly k + 0.5 by the standard's formula round up, wherever they
    fall: c = 0.5, w = 511 gives y = x / 2 + 127.5, a tie for every even x; LINEAR_EXACT
    c = -600, w = 1500 gives y = (x + 1350) * 0.17, a tie for x = -1300."""
    x = np.array([-254, -200, 2, 126], np.int16)
    assert render_uint8(x, Display(Window(0.5, 511))).tolist() == [1, 28, 129, 191]
    x2 = np.array([-1300], np.int16)
    assert std_linear_exact(-1300, -600, 1500) == Fraction(17, 2)
    assert render_uint8(x2, Display(Window(-600, 1500, "LINEAR_EXACT"))).tolist() == [9]


def test_uint8_rounds_half_up() -> None:
    # c = 0.5, w = 511: y = x / 2 + 127.5 exactly
    x = np.array([-3, -2, -1, 0, 1, 2, 3], np.int16)
    y = voi_window(x, 0.5, 511)
    assert y.tolist() == [126.0, 126.5, 127.0, 127.5, 128.0, 128.5, 129.0]
    px = render_uint8(x, Display(Window(0.5, 511)))
    assert px.tolist() == [126, 127, 127, 128, 128, 129, 129]
    y8 = to_uint8(np.array([0.49, 0.5, 254.5, 254.49, 300, -4]))
    assert y8.tolist() == [0, 1, 255, 254, 255, 0]


def test_lut_clamps_below_and_above_its_range() -> None:
    """C.11.1 / C.11.2.1.1: inputs below the first mapped value take entry 0, past the end
    the last entry."""
    lut = LUT(first=100, data=np.arange(10) * 100 + 5, bits=10)
    x = np.array([-50, 99, 100, 101, 109, 110, 5000])
    assert lut.apply(x).tolist() == [5, 5, 5, 105, 905, 905, 905]
    assert lut.apply(x.astype(np.float32) + 0.5).tolist() == [5, 5, 5, 105, 905, 905, 905]
    # VOI LUT output scales [0, 2^bits - 1] to [0, 255]
    out = voi_lut_output(np.array([0, 200]), lut)
    np.testing.assert_allclose(out, [5 / 1023 * 255, 905 / 1023 * 255])
    px = render_uint8(np.array([0, 105, 200], np.int16), Display(Window(0, 1), voi_lut=lut))
    assert px.tolist() == [round_half_up(v / 1023 * 255) for v in (5, 505, 905)]


def test_nan_renders_as_the_bottom_of_the_window() -> None:
    x = np.array([np.nan, -1000.0, 40.0, 1000.0], np.float32)
    assert render_uint8(x, Display(Window(40, 400))).tolist() == [0, 0, 128, 255]
    assert render_uint8(x, Display(Window(40, 400, "SIGMOID"))).tolist()[0] == 0
    # inverted (MONOCHROME1): the bottom of the window is shown white
    assert render_uint8(x, Display(Window(40, 400), invert=True)).tolist() == [255, 255, 127, 0]


@pytest.mark.parametrize("value", [0, 40, -1000])
def test_constant_image_is_defined_without_warnings(value: int) -> None:
    a = np.full((16, 16), value, np.int16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = render_uint8(a, Display(Window(40, 400)))
        lo, hi = percentile_limits(a, 1, 99)
        wide = render_uint8(a, Display(Window(40, 100000)))
    assert (lo, hi) == (value, value)
    assert (got == round_half_up(std_linear(value, 40, 400))).all()
    assert (wide == round_half_up(std_linear(value, 40, 100000))).all()


@pytest.mark.parametrize(
    "window",
    [Window(40, 400), Window(0.5, 511), Window(-600, 1500, "LINEAR_EXACT"),
     Window(40, 400, "SIGMOID"), Window(10, 1)],
    ids=lambda w: f"{w.function}-{w.center:g}-{w.width:g}",
)
def test_float32_input_renders_like_integer_input(window: Window) -> None:
    x = np.arange(-2048, 2048, dtype=np.int16).reshape(4, 32, 32)
    for invert in (False, True):
        d = Display(window, invert=invert)
        np.testing.assert_array_equal(render_uint8(x.astype(np.float32), d), render_uint8(x, d))


def test_gamma_acts_on_the_normalised_ramp() -> None:
    x = np.arange(-160, 240, dtype=np.int16)
    t = np.array([std_linear(int(v), 40, 400) for v in x], dtype=np.float64) / 255
    want = np.floor(t**0.5 * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(render_uint8(x, Display(Window(40, 400), gamma=0.5)), want)


def test_palette_indexes_the_rendered_level() -> None:
    pal = np.stack([np.arange(256), 255 - np.arange(256), np.full(256, 7)], axis=1).astype(np.uint8)
    x = np.array([[-1000, 40, 1000]], np.int16)
    got = render_uint8(x, Display(Window(40, 400), palette=pal))
    assert got.shape == (1, 3, 3)
    assert got[0].tolist() == [[0, 255, 7], [128, 127, 7], [255, 0, 7]]


def test_apply_rescale_never_changes_the_callers_array() -> None:
    """C.11.1.1.2 rescale into int16 without touching the decoded stored values; the
    identity rescale hands the stored array back (no copy of a volume for nothing)."""
    from napari_dicom.core.render import apply_rescale

    stored = np.array([[0, 1024, 4095]], np.int16)
    hu = apply_rescale(stored, 1.0, -1024.0, np.int16)
    assert hu.tolist() == [[-1024, 0, 3071]] and hu.dtype == np.int16
    assert stored.tolist() == [[0, 1024, 4095]]
    assert apply_rescale(stored, 1.0, 0.0, np.int16) is stored
    mr = apply_rescale(stored, 3.774114, 0.000061)
    assert mr.dtype == np.float32
    np.testing.assert_allclose(mr, stored * 3.774114 + 0.000061, rtol=1e-6)


@pytest.mark.parametrize(
    ("stored_dtype", "lo", "hi", "slope", "intercept", "out_dtype"),
    [
        (np.uint16, 0, 4095, 1, -1024, np.int16),        # Siemens CT: 12 of 16 bits
        (np.int16, -2000, 3000, 1, -1024, np.int16),     # GE CT: signed, padding -2000
        (np.uint16, 0, 65535, 1, -1024, np.int32),       # Philips-style: all 16 bits
        (np.uint16, 31000, 40000, 1, -32768, np.int16),  # stored above int16, HU fit
        (np.int16, -500, 500, 3, 7, np.int16),           # integer slope
        (np.int16, -500, 500, -2, 100, np.int16),        # negative slope
        (np.uint8, 0, 255, 1, 40000, np.int32),          # intercept beyond int16
        (np.uint16, 0, 4095, 1, -1024, np.int32),        # the widened (int32) volume
    ],
)
def test_apply_rescale_into_a_volume_slot_is_exact(
    stored_dtype: Any, lo: int, hi: int, slope: int, intercept: int, out_dtype: Any,
) -> None:
    """C.11.1.1.2 written into a preallocated slot of the chosen integer dtype (the
    loader's path) equals the rescale worked in int64, for every stored value."""
    from napari_dicom.core.render import apply_rescale

    stored = np.random.default_rng(1).integers(lo, hi, (64, 64), endpoint=True).astype(
        stored_dtype)
    stored[0, :2] = lo, hi
    ref = stored.astype(np.int64) * slope + intercept
    out = np.full((2, 64, 64), 7, out_dtype)
    got = apply_rescale(stored, float(slope), float(intercept), out=out[1])
    assert got.dtype == out_dtype and np.shares_memory(got, out)
    np.testing.assert_array_equal(out[1], ref)
    assert (out[0] == 7).all()  # the other slot is untouched
    assert stored.min() == lo and stored.max() == hi  # the stored values too


def test_data_range_leaves_out_padding_without_copying_the_volume() -> None:
    """Min-max without Pixel Padding (the reader's default window when no window is
    stored) is worked slice by slice: its temporaries are a slice, not the volume."""
    import tracemalloc

    from napari_dicom.core.render import data_range

    rng = np.random.default_rng(0)
    vol = rng.integers(-1000, 2000, (64, 256, 256)).astype(np.int16)
    vol[:, :20] = -3024  # padding outside the reconstruction circle
    tracemalloc.start()
    try:
        lo, hi = data_range(vol, [(-3024, -3024)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    kept = vol[vol != -3024]
    assert (lo, hi) == (float(kept.min()), float(kept.max()))
    assert peak < 0.1 * vol.nbytes
