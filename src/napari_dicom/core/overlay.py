"""Overlay planes (PS3.3 C.9.2, groups 6000-601E): bit planes beside the picture.

Each overlay group of an image series becomes a Labels layer (value 1 where the overlay
bit is set) on the series' grid, placed by the image layer's own function
(``core.labels.placed``). The picture is never altered: DCMTK burns overlays into its
output by default, napari-dicom shows them as a layer the user can hide, recolour, save.

Where: Overlay Origin (60xx,0050) is the 1-based (row, column) of the overlay's first
pixel on the image; a multi-frame overlay (Number of Frames in Overlay (60xx,0015))
starts at Image Frame Origin (60xx,0051), 1-based. Which files: an overlay group found
in the series' first file is read from every file of the series (a header read each,
Overlay Data sits before Pixel Data); a series whose first file has none is not searched
further, so opening images without overlays costs nothing.
"""

from __future__ import annotations

import os
import re
import struct
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from .labels import LabelLayer, Segment, grid_shape
from .series import Series

__all__ = ["overlay_groups", "overlay_layers"]

_DATA_KEY = re.compile(r"\((60[0-1][02468ACE]),3000\)")
#: overlay colour: the usual graphics yellow of radiology viewers
OVERLAY_COLOUR = (1.0, 0.85, 0.0)
_READ_ERRORS = (InvalidDicomError, OSError, ValueError, AttributeError, KeyError, TypeError,
                IndexError, EOFError, struct.error, NotImplementedError)


def overlay_groups(series: Series) -> list[int]:
    """Overlay groups (0x6000, 0x6002, ...) with Overlay Data in the series' first file
    (its header, read by the scan)."""
    out = []
    for key in series.header:
        m = _DATA_KEY.fullmatch(key)
        if m:
            out.append(int(m.group(1), 16))
    return sorted(out)


def _text(ds: Dataset, group: int, elem: int) -> str:
    v = ds.get((group, elem))
    return str(v.value).strip() if v is not None and v.value is not None else ""


def _ints(ds: Dataset, group: int, elem: int, n: int, default: list[int]) -> list[int]:
    v = ds.get((group, elem))
    try:
        vals = [int(x) for x in v.value] if v is not None else default
    except (TypeError, ValueError):
        return default
    return vals if len(vals) == n else default


def _paste(out: npt.NDArray[np.uint8], bits: npt.NDArray[Any], r0: int, c0: int) -> None:
    rows, cols = out.shape
    h, w = bits.shape
    rs, cs = max(r0, 0), max(c0, 0)
    re_, ce = min(r0 + h, rows), min(c0 + w, cols)
    if rs < re_ and cs < ce:
        sub = bits[rs - r0:re_ - r0, cs - c0:ce - c0] != 0
        out[rs:re_, cs:ce][sub] = 1


def overlay_layers(series: Series) -> tuple[list[LabelLayer], list[str]]:
    """One Labels layer per overlay group of ``series`` (value 1 = overlay bit set).
    Returns (layers, warnings); a file whose overlay cannot be read gives a warning and
    the rest is shown."""
    groups = overlay_groups(series)
    if not groups:
        return [], []
    shape = grid_shape(series)
    lead = shape[:-2]
    data = {g: np.zeros(shape, dtype=np.uint8) for g in groups}
    info: dict[int, tuple[str, str]] = {}
    warns: list[str] = []
    by_file: dict[str, list[tuple[int, int | None]]] = {}
    for i, p in enumerate(series.planes):
        by_file.setdefault(p.path, []).append((i, p.frame))
    for path, planes in by_file.items():
        name = os.path.basename(path)
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except _READ_ERRORS as exc:
            warns.append(f"{name}: overlay not read ({exc})")
            continue
        for g in groups:
            if (g, 0x3000) not in ds:
                continue
            try:
                bits = np.asarray(ds.overlay_array(g))
            except _READ_ERRORS as exc:
                warns.append(f"{name}: overlay {g:04X} not read ({exc})")
                continue
            if g not in info:
                info[g] = (_text(ds, g, 0x1500), _text(ds, g, 0x0022))
            r0, c0 = (v - 1 for v in _ints(ds, g, 0x0050, 2, [1, 1]))
            if bits.ndim == 2:
                bits = bits[np.newaxis]
            first = _ints(ds, g, 0x0051, 1, [1])[0] - 1
            for i, frame in planes:
                k = (frame or 0) - first
                if 0 <= k < len(bits):
                    where = np.unravel_index(i, lead) if lead else ()
                    _paste(data[g][where], bits[k], r0, c0)
    layers = []
    for g in groups:
        label, desc = info.get(g, ("", ""))
        title = label or desc or f"overlay {g:04X}"
        if not data[g].any():
            warns.append(f"{series.name}: overlay {g:04X} ({title}) is empty")
            continue
        layers.append(LabelLayer(
            name=f"{series.name} overlay {g:04X}" + (f" {label}" if label else ""),
            kind="labels", data=data[g], series=series,
            segments=[Segment(1, title, desc, OVERLAY_COLOUR)],
            source=series.planes[0].path, object_type="overlay"))
    return layers, warns
