"""The DICOM grayscale display pipeline as pure array functions.

Stored value -> Modality LUT -> VOI LUT -> polarity -> 8-bit display value.
Section numbers are DICOM PS3.3 unless said otherwise.

Every formula the reader, the widget, the writer and the CLI use lives here, once:

* :class:`Window` and :func:`window_to_limits` / :func:`limits_to_window`: a VOI window and
  the napari contrast limits that show the same ramp.
* :func:`voi_window`: LINEAR (C.11.2.1.2.1), LINEAR_EXACT (C.11.2.1.3.2), SIGMOID
  (C.11.2.1.3.1), written as the standard writes them.
* :class:`LUT`: Modality LUT Sequence (C.11.1) and VOI LUT Sequence (C.11.2.1.1) items.
* :func:`minmax_window`, :class:`IntHistogram`, :func:`percentile_limits`: data-driven
  windows, exact on integer data.
* :class:`Display` and :func:`render_uint8`: a window (or a VOI LUT), gamma, polarity and
  an optional colour palette applied to an array, ending in uint8 with rounding to nearest
  (``floor(y + 0.5)``). Integer data goes through a lookup table; no float64 copy of a
  volume is made (float data is worked slice by slice in float32).

Rounding: the standard leaves the final quantisation to the implementation; we round to
nearest (half up). DCMTK's dcmj2pnm truncates, so the two differ by at most 1 grey level.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from .counting import compiled, count_into

VOIFunction = Literal["LINEAR", "LINEAR_EXACT", "SIGMOID"]
VOI_FUNCTIONS: tuple[VOIFunction, ...] = ("LINEAR", "LINEAR_EXACT", "SIGMOID")

#: width of the contrast-limit span used to show a SIGMOID window in napari, in widths on
#: each side of the centre. At c +/- 2w the sigmoid is within 0.00034 of its asymptotes,
#: i.e. it rounds to 0 and 255 exactly, so clamping there changes no 8-bit value.
SIGMOID_SPAN = 2.0

#: largest integer value range rendered through a lookup table (beyond it: float32 path)
MAX_LUT_RANGE = 1 << 22


class WindowError(ValueError):
    """A window, LUT or percentile request that the standard (or arithmetic) refuses."""


def normalize_function(function: str | None) -> VOIFunction:
    """Return the canonical VOI LUT Function name (C.11.2.1.3), LINEAR when absent.

    Accepts the DICOM spelling (``LINEAR_EXACT``) and a friendlier one (``linear exact``).
    """
    if function is None:
        return "LINEAR"
    name = str(function).strip().upper().replace(" ", "_").replace("-", "_")
    if name == "":
        return "LINEAR"
    if name not in VOI_FUNCTIONS:
        raise WindowError(
            f"unknown VOI LUT Function {function!r}: expected one of {', '.join(VOI_FUNCTIONS)}"
        )
    return name


def check_window(center: float, width: float, function: str = "LINEAR") -> None:
    """Refuse a window the standard does not define, with a message that says why.

    LINEAR needs ``width >= 1`` (C.11.2.1.2.1); LINEAR_EXACT and SIGMOID need
    ``width > 0`` (C.11.2.1.3.1, C.11.2.1.3.2).
    """
    fn = normalize_function(function)
    if not (math.isfinite(center) and math.isfinite(width)):
        raise WindowError(f"window centre and width must be finite numbers (got {center}, {width})")
    if fn == "LINEAR" and width < 1:
        raise WindowError(
            f"a LINEAR window needs a width of at least 1 (PS3.3 C.11.2.1.2.1); got {width:g}"
        )
    if fn != "LINEAR" and width <= 0:
        raise WindowError(f"a {fn} window needs a width above 0 (PS3.3 C.11.2.1.3); got {width:g}")


@dataclass(frozen=True)
class Window:
    """A VOI window: centre, width and VOI LUT Function, in modality units (e.g. HU).

    ``explanation`` is the Window Center & Width Explanation (0028,1055) when the window
    came from a file, or the preset name.
    """

    center: float
    width: float
    function: VOIFunction = "LINEAR"
    explanation: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "function", normalize_function(self.function))
        object.__setattr__(self, "center", float(self.center))
        object.__setattr__(self, "width", float(self.width))
        check_window(self.center, self.width, self.function)

    def limits(self) -> tuple[float, float]:
        """The napari contrast limits that show this window (see :func:`window_to_limits`)."""
        return window_to_limits(self.center, self.width, self.function)

    @classmethod
    def from_limits(
        cls, lo: float, hi: float, function: str = "LINEAR", explanation: str = ""
    ) -> Window:
        """The window whose ramp napari shows for contrast limits ``(lo, hi)``."""
        c, w = limits_to_window(lo, hi, function)
        return cls(c, w, normalize_function(function), explanation)

    def label(self) -> str:
        """Radiology-style readout, e.g. ``W 400 / L 40``."""
        return f"W {_fmt(self.width)} / L {_fmt(self.center)}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "center": self.center,
            "width": self.width,
            "function": self.function,
            "explanation": self.explanation,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Window:
        return cls(
            float(d["center"]),
            float(d["width"]),
            normalize_function(d.get("function")),
            str(d.get("explanation", "")),
        )


def _fmt(v: float) -> str:
    return f"{v:.0f}" if float(v).is_integer() else f"{v:.4g}"


def window_to_limits(center: float, width: float, function: str = "LINEAR") -> tuple[float, float]:
    """napari contrast limits ``(lo, hi)`` that show the same ramp as the window.

    napari maps ``lo`` to the bottom and ``hi`` to the top of the colormap, linearly.

    * LINEAR (C.11.2.1.2.1): ``x <= c - 0.5 - (w-1)/2`` is black, ``x > c - 0.5 + (w-1)/2``
      is white, the ramp between is linear: ``lo = c - 0.5 - (w-1)/2``,
      ``hi = c - 0.5 + (w-1)/2``.
    * LINEAR_EXACT (C.11.2.1.3.2): ``lo = c - w/2``, ``hi = c + w/2``.
    * SIGMOID (C.11.2.1.3.1) has no bounds; the span ``c +/- SIGMOID_SPAN * w`` is where
      the curve goes from 0 to 255 in 8 bits. napari shows the curve through a colormap
      over that span (:func:`display_curve`).
    """
    fn = normalize_function(function)
    check_window(center, width, fn)
    if fn == "LINEAR":
        return (center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2)
    if fn == "LINEAR_EXACT":
        return (center - width / 2, center + width / 2)
    return (center - SIGMOID_SPAN * width, center + SIGMOID_SPAN * width)


def limits_to_window(lo: float, hi: float, function: str = "LINEAR") -> tuple[float, float]:
    """Inverse of :func:`window_to_limits`: ``(center, width)`` for contrast limits.

    LINEAR: ``w = hi - lo + 1``, ``c = (lo + hi)/2 + 0.5``. LINEAR_EXACT: ``w = hi - lo``,
    ``c = (lo + hi)/2``. SIGMOID: ``w = (hi - lo) / (2 * SIGMOID_SPAN)``, ``c = (lo + hi)/2``.
    Raises :class:`WindowError` when ``hi < lo`` or the result is not a valid window.
    """
    fn = normalize_function(function)
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise WindowError(f"contrast limits must be finite (got {lo}, {hi})")
    if hi < lo:
        raise WindowError(f"the upper contrast limit {hi:g} is below the lower one {lo:g}")
    if fn == "LINEAR":
        c, w = (lo + hi) / 2 + 0.5, hi - lo + 1
    elif fn == "LINEAR_EXACT":
        c, w = (lo + hi) / 2, hi - lo
    else:
        c, w = (lo + hi) / 2, (hi - lo) / (2 * SIGMOID_SPAN)
    check_window(c, w, fn)
    return c, w


# --------------------------------------------------------------------------------------
# VOI functions, written as the standard writes them
# --------------------------------------------------------------------------------------


def voi_window(
    x: npt.ArrayLike,
    center: float,
    width: float,
    function: str = "LINEAR",
    ymin: float = 0.0,
    ymax: float = 255.0,
) -> npt.NDArray[np.floating[Any]]:
    """Apply a VOI window to modality values ``x``; output in ``[ymin, ymax]`` (unrounded).

    LINEAR, PS3.3 C.11.2.1.2.1 (``w >= 1``)::

        if   x <= c - 0.5 - (w-1)/2: y = ymin
        elif x >  c - 0.5 + (w-1)/2: y = ymax
        else: y = ((x - (c - 0.5)) / (w-1) + 0.5) * (ymax - ymin) + ymin

    LINEAR_EXACT, C.11.2.1.3.2 (``w > 0``)::

        if   x <= c - w/2: y = ymin
        elif x >  c + w/2: y = ymax
        else: y = ((x - c) / w + 0.5) * (ymax - ymin) + ymin

    SIGMOID, C.11.2.1.3.1 (``w > 0``)::

        y = (ymax - ymin) / (1 + exp(-4 (x - c) / w)) + ymin

    With ``w == 1`` LINEAR is a threshold at ``c - 0.5``. NaN input gives ``ymin``.
    Worked in float64 (call it per slice, or on a LUT's inputs).
    """
    fn = normalize_function(function)
    check_window(center, width, fn)
    a = np.asarray(x)
    # float64 whatever the input (callers pass a slice or a LUT's inputs): float32 input
    # then gives exactly the pixels of the same values stored as integers
    xf = a.astype(np.float64, copy=False)
    span = ymax - ymin
    if fn == "SIGMOID":
        with np.errstate(over="ignore"):
            y = span / (1.0 + np.exp(-4.0 * (xf - center) / width)) + ymin
    else:
        # one division of an exactly computed numerator: a result that is exactly k + 0.5
        # (a tie of the rounding to 8 bits) comes out exactly, so rounding is half up
        if fn == "LINEAR":
            lo, hi = window_to_limits(center, width, fn)
            if width == 1:
                y = np.where(xf > lo, ymax, ymin).astype(np.float64)
                return _nan_to(y, xf, ymin)
            d = width - 1
            y = ((xf - (center - 0.5)) * span + 0.5 * d * span) / d + ymin
        else:
            lo, hi = center - width / 2, center + width / 2
            y = ((xf - center) * span + 0.5 * width * span) / width + ymin
        y = np.where(xf <= lo, ymin, np.where(xf > hi, ymax, y))
    return _nan_to(np.asarray(y, dtype=np.float64), xf, ymin)


def _nan_to(
    y: npt.NDArray[np.floating[Any]], x: npt.NDArray[Any], value: float
) -> npt.NDArray[np.floating[Any]]:
    if x.dtype.kind == "f":
        nan = np.isnan(x)
        if nan.any():
            y = np.where(nan, value, y).astype(y.dtype, copy=False)
    return y


def invert_output(y: npt.ArrayLike, ymin: float = 0.0, ymax: float = 255.0) -> npt.NDArray[Any]:
    """MONOCHROME1 / Presentation LUT Shape INVERSE: ``y' = ymax + ymin - y``.

    Applied after the VOI step, to the output range (C.7.6.3.1.2, C.11.6), not to the data:
    unlike pydicom's ``apply_presentation_lut`` it does not depend on the data's maximum.
    """
    a = np.asarray(y)
    return (ymax + ymin) - a


def to_uint8(y: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """Quantise display values in [0, 255] to uint8 by rounding to nearest (half up)."""
    a: npt.NDArray[np.float64] = np.asarray(y, dtype=np.float64)
    out: npt.NDArray[np.uint8] = np.clip(np.floor(a + 0.5), 0, 255).astype(np.uint8)
    return out


def needs_inversion(photometric: str | None, presentation_lut_shape: str | None) -> bool:
    """Whether the display inverts, per C.7.6.3.1.2 and C.11.6.

    Presentation LUT Shape INVERSE inverts and IDENTITY does not, whatever the
    photometric interpretation; without it, MONOCHROME1 inverts. (DCMTK agrees:
    ``PLS == INVERSE or (MONOCHROME1 and PLS absent)``.)
    """
    pls = (presentation_lut_shape or "").strip().upper()
    if pls == "INVERSE":
        return True
    if pls == "IDENTITY":
        return False
    return (photometric or "").strip().upper() == "MONOCHROME1"


# --------------------------------------------------------------------------------------
# LUTs: Modality LUT Sequence (C.11.1) and VOI LUT Sequence (C.11.2.1.1)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LUT:
    """A DICOM LUT: LUT Descriptor ``[entries, first mapped, bits]`` and LUT Data.

    Entries of 0 mean 65536 (C.11.1.1). Inputs below ``first`` map to entry 0, inputs past
    the end map to the last entry.
    """

    first: int
    data: npt.NDArray[np.int64]
    bits: int
    explanation: str = ""

    def __post_init__(self) -> None:
        data = np.asarray(self.data, dtype=np.int64).ravel()
        if data.size == 0:
            raise WindowError("a LUT needs at least one entry in LUT Data")
        object.__setattr__(self, "data", data)

    @classmethod
    def from_item(cls, item: Any) -> LUT:
        """Build from a pydicom Dataset item of a Modality/VOI LUT Sequence."""
        desc = [int(v) for v in item.LUTDescriptor]
        if len(desc) != 3:
            raise WindowError(f"LUT Descriptor must have 3 values, got {desc}")
        entries, first, bits = desc
        entries = entries or 65536
        raw = item["LUTData"]
        value = raw.value
        if isinstance(value, (bytes, bytearray)):
            dt = "<u1" if bits <= 8 and len(value) == entries else "<u2"
            data = np.frombuffer(value, dtype=dt)
        else:
            data = np.asarray(value if isinstance(value, Sequence) else [value])
        if data.size < entries:
            raise WindowError(
                f"LUT Data holds {data.size} entries but the LUT Descriptor says {entries}"
            )
        explanation = str(item.get("LUTExplanation", "") or "")
        return cls(first, data[:entries].astype(np.int64), bits, explanation)

    @property
    def entries(self) -> int:
        return int(self.data.size)

    @property
    def output_bits(self) -> int:
        """Bits of the LUT output range: the descriptor's, widened if the data exceed it."""
        top = int(self.data.max())
        return max(self.bits, top.bit_length())

    def input_range(self) -> tuple[int, int]:
        """First and last input value the table maps (values outside are clamped)."""
        return self.first, self.first + self.entries - 1

    def apply(self, x: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Look ``x`` up in the table (outside inputs clamp to the first / last entry)."""
        a = np.asarray(x)
        if a.dtype.kind == "f":
            a = np.where(np.isnan(a), self.first, a)
            idx = np.clip(np.floor(a) - self.first, 0, self.entries - 1).astype(np.intp)
        else:
            idx = np.clip(a.astype(np.int64) - self.first, 0, self.entries - 1)
        out: npt.NDArray[np.int64] = self.data[idx]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "first": self.first,
            "bits": self.bits,
            "data": self.data.tolist(),
            "explanation": self.explanation,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LUT:
        return cls(
            int(d["first"]), np.asarray(d["data"]), int(d["bits"]), str(d.get("explanation", ""))
        )


def voi_lut_output(
    x: npt.ArrayLike, lut: LUT, ymin: float = 0.0, ymax: float = 255.0
) -> npt.NDArray[np.float64]:
    """VOI LUT Sequence (C.11.2.1.1): table output scaled from ``[0, 2^bits - 1]`` to
    ``[ymin, ymax]``."""
    top = float((1 << lut.output_bits) - 1)
    return lut.apply(x).astype(np.float64) / top * (ymax - ymin) + ymin


# --------------------------------------------------------------------------------------
# Modality LUT: rescale (C.11.1.1.2) with the smallest honest dtype
# --------------------------------------------------------------------------------------


def rescale_dtype(
    stored_min: float, stored_max: float, slope: float, intercept: float
) -> np.dtype[Any]:
    """dtype for ``slope * SV + intercept`` over the stored range: integer when slope and
    intercept are integers (int16 where the result fits, else int32), float32 otherwise."""
    if float(slope).is_integer() and float(intercept).is_integer():
        ends = (slope * stored_min + intercept, slope * stored_max + intercept)
        lo, hi = min(ends), max(ends)
        for dt in (np.int16, np.int32):
            info = np.iinfo(dt)
            if info.min <= lo and hi <= info.max:
                return np.dtype(dt)
        return np.dtype(np.float32)
    return np.dtype(np.float32)


def _residue(value: float, dtype: np.dtype[Any]) -> Any:
    """The integer ``value`` as a scalar of the integer ``dtype``, modulo 2**bits."""
    bits = 8 * dtype.itemsize
    r = int(value) % (1 << bits)
    if dtype.kind == "i" and r >= 1 << (bits - 1):
        r -= 1 << bits
    return dtype.type(r)


def apply_rescale(
    stored: npt.NDArray[Any], slope: float, intercept: float, dtype: npt.DTypeLike | None = None,
    out: npt.NDArray[Any] | None = None,
) -> npt.NDArray[Any]:
    """``U = RescaleSlope * SV + RescaleIntercept`` (C.11.1.1.2), never in float64.

    ``dtype`` defaults to :func:`rescale_dtype` over the dtype's full stored range. With
    slope 1 and intercept 0 and an unchanged integer dtype, ``stored`` itself is returned.

    ``out``: write the result there instead (its dtype is the one used; an integer one
    must hold every result): one pass over memory where slope is 1, for a loader that
    fills one preallocated volume.
    """
    if out is not None:
        if out.dtype.kind not in "iu":
            np.copyto(out, stored, casting="unsafe")
            if slope != 1:
                out *= np.float32(slope)
            if intercept != 0:
                out += np.float32(intercept)
        elif stored.dtype.kind in "iu" and float(slope).is_integer() and float(
                intercept).is_integer():
            # integer arithmetic modulo 2**bits of out, in place: every step keeps the
            # value's residue, and the caller's promise that out holds every result makes
            # the residue the value; 8-10x faster than working in int64 and casting
            np.copyto(out, stored, casting="unsafe")
            if slope != 1:
                np.multiply(out, _residue(slope, out.dtype), out=out)
            if intercept != 0:
                np.add(out, _residue(intercept, out.dtype), out=out)
        elif slope == 1:  # integer arithmetic (int64 for the sum), cast into out, exact
            np.add(stored, np.int64(intercept), out=out, casting="unsafe")
        else:
            np.multiply(stored, np.int64(slope), out=out, casting="unsafe")
            np.add(out, np.int64(intercept), out=out, casting="unsafe")
        return out
    if dtype is None:
        info = np.iinfo(stored.dtype) if stored.dtype.kind in "iu" else None
        dtype = (
            rescale_dtype(info.min, info.max, slope, intercept)
            if info is not None
            else np.dtype(np.float32)
        )
    dt = np.dtype(dtype)
    if dt.kind in "iu":
        out = stored.astype(dt, copy=False)
        if slope == 1 and intercept == 0:
            return out
        if out is stored:  # never change the caller's array
            out = out.copy()
        if slope != 1:
            out *= int(slope)
        if intercept != 0:
            out += int(intercept)
        return out
    out = stored.astype(np.float32)
    if slope != 1:
        out *= np.float32(slope)
    if intercept != 0:
        out += np.float32(intercept)
    return out


# --------------------------------------------------------------------------------------
# Data-driven windows: min-max and percentiles (exact on integer data)
# --------------------------------------------------------------------------------------


def minmax_window(lo: float, hi: float, explanation: str = "min-max") -> Window:
    """LINEAR window spanning values ``lo..hi`` (C.11.2.1.2.1 note 4):
    ``c = (x1 + x2 + 1) / 2``, ``w = x2 - x1 + 1``; its contrast limits are exactly
    ``(x1, x2)``."""
    if hi < lo:
        raise WindowError(f"min-max window: the maximum {hi:g} is below the minimum {lo:g}")
    return Window((lo + hi + 1) / 2, hi - lo + 1, "LINEAR", explanation)


def check_percentiles(lo_q: float, hi_q: float) -> None:
    """Refuse percentiles outside 0..100 or not increasing (:class:`WindowError`)."""
    if not (0 <= lo_q <= 100 and 0 <= hi_q <= 100):
        raise WindowError(f"percentiles must lie in 0..100 (got {lo_q:g}, {hi_q:g})")
    if lo_q >= hi_q:
        raise WindowError(
            f"the low percentile ({lo_q:g}) must be below the high percentile ({hi_q:g})"
        )


@dataclass
class IntHistogram:
    """Exact histogram of integer data: ``counts[i]`` is the number of values ``offset + i``.

    Built per slice and summed, so a whole volume is never copied; percentiles read from
    it equal ``np.percentile(data, q)`` (linear interpolation) exactly.
    """

    offset: int
    counts: npt.NDArray[np.int64]

    @classmethod
    def of(cls, arr: npt.NDArray[Any], exclude: Iterable[tuple[float, float]] = ()) -> IntHistogram:
        """Histogram of an integer array, worked slice by slice.

        ``exclude``: closed value ranges left out (e.g. Pixel Padding Value ranges).
        """
        a = np.asarray(arr)
        if a.dtype.kind not in "iub":
            raise TypeError(f"IntHistogram needs integer data, got {a.dtype}")
        if a.dtype == np.bool_:
            a = a.view(np.uint8)
        if a.size == 0:
            return cls(0, np.zeros(0, np.int64))
        if a.dtype.itemsize <= 2:
            offset = int(np.iinfo(a.dtype).min)
            counts = np.zeros(1 << (8 * a.dtype.itemsize), np.int64)
            view_dt = np.uint8 if a.dtype.itemsize == 1 else np.uint16
            # counted over the unsigned view; signed values land rotated, fixed below.
            # Compiled (core.counting), the whole array in one pass, no temporaries;
            # with np.bincount slice by slice, as it makes an 8-byte index per value
            pieces = [a] if compiled() and a.flags.c_contiguous else _slices(a)
            for sl in pieces:
                count_into(sl.view(view_dt), counts)
            if a.dtype.kind == "i":
                half = counts.size // 2
                counts = np.concatenate([counts[half:], counts[:half]])
        else:
            lo, hi = int(a.min()), int(a.max())
            if hi - lo >= MAX_LUT_RANGE * 4:
                raise WindowError(
                    f"value range {lo}..{hi} is too wide for an exact histogram"
                )
            offset = lo
            counts = np.zeros(hi - lo + 1, np.int64)
            for sl in _slices(a):
                counts += np.bincount((sl.astype(np.int64) - lo).ravel(), minlength=counts.size)
        h = cls(offset, counts)
        for r0, r1 in exclude:
            h = h.without(r0, r1)
        return h.trimmed()

    def __add__(self, other: IntHistogram) -> IntHistogram:
        if other.counts.size == 0:
            return self
        if self.counts.size == 0:
            return other
        lo = min(self.offset, other.offset)
        hi = max(self.offset + self.counts.size, other.offset + other.counts.size)
        counts = np.zeros(hi - lo, np.int64)
        counts[self.offset - lo : self.offset - lo + self.counts.size] += self.counts
        counts[other.offset - lo : other.offset - lo + other.counts.size] += other.counts
        return IntHistogram(lo, counts)

    def trimmed(self) -> IntHistogram:
        nz = np.flatnonzero(self.counts)
        if nz.size == 0:
            return IntHistogram(0, np.zeros(0, np.int64))
        return IntHistogram(self.offset + int(nz[0]), self.counts[nz[0] : nz[-1] + 1].copy())

    def without(self, lo: float, hi: float) -> IntHistogram:
        """The histogram with values in the closed range ``[lo, hi]`` removed."""
        i0 = max(math.ceil(min(lo, hi)) - self.offset, 0)
        i1 = min(math.floor(max(lo, hi)) - self.offset, self.counts.size - 1)
        if i0 > i1:
            return self
        counts = self.counts.copy()
        counts[i0 : i1 + 1] = 0
        return IntHistogram(self.offset, counts).trimmed()

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def min(self) -> int:
        return self.trimmed().offset

    def max(self) -> int:
        t = self.trimmed()
        return t.offset + t.counts.size - 1

    def without_extremes(self) -> IntHistogram:
        """Leave out every value equal to the minimum or the maximum (black margins,
        burned-in white labels). With fewer than three distinct values nothing is left out."""
        t = self.trimmed()
        if np.count_nonzero(t.counts) < 3:
            return t
        counts = t.counts.copy()
        counts[0] = 0
        counts[-1] = 0
        return IntHistogram(t.offset, counts).trimmed()

    def percentile(self, q: float) -> float:
        """``np.percentile(data, q)`` (method "linear"), exactly, from the counts."""
        n = self.total
        if n == 0:
            raise WindowError("no values to take a percentile of (empty or fully excluded data)")
        rank = q / 100.0 * (n - 1)
        k = math.floor(rank)
        frac = rank - k
        cum = np.cumsum(self.counts)
        v0 = int(np.searchsorted(cum, k, side="right"))
        v1 = int(np.searchsorted(cum, min(k + 1, n - 1), side="right"))
        a, b = self.offset + v0, self.offset + v1
        return float(a + (b - a) * frac) if frac else float(a)


def _slices(a: npt.NDArray[Any]) -> Iterable[npt.NDArray[Any]]:
    """Yield 2-D (or smaller) pieces of ``a`` so temporaries stay slice-sized."""
    if a.ndim <= 2:
        yield np.ascontiguousarray(a)
        return
    flat = a.reshape((-1, *a.shape[-2:]))
    for i in range(flat.shape[0]):
        yield np.ascontiguousarray(flat[i])


def _finite_values(a: npt.NDArray[Any], exclude: Iterable[tuple[float, float]]) -> npt.NDArray[Any]:
    v = a[np.isfinite(a)] if a.dtype.kind == "f" else a.ravel()
    for r0, r1 in exclude:
        lo, hi = min(r0, r1), max(r0, r1)
        v = v[(v < lo) | (v > hi)]
    return v


def data_range(
    arr: npt.NDArray[Any], exclude: Iterable[tuple[float, float]] = ()
) -> tuple[float, float]:
    """Minimum and maximum of the finite values outside the ``exclude`` ranges.

    Worked one 2-D slice at a time: temporaries stay slice-sized whatever the volume.
    """
    a = np.asarray(arr)
    exclude = list(exclude)
    if not exclude and a.dtype.kind in "iu":
        return float(a.min()), float(a.max())
    lo, hi = math.inf, -math.inf
    for sl in _slices(a):
        v = _finite_values(sl, exclude)
        if v.size:
            lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
    if lo > hi:
        raise WindowError("no finite values left to take a minimum and maximum of")
    return lo, hi


def percentile_limits(
    arr: npt.NDArray[Any] | IntHistogram,
    lo_q: float = 1.0,
    hi_q: float = 99.0,
    ignore_extremes: bool = False,
    exclude: Iterable[tuple[float, float]] = (),
) -> tuple[float, float]:
    """Contrast limits ``(P_lo, P_hi)``: the ``lo_q`` and ``hi_q`` percentiles of the data.

    ``ignore_extremes`` first leaves out every value equal to the data's minimum or maximum
    (black margins, burned-in labels). ``exclude`` leaves out closed value ranges (padding).
    Integer data (or an :class:`IntHistogram`) gives exactly ``np.percentile``; float data
    uses ``np.percentile`` on the finite values. NaNs are ignored.
    """
    check_percentiles(lo_q, hi_q)
    exclude = list(exclude)
    if isinstance(arr, IntHistogram) or np.asarray(arr).dtype.kind in "iub":
        h = arr if isinstance(arr, IntHistogram) else IntHistogram.of(np.asarray(arr), exclude)
        if isinstance(arr, IntHistogram):
            for r0, r1 in exclude:
                h = h.without(r0, r1)
        if ignore_extremes:
            h = h.without_extremes()
        return h.percentile(lo_q), h.percentile(hi_q)
    v = _finite_values(np.asarray(arr), exclude)
    if ignore_extremes and v.size:
        vmin, vmax = v.min(), v.max()
        inner = v[(v > vmin) & (v < vmax)]
        if inner.size:
            v = inner
    if v.size == 0:
        raise WindowError("no finite values to take a percentile of")
    p = np.percentile(v, [lo_q, hi_q])
    return float(p[0]), float(p[1])


# --------------------------------------------------------------------------------------
# What the user sees: a Display, rendered to uint8
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Display:
    """Everything that turns modality values into the 8-bit picture.

    * ``window``: the VOI window (its function decides LINEAR / LINEAR_EXACT / SIGMOID);
      ignored when ``voi_lut`` is set.
    * ``voi_lut``: a VOI LUT Sequence item to use instead of the window.
    * ``invert``: MONOCHROME1 / Presentation LUT Shape INVERSE (after the VOI step).
    * ``gamma``: napari's gamma, applied to the normalised ramp ``t in [0, 1]`` as ``t**gamma``.
    * ``palette``: a ``(256, 3)`` uint8 RGB table for a non-grey colormap; ``None`` means grey.
      With a palette, ``invert`` reverses the table index.
    """

    window: Window
    voi_lut: LUT | None = None
    invert: bool = False
    gamma: float = 1.0
    palette: npt.NDArray[np.uint8] | None = field(default=None)

    def __post_init__(self) -> None:
        if not (self.gamma > 0 and math.isfinite(self.gamma)):
            raise WindowError(f"gamma must be a positive number, got {self.gamma}")
        if self.palette is not None:
            pal = np.asarray(self.palette, dtype=np.uint8)
            if pal.shape != (256, 3):
                raise WindowError(f"a palette must be 256 x 3 uint8, got {pal.shape}")
            object.__setattr__(self, "palette", pal)

    @classmethod
    def from_limits(
        cls,
        lo: float,
        hi: float,
        *,
        invert: bool = False,
        gamma: float = 1.0,
        palette: npt.NDArray[np.uint8] | None = None,
    ) -> Display:
        """The display napari shows for contrast limits ``(lo, hi)``: a LINEAR ramp.

        ``hi == lo`` is a threshold at ``lo`` (LINEAR window of width 1): values above it
        are white. Limits with ``hi < lo`` are refused.
        """
        return cls(Window.from_limits(lo, hi, "LINEAR"), None, invert, gamma, palette)

    def with_window(self, window: Window) -> Display:
        return replace(self, window=window, voi_lut=None)

    @property
    def rgb(self) -> bool:
        return self.palette is not None

    def describe(self) -> dict[str, str]:
        """Text for PNG chunks and manifests."""
        if self.voi_lut is not None:
            lo, hi = self.voi_lut.input_range()
            d = {
                "VOI": f"VOI LUT {self.voi_lut.explanation or ''}".strip(),
                "VOILUTRange": f"{lo}..{hi}",
            }
        else:
            d = {
                "WindowCenter": _num(self.window.center),
                "WindowWidth": _num(self.window.width),
                "VOILUTFunction": self.window.function,
            }
        d["Invert"] = "yes" if self.invert else "no"
        if self.gamma != 1.0:
            d["Gamma"] = _num(self.gamma)
        return d

    # the curve ------------------------------------------------------------------------

    def curve(self, x: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
        """Index 0..255 for modality values ``x`` (before the palette), rounded to nearest."""
        if self.voi_lut is not None:
            y: npt.NDArray[Any] = voi_lut_output(x, self.voi_lut)
        else:
            w = self.window
            y = voi_window(x, w.center, w.width, w.function)
        if self.gamma != 1.0:
            y = np.power(np.clip(y / 255.0, 0.0, 1.0), self.gamma) * 255.0
        if self.invert:
            y = invert_output(y)
        return to_uint8(y)


def _num(v: float) -> str:
    return repr(int(v)) if float(v).is_integer() else repr(float(v))


def bit_patterns(dtype: npt.DTypeLike) -> npt.NDArray[Any]:
    """Every value of an 8- or 16-bit integer ``dtype``, in the order of its bit patterns
    read as unsigned: ``table[x.view(uint16)]`` looks up ``x`` in a table built over
    ``bit_patterns(x.dtype)`` (signed values follow two's complement: 0..32767, then
    -32768..-1)."""
    dt = np.dtype(dtype)
    if dt.kind not in "iu" or dt.itemsize > 2:
        raise ValueError(f"bit_patterns needs an 8- or 16-bit integer dtype, got {dt}")
    return np.arange(1 << (8 * dt.itemsize), dtype=f"u{dt.itemsize}").view(dt)


def lookup_table(values: npt.NDArray[Any], display: Display) -> npt.NDArray[np.uint8]:
    """What :func:`render_uint8` gives each of the integer modality ``values``: ``(n,)``
    grey bytes, or ``(n, 3)`` with a palette. Indexing the table by a value's position
    renders it (the table path of :func:`render_uint8`, and
    :meth:`~napari_dicom.core.pixels.PlaneStack.render_uint8`, which indexes it by the
    stored value)."""
    table = display.curve(np.asarray(values, np.int64))
    return display.palette[table] if display.palette is not None else table


def render_uint8(arr: npt.ArrayLike, display: Display) -> npt.NDArray[np.uint8]:
    """Render modality values to 8 bits: ``(..., H, W)`` grey, or ``(..., H, W, 3)`` with a
    palette.

    Integer data goes through a lookup table (one ``np.take`` per slice): for 8/16-bit
    data a table over every bit pattern, indexed by the data itself; for wider integers
    with a value range up to :data:`MAX_LUT_RANGE`, a table over that range. Other data
    is worked one 2-D slice at a time in float32/float64 temporaries of slice size. The
    result is the same either way.
    """
    a = np.asarray(arr)
    if a.dtype == np.bool_:
        a = a.view(np.uint8)
    out_shape = a.shape + ((3,) if display.rgb else ())
    out = np.empty(out_shape, np.uint8)
    if a.size == 0:
        return out
    if a.dtype.kind in "iu" and a.dtype.itemsize <= 2:
        # 8/16-bit values: the table in bit-pattern order (signed values read as
        # unsigned, two's complement), indexed by the data as is: no index arithmetic
        table = lookup_table(bit_patterns(a.dtype), display)
        as_unsigned = a.view(f"u{a.dtype.itemsize}")
        for src, dst in zip(_slices(as_unsigned), _slices_out(out, a.shape), strict=True):
            np.take(table, src, axis=0, out=dst)
        return out
    if a.dtype.kind in "iu":
        lo, hi = int(a.min()), int(a.max())
        if hi - lo < MAX_LUT_RANGE:
            table = lookup_table(np.arange(lo, hi + 1, dtype=np.int64), display)
            for src, dst in zip(_slices(a), _slices_out(out, a.shape), strict=True):
                idx = src
                if lo:
                    idx = src.astype(np.intp)
                    idx -= lo  # in place: one index temporary per slice, not two
                np.take(table, idx, axis=0, out=dst)
            return out
    for src, dst in zip(_slices(a), _slices_out(out, a.shape), strict=True):
        ind = display.curve(src if src.dtype.kind == "f" else src.astype(np.float64))
        dst[...] = display.palette[ind] if display.palette is not None else ind
    return out


def _slices_out(
    out: npt.NDArray[np.uint8], shape: tuple[int, ...]
) -> Iterable[npt.NDArray[np.uint8]]:
    if len(shape) <= 2:
        yield out
        return
    flat = out.reshape((-1, *out.shape[len(shape) - 2 :]))
    for i in range(flat.shape[0]):
        yield flat[i]


def display_curve(
    display: Display, n: int = 256
) -> tuple[tuple[float, float], npt.NDArray[np.float64]]:
    """How napari can show a non-LINEAR VOI step exactly: contrast limits and a grey curve.

    Returns ``((lo, hi), values)`` where ``values`` (``n`` numbers in ``[0, 1]``) is the
    display level at ``n`` evenly spaced points from ``lo`` to ``hi``; a colormap built
    from them over those contrast limits reproduces SIGMOID or a VOI LUT (inversion and
    gamma are left to napari's colormap choice and gamma).
    """
    if display.voi_lut is not None:
        lo, hi = (float(v) for v in display.voi_lut.input_range())
        if hi == lo:
            hi = lo + 1
        xs = np.linspace(lo, hi, n)
        ys = voi_lut_output(np.floor(xs), display.voi_lut) / 255.0
    else:
        w = display.window
        lo, hi = w.limits()
        xs = np.linspace(lo, hi, n)
        ys = np.asarray(voi_window(xs, w.center, w.width, w.function), np.float64) / 255.0
    return (lo, hi), np.clip(ys, 0.0, 1.0)
