"""Placement: where an image array sits in patient space (the one geometry function).

Every napari layer this package makes (images; SEG and RTSTRUCT labels) is placed by
:func:`place`, from Image Position (Patient), Image Orientation (Patient) and Pixel Spacing
(PS3.3 C.7.6.2.1.1). Nothing else computes geometry.

The napari world frame
----------------------
napari's world coordinates are the DICOM patient coordinates (LPS: x to the patient's
left, y to posterior, z to superior; mm), listed in napari's axis order as
``(-z, y, x)`` and named :data:`WORLD_AXES` ``("I", "P", "L")``: inferior, posterior,
left. A point at DICOM ``(x, y, z)`` is at napari world ``(-z, y, x)``
(:func:`patient_to_world`).

Why this frame: napari draws a 2-D view with its vertical axis increasing downwards and
its horizontal axis increasing to the right. With ``(I, P, L)`` napari's default camera
shows the radiological convention in every plane: axial (P, L) with anterior up and the
patient's right on the screen's left, coronal (I, L) and sagittal (I, P) with superior up
(sagittal: anterior on the left), and a right-handed 3-D view. LPS is kept (not RAS) because
it is DICOM's own frame: positions, RTSTRUCT contours and SEG frames are used as stored,
and only the z axis is named by its opposite so that reformats read head up. The slice
slider of an axial series reads ``-z`` in mm (napari's dims show the label "I").

How a series is placed
----------------------
* **Axis-aligned** (axial, coronal, sagittal, within :data:`SNAP_VOXELS` of a voxel at the
  edges): the array axes are permuted onto the world axes (a transposed view of the data)
  and each gets a ``scale`` (negative where the array runs against the world axis) and a
  ``translate``. napari slices such a layer exactly in 2-D and in 3-D.
* **Oblique** (and gantry tilt, where slice positions do not advance along the slice
  normal): the true 4x4 ``affine``. Exact in napari's 3-D view. In 2-D napari 0.9 cannot
  slice a rotated volume: it warns "Non-orthogonal slicing is being requested, but is not
  fully supported" and draws one acquired slice flat on the screen plane, without the
  out-of-plane rotation. :attr:`Placement.warnings` says so with the worst offset in mm.
* **By index** (no orientation or position): scale from the spacings, no patient placement;
  the series cannot be overlaid on others, and a warning says why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .series import Series

__all__ = [
    "SNAP_VOXELS",
    "WORLD_AXES",
    "Placement",
    "layer_geometry",
    "patient_to_world",
    "place",
    "restore_layer_data",
    "series_placement",
    "world_to_patient",
]

#: napari world axes: inferior (-z), posterior (y), left (x) of DICOM LPS, in mm
WORLD_AXES: tuple[str, str, str] = ("I", "P", "L")
#: rows: world axis; columns: LPS x, y, z
_LPS_TO_WORLD = np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
#: a series is placed as axis-aligned when snapping its axes moves no voxel of it by more
#: than this fraction of its smallest spacing (a quarter voxel: the test's half-voxel
#: criterion with room to spare); scanners write cosines such as 0.99999 for "axial"
SNAP_VOXELS = 0.25
#: direction cosines further than this from unit length / orthogonality are reported
_ORTHO_TOL = 1e-3
_PLANE_NAMES = {0: "axial", 1: "coronal", 2: "sagittal"}  # by the world axis of the normal


def patient_to_world(points: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """DICOM patient coordinates ``(..., 3)`` LPS ``(x, y, z)`` mm -> napari world
    ``(..., 3)`` ``(I, P, L)`` = ``(-z, y, x)``."""
    p = np.asarray(points, dtype=np.float64)
    out: npt.NDArray[np.float64] = p @ _LPS_TO_WORLD.T
    return out


def world_to_patient(points: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The inverse of :func:`patient_to_world`."""
    p = np.asarray(points, dtype=np.float64)
    out: npt.NDArray[np.float64] = p @ _LPS_TO_WORLD
    return out


def _fmt(v: float) -> str:
    return f"{v:.3g}"


