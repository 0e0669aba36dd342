"""The DICOM part of a layer's metadata, and the display it implies.

The reader stores ``layer.metadata["dicom"]`` (plain, JSON-friendly values); the widget
updates its ``"display"`` entry; the writer and the CLI turn it, with the layer's current
contrast limits, gamma and colormap, into a :class:`~napari_dicom.core.render.Display`.

Keys of ``metadata["dicom"]``:

``header``            first instance's header as a dict (keyword -> value)
``series_instance_uid``, ``modality``, ``value_unit`` ("HU", ...)
``files``             one path per plane, in array order (C order over the leading axes)
``frames``            frame index in the file per plane (``None`` for single-frame files)
``sop_instance_uids`` one per plane
``positions``         Image Position (Patient) per plane (or ``None``)
``locations``         position along the slice normal per plane, mm (or ``None``)
``placement``         where the layer sits in patient space (``core.geometry``): ``kind``
                      ("aligned", "affine", "index"), ``axes`` (the layer shows the
                      acquisition array transposed so), ``matrix``, ``lead``, ``added_axis``
``windows``           all stored windows, ``Window.to_dict()`` (first = file default)
``voi_luts``          all VOI LUT Sequence items, ``LUT.to_dict()``
``voi_function``      the file's VOI LUT Function
``photometric``, ``presentation_lut_shape``, ``invert`` (display polarity from the file)
``padding``           Pixel Padding ranges in modality units, ``[[lo, hi], ...]``
``default``           the file's default display: ``{"window": dict|None, "voi_lut": int|None}``
``default_stored``    ``True`` when ``default`` is stored in the file (window, VOI LUT);
                      ``False`` when none is and the reader chose it (min-max, or the CT
                      soft-tissue window, ``core.pixels.ct_default_window``);
                      ``default_source`` says which in words
``plane_windows``     each plane's own first stored window (``Window.to_dict()``) when the
                      planes do not all share one (Enhanced per-frame Frame VOI LUT), else
                      ``None``; see :func:`plane_displays`
``display``           the current VOI step: ``{"window": dict|None, "voi_lut": int|None}``;
                      used instead of the plain LINEAR ramp while the layer's contrast limits
                      equal that step's limits (a SIGMOID window or a VOI LUT shown through
                      a curve colormap), see :func:`display_for_layer`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from .render import LUT, Display, Window

META_KEY = "dicom"

#: colormap names that mean "grey ramp" and "inverted grey ramp"
GREY = ("gray", "grey")
GREY_R = ("gray_r", "grey_r")


def dicom_meta(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``"dicom"`` entry of a layer's metadata, or an empty dict."""
    if not metadata:
        return {}
    d = metadata.get(META_KEY)
    return dict(d) if isinstance(d, Mapping) else {}


def file_windows(meta: Mapping[str, Any]) -> list[Window]:
    """Stored windows of the file, in order (first = default)."""
    out = []
    for w in meta.get("windows", []) or []:
        out.append(Window.from_dict(w))
    return out


def file_voi_luts(meta: Mapping[str, Any]) -> list[LUT]:
    return [LUT.from_dict(d) for d in meta.get("voi_luts", []) or []]


def step_from_dict(meta: Mapping[str, Any], step: Mapping[str, Any] | None) -> Display | None:
    """A ``{"window": ..., "voi_lut": i}`` entry as a Display (no polarity/gamma yet)."""
    if not step:
        return None
    if step.get("voi_lut") is not None:
        luts = file_voi_luts(meta)
        i = int(step["voi_lut"])
        if 0 <= i < len(luts):
            lut = luts[i]
            lo, hi = lut.input_range()
            return Display(Window.from_limits(lo, max(hi, lo), "LINEAR"), voi_lut=lut)
        return None
    if step.get("window"):
        return Display(Window.from_dict(step["window"]))
    return None


def step_limits(display: Display) -> tuple[float, float]:
    """Contrast limits napari uses to show a VOI step (window limits, or LUT input range)."""
    if display.voi_lut is not None:
        lo, hi = display.voi_lut.input_range()
        return float(lo), float(max(hi, lo + 1))
    return display.window.limits()


