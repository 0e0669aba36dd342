"""SEG and RTSTRUCT objects found by a scan: their references, their layers, a summary.

The reader and the CLI call these; ``core.seg`` and ``core.rtstruct`` do the work. An
object that cannot be shown gives a one-line warning naming its file; the images are
never affected.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError

from .labels import LabelLayer, Segment, plane_table
from .series import Series

__all__ = [
    "ObjectSummary",
    "find_referenced_series",
    "label_metadata",
    "object_layers",
    "read_summary",
]

SEG_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")
RTSTRUCT_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"

_READ_ERRORS = (InvalidDicomError, OSError, ValueError, AttributeError, KeyError, TypeError,
                IndexError, EOFError)


@dataclass
class ObjectSummary:
    """What a SEG or RTSTRUCT holds (header only), for ``info`` and for references."""

    path: str
    object_type: str  # "SEG" or "RTSTRUCT"
    name: str
    segments: list[Segment]
    referenced_series: list[str]
    frame_of_reference: str
    detail: str = ""  # e.g. "BINARY"
    warnings: list[str] = field(default_factory=list)


def _sop_class(path: str) -> str:
    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"],
                         force=True)
    return str(ds.get("SOPClassUID", ""))


def read_summary(path: str | os.PathLike[str]) -> ObjectSummary:
    """Header summary of a SEG or RTSTRUCT. Raises ``ValueError`` (naming the file) when
    it cannot be read or is neither."""
    p = os.fspath(path)
    try:
        cls = _sop_class(p)
    except _READ_ERRORS as exc:
        raise ValueError(f"{os.path.basename(p)}: cannot read ({exc})") from exc
    if cls in SEG_CLASSES:
        from .seg import read_seg_info

        info = read_seg_info(p)
        return ObjectSummary(p, "SEG", info.name, info.segments, info.referenced_series,
                             info.frame_of_reference, info.seg_type, info.warnings)
    if cls == RTSTRUCT_CLASS:
        from .rtstruct import read_structure_set

        rs = read_structure_set(p)
        return ObjectSummary(p, "RTSTRUCT", rs.name, rs.segments(), rs.referenced_series,
                             rs.frame_of_reference, f"{len(rs.rois)} ROIs", rs.warnings)
    raise ValueError(f"{os.path.basename(p)}: neither a segmentation nor a structure set")


def find_referenced_series(
    objects: Sequence[str], series: Sequence[Series],
    scan_folder: Callable[[Path], Sequence[Series]],
) -> tuple[list[Series], list[str]]:
    """Series that objects refer to but that were not opened with them: each object's
    folder is scanned (``scan_folder``) and the series it names are returned (a SEG
    opened on its own finds its CT beside it). Returns (series, warnings)."""
    have = {s.uid for s in series}
    wanted: dict[Path, set[str]] = {}
    warns: list[str] = []
    from .dicomweb import object_url

    for path in objects:
        if object_url(path) != path:  # a DICOMweb download: its server was asked
            continue
        try:
            summary = read_summary(path)
        except ValueError as exc:
            warns.append(str(exc))
            continue
        missing = set(summary.referenced_series) - have
        if missing:
            wanted.setdefault(Path(path).resolve().parent, set()).update(missing)
    found: list[Series] = []
    for folder, uids in wanted.items():
        for s in scan_folder(folder):
            if s.uid in uids and s.uid not in have:
                found.append(s)
        have.update(s.uid for s in found)
    return found, warns


def _known_as(text: str, path: str, name: str) -> str:
    """``text`` naming ``name`` (what the user opened, such as a DICOMweb URL) where it
    names the file ``path`` or its file name (a download the user never saw)."""
    if name == path:
        return text
    return text.replace(path, name).replace(os.path.basename(path), name)


def object_layers(
    objects: Sequence[str], series: Sequence[Series],
) -> tuple[list[LabelLayer], list[str]]:
    """The layers of every SEG / RTSTRUCT in ``objects``, placed on ``series``; objects
    that cannot be shown give a warning instead. Returns (layers, warnings)."""
    from .dicomweb import object_url

    layers: list[LabelLayer] = []
    warns: list[str] = []
    for path in objects:
        url = object_url(path)  # a DICOMweb object: its URL, not the downloaded copy
        try:
            cls = _sop_class(path)
            if cls in SEG_CLASSES:
                from .seg import seg_layers

                got = seg_layers(path, series)
            elif cls == RTSTRUCT_CLASS:
                from .rtstruct import structure_set_layers

                got = structure_set_layers(path, series)
            else:
                continue
        except _READ_ERRORS as exc:  # SegError / RTStructError are ValueErrors
            warns.append(_known_as(str(exc) if os.path.basename(path) in str(exc) else
                                   f"{os.path.basename(path)}: not shown ({exc})", path, url))
            continue
        for layer in got:
            layer.source = url
            layer.warnings = [_known_as(w, path, url) for w in layer.warnings]
            warns.extend(layer.warnings)
        layers.extend(got)
    return layers, warns


def label_metadata(layer: LabelLayer) -> dict[str, Any]:
    """``metadata["segmentation"]`` of a label layer (JSON-friendly): what the writer
    needs for the mask PNGs' names and ``labels.csv``."""
    s = layer.series
    return {
        "object_type": layer.object_type,
        "source": layer.source,
        "on_reference": layer.on_reference,
        "series_instance_uid": s.uid,
        "series_name": s.name,
        "segments": [{"value": g.value, "label": g.label, "description": g.description,
                      "colour": list(g.colour) if g.colour is not None else None}
                     for g in layer.segments],
        "planes": plane_table(s),
    }


def segments_from_metadata(meta: dict[str, Any]) -> list[Segment]:
    out = []
    for d in meta.get("segments", []) or []:
        c = d.get("colour")
        out.append(Segment(int(d["value"]), str(d.get("label", "")),
                           str(d.get("description", "")),
                           (float(c[0]), float(c[1]), float(c[2])) if c else None))
    return out
