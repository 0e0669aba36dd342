"""DICOM Segmentation (PS3.3 A.51, C.8.20): BINARY, FRACTIONAL and LABELMAP SEG as layers.

Parsing is highdicom's (the reference implementation of SEG): it decodes the frames and
assembles them into a volume from each frame's Plane Position (Patient) in the
functional groups. Each frame of that volume is then matched to the image plane at the
same patient position (``core.labels.Grid``), never by frame order, and pasted there;
the layers get the image's grid, so they are placed by the image layer's own function.

What becomes which layer (the choices):

* BINARY: one Labels layer per group of segments that do not overlap; the label value
  is the Segment Number. Segments that overlap (binary SEG allows it) go to separate
  layers, so no voxel silently loses a segment.
* LABELMAP (Label Map Segmentation Storage): one Labels layer, values as stored.
* FRACTIONAL: one float image layer per segment, the probability or occupancy in 0..1
  (rescaled by Maximum Fractional Value), coloured by its segment colour; mask export
  thresholds it at 0.5 (:data:`FRACTIONAL_THRESHOLD`).

Colours come from Recommended Display CIELab Value (C.10.7.1.1, scaled to 0..65535),
converted to sRGB by highdicom; a malformed value gets a warning and napari's colour.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from .labels import Grid, LabelLayer, Segment, grid_shape, label_dtype, own_series, series_grid
from .series import Series

__all__ = ["FRACTIONAL_THRESHOLD", "SegError", "SegInfo", "read_seg_info", "seg_layers"]

#: a fractional segment counts as "in" from this value on (mask export)
FRACTIONAL_THRESHOLD = 0.5


class SegError(ValueError):
    """A SEG that cannot be shown (the message names the file and the problem)."""


@dataclass
class SegInfo:
    """What a SEG holds, from its header (no pixels decoded)."""

    path: str
    name: str
    seg_type: str
    segments: list[Segment]
    referenced_series: list[str]
    frame_of_reference: str
    series_uid: str
    warnings: list[str] = field(default_factory=list)


def _hd() -> Any:
    import highdicom  # imported on first use: ~0.4 s, only when a SEG is opened

    return highdicom


def _colour(item: Dataset, what: str, warns: list[str]) -> tuple[float, float, float] | None:
    """sRGB (0..1) of Recommended Display CIELab Value, or None (with a warning when
    malformed)."""
    if "RecommendedDisplayCIELabValue" not in item:
        return None
    value = item.RecommendedDisplayCIELabValue
    try:
        lab = [int(v) for v in value]
        rgb = _hd().color.CIELabColor.from_dicom_value(lab).to_rgb(clip=True)
    except (TypeError, ValueError) as exc:
        warns.append(f"{what}: malformed Recommended Display CIELab Value {value!r} ({exc}); "
                     "shown in napari's default colour")
        return None
    return (rgb[0] / 255.0, rgb[1] / 255.0, rgb[2] / 255.0)


def _segments(seg: Any, name: str, warns: list[str]) -> list[Segment]:
    out = []
    for item in seg.SegmentSequence:
        number = int(item.SegmentNumber)
        if number == 0:
            continue  # a LABELMAP's background segment: value 0, shown transparent
        label = str(item.get("SegmentLabel", "") or f"segment {number}")
        desc = str(item.get("SegmentDescription", "") or "")
        if not desc and item.get("SegmentedPropertyTypeCodeSequence"):
            desc = str(item.SegmentedPropertyTypeCodeSequence[0].get("CodeMeaning", ""))
        colour = _colour(item, f"{name}: segment {number} '{label}'", warns)
        out.append(Segment(number, label, desc, colour))
    return out


def _read(path: str) -> Any:
    hd = _hd()
    try:
        return hd.seg.segread(path)
    except (ValueError, AttributeError, KeyError, TypeError, IndexError, OSError) as exc:
        raise SegError(f"{os.path.basename(path)}: cannot read the segmentation ({exc})") from exc


def _info(seg: Any, path: str) -> SegInfo:
    name = os.path.basename(path)
    warns: list[str] = []
    refs = [str(r.SeriesInstanceUID) for r in seg.get("ReferencedSeriesSequence", [])
            if "SeriesInstanceUID" in r]
    title = str(seg.get("SeriesDescription", "") or seg.get("ContentLabel", "") or "SEG")
    number = seg.get("SeriesNumber")
    display = " ".join(p for p in (str(number) if number not in (None, "") else "",
                                   "SEG", title if title != "SEG" else "") if p)
    return SegInfo(
        path=path, name=display, seg_type=str(seg.SegmentationType),
        segments=_segments(seg, name, warns), referenced_series=refs,
        frame_of_reference=str(seg.get("FrameOfReferenceUID", "")),
        series_uid=str(seg.SeriesInstanceUID), warnings=warns,
    )


def read_seg_info(path: str | os.PathLike[str]) -> SegInfo:
    """The segments, references and type of a SEG (header only)."""
    import pydicom

    p = os.fspath(path)
    try:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
    except (OSError, ValueError, AttributeError, KeyError, TypeError) as exc:
        raise SegError(f"{os.path.basename(p)}: cannot read the segmentation ({exc})") from exc
    if "SegmentSequence" not in ds or "SegmentationType" not in ds:
        raise SegError(f"{os.path.basename(p)}: no Segment Sequence / Segmentation Type")
    return _info(ds, p)


# ---------------------------------------------------------------------------------------
# Placement
# ---------------------------------------------------------------------------------------


@dataclass
class _Volume:
    """One segment's (or the label map's) volume: array (K, R, C) and index->patient."""

    array: npt.NDArray[Any]
    affine: npt.NDArray[np.float64]

    def frame_axes(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64],
                                  tuple[float, float]]:
        col = self.affine[:3, 1]  # row index advances along the column direction
        row = self.affine[:3, 2]
        return (row / np.linalg.norm(row), col / np.linalg.norm(col),
                (float(np.linalg.norm(col)), float(np.linalg.norm(row))))

    def origin(self, k: int) -> npt.NDArray[np.float64]:
        return np.asarray(self.affine[:3, 3] + k * self.affine[:3, 0], dtype=np.float64)


def _volume(seg: Any, name: str, **kw: Any) -> _Volume:
    try:
        vol = seg.get_volume(**kw)
    except (RuntimeError, ValueError) as exc:
        raise SegError(f"{name}: its frames do not form a volume ({exc})") from exc
    arr = np.asarray(vol.array)
    if arr.ndim == 4:
        arr = arr[..., 0]
    return _Volume(arr, np.asarray(vol.affine, dtype=np.float64))


@dataclass
class _Placement:
    """Where each frame of a SEG volume goes on an image grid."""

    #: frame k -> [(plane index, row offset, column offset)]
    targets: dict[int, list[tuple[int, int, int]]]
    unmatched: list[int]


def _place(vol: _Volume, grid: Grid) -> _Placement | None:
    """Match every frame of ``vol`` to the image planes at its position; None when the
    SEG's pixels do not lie on the image's pixel grid (other directions or spacing)."""
    row, col, spacing = vol.frame_axes()
    if not grid.same_axes(row, col, spacing):
        return None
    targets: dict[int, list[tuple[int, int, int]]] = {}
    unmatched = []
    normal = grid.normal
    for k in range(vol.array.shape[0]):
        origin = vol.origin(k)
        hits = []
        for plane in grid.planes_at(float(origin @ normal)):
            off = grid.frame_offset(plane, origin)
            if off is not None:
                hits.append((plane, *off))
        if hits:
            targets[k] = hits
        else:
            unmatched.append(k)
    return _Placement(targets, unmatched)


def _paste(out: npt.NDArray[Any], frame: npt.NDArray[Any], grid: Grid,
           plane: int, dr: int, dc: int) -> None:
    """Write ``frame`` into plane ``plane`` of ``out`` at offset (dr, dc), clipped."""
    rows, cols = frame.shape
    r0, c0 = max(dr, 0), max(dc, 0)
    r1, c1 = min(dr + rows, grid.rows), min(dc + cols, grid.columns)
    if r0 >= r1 or c0 >= c1:
        return
    where: tuple[Any, ...] = (*grid.plane_slot(plane), slice(r0, r1), slice(c0, c1))
    target = out[where]
    src = frame[r0 - dr:r1 - dr, c0 - dc:c1 - dc]
    np.maximum(target, src.astype(out.dtype), out=target)


def _on_grid(vol: _Volume, grid: Grid, place: _Placement, shape: tuple[int, ...],
             dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    out = np.zeros(shape, dtype=dtype)
    for k, hits in place.targets.items():
        frame = vol.array[k]
        if not frame.any():
            continue
        for plane, dr, dc in hits:
            _paste(out, frame, grid, plane, dr, dc)
    return out


def _candidates(info: SegInfo, series: Sequence[Series]) -> list[Series]:
    """Image series the SEG may lie on: the referenced ones first, then those in the
    same Frame of Reference."""
    refs = set(info.referenced_series)
    same_for = [s for s in series if info.frame_of_reference
                and s.header.get("FrameOfReferenceUID") == info.frame_of_reference]
    ref = [s for s in series if s.uid in refs]
    return ref + [s for s in same_for if s not in ref]


def _own_grid(vol: _Volume, info: SegInfo) -> tuple[Series, Grid]:
    """A series standing for the SEG's own voxel grid, planes in order along the normal
    (highdicom may stack them either way); frames are matched onto it like onto an
    image."""
    row, col, (rs, cs) = vol.frame_axes()
    k = vol.array.shape[0]
    origins = np.asarray([vol.origin(i) for i in range(k)])
    origins = origins[np.argsort(origins @ np.cross(row, col), kind="stable")]
    dz = float(np.linalg.norm(vol.affine[:3, 0])) or 1.0
    s = own_series(info.series_uid, info.name, "SEG", origins, row, col, (dz, rs, cs),
                   vol.array.shape[1], vol.array.shape[2], info.frame_of_reference)
    g = series_grid(s)
    assert g is not None
    return s, g


def seg_layers(path: str | os.PathLike[str], series: Sequence[Series]) -> list[LabelLayer]:
    """The layers of the SEG at ``path``, on the image series it refers to when one of
    ``series`` holds its frames, else on its own geometry (with a warning).

    Raises
    ------
    SegError
        The file cannot be read as a segmentation, or its frames form no volume.
    """
    p = os.fspath(path)
    seg = _read(p)
    info = _info(seg, p)
    fname = os.path.basename(p)
    what = f"{fname} (SEG '{info.name}')"
    warns = list(info.warnings)
    seg_type = info.seg_type.split(".")[-1].upper()
    numbers = [s.value for s in info.segments]
    if not numbers:
        raise SegError(f"{what}: no segments")

    if seg_type == "LABELMAP":
        vols = {0: _volume(seg, what, combine_segments=True, relabel=False)}
    elif seg_type == "FRACTIONAL":
        vols = {n: _volume(seg, what, segment_numbers=[n], combine_segments=False,
                           rescale_fractional=True, dtype=np.float32) for n in numbers}
    else:
        vols = {n: _volume(seg, what, segment_numbers=[n], combine_segments=False,
                           dtype=np.uint8) for n in numbers}

    # the image series holding the most frames of the first volume
    first = next(iter(vols.values()))
    best: tuple[Series, Grid, int] | None = None
    for cand in _candidates(info, series):
        grid = series_grid(cand)
        if grid is None:
            continue
        place = _place(first, grid)
        if place is None:
            continue
        score = len(place.targets)
        if score and (best is None or score > best[2]):
            best = (cand, grid, score)

    on_reference = best is not None
    if best is not None:
        target, grid = best[0], best[1]
    else:
        if not _candidates(info, series):
            refs = ", ".join(r[-16:] for r in info.referenced_series) or "none named"
            why = f"its referenced series ({refs}) is not among the opened images"
        else:
            why = "its frames lie on no plane of the referenced series"
        warns.append(f"{what}: {why}; shown on its own geometry")
        target, grid = _own_grid(first, info)
    shape = grid_shape(target)

    layers: list[LabelLayer] = []
    placed: dict[int, npt.NDArray[Any]] = {}
    unmatched: set[int] = set()
    for n, vol in vols.items():
        place = _place(vol, grid)
        if place is None:
            raise SegError(f"{what}: segment {n} has a pixel grid other than the others")
        unmatched.update(k for k in place.unmatched if vol.array[k].any())
        dtype = np.dtype(np.float32) if seg_type == "FRACTIONAL" else (
            label_dtype(max(numbers)) if seg_type == "LABELMAP" else np.dtype(np.uint8))
        placed[n] = _on_grid(vol, grid, place, shape, dtype)
    if unmatched:
        warns.append(f"{what}: {len(unmatched)} frame(s) at positions matching no plane of "
                     f"{target.name} were left out")

    by_number = {s.value: s for s in info.segments}
    present: list[int] = []
    if seg_type == "LABELMAP":
        values = set(int(v) for v in np.unique(placed[0]))
        present = [n for n in numbers if n in values]
    else:
        present = [n for n in numbers if placed[n].any()]
    for n in numbers:
        if n not in present:
            s = by_number[n]
            warns.append(f"{what}: segment {n} '{s.label}' is empty" + (
                " where it meets the image" if on_reference else ""))

    def make(name: str, kind: str, data: Any, segs: list[Segment]) -> LabelLayer:
        return LabelLayer(name=name, kind=kind, data=data, series=target,  # type: ignore[arg-type]
                          segments=segs, source=p, object_type="SEG",
                          on_reference=on_reference)

    if seg_type == "LABELMAP":
        layers.append(make(info.name, "labels", placed[0], list(info.segments)))
    elif seg_type == "FRACTIONAL":
        for n in present:
            s = by_number[n]
            layers.append(make(f"{info.name}: {s.label}", "image", placed[n], [s]))
    else:
        for group in _groups([(n, placed[n]) for n in present]):
            data = np.zeros(shape, dtype=label_dtype(max(group)))
            for n in group:
                data[placed[n] > 0] = n
            segs = [by_number[n] for n in group]
            suffix = "" if len(group) == len(present) else (
                f" (segment{'s' if len(group) > 1 else ''} {', '.join(map(str, group))})")
            layers.append(make(info.name + suffix, "labels", data, segs))
        if len(layers) > 1:
            warns.append(f"{what}: segments overlap; shown as {len(layers)} label layers so "
                         "that no voxel loses a segment")
    if layers:
        layers[0].warnings.extend(warns)
    else:
        raise SegError("; ".join(warns) or f"{what}: nothing to show")
    return layers


def _groups(masks: list[tuple[int, npt.NDArray[Any]]]) -> list[list[int]]:
    """Segment numbers in groups whose masks do not overlap (first fit, in order)."""
    groups: list[tuple[list[int], npt.NDArray[np.bool_]]] = []
    for n, m in masks:
        on = m > 0
        for members, union in groups:
            if not np.any(union & on):
                members.append(n)
                union |= on
                break
        else:
            groups.append(([n], on.copy()))
    return [g for g, _ in groups]