def limits_match(a: tuple[float, float], b: tuple[float, float]) -> bool:
    scale = max(1.0, abs(a[0]), abs(a[1]), abs(b[0]), abs(b[1]))
    tol = 1e-6 * scale
    return all(math.isclose(x, y, rel_tol=0, abs_tol=tol) for x, y in zip(a, b, strict=True))


def display_for_layer(
    metadata: Mapping[str, Any] | None,
    contrast_limits: tuple[float, float],
    gamma: float = 1.0,
    colormap: str = "gray",
    palette: npt.NDArray[np.uint8] | None = None,
) -> Display:
    """The Display that reproduces what the layer shows.

    * ``gray`` / ``gray_r``: the LINEAR ramp of the contrast limits, ``gray_r`` inverted --
      or, while the limits equal the limits of the non-LINEAR VOI step stored in
      ``metadata["dicom"]["display"]`` (e.g. LINEAR_EXACT), that step.
    * a curve colormap (name ending in :data:`CURVE_SUFFIX` / :data:`CURVE_SUFFIX_R`, made
      for a SIGMOID window or a VOI LUT): the exact step while the limits still equal its
      limits; after the user moved them, the curve over the new limits, as napari shows it
      (from ``palette``).
    * any other colormap: the LINEAR ramp through ``palette`` (256 x 3 uint8, sampled by
      the caller from napari's colormap).
    """
    meta = dicom_meta(metadata)
    lo, hi = float(contrast_limits[0]), float(contrast_limits[1])
    raw = colormap or "gray"
    name = raw.lower()
    curve_inverted = raw.endswith(CURVE_SUFFIX_R)
    curve = curve_inverted or raw.endswith(CURVE_SUFFIX)
    invert = name in GREY_R or curve_inverted
    grey = name in GREY or name in GREY_R
    step = step_from_dict(meta, meta.get("display"))
    if step is not None and (grey or curve) and limits_match(step_limits(step), (lo, hi)):
        return Display(step.window, step.voi_lut, invert, gamma)
    if grey:
        return Display.from_limits(lo, hi, invert=invert, gamma=gamma)
    if palette is None:
        raise ValueError(f"colormap {colormap!r} needs a 256 x 3 palette to be rendered")
    return Display.from_limits(lo, hi, gamma=gamma, palette=palette)


#: names of the curve colormaps that show a SIGMOID window or VOI LUT in napari
CURVE_SUFFIX = " (DICOM VOI curve)"
CURVE_SUFFIX_R = " (DICOM VOI curve, inverted)"


def curve_colormap_name(display: Display, inverted: bool) -> str:
    """Name of the napari colormap that shows ``display``'s non-LINEAR VOI step."""
    if display.voi_lut is not None:
        base = f"VOI LUT {display.voi_lut.explanation}".strip()
    else:
        base = f"{display.window.function} {display.window.label()}"
    return base + (CURVE_SUFFIX_R if inverted else CURVE_SUFFIX)


def needs_curve(display: Display) -> bool:
    """Whether napari's linear contrast limits cannot show this VOI step by themselves."""
    return display.voi_lut is not None or display.window.function == "SIGMOID"


def plane_displays(
    meta: Mapping[str, Any] | None, display: Display | None, n: int,
) -> list[Display] | None:
    """One display per plane (C order) when ``display`` shows the file's default window
    (the first plane's) and the planes carry windows of their own
    (``meta["plane_windows"]``): each plane is
    then shown with its own window (C.11.2; per frame in Enhanced files, C.7.6.16.2.10),
    with ``display``'s VOI function, polarity, gamma and palette. ``None`` otherwise (one
    display for every plane), also when ``meta`` does not hold one window per plane.
    """
    if not meta or display is None or display.voi_lut is not None:
        return None
    wins = meta.get("plane_windows")
    if not isinstance(wins, list) or len(wins) != n or not wins:
        return None
    first = Window.from_dict(wins[0])  # the file's default display: the first plane's
    shown = display.window
    if not (limits_match((first.center, first.width), (shown.center, shown.width))):
        return None
    out: list[Display] = []
    made: dict[tuple[float, float], Display] = {}  # planes sharing a window share a Display
    for d in wins:
        w = Window.from_dict(d)
        key = (w.center, w.width)
        if key not in made:
            made[key] = display.with_window(
                Window(w.center, w.width, shown.function, w.explanation))
        out.append(made[key])
    return out
