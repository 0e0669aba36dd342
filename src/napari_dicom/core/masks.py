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

from .export import SOFTWARE, encode_png, plane_file_names, write_atomic
from .labels import Segment, plane_table
from .output import (
    ExportError,
    ExportRefused,
    is_own_png,
    manifest_header,
    plan_stack,
    remove_leftovers,
    staging_folder,
)

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


_LABELS_HEADER = "value,label,description,colour,source,object_type"


def _labels_csv(segments: Sequence[Segment], source: str, object_type: str) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(_LABELS_HEADER.split(","))
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
    w.writerow(["file", *idx, *_PLANE_COLUMNS])
    for i, (name, ix) in enumerate(zip(names, np.ndindex(*leading), strict=True)):
        loc = cols["locations"][i]
        w.writerow([name, *ix, "" if loc is None else f"{float(loc):.6g}",
                    cols["sop_instance_uids"][i] or "", cols["files"][i] or "",
                    "" if cols["frames"][i] is None else cols["frames"][i]])
    return buf.getvalue().encode("utf-8")


def _manifest_headers() -> frozenset[str]:
    idx = [["index"], *[[f"index{k}" for k in range(n)] for n in range(2, 9)]]
    return frozenset(",".join(["file", *i, *_PLANE_COLUMNS]) for i in idx)


_PLANE_COLUMNS = ["location_mm", "sop_instance_uid", "source_file", "frame"]


def export_label_stack(
    data: Any,
    out_path: str | os.PathLike[str],
    segments: Sequence[Segment],
    *,
    planes: Mapping[str, Any] | None = None,
    stem: str | None = None,
    source: str = "",
    object_type: str = "",
    overwrite: bool = False,
) -> list[Path]:
    """Write a label map (``(..., H, W)`` non-negative integers) as PNG(s).

    ``out_path``: 2-D data is written to that PNG (``.png`` appended when missing) with
    ``labels.csv`` beside it as ``<name>.labels.csv``; N-D data goes into the folder
    ``out_path`` (without ``.png``), one PNG per plane named ``<stem>_0001.png`` ...
    (``stem`` default: the folder's name, as the image export names its planes), plus
    ``manifest.csv`` and ``labels.csv``. ``planes``: ``locations``,
    ``sop_instance_uids``, ``files``, ``frames`` of the image planes, one per plane.

    Files follow the image export's rules (:mod:`napari_dicom.core.output`): a file
    napari-dicom did not write is not overwritten unless ``overwrite``; a stack is
    written into a hidden folder and swapped in once complete.

    Returns every path written. Raises :class:`ExportRefused` / :class:`ExportError`
    naming the file that could not be written (what this call wrote is removed), and
    ``ValueError`` for data that is not a label map.
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
    table = _labels_csv(segments, source, object_type)
    if not leading:
        target = out if out.suffix.lower() == ".png" else out.with_name(out.name + ".png")
        side = target.with_name(target.with_suffix("").name + "." + LABELS_CSV)
        for f in (target, side):
            if f.exists() and not overwrite and not (
                    is_own_png(f) or manifest_header(f) == _LABELS_HEADER):
                raise ExportRefused(f"{f} exists and was not written by napari-dicom: "
                                    "not overwritten", [f.name])
        written: list[Path] = []
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, encode_png(np.ascontiguousarray(arr, dtype=dtype),
                                            {"Software": SOFTWARE}))
            written.append(target)
            write_atomic(side, table)
            written.append(side)
        except OSError as exc:
            for w in written:
                w.unlink(missing_ok=True)
            raise ExportError(f"cannot write the label map to {exc.filename or target}: "
                              f"{exc.strerror or exc}") from exc
        return written
    folder = out.with_suffix("") if out.suffix.lower() == ".png" else out
    names = plane_file_names(leading, stem or folder.name)
    if folder.exists() and not folder.is_dir():
        raise ExportError(f"cannot write into {folder}: it exists and is not a folder")
    remove_leftovers(folder)
    plan = plan_stack(folder, names, overwrite=overwrite, manifest_headers=_manifest_headers(),
                      stem=stem or folder.name)
    ours = bool(plan.previous)
    if (folder / LABELS_CSV).exists() and not (overwrite or ours):
        raise ExportRefused(f"{folder} holds {LABELS_CSV}, not written by napari-dicom: "
                            "not overwritten", [LABELS_CSV])
    plan.staging = staging_folder(folder, "partial")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        plan.staging.mkdir()
        flat = arr.reshape(-1, *arr.shape[-2:])
        for name, plane in zip(names, flat, strict=True):
            write_atomic(plan.staging / name,
                         encode_png(np.ascontiguousarray(plane, dtype=dtype),
                                    {"Software": SOFTWARE}))
        write_atomic(plan.staging / MANIFEST_CSV, _manifest_csv(names, leading, planes))
        write_atomic(plan.staging / LABELS_CSV, table)
        if plan.mode == "merge":
            os.replace(plan.staging / LABELS_CSV, folder / LABELS_CSV)
        plan.install()
    except OSError as exc:
        plan.discard()
        raise ExportError(f"cannot write the label map to {exc.filename or folder}: "
                          f"{exc.strerror or exc}") from exc
    return [folder / n for n in names] + [folder / MANIFEST_CSV, folder / LABELS_CSV]


def as_label_map(data: npt.ArrayLike, threshold: float) -> npt.NDArray[np.uint8]:
    """A fractional (0..1) segment as a 0/1 label map: 1 from ``threshold`` on."""
    return (np.asarray(data) >= threshold).astype(np.uint8)


def mask_folder(image_folder: Path, layer_name: str) -> Path:
    """Where ``export --masks`` writes a label layer of the series exported to
    ``image_folder``: ``<image folder>_masks/<layer name>/`` beside it, planes named like
    the image's (``<image folder name>_0001.png``)."""
    from .series import sanitize

    return image_folder.with_name(image_folder.name + "_masks") / sanitize(layer_name)


