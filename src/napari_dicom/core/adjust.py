"""How a user's gestures change a window: mouse drag, sliders, wheel steps, and the
smallest window napari can show. Pure functions of numbers, no Qt or napari, so the widget
only wires controls to them and tests can drive them without a GUI.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .render import Window

#: a mouse drag across this many screen pixels changes the width (or the level) by the
#: data's whole value range: a 300-pixel drag spans 30 % of it (CT -1024..3071 HU: about
#: 1200 HU, 4 HU per pixel; an MR of 0..1000: 300)
DRAG_SPAN_PIXELS = 1000.0
#: positions of the non-linear width slider (0 .. SLIDER_STEPS)
SLIDER_STEPS = 1000


def min_width(function: str) -> float:
    """The narrowest window of ``function`` a gesture may give: 1 for LINEAR (a threshold,
    PS3.3 C.11.2.1.2.1; shown through :func:`showable_limits`), and for LINEAR_EXACT and
    SIGMOID, which need width > 0 (C.11.2.1.3), a thousandth of a unit."""
    return 1.0 if function == "LINEAR" else 1e-3


def showable_limits(lo: float, hi: float) -> tuple[float, float]:
    """Contrast limits napari accepts (``lo < hi``) for the ramp ``lo..hi``.

    Equal limits (a LINEAR window of width 1, a threshold at ``lo``) become ``lo - 0.5 ..
    lo + 0.5``: for integer data the same picture, values up to ``lo - 0.5`` black and
    from ``lo + 0.5`` white. Limits napari rounds to one float32 value (a window of width
    1 at 1e38) are spread just enough to differ there too."""
    if hi > lo and np.float32(hi) > np.float32(lo):
        return lo, hi
    half = max(0.5, abs(lo) * 2.0**-20)  # above float32 rounding at any magnitude
    return lo - half, lo + half


def drag_per_pixel(lo: float, hi: float) -> float:
    """Window units per screen pixel of a drag over data whose values span ``lo..hi``."""
    return max(hi - lo, 1.0) / DRAG_SPAN_PIXELS


def drag_window(start: Window, dx: float, dy: float, per_px: float) -> Window:
    """The window after a drag of ``(dx, dy)`` screen pixels from where ``start`` was shown.

    Right widens, left narrows (down to :func:`min_width`); up raises the level, down lowers
    it (screen y grows downwards), as in radiology viewers.
    """
    width = max(start.width + dx * per_px, min_width(start.function))
    center = start.center - dy * per_px
    return Window(center, width, start.function, "")


#: vispy's PanZoomCamera zooms by (1 + 0.007) ** 30 per wheel notch (delta 1); Ctrl+wheel
#: zooms by the same amount when the wheel pages slices, so zooming feels unchanged
WHEEL_ZOOM_PER_NOTCH = 1.007**30


def wheel_pages(progress: float, delta: float, inverted: bool = False) -> tuple[int, float]:
    """Slices to move for a wheel event of ``delta`` notches, and the fraction kept for the
    next event (trackpads send fractions of a notch).

    One slice per notch at most, whatever the system's lines-per-notch setting; wheel
    towards the user (``delta < 0``) goes to the next slice, as napari's own Ctrl+wheel and
    PACS viewers do; ``inverted`` (the system's "natural scrolling") flips it back.
    """
    forward = 1.0 if inverted else -1.0
    progress += max(-1.0, min(1.0, float(delta))) * forward
    steps = math.trunc(progress)
    return steps, progress - steps


def wheel_zoom(
    zoom: float, center: Sequence[float], cursor: Sequence[float], delta: float
) -> tuple[float, tuple[float, ...]]:
    """Camera zoom and centre after ``delta`` wheel notches (``> 0`` zooms in) about the
    point under the ``cursor``, which stays where it is on the screen (world units)."""
    factor = WHEEL_ZOOM_PER_NOTCH ** float(delta)
    c = np.asarray(center, dtype=float)
    p = np.asarray(cursor, dtype=float)
    new_center = p + (c - p) / factor
    return zoom * factor, tuple(float(v) for v in new_center)


def nice_step(span: float, integer: bool) -> float:
    """A 1-2-5 step near ``span / 400`` for a spin box's arrows and wheel: 10 HU on a CT
    (span ~4000), 2 on an MR of 0..1000, 1 on 8-bit data; at least 1 for integer data."""
    if not (span > 0 and math.isfinite(span)):
        return 1.0
    raw = span / 400.0
    exp = math.floor(math.log10(raw))
    base = raw / 10**exp
    nice = 1.0 if base < 1.5 else 2.0 if base < 3.5 else 5.0 if base < 7.5 else 10.0
    step = nice * 10**exp
    return float(max(step, 1.0) if integer else step)


def center_to_slider(center: float, lo: float, hi: float) -> int:
    """Position (0..SLIDER_STEPS) of ``center`` on a linear slider over the data's values
    ``lo..hi`` (a position is a thousandth of them: about 4 HU on a CT)."""
    if not hi > lo:
        return 0
    c = min(max(center, lo), hi)
    return round(SLIDER_STEPS * (c - lo) / (hi - lo))


def slider_to_center(pos: float, lo: float, hi: float) -> float:
    """Inverse of :func:`center_to_slider`: the centre at slider position ``pos``, rounded
    to a ten-thousandth of the span or finer (a slider is for coarse moves; the spin box is
    exact)."""
    if not hi > lo:
        return float(lo)
    c = lo + (hi - lo) * min(max(pos, 0), SLIDER_STEPS) / SLIDER_STEPS
    digits = 4 - math.floor(math.log10(hi - lo))
    return float(min(max(round(c, digits), lo), hi))


def width_to_slider(width: float, lo: float, hi: float) -> int:
    """Position (0..SLIDER_STEPS) of ``width`` on a logarithmic slider over ``lo..hi``:
    half the slider covers the narrow windows users fine-tune (brain W 80, liver W 150),
    the other half the wide ones (lung W 1500, bone W 2500)."""
    lo, hi = max(lo, 1e-9), max(hi, lo * 1.0001)
    w = min(max(width, lo), hi)
    return round(SLIDER_STEPS * math.log(w / lo) / math.log(hi / lo))


def slider_to_width(pos: float, lo: float, hi: float) -> float:
    """Inverse of :func:`width_to_slider`: the width at slider position ``pos``, rounded
    to 3 significant digits (a slider is for coarse moves; the spin box is exact)."""
    lo, hi = max(lo, 1e-9), max(hi, lo * 1.0001)
    w = lo * (hi / lo) ** (min(max(pos, 0), SLIDER_STEPS) / SLIDER_STEPS)
    digits = 2 - math.floor(math.log10(w))
    return float(min(max(round(w, digits), lo), hi))


__all__ = [
    "DRAG_SPAN_PIXELS",
    "SLIDER_STEPS",
    "WHEEL_ZOOM_PER_NOTCH",
    "center_to_slider",
    "drag_per_pixel",
    "drag_window",
    "min_width",
    "nice_step",
    "showable_limits",
    "slider_to_center",
    "slider_to_width",
    "wheel_pages",
    "wheel_zoom",
    "width_to_slider",
]
