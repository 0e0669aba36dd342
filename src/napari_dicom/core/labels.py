"""Segmentations, structure sets and overlays as layers on an image series' voxel grid.

The model shared by ``core.seg`` (DICOM SEG), ``core.rtstruct`` (RT Structure Set) and
``core.overlay`` (overlay planes, 60xx): a :class:`LabelLayer` holds its data on the
voxel grid of one :class:`~napari_dicom.core.series.Series` (the image it lies on, or a
series made from the object's own geometry) and is placed in napari by the very
function that places that image layer (:func:`napari_dicom.core.geometry.layer_geometry`,
see :func:`placed`), so a label and its image stay aligned whatever that placement is.
Nothing here computes a layer transform.

:class:`Grid` maps patient coordinates (mm) onto that grid, plane by plane, from each
plane's Image Position (Patient) (PS3.3 C.7.6.2.1.1): a frame or contour is matched to
the image plane at its position, never to the plane of the same index.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from .geometry import layer_geometry
from .series import Plane, Series

#: a direction or point: a sequence of floats or a numpy vector
Vec = Sequence[float] | npt.NDArray[np.float64]

__all__ = [
    "Grid",
    "LabelLayer",
    "Segment",
    "label_dtype",
    "own_series",
    "placed",
]

#: a frame or contour lies on an image plane when its distance along the normal is at
#: most this fraction of the slice step (or :data:`SINGLE_PLANE_TOL_MM` for one plane)
PLANE_TOL = 0.25
SINGLE_PLANE_TOL_MM = 0.5
#: a SEG frame's in-plane offset from the image plane must be this close to whole pixels
PIXEL_TOL = 0.1
#: direction cosines count as equal above this dot product; spacings within this ratio
COS_TOL = 0.9999
SPACING_RTOL = 1e-3


@dataclass(frozen=True)
class Segment:
    """One label value: a SEG segment, an RT ROI or an overlay plane."""

    value: int
    label: str
    description: str = ""
    #: display colour, RGB in 0..1 (None: napari's default colour for the value)
    colour: tuple[float, float, float] | None = None


@dataclass
class LabelLayer:
    """One napari layer's worth of segmentation, on the grid of :attr:`series`.

    ``kind`` ``"labels"``: ``data`` holds integer label values (0 = background) with the
    series' array shape. ``"image"``: a float array of that shape (a fractional SEG
    segment, 0..1). ``"shapes"``: ``data`` is a list of polygons, each an ``(n, ndim)``
    array of array indices (plane index first for a stack), ``shape_values`` the
    segment value of each polygon.
    """

    name: str
    kind: Literal["labels", "image", "shapes"]
    data: Any
    series: Series
    segments: list[Segment]
    #: the file the object came from
    source: str
    #: what it is: "SEG", "RTSTRUCT" or "overlay"
    object_type: str
    #: True when placed on the image series it refers to; False on its own geometry
    on_reference: bool = True
    shape_values: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: shown when opened (an RTSTRUCT's filled ROIs start hidden under its contours)
    visible: bool = True

    def colours(self) -> dict[int, tuple[float, float, float]]:
        return {s.value: s.colour for s in self.segments if s.colour is not None}

    def names(self) -> dict[int, str]:
        return {s.value: s.label for s in self.segments}


def label_dtype(max_value: int) -> np.dtype[Any]:
    """Smallest unsigned dtype holding label values up to ``max_value``."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if max_value <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.uint64)


