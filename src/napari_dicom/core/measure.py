"""Measurements on the viewed slice: distances in mm along lines and paths; area (mm²),
mean, SD, min, max and pixel count inside rectangles, ellipses and polygons.

numpy only (no napari, no Qt): the Measure dock widget hands in each shape's vertices in
world coordinates, the image layer's data-to-world matrix and what the 2-D view shows
(displayed axes, slider position), and lists what comes back.

How a shape meets the image (napari 0.9's 2-D slicing, ``layers/utils/_slice_input.py``)
------------------------------------------------------------------------------------------
* A layer's axes are matched to the world axes by position (right-aligned); the 2-D view
  shows the layer axes that are the viewer's displayed axes.
* The slice shown is napari's: the world-to-data transform restricted to the
  not-displayed axes, applied to the slider position, rounded (``np.round``).
* The slice is drawn with the data-to-world transform restricted to the displayed axes
  (``_data_to_world.set_slice(displayed)``). A shape's displayed world coordinates are
  therefore mapped to the slice's pixel coordinates through that 2 x 2 block (and its
  translation). For an axis-aligned series and for one rotated within the viewed plane
  this is the exact patient-space inverse; for an oblique series, which napari draws
  flat, it finds the acquired pixels under the shape as drawn on the screen.
* Lengths and areas then use the true physical step of those pixel axes (the full
  columns of the data-to-world matrix), so they are in the patient's mm even where
  napari's 2-D view draws a rotated slice flat.

Area: the exact area of the drawn shape (shoelace formula for rectangles and polygons,
pi * a * b for ellipses) in pixel units times the area of one pixel, so it does not depend
on how the outline falls on the pixel grid; the statistics are over the pixels whose
centres lie inside the shape, and their area (``pixel_area``, pixel count times the
area of one pixel) is listed beside it: the two differ by the partial pixels along the
outline (large for a small shape), which is why both are shown.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "HEADERS",
    "DrawnShape",
    "ImageInfo",
    "Measurement",
    "ViewInfo",
    "affine_from_map",
    "image_info_from_meta",
    "measure_shape",
    "measure_shapes",
    "to_tsv",
]

#: the table's columns (the TSV copy has the same)
HEADERS: tuple[str, ...] = (
    "#", "Shape", "Length", "Area", "Mean", "SD", "Min", "Max", "Unit", "Pixels",
    "Pixel area", "Slice", "Layer", "Note")
LINE_KINDS = ("line", "path", "polyline")
REGION_KINDS = ("rectangle", "ellipse", "polygon")
_MM = {"mm", "millimeter", "millimetre"}
#: how far (world units) a shape's coordinates may stray off the viewed plane
_PLANE_TOL = 1e-6


@dataclass(frozen=True)
class ImageInfo:
    """What measuring needs of an image layer.

    ``to_world`` is the layer's ``(n + 1, n + 1)`` homogeneous data-to-world matrix over
    its ``n`` axes (not a trailing RGB axis), ``shape`` its data shape over those axes,
    ``units`` the world unit of each axis (napari's ``layer.units`` as text).
    """

    name: str
    to_world: npt.NDArray[np.float64]
    shape: tuple[int, ...]
    units: tuple[str, ...] = ()
    axis_labels: tuple[str, ...] = ()
    value_unit: str = ""
    dicom: bool = True
    rgb: bool = False
    #: Pixel Padding ranges (value unit) left out of the statistics
    padding: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class ViewInfo:
    """The viewer's state: ``ndisplay``, the displayed world axes (viewer indexing, in
    display order) and the slider position in world coordinates (one per viewer axis)."""

    ndisplay: int
    displayed: tuple[int, ...]
    point: tuple[float, ...]


@dataclass(frozen=True)
class DrawnShape:
    """One shape: napari's shape type and its vertices in world coordinates ``(N, d)``
    (``d`` the shapes layer's dimensions, right-aligned with the viewer's)."""

    layer: str
    index: int
    kind: str
    world: npt.NDArray[np.float64]


@dataclass(frozen=True)
class Measurement:
    """One row of the table; ``None`` where a value was not measured (``note`` says why)."""

    layer: str
    index: int
    kind: str
    slice: str = ""
    length: float | None = None
    area: float | None = None
    pixel_area: float | None = None
    mean: float | None = None
    sd: float | None = None
    min: float | None = None
    max: float | None = None
    pixels: int | None = None
    length_unit: str = "mm"
    value_unit: str = ""
    note: str = ""

    @property
    def measured(self) -> bool:
        return self.length is not None or self.area is not None

    def cells(self) -> list[str]:
        """The row as text, in :data:`HEADERS` order (units in the cells: the copied table
        says what it measured)."""
        u = self.length_unit

        def num(v: float | None, fmt: str, unit: str = "") -> str:
            return "" if v is None else f"{v:{fmt}}" + (f" {unit}" if unit else "")

        return [
            str(self.index), self.kind, num(self.length, ".2f", u),
            num(self.area, ".2f", f"{u}²"),
            num(self.mean, ".2f"), num(self.sd, ".2f"), num(self.min, "g"), num(self.max, "g"),
            self.value_unit if self.mean is not None else "",
            "" if self.pixels is None else str(self.pixels),
            num(self.pixel_area, ".2f", f"{u}²"), self.slice, self.layer, self.note,
        ]


def to_tsv(rows: Sequence[Measurement]) -> str:
    """The table as tab-separated text with a header line (pastes into a spreadsheet)."""
    lines = ["\t".join(HEADERS)]
    lines += ["\t".join(c.replace("\t", " ").replace("\n", " ") for c in r.cells())
              for r in rows]
    return "\n".join(lines) + "\n"


def affine_from_map(
    to_world: Callable[[Sequence[float]], Sequence[float]], ndim: int
) -> npt.NDArray[np.float64]:
    """The ``(ndim + 1, ndim + 1)`` homogeneous matrix of an affine map given as a function
    (napari's ``layer.data_to_world``), read from the images of the origin and the unit
    vectors."""
    origin = np.asarray(to_world([0.0] * ndim), dtype=np.float64)
    m = np.eye(ndim + 1)
    for j in range(ndim):
        e = [0.0] * ndim
        e[j] = 1.0
        m[:ndim, j] = np.asarray(to_world(e), dtype=np.float64) - origin
    m[:ndim, ndim] = origin
    return m


# ---------------------------------------------------------------------------------------


def measure_shapes(
    shapes: Sequence[DrawnShape], image: ImageInfo | None, view: ViewInfo, data: Any = None
) -> list[Measurement]:
    """:func:`measure_shape` for each shape (one row each, in order)."""
    return [measure_shape(s, image, view, data) for s in shapes]


def _unit_name(units: Sequence[str], axes: Sequence[int]) -> str:
    got = {str(units[a]).strip().lower() for a in axes if a < len(units)}
    if got and got <= _MM:
        return "mm"
    if len(got) == 1:
        u = got.pop()
        return "px" if u in ("", "pixel", "dimensionless") else u
    return "world units"


def measure_shape(
    shape: DrawnShape, image: ImageInfo | None, view: ViewInfo, data: Any = None
) -> Measurement:
    """Measure one shape on the slice of ``image`` it lies on.

    ``data`` is the image layer's array (numpy, dask or the reader's lazy volume: only the
    shape's bounding box of one plane is read). Never raises for a user's mistake: the
    row's ``note`` says what was measured, or why not.
    """
    kind = str(shape.kind).lower()
    base: dict[str, Any] = {"layer": shape.layer, "index": shape.index, "kind": kind}
    if image is None:
        return Measurement(**base, note="not measured: no image layer to measure on")
    if view.ndisplay != 2:
        return Measurement(**base, note="not measured: 3-D view (switch to the 2-D view: "
                                        "shapes are measured on a slice)")
    if kind not in LINE_KINDS + REGION_KINDS:
        return Measurement(**base, note=f"not measured: unknown shape type {kind!r}")
    n = len(image.shape)
    nw = len(view.point)
    off = nw - n
    disp = [a - off for a in view.displayed[-2:]]
    if len(disp) != 2 or min(disp) < 0:
        return Measurement(**base, note=f"not measured: the viewed plane is not a plane of "
                                        f"{image.name}")
    nd = [a for a in range(n) if a not in disp]
    pts = np.asarray(shape.world, dtype=np.float64)
    if pts.ndim != 2 or len(pts) == 0:
        return Measurement(**base, note="not measured: the shape has no vertices")
    # the shape's world coordinates over the viewer's axes: its own (right-aligned), the
    # slider position for axes a 2-D shapes layer does not have
    full = np.tile(np.asarray(view.point, dtype=np.float64), (len(pts), 1))
    ds = min(pts.shape[1], nw)
    full[:, nw - ds:] = pts[:, pts.shape[1] - ds:]
    w = full[:, off:] if off >= 0 else full
    if nd and float(np.max(np.ptp(w[:, nd], axis=0))) > _PLANE_TOL * max(
            1.0, float(np.max(np.abs(w[:, nd])))):
        return Measurement(**base, note="not measured: the shape does not lie in the viewed "
                                        "plane (drawn in another orientation)")
    m = np.asarray(image.to_world, dtype=np.float64)
    lin, t = m[:n, :n], m[:n, n]
    try:
        inv = np.linalg.inv(m)
        block = lin[np.ix_(disp, disp)]
        # pixel coordinates on the slice, as napari draws it (module docstring)
        p: npt.NDArray[np.float64] = np.asarray(
            np.linalg.solve(block, (w[:, disp] - t[disp]).T).T, dtype=np.float64)
    except np.linalg.LinAlgError:
        return Measurement(**base, note=f"not measured: {image.name} has a degenerate "
                                        "placement (its transform cannot be inverted)")
    # napari's slice index: the world-to-data map restricted to the not-displayed axes
    index = np.round(inv[np.ix_(nd, nd)] @ w[0, nd] + inv[nd, n]).astype(int) if nd else (
        np.zeros(0, dtype=int))
    labels = image.axis_labels if len(image.axis_labels) == n else tuple(
        f"axis {a}" for a in range(n))
    units = [str(image.units[a]).strip().lower() if a < len(image.units) else ""
             for a in range(n)]

    def where(a: int, i: int) -> str:
        # as napari's slider and status bar say it: the world position (mm), else the index
        return (f"{labels[a]} {float(w[0, a]):.4g} mm" if units[a] in _MM
                else f"{labels[a]} {i}")

    base["slice"] = ", ".join(where(a, int(i)) for a, i in zip(nd, index, strict=True))
    unit = _unit_name(image.units, disp)
    base["length_unit"] = unit
    step_a, step_b = lin[:, disp[0]], lin[:, disp[1]]
    px_area = math.sqrt(max(0.0, float(step_a @ step_a) * float(step_b @ step_b)
                            - float(step_a @ step_b) ** 2))
    notes: list[str] = []
    if unit != "mm":
        notes.append(f"{image.name} has no physical spacing: lengths in {unit}")
    if not image.dicom:
        notes.append(f"{image.name} is not a DICOM layer: values as stored, no unit")
    outside_slices = [f"{where(a, int(i))} is beyond its {image.shape[a]} slices"
                      for a, i in zip(nd, index, strict=True)
                      if not 0 <= int(i) < image.shape[a]]

    if kind in LINE_KINDS:
        d = np.diff(p, axis=0)
        steps = np.outer(d[:, 0], step_a) + np.outer(d[:, 1], step_b)
        length = float(np.sum(np.linalg.norm(steps, axis=1)))
        top = np.asarray([image.shape[disp[0]] - 1, image.shape[disp[1]] - 1], dtype=float)
        if outside_slices or np.any(p < -0.5) or np.any(p > top + 0.5):
            notes.append("beyond the image's extent (the length is still the drawn one)")
        return Measurement(**base, length=length, note="; ".join(
            [f"{len(p) - 1} segment{'s' if len(p) > 2 else ''}", *notes]))

    # regions
    outline: npt.NDArray[np.float64] | None = None
    if kind == "ellipse":
        if len(p) != 4:
            return Measurement(**base, note="not measured: an ellipse needs its 4 corners")
        centre = p.mean(axis=0)
        ax1, ax2 = (p[1] - p[0]) / 2, (p[2] - p[1]) / 2
        area_px = math.pi * abs(float(ax1[0] * ax2[1] - ax1[1] * ax2[0]))
        span = np.abs(ax1) + np.abs(ax2)
        lo_b, hi_b = centre - span, centre + span
    else:
        if len(p) < 3:
            return Measurement(**base, note="not measured: a region needs 3 vertices or more")
        outline = p
        x, y = p[:, 0], p[:, 1]
        area_px = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
        lo_b, hi_b = p.min(axis=0), p.max(axis=0)
    area = area_px * px_area
    if outside_slices:
        return Measurement(**base, area=area, note="; ".join([
            "outside the image: " + ", ".join(outside_slices) + "; area only", *notes]))
    size = (image.shape[disp[0]], image.shape[disp[1]])
    r0, c0 = (max(0, math.ceil(float(v))) for v in lo_b)
    r1 = min(size[0] - 1, math.floor(float(hi_b[0])))
    c1 = min(size[1] - 1, math.floor(float(hi_b[1])))
    if r1 < r0 or c1 < c0:
        return Measurement(**base, area=area, pixels=0, note="; ".join([
            "outside the image: no pixel of the slice lies inside; area only", *notes]))
    rr, cc = np.meshgrid(np.arange(r0, r1 + 1, dtype=np.float64),
                         np.arange(c0, c1 + 1, dtype=np.float64), indexing="ij")
    if outline is None:
        mask = _inside_ellipse(rr, cc, centre, ax1, ax2)
    else:
        mask = _inside_polygon(rr, cc, outline)
    count = int(mask.sum())
    partly = bool(np.any(lo_b < -0.5) or hi_b[0] > size[0] - 0.5 or hi_b[1] > size[1] - 0.5)
    if partly:
        notes.append("partly outside the image: only the pixels inside are counted")
    if count == 0:
        return Measurement(**base, area=area, pixels=0, pixel_area=0.0, note="; ".join(
            ["no pixel centre lies inside the shape (too small)", *notes]))
    res: dict[str, Any] = {"area": area, "pixels": count, "pixel_area": count * px_area}
    if image.rgb:
        notes.insert(0, "RGB image: no value statistics (area only)")
        return Measurement(**base, **res, note="; ".join(notes))
    if data is None:
        notes.insert(0, "no pixel data: area only")
        return Measurement(**base, **res, note="; ".join(notes))
    key: list[Any] = [0] * n
    for a, i in zip(nd, index, strict=True):
        key[a] = int(i)
    key[disp[0]] = slice(r0, r1 + 1)
    key[disp[1]] = slice(c0, c1 + 1)
    plane = np.asarray(data[tuple(key)])
    if disp[0] > disp[1]:  # the view shows the layer's axes in the other order
        plane = plane.T
    values = plane[mask].astype(np.float64)
    keep = np.isfinite(values)
    for lo, hi in image.padding:
        keep &= ~((values >= lo) & (values <= hi))
    left_out = int(values.size - keep.sum())
    values = values[keep]
    if left_out:
        notes.append(f"{left_out} padding pixel{'s' if left_out != 1 else ''} "
                     "(no image) left out of the statistics")
    if values.size == 0:
        return Measurement(**base, **res, value_unit=image.value_unit, note="; ".join(
            ["only padding inside: no statistics", *notes]))
    sd = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return Measurement(
        **base, **res, mean=float(values.mean()), sd=sd, min=float(values.min()),
        max=float(values.max()), value_unit=image.value_unit,
        note="; ".join([f"{values.size} pixels on this slice", *notes]))


def _inside_polygon(
    rr: npt.NDArray[np.float64], cc: npt.NDArray[np.float64], poly: npt.NDArray[np.float64]
) -> npt.NDArray[np.bool_]:
    """Even-odd rule for pixel centres ``(rr, cc)`` against a closed outline (N, 2)."""
    inside = np.zeros(rr.shape, dtype=bool)
    x, y = poly[:, 0], poly[:, 1]
    j = len(poly) - 1
    for i in range(len(poly)):
        yi, yj, xi, xj = y[i], y[j], x[i], x[j]
        if yi != yj:
            crosses = (yi > cc) != (yj > cc)
            xcross = (xj - xi) * (cc - yi) / (yj - yi) + xi
            inside ^= crosses & (rr < xcross)
        j = i
    return inside


def _inside_ellipse(
    rr: npt.NDArray[np.float64], cc: npt.NDArray[np.float64], centre: npt.NDArray[np.float64],
    ax1: npt.NDArray[np.float64], ax2: npt.NDArray[np.float64],
) -> npt.NDArray[np.bool_]:
    """Pixel centres inside the ellipse ``centre + s * ax1 + t * ax2``, ``s² + t² <= 1``
    (napari's ellipse from its bounding corners, ``triangulate_ellipse``)."""
    basis = np.column_stack([ax1, ax2])
    if abs(float(np.linalg.det(basis))) < 1e-12:
        return np.zeros(rr.shape, dtype=bool)
    d = np.stack([rr - centre[0], cc - centre[1]], axis=-1)
    st = d @ np.linalg.inv(basis).T
    # (a centre on the outline counts as inside, whatever the rounding of the inverse)
    inside: npt.NDArray[np.bool_] = (st ** 2).sum(axis=-1) <= 1.0 + 1e-9
    return inside


def image_info_from_meta(
    name: str, to_world: npt.NDArray[np.float64], shape: Sequence[int], units: Sequence[str],
    axis_labels: Sequence[str], rgb: bool, dicom: Mapping[str, Any] | None,
) -> ImageInfo:
    """An :class:`ImageInfo` from a layer's parts and its ``metadata["dicom"]`` (empty or
    ``None`` for a layer that is not DICOM)."""
    meta = dict(dicom or {})
    pad = tuple((float(a), float(b)) for a, b in meta.get("padding", []) or [])
    return ImageInfo(name=name, to_world=np.asarray(to_world, dtype=np.float64),
                     shape=tuple(int(v) for v in shape), units=tuple(str(u) for u in units),
                     axis_labels=tuple(str(a) for a in axis_labels),
                     value_unit=str(meta.get("value_unit", "") or ""), dicom=bool(meta),
                     rgb=bool(rgb), padding=pad)
