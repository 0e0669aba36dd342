"""The DICOM header of one file as rows for a tag browser (Qt-free model).

:func:`read_rows` reads a file's full header (every element, sequences nested, private
elements named through their Private Creator, PS3.5 7.8.1) into :class:`TagRow`s; large
binary values (Pixel Data, OB/OW/... over :data:`BINARY_SHOWN` bytes) are summarised as
``"OW, 524288 bytes"`` and never read (pydicom defers them). :func:`plane_file` says which
file and frame a layer's displayed plane came from (``metadata["dicom"]["files"]`` and
``["frames"]``, see :mod:`napari_dicom.core.meta`), undoing the layer's patient-space
arrangement (``placement``, :func:`napari_dicom.core.geometry.restore_axes`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom import dcmread
from pydicom.datadict import dictionary_VR, keyword_for_tag, private_dictionary_description
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import BaseTag, Tag

__all__ = [
    "BINARY_SHOWN",
    "BINARY_VRS",
    "TagReadError",
    "TagRow",
    "dataset_rows",
    "filter_rows",
    "plane_file",
    "read_rows",
]

#: VRs whose values are bytes or long numeric arrays (PS3.5 6.2)
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW"})
#: binary values up to this many bytes are shown (hex); longer ones only summarised
BINARY_SHOWN = 64
#: text longer than this is cut, with its length said
TEXT_SHOWN = 256
#: multi-valued numbers: more than this many values are summarised
VALUES_SHOWN = 16
#: values larger than this are not read from the file when the header is read
_DEFER = 1024


class TagReadError(Exception):
    """The file cannot be read (again): one line naming the file and the problem."""


@dataclass(frozen=True)
class TagRow:
    """One element: ``tag`` "(gggg,eeee)", ``keyword`` (for private elements the private
    dictionary's name, else ""), ``vr``, ``value`` (shown text), ``creator`` (the Private
    Creator of a private element), ``children`` (a sequence's items, each an "Item n" row
    whose children are its elements)."""

    tag: str
    keyword: str
    vr: str
    value: str
    creator: str = ""
    children: tuple[TagRow, ...] = field(default_factory=tuple)

    def text(self) -> str:
        """All the columns in one line (what the filter searches)."""
        return " ".join((self.tag, self.keyword, self.vr, self.value, self.creator))


def _tag_text(tag: BaseTag) -> str:
    return f"({tag.group:04X},{tag.element:04X})"


def _creator(ds: Dataset, tag: BaseTag) -> str:
    """Private Creator of a private data element (PS3.5 7.8.1): the value of
    ``(gggg,00xx)`` for ``(gggg,xxee)``; "" for the creator elements themselves."""
    block = tag.element >> 8
    if block < 0x10:
        return ""
    creator_tag = Tag(tag.group, block)
    if creator_tag not in ds:
        return "(no Private Creator)"
    value = ds[creator_tag].value
    return str(value).strip() if value is not None else ""


def _summary(vr: str, length: int) -> str:
    return f"{vr}, {length} bytes"


def _value_text(elem: DataElement) -> str:
    value = elem.value
    vr = str(elem.VR)
    if value is None or value == "" or value == b"":
        return ""
    if vr in BINARY_VRS or isinstance(value, (bytes, bytearray)):
        raw = bytes(value) if isinstance(value, (bytes, bytearray)) else b""
        if isinstance(value, (bytes, bytearray)) and len(raw) <= BINARY_SHOWN:
            return raw.hex(" ")
        n = len(raw) if raw else len(str(value))
        return _summary(vr, n)
    if elem.VM > 1:
        items = list(value)
        shown = ", ".join(str(v) for v in items[:VALUES_SHOWN])
        if len(items) > VALUES_SHOWN:
            return f"{shown}, ... ({len(items)} values)"
        return shown
    text = str(value)
    if len(text) > TEXT_SHOWN:
        return f"{text[:TEXT_SHOWN]}... ({len(text)} characters)"
    return text


def _row(ds: Dataset, tag: BaseTag) -> TagRow:
    raw = ds.get_item(tag)
    private = tag.is_private
    creator = _creator(ds, tag) if private else ""
    if private:
        try:
            keyword = private_dictionary_description(tag, creator) if creator else ""
        except KeyError:
            keyword = ""
        if not keyword and tag.element < 0x100 and tag.element >= 0x10:
            keyword = "Private Creator"
    else:
        keyword = keyword_for_tag(tag) or ""
    if isinstance(raw, RawDataElement) and raw.value is None and raw.length:
        # deferred (large) value, not read: say its VR and length only
        vr = raw.VR or _dictionary_vr(tag)
        return TagRow(_tag_text(tag), keyword, str(vr), _summary(str(vr), raw.length), creator)
    elem = ds[tag]
    vr = str(elem.VR)
    if vr == "SQ":
        items = tuple(
            TagRow("", f"Item {i}", "", f"{len(item)} elements", "", dataset_rows(item))
            for i, item in enumerate(elem.value, start=1)
        )
        return TagRow(_tag_text(tag), keyword, vr, f"{len(items)} item(s)", creator, items)
    return TagRow(_tag_text(tag), keyword, vr, _value_text(elem), creator)


def _dictionary_vr(tag: BaseTag) -> str:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


def dataset_rows(ds: Dataset) -> tuple[TagRow, ...]:
    """Every element of ``ds`` (and of its file meta group, if any) as rows, in tag order."""
    rows: list[TagRow] = []
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        rows.extend(_row(meta, tag) for tag in sorted(meta.keys()))
    rows.extend(_row(ds, tag) for tag in sorted(ds.keys()))
    return tuple(rows)


def read_rows(path: str | os.PathLike[str]) -> tuple[TagRow, ...]:
    """The full header of the file at ``path`` as rows; large values are not read.

    Raises :class:`TagReadError` (one line, naming the file) when the file is gone, cannot
    be read or is not DICOM.
    """
    try:
        ds = dcmread(os.fspath(path), defer_size=_DEFER)
        return dataset_rows(ds)
    except FileNotFoundError:
        raise TagReadError(
            f"cannot re-read {path}: the file is no longer there (moved or deleted since "
            "it was opened)") from None
    except (OSError, InvalidDicomError, EOFError, ValueError) as err:
        raise TagReadError(f"cannot re-read {path}: {err}") from None


def filter_rows(rows: Sequence[TagRow], text: str) -> tuple[TagRow, ...]:
    """The rows whose tag, keyword, VR, value or creator contain ``text`` (case-insensitive),
    with the sequences (and items) that hold a matching row kept around it."""
    needle = text.strip().lower()
    if not needle:
        return tuple(rows)
    out: list[TagRow] = []
    for row in rows:
        kids = filter_rows(row.children, needle) if row.children else ()
        if needle in row.text().lower():
            out.append(row)  # a matching sequence keeps all its items
        elif kids:
            out.append(TagRow(row.tag, row.keyword, row.vr, row.value, row.creator, kids))
    return tuple(out)


def plane_file(
    meta: Mapping[str, Any], layer_shape: Sequence[int], data_point: Sequence[float],
    rgb: bool = False,
) -> tuple[str, int | None, int] | None:
    """``(file, frame, plane)`` the layer shows at ``data_point`` (layer data coordinates,
    one per layer axis excluding an RGB channel), from ``meta["files"]`` / ``["frames"]``;
    ``plane`` is the index into those lists (C order over the acquisition's leading axes).
    ``None`` when the metadata holds no files or the point is outside the layer."""
    files = meta.get("files") or []
    if not files:
        return None
    shape = [int(s) for s in layer_shape[: len(layer_shape) - (1 if rgb else 0)]]
    point = [math.floor(float(v) + 0.5) for v in data_point][-len(shape):]
    if len(point) != len(shape) or any(not 0 <= p < s for p, s in zip(point, shape, strict=True)):
        return None
    placement = meta.get("placement") or {}
    if placement.get("kind") == "aligned":
        # the layer shows acquisition axis lead + axes[i] as its axis lead + i
        lead = int(placement.get("lead", 0))
        axes = [int(a) for a in placement["axes"]]
        point = [*point[:lead], *(point[lead + axes.index(j)] for j in range(3)),
                 *point[lead + 3:]]
        shape = [*shape[:lead], *(shape[lead + axes.index(j)] for j in range(3)),
                 *shape[lead + 3:]]
    if placement.get("added_axis"):
        point, shape = point[1:], shape[1:]
    lead_pt, lead_shape = point[:-2], shape[:-2]
    plane = 0
    for p, s in zip(lead_pt, lead_shape, strict=True):
        plane = plane * s + p
    if plane >= len(files) or files[plane] is None:
        return None
    frames = meta.get("frames") or []
    frame = frames[plane] if plane < len(frames) else None
    return str(files[plane]), (None if frame is None else int(frame)), plane
