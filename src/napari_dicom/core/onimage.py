"""On-image information (the corner text of a PACS viewer), Qt- and napari-free.

What the canvas overlays of :mod:`napari_dicom._onimage` show, computed from plain values:

* :func:`edge_letters`: the orientation letters at the four edges of a 2-D view, from
  which world axes napari displays and which way its camera points them;
* :func:`window_text`: the window the layer shows (its contrast limits as a DICOM window,
  the stored VOI step while the limits still equal it);
* :func:`slice_text`: slice number ``k / N`` and the slice's position in mm;
* :func:`value_text` with :func:`value_unit`: a value with its unit ("-1000 HU");
* :func:`patient_lines`: patient and study text (shown only on request: screenshots get
  shared).

Orientation letters
-------------------
The patient's directions in DICOM LPS (PS3.3 C.7.6.2.1.1): +x towards the patient's Left,
+y Posterior, +z Superior (head); the opposite ends are Right, Anterior, Inferior.
A direction is labelled by the letters of its components, largest first, leaving out the
components below :data:`LETTER_TOLERANCE` (the rule of D. Clunie's "getOrientation" for the
DICOM Patient Orientation attribute (0020,0020), C.7.6.1.1.1, with S/I instead of H/F as
Slicer, Horos and OHIF write them): an axial row direction ``(1, 0, 0)`` is "L", an
oblique ``(0.7, 0.7, 0)`` is "LP".

Layers placed by :mod:`napari_dicom.core.geometry` live in napari world axes ``(I, P, L)``
(mm): the screen's directions are world axes, so the letters follow from napari's
displayed axes and its 2-D camera orientation (``('down', 'right')`` by default: the
first displayed axis grows downwards, the second to the right) alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .geometry import world_to_patient
from .meta import dicom_meta, limits_match, step_from_dict, step_limits
from .render import Window, WindowError

__all__ = [
    "LETTER_TOLERANCE",
    "PATIENT_AXES",
    "EdgeLetters",
    "direction_letters",
    "edge_letters",
    "is_patient_space",
    "patient_lines",
    "slice_text",
    "value_text",
    "value_unit",
    "window_text",
]

#: components of a unit direction smaller than this get no letter (Clunie's 0.0001)
LETTER_TOLERANCE = 1e-4
#: (negative, positive) letter of each LPS axis x, y, z
_LPS_LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))
#: napari world axes (I, P, L) of a patient-space layer as LPS directions (rows)
PATIENT_AXES: npt.NDArray[np.float64] = world_to_patient(np.eye(3))
#: name of the LPS coordinate each world axis (I, P, L) measures, and its sign
_WORLD_COORD = (("z", -1.0), ("y", 1.0), ("x", 1.0))


def direction_letters(direction: Sequence[float] | npt.ArrayLike, max_letters: int = 3) -> str:
    """The letters of an LPS direction, largest component first ("L", "LP", "AIR"...);
    "" for a zero vector."""
    v = np.asarray(direction, dtype=np.float64).reshape(3)
    norm = float(np.linalg.norm(v))
    if not math.isfinite(norm) or norm == 0:
        return ""
    v = v / norm
    order = np.argsort(-np.abs(v), kind="stable")
    out = []
    for axis in order[:max_letters]:
        c = float(v[axis])
        if abs(c) < LETTER_TOLERANCE:
            break
        out.append(_LPS_LETTERS[int(axis)][1 if c > 0 else 0])
    return "".join(out)


@dataclass(frozen=True)
class EdgeLetters:
    """Letters at the top, bottom, left and right edges of the canvas."""

    top: str
    bottom: str
    left: str
    right: str


def edge_letters(
    displayed: Sequence[int],
    orientation2d: Sequence[str] = ("down", "right"),
    axes_lps: npt.ArrayLike = PATIENT_AXES,
) -> EdgeLetters | None:
    """Orientation letters of a 2-D view.

    Parameters
    ----------
    displayed
        The two displayed world axes as indices into the rows of ``axes_lps`` (napari's
        ``dims.displayed`` minus the index of the first patient axis): the first is drawn
        vertically, the second horizontally.
    orientation2d
        napari's camera ``orientation2d``: which way the vertical axis grows ("down" or
        "up") and the horizontal one ("right" or "left").
    axes_lps
        Each world axis as an LPS direction (rows); default napari-dicom's ``(I, P, L)``.

    Returns
    -------
    EdgeLetters or None
        ``None`` when a displayed axis is not a patient axis (e.g. time).
    """
    axes = np.asarray(axes_lps, dtype=np.float64)
    if len(displayed) != 2 or any(not 0 <= int(d) < len(axes) for d in displayed):
        return None
    vertical, horizontal = (str(o).lower() for o in orientation2d)
    down = axes[int(displayed[0])] * (1.0 if vertical == "down" else -1.0)
    right = axes[int(displayed[1])] * (1.0 if horizontal == "right" else -1.0)
    return EdgeLetters(top=direction_letters(-down), bottom=direction_letters(down),
                       left=direction_letters(-right), right=direction_letters(right))


def is_patient_space(meta: Mapping[str, Any]) -> bool:
    """Whether the layer was placed in patient space (its world axes are ``(I, P, L)``)."""
    placement = meta.get("placement") or {}
    return placement.get("kind") in ("aligned", "affine")


# ----------------------------------------------------------------------- values, units


def value_unit(meta: Mapping[str, Any]) -> str:
    """The unit of the layer's values: the reader's (HU for CT, else the Rescale Type or
    Modality LUT Type, C.11.1.1.2), else the Units (0054,1001) of a PET image (C.8.9.1.1.3,
    e.g. BQML), else "" (unknown: a value is then shown bare)."""
    unit = str(meta.get("value_unit", "") or "").strip()
    if unit:
        return unit
    header = meta.get("header") or {}
    units = header.get("Units") if isinstance(header, Mapping) else None
    return str(units).strip() if isinstance(units, str) else ""


def _number(v: float) -> str:
    f = float(v)
    if f.is_integer() and abs(f) < 1e15:
        return f"{f:.0f}"
    return f"{f:.6g}"


def value_text(value: Any, unit: str = "") -> str:
    """A pixel value with its unit: ``"-1000 HU"``; an RGB value as ``"R 1, G 2, B 3"``;
    "" for no value (outside the layer)."""
    if value is None:
        return ""
    arr = np.asarray(value)
    if arr.ndim == 0:
        if not np.isfinite(arr):
            return str(arr.item())
        text = _number(float(arr))
        return f"{text} {unit}" if unit else text
    if arr.ndim == 1 and arr.size in (3, 4):
        return ", ".join(f"{c} {_number(float(x))}" for c, x in zip("RGBA", arr, strict=False))
    return ""


# ----------------------------------------------------------------------- window


def window_text(
    metadata: Mapping[str, Any] | None, contrast_limits: Sequence[float], unit: str = "",
) -> str:
    """The window the layer shows, radiology style: ``"W 400 / L 40 HU"``.

    While the contrast limits still equal the VOI step stored in
    ``metadata["dicom"]["display"]`` (the file's window, a preset, or what the Window /
    Level widget applied) that step is named on a second line: its VOI LUT Function when
    not LINEAR and its explanation (``"W 80 / L 40 HU\\nBrain"``), or it is
    ``"VOI LUT <explanation>"``. Otherwise the limits are the LINEAR window napari shows
    (``w = hi - lo + 1``, ``c = (lo + hi) / 2 + 0.5``, :meth:`Window.from_limits`).
    """
    meta = dicom_meta(metadata)
    lo, hi = float(contrast_limits[0]), float(contrast_limits[1])
    step = step_from_dict(meta, meta.get("display")) if meta else None
    if step is not None and limits_match(step_limits(step), (lo, hi)):
        if step.voi_lut is not None:
            return f"VOI LUT {step.voi_lut.explanation}".strip()
        window = step.window
    else:
        try:
            window = Window.from_limits(lo, hi)
        except WindowError:
            return f"limits {_number(lo)} .. {_number(hi)}"
    text = window.label() + (f" {unit}" if unit else "")
    extra = [x for x in (
        "" if window.function == "LINEAR" else window.function,
        window.explanation.strip()) if x]
    return "\n".join([text, ", ".join(extra)] if extra else [text])


# ----------------------------------------------------------------------- slice


def slice_text(
    k: int | None, n: int | None, world_axis: int | None, world_value: float | None,
) -> str:
    """``"Slice 12 / 40\\nz -45.0 mm"``: the 0-based index ``k`` of ``n`` planes, shown
    1-based, and the slice's LPS coordinate (``world_axis`` 0, 1, 2 = I, P, L of a
    patient-space layer, ``world_value`` its napari world coordinate in mm). Parts that are
    ``None`` are left out."""
    parts = []
    if k is not None and n is not None:
        parts.append(f"Slice {k + 1} / {n}")
    if world_axis is not None and world_value is not None and 0 <= world_axis < 3:
        name, sign = _WORLD_COORD[world_axis]
        v = sign * float(world_value)
        parts.append(f"{name} {v + 0.0:.1f} mm")  # + 0.0: no "-0.0"
    return "\n".join(parts)


# ----------------------------------------------------------------------- patient, study


def _person(value: Any) -> str:
    """A Person Name (PN, PS3.5 6.2.1.2): components separated by ``^``; the first
    (alphabetic) group only."""
    if isinstance(value, Mapping):  # a JSON-model PN
        value = value.get("Alphabetic", "")
    text = str(value or "").split("=")[0]
    return " ".join(p for p in text.split("^") if p.strip()).strip()


def _date(value: Any) -> str:
    """A DA value ``YYYYMMDD`` as ``YYYY-MM-DD`` (as is when it is not one)."""
    text = str(value or "").strip()
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


def patient_lines(header: Mapping[str, Any] | None) -> list[str]:
    """Patient and study text for the canvas corner: name and ID; birth date and sex;
    study date and description; series description (lines with nothing left out)."""
    h = header or {}
    name = _person(h.get("PatientName"))
    pid = str(h.get("PatientID", "") or "").strip()
    birth = _date(h.get("PatientBirthDate"))
    sex = str(h.get("PatientSex", "") or "").strip()
    study = " ".join(x for x in (_date(h.get("StudyDate")),
                                 str(h.get("StudyDescription", "") or "").strip()) if x)
    series = " ".join(x for x in (
        str(h.get("Modality", "") or "").strip(),
        str(h.get("SeriesDescription", "") or "").strip()) if x)
    lines = [
        " ".join(x for x in (name, f"({pid})" if pid else "") if x),
        ", ".join(x for x in (f"born {birth}" if birth else "",
                              f"sex {sex}" if sex else "") if x),
        study,
        series,
    ]
    return [line for line in lines if line]
