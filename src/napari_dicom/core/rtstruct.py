"""RT Structure Set (PS3.3 A.19, C.8.8.5-6): ROI contours as layers on their image series.

Each ROI's CLOSED_PLANAR contours (Contour Data: patient coordinates in mm) are matched to
the image plane at their position along the slice normal (``core.labels.Grid``) and
turned into that plane's fractional (row, column) indices. Two layers come out, both on
the image's grid and placed by the image layer's own function:

* a Shapes layer of polygons, one per contour, in the ROI's ROI Display Color: the
  contours exactly as drawn (no pixel rounding), which is what a planner looks at;
* a Labels layer of the ROIs filled on the image pixels (value = position of the ROI in
  the Structure Set ROI Sequence, 1-based, so it fits 8 bits), hidden at first: what
  File > Save and ``export --masks`` write as label maps. A pixel is inside when its
  centre is, by the even-odd rule over all of the ROI's contours on that plane, so an
  inner contour cuts a hole (the usual reading of nested contours, C.8.8.6.3 note).
  Where ROIs overlap, the later ROI's value wins in the label map (stated in the
  warning); the shapes keep both.

Without its image series (pydicom's ``rtstruct.dcm`` has none), the contours are placed on
a grid of their own: axial planes at the contours' z positions, square pixels of 1 mm (or
coarser, at most :data:`OWN_GRID_PIXELS` across), and the user is told.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from .labels import Grid, LabelLayer, Segment, grid_shape, label_dtype, own_series, series_grid
from .series import Series

__all__ = ["ROI", "RTStructError", "StructureSet", "fill_polygons", "read_structure_set",
           "structure_set_layers"]

#: own grid (no image series): at most this many pixels across
OWN_GRID_PIXELS = 512
#: a contour is planar when its points spread at most this much along the normal (mm)
PLANAR_TOL_MM = 0.05


class RTStructError(ValueError):
    """A structure set that cannot be shown (the message names the file)."""


@dataclass
class ROI:
    number: int
    name: str
    colour: tuple[float, float, float] | None
    #: CLOSED_PLANAR contours, each (n, 3) patient points in mm
    contours: list[npt.NDArray[np.float64]] = field(default_factory=list)
    #: contours of other geometric types (POINT, OPEN_PLANAR, ...), not drawn
    other: list[str] = field(default_factory=list)


@dataclass
class StructureSet:
    path: str
    name: str
    rois: list[ROI]
    referenced_series: list[str]
    frame_of_reference: str
    warnings: list[str] = field(default_factory=list)

    def segments(self) -> list[Segment]:
        """One label value per ROI: its 1-based position in the structure set."""
        return [Segment(i, r.name, f"ROI {r.number}", r.colour)
                for i, r in enumerate(self.rois, start=1)]


def _colour(item: Dataset, what: str, warns: list[str]) -> tuple[float, float, float] | None:
    if "ROIDisplayColor" not in item:
        return None
    v = item.ROIDisplayColor
    try:
        rgb = [int(c) for c in v]
        if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
            raise ValueError("needs three values in 0..255")
    except (TypeError, ValueError) as exc:
        warns.append(f"{what}: malformed ROI Display Color {v!r} ({exc}); napari's colour")
        return None
    return (rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0)


def read_structure_set(path: str | os.PathLike[str]) -> StructureSet:
    """ROIs, names, colours and contours of an RTSTRUCT (pydicom; a file without the
    Part 10 preamble is read too)."""
    p = os.fspath(path)
    fname = os.path.basename(p)
    try:
        ds = pydicom.dcmread(p, force=True)
        rois_seq = ds.StructureSetROISequence
    except (InvalidDicomError, OSError, ValueError, AttributeError, KeyError, TypeError,
            EOFError) as exc:
        raise RTStructError(f"{fname}: cannot read the structure set ({exc})") from exc
    title = str(ds.get("StructureSetLabel", "") or ds.get("SeriesDescription", "") or "")
    number = ds.get("SeriesNumber")
    name = " ".join(x for x in (str(number) if number not in (None, "") else "", "RTSTRUCT",
                                title) if x)
    warns: list[str] = []
    by_number: dict[int, ROI] = {}
    for item in rois_seq:
        n = int(item.ROINumber)
        by_number[n] = ROI(n, str(item.get("ROIName", "") or f"ROI {n}"), None)
    for rc in ds.get("ROIContourSequence", []):
        n = int(rc.get("ReferencedROINumber", -1))
        roi = by_number.get(n)
        if roi is None:
            warns.append(f"{fname}: contours for ROI number {n}, which the structure set "
                         "does not list; left out")
            continue
        roi.colour = _colour(rc, f"{fname}: ROI '{roi.name}'", warns)
        for c in rc.get("ContourSequence", []):
            kind = str(c.get("ContourGeometricType", "")).upper()
            data = c.get("ContourData")
            if kind != "CLOSED_PLANAR":
                roi.other.append(kind or "no type")
                continue
            try:
                pts = np.asarray([float(v) for v in data], dtype=np.float64).reshape(-1, 3)
            except (TypeError, ValueError) as exc:
                warns.append(f"{fname}: ROI '{roi.name}': unreadable Contour Data ({exc})")
                continue
            if len(pts) >= 3 and np.all(np.isfinite(pts)):
                roi.contours.append(pts)
    refs: list[str] = []
    fors: list[str] = []
    for f in ds.get("ReferencedFrameOfReferenceSequence", []):
        if "FrameOfReferenceUID" in f:
            fors.append(str(f.FrameOfReferenceUID))
        for st in f.get("RTReferencedStudySequence", []):
            for se in st.get("RTReferencedSeriesSequence", []):
                if "SeriesInstanceUID" in se:
                    refs.append(str(se.SeriesInstanceUID))
    for_uid = str(ds.get("FrameOfReferenceUID", "") or (fors[0] if fors else ""))
    return StructureSet(p, name, list(by_number.values()), refs, for_uid, warns)


def fill_polygons(polygons: Sequence[npt.NDArray[np.float64]], rows: int,
                  columns: int) -> npt.NDArray[np.bool_]:
    """Pixels whose centre lies inside ``polygons`` ((n, 2) row, column vertices, closed
    implicitly) by the even-odd rule: a point inside two contours is outside (a hole)."""
    mask = np.zeros((rows, columns), dtype=bool)
    edges = []
    for poly in polygons:
        p = np.asarray(poly, dtype=np.float64)
        edges.append(np.concatenate([p, np.roll(p, -1, axis=0)], axis=1))  # r0 c0 r1 c1
    if not edges:
        return mask
    e = np.concatenate(edges)
    e = e[e[:, 0] != e[:, 2]]  # horizontal edges cross no row centre
    if len(e) == 0:
        return mask
    lo = max(int(np.ceil(min(e[:, 0].min(), e[:, 2].min()))), 0)
    hi = min(int(np.floor(max(e[:, 0].max(), e[:, 2].max()))), rows - 1)
    cols = np.arange(columns, dtype=np.float64)
    for r in range(lo, hi + 1):
        # half-open rule: an edge counts when the row centre is in [min r, max r)
        rmin = np.minimum(e[:, 0], e[:, 2])
        rmax = np.maximum(e[:, 0], e[:, 2])
        on = e[(rmin <= r) & (r < rmax)]
        if len(on) == 0:
            continue
        t = (r - on[:, 0]) / (on[:, 2] - on[:, 0])
        xs = np.sort(on[:, 1] + t * (on[:, 3] - on[:, 1]))
        count = np.searchsorted(xs, cols, side="right")
        mask[r] = (count % 2) == 1
    return mask


def _candidates(rs: StructureSet, series: Sequence[Series]) -> list[Series]:
    refs = set(rs.referenced_series)
    ref = [s for s in series if s.uid in refs]
    same = [s for s in series if rs.frame_of_reference and s not in ref
            and s.header.get("FrameOfReferenceUID") == rs.frame_of_reference]
    return ref + same


@dataclass
class _Placed:
    #: per ROI: [(plane, (n, 2) row/column vertices)]
    polys: list[list[tuple[int, npt.NDArray[np.float64]]]]
    off: list[int]  # per ROI: contours lying on no plane


def _place(rs: StructureSet, grid: Grid) -> _Placed:
    normal = grid.normal
    polys: list[list[tuple[int, npt.NDArray[np.float64]]]] = []
    off = []
    for roi in rs.rois:
        mine: list[tuple[int, npt.NDArray[np.float64]]] = []
        n_off = 0
        for pts in roi.contours:
            along = pts @ normal
            planes = grid.planes_at(float(along.mean()))
            if np.ptp(along) > max(PLANAR_TOL_MM, grid.plane_tolerance()) or not planes:
                n_off += 1
                continue
            for plane in planes:
                mine.append((plane, grid.in_plane(plane, pts)))
        polys.append(mine)
        off.append(n_off)
    return _Placed(polys, off)


def _own_grid(rs: StructureSet) -> tuple[Series, Grid] | None:
    """Axial planes at the contours' z, 1 mm pixels (coarser for a large extent)."""
    pts = [c for r in rs.rois for c in r.contours]
    if not pts:
        return None
    allp = np.concatenate(pts)
    zs = np.unique(np.round([float(c[:, 2].mean()) for c in pts], 3))
    if any(np.ptp(c[:, 2]) > PLANAR_TOL_MM for c in pts):
        return None  # not axial: no grid of our own to guess
    lo, hi = allp[:, :2].min(axis=0), allp[:, :2].max(axis=0)
    px = max(1.0, float(np.max(hi - lo)) / (OWN_GRID_PIXELS - 3))
    origin = lo - px
    extent = np.ceil((hi - lo) / px).astype(int) + 3
    cols, rows = int(extent[0]), int(extent[1])
    steps = np.diff(zs)
    dz = float(np.median(steps)) if len(steps) else 1.0
    if len(steps) and np.max(np.abs(steps - dz)) > 0.01 * dz:
        # irregular: one plane per regular step over the whole range
        dz = float(np.min(steps))
        zs = zs[0] + dz * np.arange(round((zs[-1] - zs[0]) / dz) + 1)
    origins = np.stack([np.full(len(zs), origin[0]), np.full(len(zs), origin[1]), zs], axis=1)
    s = own_series("", rs.name, "RTSTRUCT", origins, (1.0, 0.0, 0.0), (0.0, 1.0, 0.0),
                   (dz, px, px), rows, cols, rs.frame_of_reference)
    g = series_grid(s)
    return (s, g) if g is not None else None