def _unit(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


@dataclass(frozen=True)
class Grid:
    """An image series' voxel grid in patient space (mm).

    Plane ``i`` (in :attr:`Series.planes` order, C order over the leading axes) has its
    first pixel's centre at ``positions[i]``; column index ``c`` advances along
    ``row_dir`` by ``spacing[1]`` and row index ``r`` along ``col_dir`` by ``spacing[0]``
    (Image Orientation (Patient) and Pixel Spacing, C.7.6.2.1.1).
    """

    positions: npt.NDArray[np.float64]
    row_dir: npt.NDArray[np.float64]
    col_dir: npt.NDArray[np.float64]
    spacing: tuple[float, float]
    rows: int
    columns: int
    lead_shape: tuple[int, ...]

    @property
    def normal(self) -> npt.NDArray[np.float64]:
        return _unit(np.cross(self.row_dir, self.col_dir))

    @property
    def locations(self) -> npt.NDArray[np.float64]:
        return np.asarray(self.positions @ self.normal, dtype=np.float64)

    def plane_tolerance(self) -> float:
        locs = np.unique(np.round(self.locations, 4))
        if len(locs) < 2:
            return SINGLE_PLANE_TOL_MM
        return PLANE_TOL * float(np.median(np.diff(locs)))

    def planes_at(self, location: float) -> list[int]:
        """Indices of the planes whose position along the normal is ``location`` (mm)."""
        hit = np.abs(self.locations - location) <= self.plane_tolerance()
        return [int(i) for i in np.flatnonzero(hit)]

    def plane_slot(self, plane: int) -> tuple[int, ...]:
        """Array index of plane ``plane`` over the leading axes."""
        return tuple(int(v) for v in np.unravel_index(plane, self.lead_shape)) if (
            self.lead_shape) else ()

    def in_plane(self, plane: int, points: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Fractional ``(row, column)`` indices of patient ``points`` (n, 3) on ``plane``."""
        d = np.asarray(points, dtype=np.float64) - self.positions[plane]
        return np.stack([d @ self.col_dir / self.spacing[0], d @ self.row_dir / self.spacing[1]],
                        axis=-1)

    def same_axes(self, row_dir: Vec, col_dir: Vec,
                  spacing: Sequence[float] | None = None) -> bool:
        """Whether a frame with these directions (and spacing) lies on this grid's pixels."""
        ok = (float(np.dot(_unit(np.asarray(row_dir, float)), self.row_dir)) > COS_TOL
              and float(np.dot(_unit(np.asarray(col_dir, float)), self.col_dir)) > COS_TOL)
        if ok and spacing is not None:
            ok = all(abs(a - b) <= SPACING_RTOL * b for a, b in zip(spacing, self.spacing,
                                                                   strict=True))
        return ok

    def frame_offset(self, plane: int, origin: Vec) -> tuple[int, int] | None:
        """Whole-pixel ``(row, column)`` offset of a frame whose first pixel is at
        ``origin`` on ``plane``, or None when it falls between pixels."""
        rc = self.in_plane(plane, np.asarray([origin], dtype=np.float64))[0]
        whole = np.round(rc)
        if np.max(np.abs(rc - whole)) > PIXEL_TOL:
            return None
        return int(whole[0]), int(whole[1])


def series_grid(series: Series) -> Grid | None:
    """The patient-space grid of ``series``, or None when it has no usable geometry
    (no orientation, a plane without position, in-plane spacing not in mm, colour)."""
    if series.orientation is None or len(series.orientation) < 6:
        return None
    if any(p.position is None for p in series.planes) or series.units[-1] != "mm":
        return None
    o = np.asarray(series.orientation, dtype=np.float64)
    lead = series.shape[:-3] if series.rgb else series.shape[:-2]
    return Grid(
        positions=np.asarray([p.position for p in series.planes], dtype=np.float64),
        row_dir=_unit(o[:3]), col_dir=_unit(o[3:6]),
        spacing=(float(series.scale[-2]), float(series.scale[-1])),
        rows=series.rows, columns=series.columns, lead_shape=tuple(lead),
    )


def plane_table(series: Series) -> dict[str, list[Any]]:
    """Per plane of ``series`` (array order): file, frame, SOP Instance UID, location;
    the columns of a mask stack's ``manifest.csv``."""
    return {"files": [p.path for p in series.planes],
            "frames": [p.frame for p in series.planes],
            "sop_instance_uids": [p.sop_instance_uid for p in series.planes],
            "locations": [p.location for p in series.planes]}


def grid_shape(series: Series) -> tuple[int, ...]:
    """Array shape of a label layer on ``series``: the image's, without a colour axis."""
    return tuple(series.shape[:-1]) if series.rgb else tuple(series.shape)


def own_series(
    uid: str,
    description: str,
    modality: str,
    origins: npt.NDArray[np.float64],
    row_dir: Vec,
    col_dir: Vec,
    spacing: tuple[float, float, float],
    rows: int,
    columns: int,
    frame_of_reference: str = "",
) -> Series:
    """A :class:`Series` standing for an object's own voxel grid (a SEG whose referenced
    series is not there): planes at ``origins`` (k, 3) in order along the normal,
    ``spacing`` = (slice step, row spacing, column spacing) in mm."""
    o = np.asarray(origins, dtype=np.float64)
    r, c = np.asarray(row_dir, float), np.asarray(col_dir, float)
    n = _unit(np.cross(r, c))
    planes = [Plane(path="", frame=i, sop_instance_uid="",
                    position=(float(p[0]), float(p[1]), float(p[2])), location=float(p @ n))
              for i, p in enumerate(o)]
    one = len(planes) == 1
    # scale/translate are what a series placed by index would show; a series with
    # positions and orientation (this one) is placed by core.geometry from the positions
    return Series(
        uid=uid, planes=planes,
        shape=(rows, columns) if one else (len(planes), rows, columns),
        description=description, modality=modality, rows=rows, columns=columns,
        axis_labels=("y", "x") if one else ("z", "y", "x"),
        scale=spacing[1:] if one else spacing,
        translate=(0.0, 0.0) if one else (0.0, 0.0, 0.0),
        units=("mm", "mm") if one else ("mm", "mm", "mm"),
        orientation=(*(float(v) for v in r), *(float(v) for v in c)),
        header={"FrameOfReferenceUID": frame_of_reference},
    )


def placed(layer: LabelLayer) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """``(data, kwargs, placement)`` of a label layer as napari shows it: the image
    series' own :func:`~napari_dicom.core.geometry.layer_geometry` (array arranged
    the same way, the same scale/translate or affine), without the ``rgb`` flag.

    For ``"shapes"``, the polygon vertices (acquisition indices: leading axes, plane,
    row, column) get the same arrangement: a single plane's added slab axis in front,
    and the three spatial columns in the order the image's axes are shown.
    """
    if layer.kind != "shapes":
        data, kwargs, stored = layer_geometry(layer.series, layer.data)
        kwargs.pop("rgb", None)
        return data, kwargs, stored
    shape = grid_shape(layer.series)
    _, kwargs, stored = layer_geometry(layer.series, np.broadcast_to(np.uint8(0), shape))
    kwargs.pop("rgb", None)
    verts = [np.asarray(v, dtype=np.float64) for v in layer.data]
    if stored.get("added_axis"):
        verts = [np.concatenate([np.zeros((len(v), 1)), v], axis=1) for v in verts]
    if stored.get("kind") == "aligned":
        lead = int(stored.get("lead", 0))
        order = [*range(lead), *(lead + int(a) for a in stored["axes"])]
        verts = [v[:, order] for v in verts]
    return verts, kwargs, stored