def export_series_masks(
    objects: Sequence[str],
    exported: Sequence[tuple[Any, Path, int]],
    all_series: Sequence[Any],
    *,
    overwrite: bool = False,
) -> tuple[list[Path], list[str]]:
    """The label maps of every SEG / RTSTRUCT in ``objects`` that lies on an exported
    series, written beside that series' PNG folder (:func:`mask_folder`).

    ``exported``: ``(series, image folder, number of planes written)``. A fractional
    SEG segment is thresholded at ``core.seg.FRACTIONAL_THRESHOLD`` (value = its segment
    number); RTSTRUCT ROIs are written filled (the contours themselves are vector data).
    Returns (paths written, warnings); an object that cannot be placed or written gives
    a warning naming it, the other masks are still written.
    """
    from .objects import object_layers
    from .seg import FRACTIONAL_THRESHOLD

    folders = {id(s): (folder, n) for s, folder, n in exported}
    layers, warns = object_layers(objects, all_series)
    written: list[Path] = []
    used: dict[Path, int] = {}
    for layer in layers:
        if layer.kind == "shapes" or id(layer.series) not in folders:
            continue
        folder, n = folders[id(layer.series)]
        if n != len(layer.series.planes):
            warns.append(f"{layer.name}: not written: its series was exported with "
                         f"{n} of {len(layer.series.planes)} planes")
            continue
        data = layer.data
        if layer.kind == "image":
            value = layer.segments[0].value
            data = np.where(np.asarray(data) >= FRACTIONAL_THRESHOLD, value, 0).astype(
                label_png_dtype(value))
        target = mask_folder(folder, layer.name)
        k = used.get(target, 0)
        used[target] = k + 1
        if k:
            target = target.with_name(f"{target.name}_{k + 1}")
        try:
            written += export_label_stack(data, target, layer.segments, stem=folder.name,
                                          planes=plane_table(layer.series),
                                          source=layer.source, object_type=layer.object_type,
                                          overwrite=overwrite)
        except (ExportError, ValueError) as exc:
            warns.append(f"{layer.name}: masks not written: {exc}")
    return written, warns