@dataclass(frozen=True)
class Placement:
    """Where a ``(slices, rows, columns)`` array sits in the napari world.

    ``matrix`` is always the true 4x4 homogeneous map from acquisition array indices
    ``(k, r, c)`` (slice, row, column) to napari world ``(I, P, L)`` mm, whatever ``kind``.
    For ``kind == "aligned"`` the layer shows the array transposed by ``axes`` (world
    axis ``i`` is array axis ``axes[i]``) with ``scale``/``translate`` (a negative scale
    where the array runs against the world axis): :meth:`arrange` and :meth:`restore`.
    """

    kind: str  # "aligned" | "affine" | "index"
    matrix: npt.NDArray[np.float64]
    axes: tuple[int, int, int] = (0, 1, 2)
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    translate: tuple[float, float, float] = (0.0, 0.0, 0.0)
    #: the acquisition plane ("axial", "coronal", "sagittal", "oblique", "")
    plane: str = ""
    #: angle between the array axes and the nearest world axes, degrees
    obliquity_deg: float = 0.0
    #: plain-word notes for the user (what was found in the header and what was done)
    warnings: tuple[str, ...] = field(default_factory=tuple)

    # -- index <-> world -------------------------------------------------------------

    def to_world(self, index: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Acquisition array indices ``(..., 3)`` (k, r, c) -> napari world ``(..., 3)``."""
        i = np.asarray(index, dtype=np.float64)
        out: npt.NDArray[np.float64] = i @ self.matrix[:3, :3].T + self.matrix[:3, 3]
        return out

    def to_index(self, world: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """napari world ``(..., 3)`` -> acquisition array indices ``(..., 3)`` (fractional)."""
        w = np.asarray(world, dtype=np.float64) - self.matrix[:3, 3]
        out: npt.NDArray[np.float64] = w @ np.linalg.inv(self.matrix[:3, :3]).T
        return out

    # -- the layer -------------------------------------------------------------------

    def arrange(self, data: Any, lead: int = 0, rgb: bool = False) -> Any:
        """The array as the layer shows it: the three spatial axes after ``lead`` axes
        (time, echo) transposed by ``axes`` (a view; numpy and dask alike); a trailing
        colour axis (``rgb``) stays last."""
        return _transpose(data, self.axes if self.kind == "aligned" else (0, 1, 2), lead, rgb)

    def restore(self, data: Any, lead: int = 0, rgb: bool = False) -> Any:
        """The inverse of :meth:`arrange`: back to acquisition order (slices first)."""
        return restore_axes(data, list(self.axes) if self.kind == "aligned" else [0, 1, 2],
                            lead, rgb)

    def layer_kwargs(
        self,
        lead_labels: Sequence[str] = (),
        lead_scale: Sequence[float] = (),
        lead_units: Sequence[str] = (),
    ) -> dict[str, Any]:
        """``scale``/``translate`` (aligned, by index) or ``affine`` (oblique), plus
        ``axis_labels`` and ``units`` for the arranged array with ``lead`` axes in front."""
        lead = len(lead_labels)
        out: dict[str, Any] = {
            "axis_labels": [*lead_labels, *WORLD_AXES],
            "units": [*lead_units, "mm", "mm", "mm"],
        }
        if self.kind == "affine":
            m = np.eye(lead + 4)
            for i, s in enumerate(lead_scale):
                m[i, i] = float(s)
            m[lead:lead + 3, lead:lead + 3] = self.matrix[:3, :3]
            m[lead:lead + 3, -1] = self.matrix[:3, 3]
            out["affine"] = m.tolist()
        else:
            out["scale"] = [*(float(v) for v in lead_scale), *self.scale]
            out["translate"] = [0.0] * lead + [*self.translate]
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly, for ``layer.metadata["dicom"]["placement"]``."""
        return {"kind": self.kind, "plane": self.plane, "axes": list(self.axes),
                "matrix": self.matrix.tolist(), "world_axes": list(WORLD_AXES),
                "obliquity_deg": self.obliquity_deg}


def _transpose(data: Any, axes: Sequence[int], lead: int, rgb: bool) -> Any:
    if tuple(axes) == (0, 1, 2):
        return data
    order = (*range(lead), *(lead + int(a) for a in axes), *((lead + 3,) if rgb else ()))
    return data.transpose(order)


def restore_axes(data: Any, axes: Sequence[int], lead: int = 0, rgb: bool = False) -> Any:
    """Undo :meth:`Placement.arrange` given its ``axes`` (as stored in a layer's
    ``metadata["dicom"]["placement"]["axes"]``)."""
    inv = [int(v) for v in np.argsort(np.asarray(axes))]
    return _transpose(data, inv, lead, rgb)


def _unit(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    out: npt.NDArray[np.float64] = v / float(np.linalg.norm(v))
    return out


def _cosines(
    orientation: Sequence[float], pre: str, warns: list[str]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
    """Row and column direction cosines, orthonormalised when the header's are not
    (reported); ``None`` when they are unusable (zero or parallel)."""
    row = np.asarray(orientation[:3], dtype=np.float64)
    col = np.asarray(orientation[3:6], dtype=np.float64)
    nr, nc = float(np.linalg.norm(row)), float(np.linalg.norm(col))
    if not (nr > 0.5 and nc > 0.5) or float(np.linalg.norm(np.cross(row / nr, col / nc))) < 0.5:
        warns.append(f"{pre}Image Orientation (Patient) {list(orientation)} is not two "
                     "perpendicular directions; placed by index, not in patient space")
        return None
    dot = float(row @ col) / (nr * nc)
    if abs(nr - 1) > _ORTHO_TOL or abs(nc - 1) > _ORTHO_TOL or abs(dot) > _ORTHO_TOL:
        angle = math.degrees(math.acos(max(-1.0, min(1.0, dot))))
        warns.append(
            f"{pre}Image Orientation (Patient) is not orthonormal (row length {_fmt(nr)}, "
            f"column length {_fmt(nc)}, angle {angle:.2f} degrees); "
            "orthonormalised (row kept, column made perpendicular)")
    r = row / nr
    c = col - (col @ r) * r
    return r, _unit(c)


def place(
    rows: int,
    columns: int,
    orientation: Sequence[float] | None,
    positions: Sequence[Sequence[float] | None],
    pixel_spacing: Sequence[float] | None,
    slice_spacing: float | None = None,
    *,
    name: str = "series",
) -> Placement:
    """Place a ``(len(positions), rows, columns)`` array in the napari world.

    Parameters
    ----------
    rows, columns
        In-plane size of the array.
    orientation
        Image Orientation (Patient): row then column direction cosines (LPS).
    positions
        Image Position (Patient) of each slice's first pixel (LPS, mm), in array order
        along the slice axis (sorted along the slice normal, as ``core.scan`` does);
        entries may be ``None`` when the header has none.
    pixel_spacing
        Pixel Spacing ``(between rows, between columns)`` mm, or ``None`` (1 pixel).
    slice_spacing
        Distance between slices along the normal, mm (``core.scan``'s median of the
        position steps; irregular steps are reported there). Used for the slice step;
        its direction comes from the first and last positions. For one slice: the slab's
        thickness (Spacing Between Slices or Slice Thickness), default 1.
    name
        How warnings name the series (``""``: they do not, the caller prefixes them).

    Returns
    -------
    Placement
        ``matrix`` maps array indices ``(k, r, c)`` to world ``(I, P, L)`` mm.
    """
    warns: list[str] = []
    pre = f"{name}: " if name else ""
    n = len(positions)
    dr, dc = (float(pixel_spacing[0]), float(pixel_spacing[1])) if pixel_spacing else (1.0, 1.0)
    dz = abs(float(slice_spacing)) if slice_spacing else 1.0
    cos = _cosines(orientation, pre, warns) if orientation is not None else None
    pos = [p for p in positions if p is not None]
    if cos is None or len(pos) != n or n == 0:
        # (slices without a position are reported by core.scan)
        m = np.eye(4)
        m[:3, :3] = np.diag([dz, dr, dc])
        return Placement("index", m, scale=(dz, dr, dc), warnings=tuple(warns))
    row_dir, col_dir = cos
    normal = np.cross(row_dir, col_dir)
    p = np.asarray(pos, dtype=np.float64)
    step = dz * normal
    if n > 1:
        span = p[-1] - p[0]
        along = float(span @ normal)
        if along > 1e-6 * max(1.0, float(np.linalg.norm(span))):
            # the step's normal component is the slice spacing; its direction follows the
            # positions, so a gantry tilt (positions sheared off the normal) is kept
            step = span * (dz / along)
        else:
            warns.append(f"{pre}slice positions do not advance along the slice normal; "
                         "slices stacked along the normal")
    # LPS columns for array axes (k, r, c): DICOM's row direction is the way column index
    # grows (C.7.6.2.1.1), so rows (r) go along the column cosine and columns (c) along
    # the row cosine
    lps = np.column_stack([step, dr * col_dir, dc * row_dir])
    a = _LPS_TO_WORLD @ lps
    t = _LPS_TO_WORLD @ p[0]
    matrix = np.eye(4)
    matrix[:3, :3] = a
    matrix[:3, 3] = t
    shape = np.array([n, rows, columns], dtype=np.float64)
    # snap each array axis to the nearest world axis (a permutation), about the centre
    nearest = [int(np.argmax(np.abs(a[:, j]))) for j in range(3)]
    lengths = np.linalg.norm(a, axis=0)
    angles = [math.degrees(math.acos(min(1.0, abs(a[nearest[j], j]) / lengths[j])))
              for j in range(3)]
    obliquity = max(angles)
    plane = _PLANE_NAMES[nearest[0]] if len(set(nearest)) == 3 else "oblique"
    if len(set(nearest)) == 3:
        snapped = np.zeros((3, 3))
        for j, i in enumerate(nearest):
            snapped[i, j] = math.copysign(lengths[j], a[i, j])
        centre = (shape - 1) / 2
        corners = np.array([[ck, cr, cc] for ck in (0, shape[0] - 1)
                            for cr in (0, shape[1] - 1) for cc in (0, shape[2] - 1)]) - centre
        err = float(np.max(np.linalg.norm(corners @ (a - snapped).T, axis=1)))
        smallest = float(min(lengths[1], lengths[2], lengths[0] if n > 1 else math.inf))
        if err <= SNAP_VOXELS * smallest:
            t_snap = t + (a - snapped) @ centre
            axes = (nearest.index(0), nearest.index(1), nearest.index(2))
            scale = tuple(float(snapped[i, axes[i]]) for i in range(3))
            if err > 1e-3:
                warns.append(f"{pre}orientation {obliquity:.2f} degrees off {plane}: placed "
                             f"as {plane} (no voxel moves more than {_fmt(err)} mm)")
            snapped_m = np.eye(4)
            snapped_m[:3, :3] = snapped
            snapped_m[:3, 3] = t_snap
            tr = (float(t_snap[0]), float(t_snap[1]), float(t_snap[2]))
            return Placement("aligned", snapped_m, axes=axes,
                             scale=scale, translate=tr,  # type: ignore[arg-type]
                             plane=plane, obliquity_deg=obliquity, warnings=tuple(warns))
    else:
        err = math.inf
    # oblique or sheared: the true affine; tell the user what napari's 2-D view does
    tilt = 0.0
    if n > 1:
        tilt = math.degrees(math.acos(min(1.0, abs(float(_unit(step) @ normal)))))
    what = (f"slice positions sheared {tilt:.1f} degrees off the slice normal (gantry tilt)"
            if tilt > 0.05 and obliquity - tilt < 0.05 else
            f"oblique, {obliquity:.1f} degrees from the nearest axial/coronal/sagittal axes")
    off = napari_2d_offset(matrix, (n, rows, columns))
    in_plane = bool(np.all(np.abs(a[0, 1:]) < 1e-9 * lengths[1:])
                    and np.all(np.abs(a[1:, 0]) < 1e-9 * lengths[0]))
    if in_plane:
        warns.append(
            f"{pre}rotated {obliquity:.1f} degrees within the axial plane: placed by its true "
            "affine, exact in napari's axial 2-D view and in 3-D; napari's coronal and "
            "sagittal 2-D reformats of it are drawn flat, without the rotation (napari warns "
            "'Non-orthogonal slicing')")
        return Placement("affine", matrix, plane="oblique", obliquity_deg=obliquity,
                         warnings=tuple(warns))
    if off is None:
        shown = ("shows none of its slices at any slider position (the slice it picks, where "
                 "the viewed plane crosses the patient's I axis, lies outside the series)")
    else:
        shown = ("draws the acquired slice that the viewed plane crosses on the patient's I "
                 "axis, flat, without its out-of-plane rotation: its pixels are up to "
                 f"{_fmt(off)} mm from their true place")
    warns.append(
        f"{pre}{what}: placed by its true affine, exact in napari's 3-D view. In the 2-D "
        f"view napari 0.9 cannot reslice a rotated volume (it warns 'Non-orthogonal "
        f"slicing'): it {shown}")
    return Placement("affine", matrix, plane="oblique", obliquity_deg=obliquity,
                     warnings=tuple(warns))


def napari_2d_offset(matrix: npt.NDArray[np.float64], shape: Sequence[int]) -> float | None:
    """How far (mm) napari 0.9's default 2-D view (slider on I, the (P, L) plane shown)
    draws pixels of an affine-placed ``shape`` array from their true world position;
    ``None`` when it shows no slice at any slider position.

    What napari does (``napari/layers/utils/_slice_input.py``, ``_SliceInput.data_slice``
    with a non-orthogonal transform): the slice index comes from the not-displayed part of
    the world-to-data transform alone, i.e. the acquired slice through the world point
    ``(I, 0, 0)``, and the slice is drawn with the displayed part of the data-to-world
    transform alone, i.e. without the slice index's and the out-of-plane contributions.
    """
    a, t = matrix[:3, :3], matrix[:3, 3]
    inv = np.linalg.inv(a)
    n, rows, cols = (int(v) for v in shape)
    corners = np.array([[0, 0, 0], [0, rows - 1, 0], [0, 0, cols - 1], [0, rows - 1, cols - 1]],
                       dtype=float)
    ends = np.array([[k, r, c] for k in (0, n - 1) for r, c in corners[:, 1:]], dtype=float)
    i_lo, i_hi = (ends @ a.T + t)[:, 0].min(), (ends @ a.T + t)[:, 0].max()
    worst: float | None = None
    if abs(inv[0, 0]) < 1e-12:
        return None
    for k in range(n):
        # the slider position at which napari picks slice k exactly
        i_world = (k + float(inv[0] @ t)) / float(inv[0, 0])
        if not i_lo - 1e-6 <= i_world <= i_hi + 1e-6:
            continue
        px = corners.copy()
        px[:, 0] = k
        true = px @ a.T + t
        drawn = np.column_stack([np.full(4, i_world), px[:, 1:] @ a[1:, 1:].T + t[1:]])
        err = float(np.max(np.linalg.norm(true - drawn, axis=1)))
        worst = err if worst is None else max(worst, err)
    return worst


# ---------------------------------------------------------------------------------------
# A Series as a napari image layer
# ---------------------------------------------------------------------------------------


def _header_float(header: dict[str, Any], keyword: str) -> float | None:
    v = header.get(keyword)
    try:
        f = float(v[0] if isinstance(v, list) else v)  # type: ignore[arg-type]
    except (TypeError, ValueError, IndexError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def series_placement(series: Series) -> tuple[Placement, int] | None:
    """:func:`place` for a series from ``core.scan``, and how many leading (time, echo)
    axes its array has; ``None`` when it is not a stack of planes (a cine loop ``t, y, x``).
    """
    labels = series.axis_labels
    if len(labels) >= 3 and labels[-3] == "z":
        lead = len(labels) - 3
        nz = series.shape[lead]
        spacing = series.scale[-3]
    elif len(labels) == 2:
        lead, nz = 0, 1
        spacing = (_header_float(series.header, "SpacingBetweenSlices")
                   or _header_float(series.header, "SliceThickness") or 1.0)
    else:
        return None
    pixel = series.scale[-2:] if series.units[-1] == "mm" else None
    positions = [p.position for p in series.planes[:nz]]
    # (no name in the warnings: the reader prefixes the layer name)
    return place(series.rows, series.columns, series.orientation, positions, pixel, spacing,
                 name=""), lead


def layer_geometry(series: Series, data: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """The array as the layer shows it, the layer's geometry kwargs (``scale``/``translate``
    or ``affine``, ``units``, ``axis_labels``, ``rgb``) and the placement to keep in
    ``metadata["dicom"]["placement"]`` (what :func:`restore_layer_data` needs).

    A series placed in patient space always has three spatial axes: a single plane gets
    a leading axis of length 1 (its slab), so that it lies where it was acquired instead of
    on every slice of the other layers. A series that cannot be placed (no orientation or
    position) keeps its index geometry.
    """
    got = series_placement(series)
    rgb = bool(series.rgb)
    if got is None or got[0].kind == "index":
        kwargs: dict[str, Any] = {
            "scale": [float(v) for v in series.scale],
            "translate": [float(v) for v in series.translate],
            "units": list(series.units),
            "axis_labels": list(series.axis_labels),
        }
        stored: dict[str, Any] = {"kind": "index"}
        if got is not None:
            stored["warnings"] = list(got[0].warnings)
    else:
        placement, lead = got
        added = len(series.axis_labels) == 2
        if added:
            data = data[np.newaxis]
        data = placement.arrange(data, lead, rgb)
        kwargs = placement.layer_kwargs(series.axis_labels[:lead], series.scale[:lead],
                                        series.units[:lead])
        stored = {**placement.to_dict(), "lead": lead, "added_axis": added,
                  "warnings": list(placement.warnings)}
    kwargs["rgb"] = rgb
    return data, kwargs, stored


def restore_layer_data(data: Any, placement: dict[str, Any] | None, rgb: bool = False) -> Any:
    """A layer's array back in acquisition order (planes as the files hold them), from
    the ``metadata["dicom"]["placement"]`` :func:`layer_geometry` stored; unchanged when
    there is none (a layer from elsewhere)."""
    if not placement or placement.get("kind") != "aligned":
        if placement and placement.get("added_axis"):
            return data[0]
        return data
    lead = int(placement.get("lead", 0))
    out = restore_axes(data, placement["axes"], lead, rgb)
    return out[0] if placement.get("added_axis") else out
