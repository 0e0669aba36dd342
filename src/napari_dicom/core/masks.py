"""Label maps as PNG stacks: one PNG per plane, named and ordered like the image stack.

Used by the napari writer (File > Save of a Labels layer) and the CLI (``export
--masks``). A label map is written as stored: 8-bit grey PNGs while every value fits
(<= 255), else 16-bit grey PNGs (PNG bit depth 16); no colour, no scaling, so a pixel of
the PNG is the label value. Plane names come from
:func:`napari_dicom.core.export.plane_file_names` (the image export's names), so the mask
of image ``ct_0007.png`` is ``ct_0007.png`` in the mask folder. Beside the PNGs:

``manifest.csv``  one row per plane: file, index, location_mm, sop_instance_uid,
                  source_file, frame (of the image plane the mask lies on)
``labels.csv``    one row per label value: value, label, description, colour (#rrggbb),
                  source (the SEG / RTSTRUCT / image file), object_type
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .export import ExportError, encode_png, plane_file_names, write_atomic
from .labels import Segment

__all__ = ["LABELS_CSV", "MANIFEST_CSV", "export_label_stack", "label_png_dtype"]

MANIFEST_CSV = "manifest.csv"
LABELS_CSV = "labels.csv"


def label_png_dtype(max_value: int) -> np.dtype[Any]:
    """uint8 up to 255, uint16 up to 65535; larger values do not fit a PNG."""
    if max_value < 0:
        raise ValueError(f"negative label value {max_value}")
    if max_value <= 255:
        return np.dtype(np.uint8)
    if max_value <= 65535:
        return np.dtype(np.uint16)
    raise ValueError(f"label value {max_value} does not fit a 16-bit PNG")


def _hex(colour: tuple[float, float, float] | None) -> str:
    if colour is None:
        return ""
    return "#" + "".join(f"{round(min(max(c, 0.0), 1.0) * 255):02x}" for c in colour)


def _labels_csv(segments: Sequence[Segment], source: str, object_type: str) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["value", "label", "description", "colour", "source", "object_type"])
    for s in sorted(segments, key=lambda s: s.value):
        w.writerow([s.value, s.label, s.description, _hex(s.colour), source, object_type])
    return buf.getvalue().encode("utf-8")


def _plane_list(planes: Mapping[str, Any] | None, key: str, n: int) -> list[Any]:
    v = (planes or {}).get(key)
    return list(v) if isinstance(v, (list, tuple)) and len(v) == n else [None] * n


def _manifest_csv(names: list[str], leading: tuple[int, ...],
                  planes: Mapping[str, Any] | None) -> bytes:
    n = len(names)
    cols = {k: _plane_list(planes, k, n)
            for k in ("locations", "sop_instance_uids", "files", "frames")}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    idx = ["index"] if len(leading) == 1 else [f"index{k}" for k in range(len(leading))]
    w.writerow(["file", *idx, "location_mm", "sop_instance_uid", "source_file", "frame"])
    for i, (name, ix) in enumerate(zip(names, np.ndindex(*leading), strict=True)):
        loc = cols["locations"][i]
        w.writerow([name, *ix, "" if loc is None else f"{float(loc):.6g}",
                    cols["sop_instance_uids"][i] or "", cols["files"][i] or "",
                    "" if cols["frames"][i] is None else cols["frames"][i]])
    return buf.getvalue().encode("utf-8")


def export_label_stack(
    data: Any,
    out_path: str | os.PathLike[str],
    segments: Sequence[Segment],
    *,
    planes: Mapping[str, Any] | None = None,
    stem: str | None = None,
    source: str = "",
    object_type: str = "",
) -> list[Path]:
    """Write a label map (``(..., H, W)`` non-negative integers) as PNG(s).

    ``out_path``: 2-D data is written to that PNG (``.png`` appended when missing) with
    ``labels.csv`` beside it as ``<name>.labels.csv``; N-D data goes into the folder
    ``out_path`` (without ``.png``), one PNG per plane named ``<stem>_0001.png`` ...
    (``stem`` default: the folder's name, as the image export names its planes), plus
    ``manifest.csv`` and ``labels.csv``. ``planes``: ``locations``,
    ``sop_instance_uids``, ``files``, ``frames`` of the image planes, one per plane.

    Returns every path written. Raises :class:`ExportError` naming the file that could
    not be written (what this call wrote is removed) and ``ValueError`` for data that is
    not a label map.
    """
    arr = np.asarray(data)
    if arr.ndim < 2:
        raise ValueError(f"a label map needs (..., H, W) data, got shape {arr.shape}")
    if arr.dtype.kind not in "iub":
        raise ValueError(f"a label map needs integer values, got {arr.dtype}")
    lo = int(arr.min()) if arr.size else 0
    if lo < 0:
        raise ValueError(f"a label map needs values >= 0, got {lo}")
    dtype = label_png_dtype(int(arr.max()) if arr.size else 0)
    leading = tuple(int(n) for n in arr.shape[:-2])
    out = Path(out_path)
    if not leading:
        target = out if out.suffix.lower() == ".png" else out.with_name(out.name + ".png")
        folder, names = target.parent, [target.name]
        labels_name = target.with_suffix("").name + "." + LABELS_CSV
    else:
        folder = out.with_suffix("") if out.suffix.lower() == ".png" else out
        names = plane_file_names(leading, stem or folder.name)
        labels_name = LABELS_CSV
    written: list[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        planes_flat = arr.reshape(-1, *arr.shape[-2:])
        for name, plane in zip(names, planes_flat, strict=True):
            p = folder / name
            write_atomic(p, encode_png(np.ascontiguousarray(plane, dtype=dtype)))
            written.append(p)
        if leading:
            p = folder / MANIFEST_CSV
            write_atomic(p, _manifest_csv(names, leading, planes))
            written.append(p)
        p = folder / labels_name
        write_atomic(p, _labels_csv(segments, source, object_type))
        written.append(p)
    except OSError as exc:
        for w in written:
            try:
                w.unlink()
            except OSError:
                pass
        where = exc.filename or folder
        raise ExportError(f"cannot write the label map to {where}: "
                          f"{exc.strerror or exc}") from exc
    return written


def as_label_map(data: npt.ArrayLike, threshold: float) -> npt.NDArray[np.uint8]:
    """A fractional (0..1) segment as a 0/1 label map: 1 from ``threshold`` on."""
    return (np.asarray(data) >= threshold).astype(np.uint8)