def structure_set_layers(path: str | os.PathLike[str],
                         series: Sequence[Series]) -> list[LabelLayer]:
    """A Shapes layer of the contours and a Labels layer of the filled ROIs, on the
    referenced image series (or on a grid of their own, with a warning).

    Raises
    ------
    RTStructError
        Unreadable file, or no contour that could be drawn anywhere.
    """
    rs = read_structure_set(path)
    fname = os.path.basename(rs.path)
    what = f"{fname} (RTSTRUCT '{rs.name}')"
    warns = list(rs.warnings)
    best: tuple[Series, Grid, _Placed, int] | None = None
    for cand in _candidates(rs, series):
        grid = series_grid(cand)
        if grid is None:
            continue
        placed = _place(rs, grid)
        score = sum(len(p) for p in placed.polys)
        if score and (best is None or score > best[3]):
            best = (cand, grid, placed, score)
    on_reference = best is not None
    if best is not None:
        target, grid, placed = best[0], best[1], best[2]
    else:
        why = ("its contours lie on no plane of the referenced series" if
               _candidates(rs, series) else
               "its referenced series is not among the opened images")
        own = _own_grid(rs)
        if own is None:
            raise RTStructError(f"{what}: {why}, and its contours are not axial; not shown")
        target, grid = own
        placed = _place(rs, grid)
        warns.append(f"{what}: {why}; contours shown in patient space on a grid of their "
                     "own")
    segments = rs.segments()
    shape = grid_shape(target)
    for roi, polys, n_off in zip(rs.rois, placed.polys, placed.off, strict=True):
        if not roi.contours and not roi.other:
            warns.append(f"{what}: ROI '{roi.name}' has no contours")
        elif roi.contours and not polys:
            warns.append(f"{what}: ROI '{roi.name}': its {len(roi.contours)} contour(s) lie "
                         f"off every slice of {target.name}; not drawn")
        elif n_off:
            warns.append(f"{what}: ROI '{roi.name}': {n_off} of {len(roi.contours)} "
                         "contour(s) lie off the slices; left out")
        if roi.other:
            kinds = ", ".join(sorted(set(roi.other)))
            warns.append(f"{what}: ROI '{roi.name}': {len(roi.other)} {kinds} contour(s) "
                         "not drawn (only closed planar contours are)")
    vertices: list[npt.NDArray[np.float64]] = []
    values: list[int] = []
    labels = np.zeros(shape, dtype=label_dtype(len(segments)))
    overlap = False
    for seg, polys in zip(segments, placed.polys, strict=True):
        by_plane: dict[int, list[npt.NDArray[np.float64]]] = {}
        for plane, rc in polys:
            by_plane.setdefault(plane, []).append(rc)
            lead = np.asarray(grid.plane_slot(plane), dtype=np.float64)
            vertices.append(np.concatenate([np.broadcast_to(lead, (len(rc), len(lead))), rc],
                                           axis=1))
            values.append(seg.value)
        for plane, rcs in by_plane.items():
            where: tuple[Any, ...] = (*grid.plane_slot(plane), Ellipsis)
            m = fill_polygons(rcs, grid.rows, grid.columns)
            target_plane = labels[where]
            overlap = overlap or bool(np.any(target_plane[m] != 0))
            target_plane[m] = seg.value
    if not vertices:
        raise RTStructError("; ".join(warns) or f"{what}: no contour to draw")
    if overlap:
        warns.append(f"{what}: ROIs overlap; in the filled label layer the later ROI wins "
                     "where they do (the contours show both)")
    common: dict[str, Any] = {"series": target, "segments": segments, "source": rs.path,
                              "object_type": "RTSTRUCT", "on_reference": on_reference}
    shapes = LabelLayer(name=f"{rs.name} contours", kind="shapes", data=vertices,
                        shape_values=values, **common)
    filled = LabelLayer(name=f"{rs.name} filled", kind="labels", data=labels, visible=False,
                        **common)
    shapes.warnings.extend(warns)
    return [shapes, filled]
