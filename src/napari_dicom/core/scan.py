"""Find DICOM files, read their headers, group them into series and sort the slices.

Header-only: pixel data are never decoded here (``core.pixels`` does that). The result is
a list of :class:`~napari_dicom.core.series.Series`, each one napari layer's worth of
planes in array order, with geometry (PS3.3 C.7.6.2 Image Plane), Modality LUT / rescale
(C.11.1), stored windows and VOI LUTs (C.11.2), polarity (C.7.6.3.1.2) and padding
(C.7.5.1.1.2), plus the files that could not be used and why.

Speed: a Part 10 file in explicit VR little endian (the usual case: Explicit VR Little
Endian, JPEG, RLE) has its header parsed here into pydicom raw elements, from its first
16 kB (:func:`_fast_header`, ~3x faster than ``dcmread``, and checked against it on every
test file of pydicom and pydicom-data); anything else is read with
``dcmread(stop_before_pixels=True)``. Numeric attributes are decoded from the raw element
bytes (pydicom's lazy value conversion costs more than the parse itself); only the first
file of each series is read a second time in full, with pydicom, for its text
attributes, sequences and the header dictionary.
"""

from __future__ import annotations

import math
import os
import struct
import sys
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import BaseTag
from pydicom.uid import UID

from .render import LUT, Window, WindowError, normalize_function
from .safety import (
    HEADER_ERRORS,
    is_deflated_part10,
    one_line,
    pixel_bytes,
    read_deflated,
    too_large,
)
from .series import Plane, Series

__all__ = [
    "ScanResult",
    "Skipped",
    "has_image",
    "header_dict",
    "is_dicom_file",
    "iter_files",
    "read_headers",
    "scan",
    "scan_datasets",
    "walk",
]

#: relative spread of slice spacings tolerated before a warning
SPACING_TOLERANCE = 0.01
#: gantry tilt (degrees) below which positions count as "along the normal"
TILT_TOLERANCE_DEG = 0.05

_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
_VALID_VRS = frozenset(
    b"AE AS AT CS DA DS DT FL FD IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN "
    b"UR US UT UV".split()
)
_NATIVE_TS = frozenset(
    {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
)
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
#: Segmentation, Label Map Segmentation and RT Structure Set Storage: shown as label /
#: shape layers on their referenced series (``core.objects``), never as images
OBJECT_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7",
    "1.2.840.10008.5.1.4.1.1.481.3",
})
#: explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2)
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_SHORT_VRS = _VALID_VRS - _LONG_VRS
_VR_TEXT = {v: v.decode() for v in _VALID_VRS}
_UNDEFINED = 0xFFFFFFFF
#: bytes read at the start of a file: the whole header of a classic image (else pydicom)
HEADER_BYTES = 16384
#: syntaxes whose data set is explicit VR little endian, read by :func:`_fast_header`
#: (with the JPEG family 1.2.840.10008.1.2.4.*: JPEG, JPEG-LS, JPEG 2000, MPEG, HTJ2K...)
_PLAIN_EXPLICIT_LE = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2.5")  # Explicit VR LE, RLE
#: JPIP Referenced Deflate: in the JPEG family's number range, but its data set is deflated
_JPIP_DEFLATE = "1.2.840.10008.1.2.4.95"


# ---------------------------------------------------------------------------------------
# Result types
# ---------------------------------------------------------------------------------------


@dataclass
class Skipped:
    """A file that was not used, and why (the reason names the file)."""

    path: str
    reason: str


@dataclass
class ScanResult:
    """What :func:`scan` found."""

    series: list[Series] = field(default_factory=list)
    #: corrupt, truncated or unreadable DICOM files
    skipped: list[Skipped] = field(default_factory=list)
    #: DICOM objects without an image (SR, PR, KOS, DICOMDIR, ...)
    non_image: list[Skipped] = field(default_factory=list)
    #: segmentations and structure sets (SEG, LABELMAP SEG, RTSTRUCT): not image series of
    #: their own but layers placed on the series they refer to (``core.objects``)
    objects: list[str] = field(default_factory=list)
    #: files that are not DICOM (counted, not listed)
    non_dicom: int = 0
    warnings: list[str] = field(default_factory=list)
    #: entries a folder walk left out: named pipes, devices, link loops, unreadable
    #: folders (each named in ``warnings``)
    not_walked: int = 0

    def summary(self) -> str:
        """One log line, e.g. ``"2 series (40 + 1 images); 1 skipped; 3 non-DICOM files"``."""
        n = [len(s.planes) for s in self.series]
        parts = [f"{len(self.series)} series" + (f" ({' + '.join(map(str, n))} images)"
                                                   if n else "")]
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped")
        if self.objects:
            parts.append(f"{len(self.objects)} segmentations / structure sets")
        if self.non_image:
            parts.append(f"{len(self.non_image)} non-image DICOM objects")
        if self.non_dicom:
            parts.append(f"{self.non_dicom} non-DICOM files")
        if self.not_walked:
            parts.append(f"{self.not_walked} not opened (pipes, devices, link loops)")
        if self.warnings:
            parts.append(f"{len(self.warnings)} warnings")
        return "; ".join(parts)


# ---------------------------------------------------------------------------------------
# File discovery
# ---------------------------------------------------------------------------------------


def is_dicom_file(path: str | os.PathLike[str]) -> bool:
    """Cheap probe (reads at most 132 bytes for a non-DICOM file); never raises.

    True for a Part 10 file (128-byte preamble + ``DICM``, PS3.10 7.1) and for a
    preamble-less data set whose first element is a group 0002 or 0008 element with a
    plausible VR or length, confirmed by a header-only read.
    """
    try:
        with open(path, "rb") as fp:
            head = fp.read(132)
    except OSError:
        return False
    if len(head) == 132 and head[128:132] == b"DICM":
        return True
    if not _plausible_raw_start(head):
        return False
    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
    except (OSError, *HEADER_ERRORS):
        return False
    return len(ds) > 0 and any(int(t) >> 16 in (0x0008, 0x0010, 0x0020, 0x0028)
                               for t in ds.keys())


def is_dicom_image(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a DICOM file holding an image: :func:`is_dicom_file` and a header
    with Rows (0028,0010) -- not a report, structure set, presentation state or DICOMDIR.
    Header only; never raises."""
    if not is_dicom_file(path):
        return False
    try:
        ds = _read_header(path, specific_tags=["Rows"])
    except (OSError, *HEADER_ERRORS):
        return False
    return "Rows" in ds


def _read_header(
    path: str | os.PathLike[str], *, specific_tags: list[str] | None = None,
    force: bool | None = True,
) -> Dataset:
    """``dcmread(path, force=force, stop_before_pixels=True)``, a deflated data set
    inflated no further than its header (``core.safety.read_deflated``).

    ``force=None``: forced only when the file has no DICM preamble.
    """
    with open(path, "rb") as fp:
        head = fp.read(4096)
        fp.seek(0)
        if is_deflated_part10(head):
            ds: Dataset = read_deflated(fp, stop_before_pixels=True)
            return ds
        if force is None:
            force = not (len(head) >= 132 and head[128:132] == b"DICM")
        return pydicom.dcmread(fp, force=force, stop_before_pixels=True,
                               specific_tags=specific_tags)


def _plausible_raw_start(head: bytes) -> bool:
    """First bytes of a preamble-less data set: (0002|0008,xxxx) with a VR or a length."""
    if len(head) < 8:
        return False
    for order in ("<", ">"):
        group, _elem = struct.unpack(order + "HH", head[:4])
        if group not in (0x0002, 0x0008):
            continue
        if head[4:6] in _VALID_VRS:  # explicit VR
            return True
        (length,) = struct.unpack(order + "I", head[4:8])  # implicit VR
        if length < 1024 or length == 0xFFFFFFFF:
            return True
    return False


def _kind_of(path: str) -> str:
    """What a directory entry that is neither a folder nor a regular file is, in words."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "a broken link" if os.path.islink(path) else "unreadable"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def walk(
    top: str, notes: list[str], seen: set[tuple[int, int]] | None = None,
    order: Callable[[list[os.DirEntry[str]]], list[os.DirEntry[str]]] | None = None,
) -> Iterable[tuple[str, list[str]]]:
    """``(folder, regular files in it)`` for ``top`` and every folder below it.

    Only regular files are listed (opening a named pipe blocks forever; a device can
    stream without end). Links to folders are followed, once: a folder reached a second
    time (a link loop, or two links to one folder) is not walked again, and said so in
    ``notes``, as are pipes, sockets, devices, broken links and unreadable folders.
    ``order`` sorts the entries of each folder (default: by name); subfolders are walked
    depth first in that order.
    """
    seen = set() if seen is None else seen
    try:
        st = os.stat(top)
        seen.add((st.st_dev, st.st_ino))
    except OSError:
        pass
    stack = [top]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            notes.append(f"{folder}: folder not read ({exc.strerror or exc})")
            continue
        entries = order(entries) if order is not None else sorted(entries, key=lambda e: e.name)
        files: list[str] = []
        subdirs: list[str] = []
        for e in entries:
            try:
                if e.is_dir():
                    est = e.stat()
                    key = (est.st_dev, est.st_ino)
                    if key in seen:
                        notes.append(f"{e.path}: a link to a folder already read "
                                     f"({os.path.realpath(e.path)}); not followed again")
                        continue
                    seen.add(key)
                    subdirs.append(e.path)
                elif e.is_file():
                    files.append(e.path)
                else:
                    notes.append(f"{e.path}: {_kind_of(e.path)}; not opened")
            except OSError as exc:
                notes.append(f"{e.path}: not read ({exc.strerror or exc})")
        yield folder, files
        stack.extend(reversed(subdirs))


def iter_files(
    paths: Sequence[str | os.PathLike[str]], notes: list[str] | None = None,
) -> tuple[list[str], list[Skipped]]:
    """Expand files and folders (recursively, following links to folders once) into a
    sorted, de-duplicated list of regular files.

    A DICOMDIR given as a path stands for its folder. Paths that do not exist, or are not
    regular files or folders (a named pipe), are returned as :class:`Skipped`; what a
    folder walk left out (pipes, link loops, unreadable folders) is added to ``notes``.
    """
    out: list[str] = []
    missing: list[Skipped] = []
    seen: set[str] = set()
    notes = [] if notes is None else notes

    def add(p: str) -> None:
        key = os.path.normcase(os.path.abspath(p))
        if key not in seen:
            seen.add(key)
            out.append(p)

    def add_tree(top: str) -> None:
        files: list[str] = []
        for _folder, names in walk(top, notes):
            files.extend(names)
        for f in sorted(files):
            add(f)

    for raw in paths:
        p = os.fspath(raw)
        if os.path.isdir(p):
            add_tree(p)
        elif os.path.isfile(p):
            if os.path.basename(p).upper() == "DICOMDIR":
                add_tree(os.path.dirname(p) or ".")
            else:
                add(p)
        elif os.path.lexists(p):
            missing.append(Skipped(p, f"{p}: {_kind_of(p)}, not a file or folder; not opened"))
        else:
            missing.append(Skipped(p, f"{p}: no such file or folder"))
    return out, missing


#: names that are not DICOM, left unopened by :func:`has_image`
_NOT_DICOM_SUFFIXES = (
    ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".txt", ".csv", ".json",
    ".xml", ".html", ".htm", ".pdf", ".zip", ".gz", ".tgz", ".7z", ".py", ".md", ".mp4",
    ".avi", ".mov", ".nii", ".nrrd", ".mha", ".mhd", ".h5", ".npy", ".npz", ".exe", ".dll",
    ".ini", ".log", ".db", ".ds_store",
)
_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


def _probe_order(entries: list[os.DirEntry[str]]) -> list[os.DirEntry[str]]:
    """Likely DICOM first: named ``*.dcm`` (etc.), then other visible entries, then
    hidden ones; names that are surely not DICOM are left out."""
    def rank(e: os.DirEntry[str]) -> tuple[int, str]:
        low = e.name.lower()
        return (0 if low.endswith(_DICOM_SUFFIXES) else 2 if low.startswith(".") else 1,
                e.name)

    return sorted((e for e in entries if not e.name.lower().endswith(_NOT_DICOM_SUFFIXES)),
                  key=rank)


def has_image(folder: str | os.PathLike[str], seconds: float = 2.0) -> bool:
    """Whether ``folder`` (walked as :func:`iter_files` does) holds a DICOM image: stops at
    the first one. Files named like DICOM are probed first in each folder, hidden files
    last; names that are surely not DICOM (``*.png``, ``*.txt``...) are not opened. Gives
    up (``False``) after ``seconds``; a probe reads 132 bytes of a file that is not DICOM.
    Never raises.
    """
    import time

    deadline = time.monotonic() + seconds
    notes: list[str] = []
    for _folder, files in walk(os.fspath(folder), notes, order=_probe_order):
        for f in files:
            if is_dicom_image(f):
                return True
            if time.monotonic() > deadline:
                return False
    return False


# ---------------------------------------------------------------------------------------
# Fast raw value access
# ---------------------------------------------------------------------------------------


def _raw_elem(ds: Dataset, tag: int) -> RawDataElement | DataElement | None:
    return ds._dict.get(tag)  # type: ignore[call-overload,no-any-return]  # BaseTag == int


def _strs(ds: Dataset, tag: int) -> list[str] | None:
    """A string attribute (CS, DS, IS, UI, ...) as stripped parts, from raw bytes."""
    e = _raw_elem(ds, tag)
    if e is None:
        return None
    if isinstance(e, RawDataElement):
        v = e.value
        if not v:
            return None
        text = bytes(v).decode("latin-1").strip(" \x00")
        if not text:
            return None
        return [s.strip(" \x00") for s in text.split("\\")]
    val = ds[tag].value
    if val is None or val == "":
        return None
    if isinstance(val, (list, MultiValue, tuple)):
        return [str(s).strip() for s in val]
    return [str(val).strip()]


def _str(ds: Dataset, tag: int) -> str | None:
    s = _strs(ds, tag)
    return s[0] if s else None


def _floats(ds: Dataset, tag: int) -> list[float] | None:
    s = _strs(ds, tag)
    if s is None:
        return None
    e = _raw_elem(ds, tag)
    vr = e.VR if e is not None else None
    if vr in ("FL", "FD", "US", "SS", "UL", "SL") or (
        isinstance(e, RawDataElement) and vr is None and not _is_str_tag(tag)
    ):
        val = ds[tag].value
        vals = list(val) if isinstance(val, (list, MultiValue, tuple)) else [val]
        return [float(v) for v in vals]
    try:
        return [float(v) for v in s if v != ""]
    except ValueError:
        return None


def _is_str_tag(tag: int) -> bool:
    from pydicom.datadict import dictionary_VR

    try:
        return dictionary_VR(tag) in ("DS", "IS", "CS", "UI", "LO", "SH", "DA", "TM", "ST")
    except KeyError:
        return False


def _float(ds: Dataset, tag: int) -> float | None:
    f = _floats(ds, tag)
    return f[0] if f else None


def _uint(ds: Dataset, tag: int) -> int | None:
    """A US/UL attribute decoded from its raw bytes (or an IS)."""
    e = _raw_elem(ds, tag)
    if e is None:
        return None
    if isinstance(e, RawDataElement) and e.VR in ("US", "UL", "SS", "SL") and e.value:
        fmt = {"US": "H", "UL": "I", "SS": "h", "SL": "i"}[e.VR]
        n = struct.calcsize(fmt)
        if len(e.value) < n:
            return None
        return int(struct.unpack(("<" if e.is_little_endian else ">") + fmt, e.value[:n])[0])
    if isinstance(e, RawDataElement) and e.VR in ("IS", "DS"):
        parts = _strs(ds, tag)
        try:
            return int(float(parts[0])) if parts else None
        except (ValueError, OverflowError):  # "1e400", "-inf", "nan"
            return None
    val = ds[tag].value
    if val is None or val == "":
        return None
    if isinstance(val, (list, MultiValue)):
        val = val[0] if len(val) else None
        if val is None:
            return None
    try:
        return int(float(val))
    except (TypeError, ValueError, OverflowError):
        return None


# ---------------------------------------------------------------------------------------
# Per-file header record
# ---------------------------------------------------------------------------------------


@dataclass
class _Frame:
    """One plane candidate before sorting."""

    path: str
    frame: int | None
    sop_uid: str
    instance: int | None
    position: tuple[float, float, float] | None
    slope: float = 1.0
    intercept: float = 0.0
    modality_lut: LUT | None = None
    windows: tuple[Window, ...] = ()
    echo: float | None = None
    temporal: float | None = None
    trigger: float | None = None
    acquisition: int | None = None
    location: float | None = None
    fragments_at: int | None = None
    file_frames: int = 1
    #: Enhanced multi-frame: this frame's Plane Orientation, when the file has several
    orientation: tuple[float, ...] | None = None


@dataclass
class _Record:
    path: str
    series_uid: str
    sop_class: str
    rows: int
    columns: int
    spp: int
    photometric: str
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, float] | None
    frames: list[_Frame]
    n_frames: int
    multi_frame: bool
    frame_time: float | None
    thickness: float | None
    spacing_between: float | None
    warnings: list[str]
    #: the whole header, when it came without a file (DICOMweb metadata)
    header: Dataset | None = None


_TAG = {
    "SOPClassUID": 0x00080016, "SOPInstanceUID": 0x00080018, "SeriesInstanceUID": 0x0020000E,
    "Rows": 0x00280010, "Columns": 0x00280011, "SamplesPerPixel": 0x00280002,
    "PhotometricInterpretation": 0x00280004, "BitsAllocated": 0x00280100,
    "NumberOfFrames": 0x00280008, "ImagePositionPatient": 0x00200032,
    "ImageOrientationPatient": 0x00200037, "PixelSpacing": 0x00280030,
    "ImagerPixelSpacing": 0x00181164, "SliceThickness": 0x00180050,
    "SpacingBetweenSlices": 0x00180088, "InstanceNumber": 0x00200013,
    "EchoTime": 0x00180081, "TemporalPositionIdentifier": 0x00200100,
    "TriggerTime": 0x00181060, "AcquisitionNumber": 0x00200012, "RescaleSlope": 0x00281053,
    "RescaleIntercept": 0x00281052, "WindowCenter": 0x00281050, "WindowWidth": 0x00281051,
    "WindowCenterWidthExplanation": 0x00281055, "VOILUTFunction": 0x00281056,
    "ModalityLUTSequence": 0x00283000, "FrameTime": 0x00181063,
    "FrameTimeVector": 0x00181065, "PerFrameFunctionalGroupsSequence": 0x52009230,
    "SharedFunctionalGroupsSequence": 0x52009229, "PixelData": 0x7FE00010,
}


def _name(path: str) -> str:
    return os.path.basename(path) or path


def _sop_class_name(uid: str | None) -> str:
    if not uid:
        return "unknown SOP class"
    if len(uid) > 64 or uid.strip("0123456789."):  # PS3.5 9.1: digits and dots, <= 64
        return "a damaged SOP Class UID"
    name = UID(uid).name
    return name if name != uid else f"SOP class {uid}"


class _WindowCache:
    """Build :class:`Window` tuples once per distinct raw window attributes."""

    def __init__(self) -> None:
        self._cache: dict[tuple[Any, ...], tuple[tuple[Window, ...], list[str]]] = {}

    def get(
        self, centers: list[float] | None, widths: list[float] | None,
        explanations: list[str] | None, function: str | None, where: str
    ) -> tuple[tuple[Window, ...], list[str]]:
        key = (tuple(centers or ()), tuple(widths or ()), tuple(explanations or ()), function)
        hit = self._cache.get(key)
        if hit is None:
            hit = _make_windows(centers, widths, explanations, function, where)
            self._cache[key] = hit
        return hit


def _make_windows(
    centers: Sequence[float] | None, widths: Sequence[float] | None,
    explanations: Sequence[str] | None, function: str | None, where: str
) -> tuple[tuple[Window, ...], list[str]]:
    """Window Center / Width pairs (C.11.2.1.2) as Windows; invalid ones dropped + warned."""
    if not centers or not widths:
        return (), []
    out: list[Window] = []
    warns: list[str] = []
    if len(centers) != len(widths):
        warns.append(
            f"{where}: {len(centers)} window centres but {len(widths)} widths; "
            f"using the first {min(len(centers), len(widths))}"
        )
    expl = list(explanations or [])
    for i, (c, w) in enumerate(zip(centers, widths, strict=False)):
        try:
            fn = normalize_function(function)
            out.append(Window(c, w, fn, expl[i] if i < len(expl) else ""))
        except WindowError as exc:
            warns.append(f"{where}: stored window {i + 1} (centre {c:g}, width {w:g}) "
                          f"ignored: {exc}")
    return tuple(out), warns


def _modality_lut(ds: Dataset, where: str, warns: list[str]) -> LUT | None:
    seq = ds.get("ModalityLUTSequence")
    if not seq:
        return None
    try:
        return LUT.from_item(seq[0])
    except (WindowError, AttributeError, KeyError, ValueError, TypeError) as exc:
        warns.append(f"{where}: Modality LUT Sequence ignored ({exc}); using the rescale")
        return None


def _pixel_check(path: str, fp: Any, ds: Dataset, size: int) -> tuple[str | None, int | None]:
    """Problem with the pixel data element (truncation, absurd size), or ``None``; and
    the file offset of the first item (Basic Offset Table) of encapsulated Pixel Data.

    Uses the file position after ``stop_before_pixels`` (the Pixel Data element's tag).
    The problem is ``"no pixel data"`` when the data set has no image.
    """
    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "") or "")
    if ts == "1.2.840.10008.1.2.1.99":  # deflated: file offsets mean nothing here
        if _TAG["Rows"] not in ds:
            return "no pixel data", None
        return _claim_problem(path, ds, size, deflated=True), None
    pos = fp.tell()
    head = fp.read(12)
    little = ts != "1.2.840.10008.1.2.2"
    if len(head) < 8:
        sop = _str(ds, _TAG["SOPClassUID"]) or str(getattr(
            ds.get("file_meta", Dataset()), "MediaStorageSOPClassUID", "") or "")
        if _TAG["Rows"] in ds or "Image" in _sop_class_name(sop):  # then the end of the file
            return (f"{_name(path)}: the file ends before its pixel data (truncated or "
                    "damaged header)"), None
        return "no pixel data", None
    order = "<" if little else ">"
    group, elem = struct.unpack(order + "HH", head[:4])
    tag = (group << 16) | elem
    if tag not in _PIXEL_TAGS:
        return "no pixel data", None
    implicit = ts == "1.2.840.10008.1.2" or (
        head[4:6] not in _VALID_VRS and ts not in _NATIVE_TS
    )
    if implicit:
        (length,) = struct.unpack(order + "I", head[4:8])
        hdr = 8
    else:
        (length,) = struct.unpack(order + "I", head[8:12])
        hdr = 12
    problem = _claim_problem(path, ds, size, deflated=False)
    if problem:
        return problem, None
    if length == 0xFFFFFFFF:  # encapsulated: the codec checks the fragments
        return None, (pos + hdr if tag == 0x7FE00010 and little else None)
    if ts and ts not in _NATIVE_TS:
        return None, None
    expected, desc = _claim(ds, ts)
    nf = _uint(ds, _TAG["NumberOfFrames"]) or 1
    available = max(0, size - pos - hdr)
    held = min(length, available)
    if held < expected:
        if nf > 1 and held >= expected // nf:
            # complete frames are decoded; the loader names the incomplete ones
            return None, None
        return (f"{_name(path)}: the file is truncated: header says {expected} bytes of "
                f"pixel data ({desc}), the file holds {held} ({expected - held} missing)"
                ), None
    return None, None


def _claim(ds: Dataset, ts: str = "") -> tuple[int, str]:
    """Bytes of pixel data the header claims (as stored, for transfer syntax ``ts``), and
    the claim in words."""
    rows = _uint(ds, _TAG["Rows"]) or 0
    cols = _uint(ds, _TAG["Columns"]) or 0
    spp = _uint(ds, _TAG["SamplesPerPixel"]) or 1
    bits = _uint(ds, _TAG["BitsAllocated"]) or 16
    nf = _uint(ds, _TAG["NumberOfFrames"]) or 1
    samples = spp
    photometric = (_str(ds, _TAG["PhotometricInterpretation"]) or "").upper()
    if spp == 3 and photometric == "YBR_FULL_422" and (not ts or ts in _NATIVE_TS):
        samples = 2  # 4:2:2 native: Y Y Cb Cr for each pair of pixels (PS3.3 C.7.6.3.1.2)
    desc = (f"{rows} x {cols}{' x ' + str(spp) if spp != 1 else ''} x {nf} "
            f"frame{'s' if nf != 1 else ''} x {bits} bits")
    return pixel_bytes(rows, cols, samples, nf, bits), desc


def _claim_problem(path: str, ds: Dataset, size: int, deflated: bool) -> str | None:
    """Why the header's pixel data claim is refused before anything is allocated: more
    than the memory budget (``core.safety``), or more frames than the file can hold
    (each frame takes at least a byte; an encapsulated one an 8-byte item; deflate
    shrinks data at most ~1032:1)."""
    expected, desc = _claim(ds)
    problem = too_large(expected, f"the pixel data its header claims ({desc})")
    if problem:
        return f"{_name(path)}: {problem}"
    nf = _uint(ds, _TAG["NumberOfFrames"]) or 1
    if nf > max(1, size) * (1032 if deflated else 1):
        return (f"{_name(path)}: header says {nf} frames, more than a file of {size} bytes "
                "can hold")
    return None


# ---------------------------------------------------------------------------------------
# Fast header parse (the common case); anything else is pydicom's
# ---------------------------------------------------------------------------------------


#: sequences nested deeper than this are left to pydicom (no recursion limit to hit here)
_MAX_DEPTH = 16


def _item_end(buf: bytes, pos: int, depth: int) -> int:
    """End of the sequence item starting at ``pos``, or -1 when it is not a well-formed
    explicit VR little endian item inside ``buf``."""
    n = len(buf)
    if pos + 8 > n or depth > _MAX_DEPTH:
        return -1
    group, elem, length = struct.unpack_from("<HHI", buf, pos)
    if (group, elem) != (0xFFFE, 0xE000):
        return -1
    pos += 8
    if length != _UNDEFINED:
        return pos + length if pos + length <= n else -1
    while pos + 8 <= n:  # elements up to the Item Delimitation Item
        group, elem = struct.unpack_from("<HH", buf, pos)
        if group == 0xFFFE:
            return pos + 8 if elem == 0xE00D else -1
        pos = _element_at(buf, pos, depth)[3]
        if pos < 0:
            return -1
    return -1


def _element_at(buf: bytes, pos: int, depth: int = 0) -> tuple[bytes, int, int, int, int]:
    """``(VR, value start, value end, element end, length)`` of the explicit VR little
    endian element at ``pos`` (PS3.5 7.1.2, 7.5). The element end is -1 when it does not
    fit in ``buf`` or is not one this parse takes (an unknown VR, an undefined length on
    anything but a sequence). An undefined-length sequence's value is its items, without
    the Sequence Delimitation Item."""
    vr = buf[pos + 4 : pos + 6]
    n = len(buf)
    if vr in _SHORT_VRS and pos + 8 <= n:
        start = pos + 8
        length = struct.unpack_from("<H", buf, pos + 6)[0]
    elif vr in _LONG_VRS and pos + 12 <= n:
        start = pos + 12
        (length,) = struct.unpack_from("<I", buf, pos + 8)
        if length == _UNDEFINED:
            if vr != b"SQ":
                return vr, start, start, -1, length
            at = start
            while at + 8 <= n:  # items up to the Sequence Delimitation Item
                if struct.unpack_from("<HH", buf, at) == (0xFFFE, 0xE0DD):
                    return vr, start, at, at + 8, length
                at = _item_end(buf, at, depth + 1)
                if at < 0:
                    break
            return vr, start, start, -1, length
    else:
        return vr, pos, pos, -1, 0
    end = start + length
    return vr, start, end, (end if end <= n else -1), length


def _syntax_of(meta: dict[BaseTag, RawDataElement]) -> str:
    raw = meta.get(BaseTag(0x00020010))  # Transfer Syntax UID
    return bytes(raw.value or b"").rstrip(b"\0 ").decode("ascii", "replace") if raw else ""


def _fast_header(buf: bytes) -> tuple[Dataset, int] | None:
    """The header of a Part 10 file in explicit VR little endian (the file meta, and a
    data set in Explicit VR Little Endian, a JPEG family or RLE syntax), parsed from its
    first bytes ``buf`` into pydicom raw elements; and the offset of its Pixel Data tag.

    The elements ``dcmread(stop_before_pixels=True)`` gives, ~3x faster (0.1 against
    0.3 ms for a CT slice): values stay raw bytes, which pydicom converts when asked.
    ``None`` for anything else (implicit VR, big endian, deflate, a header longer than
    ``buf``, an element this parse does not take): the caller reads the file with pydicom.
    """
    if len(buf) < 144 or buf[128:132] != b"DICM":
        return None
    meta: dict[BaseTag, RawDataElement] = {}
    main: dict[BaseTag, RawDataElement] = {}
    into = meta
    pos = 132
    while pos + 8 <= len(buf):
        group, elem = struct.unpack_from("<HH", buf, pos)
        tag = (group << 16) | elem
        if into is meta and group != 0x0002:
            ts = _syntax_of(meta)
            if not (ts in _PLAIN_EXPLICIT_LE or (ts.startswith("1.2.840.10008.1.2.4.")
                                                 and ts != _JPIP_DEFLATE)):
                return None
            into = main
        if tag in _PIXEL_TAGS and into is main:
            # dict[BaseTag, RawDataElement] is what pydicom's reader builds; mypy wants
            # the value type spelled as the union it declares
            ds = Dataset(main)  # type: ignore[arg-type]
            ds.file_meta = FileMetaDataset(meta)  # type: ignore[arg-type]
            return ds, pos
        if group == 0xFFFE:
            return None
        vr, start, stop, end, length = _element_at(buf, pos)
        if end < 0:
            return None
        key = BaseTag(tag)
        into[key] = RawDataElement(key, _VR_TEXT[vr], length, buf[start:stop], start,
                                   False, True, True, False)
        pos = end
    return None


def _read_record(
    path: str, cache: _WindowCache, fast: bool = True,
) -> _Record | Skipped | tuple[str, str] | None:
    """Header of one file; pydicom's warnings about it become record warnings.
    ``fast=False``: always parsed by pydicom (:func:`_fast_header` is checked with it)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = _read_record_quiet(path, cache, fast)
    if isinstance(r, _Record):
        for msg in _pydicom_messages(caught, path):
            if msg not in r.warnings:
                r.warnings.append(msg)
    return r


def _pydicom_messages(caught: list[warnings.WarningMessage], path: str) -> list[str]:
    """pydicom warnings worth telling (invalid-value chatter about UIDs etc. is dropped)."""
    out = []
    for w in caught:
        text = str(w.message)
        if text.startswith(("Invalid value for VR", "The value length")):
            continue
        out.append(f"{_name(path)}: {text}")
    return out


def _read_record_quiet(
    path: str, cache: _WindowCache, fast: bool = True,
) -> _Record | Skipped | tuple[str, str] | None:
    """Header of one file: a record, a Skipped (bad file), ("non-image", reason) or None."""
    try:
        with open(path, "rb") as fp:
            head = fp.read(HEADER_BYTES)
            if len(head) >= 132 and head[128:132] == b"DICM":
                force = False
            elif _plausible_raw_start(head[:132]):
                force = True
            else:
                return None
            parsed = _fast_header(head) if fast and not force else None
            if parsed is not None:
                ds, pixels_at = parsed
                fp.seek(pixels_at)
            else:
                fp.seek(0)
                if not force and is_deflated_part10(head):
                    ds = read_deflated(fp, stop_before_pixels=True)
                else:
                    ds = pydicom.dcmread(fp, stop_before_pixels=True, force=force)
            meta_class = str(getattr(ds.get("file_meta", Dataset()),
                                     "MediaStorageSOPClassUID", "") or "")
            sop_class = _str(ds, _TAG["SOPClassUID"]) or meta_class
            if meta_class == _DICOMDIR_CLASS or "DirectoryRecordSequence" in ds:
                return ("non-image", f"{_name(path)}: Media Storage Directory Storage "
                                     "(DICOMDIR); its folder is scanned instead")
            if sop_class in OBJECT_CLASSES:
                return ("object", path)
            size = os.fstat(fp.fileno()).st_size
            problem, fragments_at = _pixel_check(path, fp, ds, size)
    except HEADER_ERRORS as exc:
        return Skipped(path, f"{_name(path)}: cannot read the DICOM header ({_why(exc)})")
    except OSError as exc:
        return Skipped(path, f"{_name(path)}: cannot open ({exc.strerror or exc})")
    if force and len(ds) == 0:
        return None
    if problem == "no pixel data":
        return ("non-image", f"{_name(path)}: {_sop_class_name(sop_class)} (no pixel data)")
    if problem:
        return Skipped(path, problem)
    try:
        return _build_record(path, ds, sop_class, cache, fragments_at)
    except (WindowError, *HEADER_ERRORS) as exc:
        return Skipped(path, f"{_name(path)}: unusable image header ({_why(exc)})")


def _why(exc: BaseException) -> str:
    """An exception as a short reason on one line."""
    if isinstance(exc, RecursionError):
        return "sequences nested too deeply"
    return one_line(exc, 200)


def _vec(vals: list[float] | None, n: int) -> tuple[float, ...] | None:
    if vals is None or len(vals) < n or not all(math.isfinite(v) for v in vals[:n]):
        return None
    return tuple(vals[:n])


def _spacing(vals: list[float] | None) -> tuple[float, ...] | None:
    """Pixel Spacing (row, column) when usable: two finite values above 0."""
    v = _vec(vals, 2)
    return v if v is not None and min(v) > 0 else None


def _build_record(
    path: str, ds: Dataset, sop_class: str, cache: _WindowCache,
    fragments_at: int | None = None,
) -> _Record:
    t = _TAG
    rows = _uint(ds, t["Rows"]) or 0
    cols = _uint(ds, t["Columns"]) or 0
    if rows <= 0 or cols <= 0:
        raise ValueError(f"Rows x Columns is {rows} x {cols}")
    warns: list[str] = []
    name = _name(path)
    n_frames = _uint(ds, t["NumberOfFrames"]) or 1
    orientation = _vec(_floats(ds, t["ImageOrientationPatient"]), 6)
    position = _vec(_floats(ds, t["ImagePositionPatient"]), 3)
    ps = _spacing(_floats(ds, t["PixelSpacing"])) or _spacing(
        _floats(ds, t["ImagerPixelSpacing"]))
    slope = _float(ds, t["RescaleSlope"])
    intercept = _float(ds, t["RescaleIntercept"])
    function = _str(ds, t["VOILUTFunction"])
    expl = _strs(ds, t["WindowCenterWidthExplanation"])
    windows, wwarn = cache.get(_floats(ds, t["WindowCenter"]), _floats(ds, t["WindowWidth"]),
                               expl, function, name)
    warns.extend(wwarn)
    mlut = _modality_lut(ds, name, warns) if _TAG["ModalityLUTSequence"] in ds else None
    sop_uid = _str(ds, t["SOPInstanceUID"]) or ""
    instance = _uint(ds, t["InstanceNumber"])
    base = _Frame(
        path=path, frame=None, sop_uid=sop_uid, instance=instance, position=position,  # type: ignore[arg-type]
        slope=1.0 if slope is None else slope, intercept=0.0 if intercept is None else intercept,
        modality_lut=mlut, windows=windows, echo=_float(ds, t["EchoTime"]),
        temporal=_float(ds, t["TemporalPositionIdentifier"]),
        trigger=_float(ds, t["TriggerTime"]), acquisition=_uint(ds, t["AcquisitionNumber"]),
        fragments_at=fragments_at, file_frames=n_frames,
    )
    frame_time = _float(ds, t["FrameTime"])
    thickness = _float(ds, t["SliceThickness"])
    frames: list[_Frame]
    if t["PerFrameFunctionalGroupsSequence"] in ds or (
        t["SharedFunctionalGroupsSequence"] in ds
    ):
        frames, orientation, ps, thickness = _enhanced_frames(
            ds, base, n_frames, orientation, ps, thickness, cache, warns)
    elif n_frames > 1:
        # legacy multi-frame: one position for the whole file. RT Dose gives the frame
        # offsets along the normal in Grid Frame Offset Vector (C.8.8.3.2); otherwise
        # the frames have no position of their own.
        gfov = _floats(ds, 0x3004000C)
        if gfov and len(gfov) == n_frames and position is not None and orientation:
            nrm = _normal(orientation)
            p0 = np.asarray(position)
            shift = 0.0 if gfov[0] == 0 else float(p0 @ nrm)
            frames = [
                _replace(base, frame=i,
                         position=tuple(float(v) for v in p0 + (off - shift) * nrm))
                for i, off in enumerate(gfov)
            ]
        else:
            frames = [_replace(base, frame=i, position=None) for i in range(n_frames)]
        if frame_time is None:
            ftv = _floats(ds, t["FrameTimeVector"])
            if ftv and len(ftv) > 1:
                frame_time = _median(np.asarray(ftv[1:], dtype=float))
    else:
        frames = [base]
    for f in frames:  # C.11.1: a rescale of inf or NaN gives no picture at all
        if not (math.isfinite(f.slope) and math.isfinite(f.intercept)):
            raise ValueError(f"Rescale Slope {f.slope:g} / Intercept {f.intercept:g} "
                             "is not a finite number")
    return _Record(
        path=path,
        series_uid=_str(ds, t["SeriesInstanceUID"]) or f"no-series-uid:{path}",
        sop_class=sop_class,
        rows=rows,
        columns=cols,
        spp=_uint(ds, t["SamplesPerPixel"]) or 1,
        photometric=(_str(ds, t["PhotometricInterpretation"]) or "MONOCHROME2").upper(),
        orientation=orientation,
        pixel_spacing=ps,  # type: ignore[arg-type]
        frames=frames,
        n_frames=n_frames,
        multi_frame=n_frames > 1,
        frame_time=frame_time,
        thickness=thickness,
        spacing_between=_float(ds, t["SpacingBetweenSlices"]),
        warnings=warns,
    )


def _replace(f: _Frame, **kw: Any) -> _Frame:
    d = dict(f.__dict__)
    d.update(kw)
    return _Frame(**d)


def _first_item(group: Dataset | None, keyword: str) -> Dataset | None:
    if group is None:
        return None
    seq = group.get(keyword)
    if seq:
        item: Dataset = seq[0]
        return item
    return None


def _fg(per: Dataset | None, shared: Dataset | None, keyword: str) -> Dataset | None:
    """Functional group macro item: per-frame wins over shared (C.7.6.16)."""
    return _first_item(per, keyword) or _first_item(shared, keyword)


def _enhanced_frames(
    ds: Dataset, base: _Frame, n_frames: int, orientation: tuple[float, ...] | None,
    ps: tuple[float, ...] | None, thickness: float | None, cache: _WindowCache,
    warns: list[str]
) -> tuple[list[_Frame], tuple[float, ...] | None, tuple[float, ...] | None, float | None]:
    """Per-frame values of an Enhanced multi-frame image (C.7.6.16 functional groups)."""
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    per_seq = ds.get("PerFrameFunctionalGroupsSequence") or []
    name = _name(base.path)
    frames: list[_Frame] = []
    orients: set[tuple[float, ...]] = set()
    for i in range(n_frames):
        per = per_seq[i] if i < len(per_seq) else None
        f = _replace(base, frame=i)
        pos_item = _fg(per, shared, "PlanePositionSequence")
        if pos_item is not None and "ImagePositionPatient" in pos_item:
            f.position = _vec([float(v) for v in pos_item.ImagePositionPatient], 3)  # type: ignore[assignment]
        ori_item = _fg(per, shared, "PlaneOrientationSequence")
        if ori_item is not None and "ImageOrientationPatient" in ori_item:
            o = _vec([float(v) for v in ori_item.ImageOrientationPatient], 6)
            if o is not None:
                orients.add(tuple(round(v, 4) for v in o))
                f.orientation = o
                if orientation is None or i == 0:
                    orientation = o
        pm = _fg(per, shared, "PixelMeasuresSequence")
        if pm is not None:
            if "PixelSpacing" in pm and (i == 0 or ps is None):
                ps = _spacing([float(v) for v in pm.PixelSpacing]) or ps
            if pm.get("SliceThickness") not in (None, "") and i == 0:
                thickness = float(pm.SliceThickness)
        pvt = _fg(per, shared, "PixelValueTransformationSequence")
        if pvt is not None:
            if pvt.get("RescaleSlope") not in (None, ""):
                f.slope = float(pvt.RescaleSlope)
            if pvt.get("RescaleIntercept") not in (None, ""):
                f.intercept = float(pvt.RescaleIntercept)
        voi = _fg(per, shared, "FrameVOILUTSequence")
        if voi is not None and "WindowCenter" in voi and "WindowWidth" in voi:
            c, w = voi.WindowCenter, voi.WindowWidth
            cl = [float(v) for v in (c if isinstance(c, MultiValue) else [c])]
            wl = [float(v) for v in (w if isinstance(w, MultiValue) else [w])]
            e = voi.get("WindowCenterWidthExplanation")
            el = [str(v) for v in (e if isinstance(e, MultiValue) else [e])] if e else None
            f.windows, ww = cache.get(cl, wl, el, voi.get("VOILUTFunction"), name)
            for msg in ww:
                if msg not in warns:
                    warns.append(msg)
        content = _fg(per, None, "FrameContentSequence")
        if content is not None:
            if content.get("TemporalPositionIndex") is not None:
                f.temporal = float(content.TemporalPositionIndex)
        echo = _fg(per, shared, "MREchoSequence")
        if echo is not None and echo.get("EffectiveEchoTime") is not None:
            f.echo = float(echo.EffectiveEchoTime)
        trig = _fg(per, shared, "CardiacSynchronizationSequence")
        if trig is not None and trig.get("NominalCardiacTriggerDelayTime") is not None:
            f.trigger = float(trig.NominalCardiacTriggerDelayTime)
        frames.append(f)
    if len(orients) > 1:
        warns.append(f"{name}: frames have {len(orients)} different orientations; "
                     "one layer per orientation")
    else:
        for f in frames:
            f.orientation = None
    return frames, orientation, ps, thickness


def _split_orientations(records: list[_Record]) -> list[_Record]:
    """An Enhanced multi-frame file whose frames have several Plane Orientations (a
    three-plane localizer, stacks of a spine MR) becomes one record per orientation, so
    that each is grouped, sorted and placed as its own series."""
    out: list[_Record] = []
    for r in records:
        keys = {tuple(round(v, 4) + 0.0 for v in f.orientation) if f.orientation else None
                for f in r.frames}
        if len(keys) <= 1:
            out.append(r)
            continue
        by: dict[Any, list[_Frame]] = defaultdict(list)
        for f in r.frames:
            by[tuple(round(v, 4) + 0.0 for v in f.orientation) if f.orientation else None].append(f)
        for fs in by.values():
            d = dict(r.__dict__)
            d.update(frames=fs, orientation=fs[0].orientation or r.orientation)
            out.append(_Record(**d))
    return out


# ---------------------------------------------------------------------------------------
# Grouping, sorting, geometry
# ---------------------------------------------------------------------------------------


def _group_key(r: _Record) -> tuple[Any, ...]:
    ori = tuple(round(v, 4) + 0.0 for v in r.orientation) if r.orientation else None
    return (r.series_uid, r.rows, r.columns, ori, r.spp, r.photometric)


def _normal(orientation: Sequence[float]) -> np.ndarray:
    row = np.asarray(orientation[:3], dtype=float)
    col = np.asarray(orientation[3:6], dtype=float)
    n = np.cross(row, col)
    norm = float(np.linalg.norm(n))
    return n / norm if norm > 0 else np.array([0.0, 0.0, 1.0])


def _fmt(v: float) -> str:
    return f"{v:.4g}" if not float(v).is_integer() else f"{v:.0f}"


def _loc_key(loc: float) -> float:
    return round(loc, 3)


def _separate(frames: list[_Frame]) -> tuple[str, str] | None:
    """Attribute that tells images at one position apart: (attribute, axis label)."""
    for attr, label in (("echo", "echo"), ("temporal", "t"), ("trigger", "t"),
                        ("acquisition", "t")):
        if all(getattr(f, attr) is not None for f in frames) and len(
            {getattr(f, attr) for f in frames}
        ) > 1:
            return attr, label
    return None


_KEY_LABEL = {"echo": "TE", "temporal": "phase", "trigger": "trigger", "acquisition": "acq",
              "instance": "image"}


def _arrange(frames: list[_Frame]) -> list[tuple[str, list[list[_Frame]] | list[_Frame]]]:
    """Order frames; returns parts: ("3d", frames) or ("4d:label", [[z frames] per k]).

    Several parts mean the group had to be split (unequal repeats per position).
    """
    if not frames or any(f.location is None for f in frames):
        return [("3d", sorted(frames, key=_fallback_key))]
    by_loc: dict[float, list[_Frame]] = defaultdict(list)
    for f in frames:
        by_loc[_loc_key(f.location)].append(f)  # type: ignore[arg-type]
    counts = {len(v) for v in by_loc.values()}
    if counts == {1}:
        return [("3d", sorted(frames, key=_pos_key))]
    sep = _separate(frames)
    if len(counts) == 1 and sep is not None:
        attr, label = sep
        values = sorted({getattr(f, attr) for f in frames})
        k = counts.pop()
        ok = len(values) == k and all(
            len({getattr(f, attr) for f in fs}) == k for fs in by_loc.values())
        if ok:
            stacks = [sorted((f for f in frames if getattr(f, attr) == v), key=_pos_key)
                      for v in values]
            return [(f"4d:{label}", stacks)]
    if len(counts) == 1 and sep is None:
        # no attribute separates them: order by instance number within each position
        k = counts.pop()
        locs = sorted(by_loc)
        per = [sorted(by_loc[loc], key=_fallback_key) for loc in locs]
        stacks = [[per[z][i] for z in range(len(locs))] for i in range(k)]
        return [("4d:t", stacks)]
    # unequal repeats: split by the separating attribute, else by repeat rank
    parts: list[tuple[str, list[list[_Frame]] | list[_Frame]]] = []
    if sep is not None:
        attr, _label = sep
        for v in sorted({getattr(f, attr) for f in frames}):
            sub = [f for f in frames if getattr(f, attr) == v]
            for kind, data in _arrange(sub):
                parts.append((f"{kind}|{_KEY_LABEL[attr]} {_fmt(v)}", data))
        return parts
    rank: dict[int, list[_Frame]] = defaultdict(list)
    for loc in sorted(by_loc):
        for i, f in enumerate(sorted(by_loc[loc], key=_fallback_key)):
            rank[i].append(f)
    for i in sorted(rank):
        parts.append((f"3d|repeat {i + 1}", sorted(rank[i], key=_pos_key)))
    return parts


def _fallback_key(f: _Frame) -> tuple[Any, ...]:
    return (f.instance if f.instance is not None else 1 << 40, f.path, f.frame or 0)


def _pos_key(f: _Frame) -> tuple[Any, ...]:
    return (f.location if f.location is not None else 0.0, *_fallback_key(f))


def _median(values: npt.NDArray[np.float64]) -> float:
    """``np.median`` of a 1-D float array (NaN if any is NaN), without its first-call
    import of ``numpy.ma`` (15 ms of every command-line run)."""
    v = np.sort(values)
    n = len(v)
    if n == 0 or math.isnan(v[-1]):
        return math.nan
    mid = n // 2
    return float(v[mid]) if n % 2 else float((v[mid - 1] + v[mid]) / 2)


def _spacing_warning(locs: Sequence[float], name: str) -> tuple[float, list[str]]:
    """Median slice spacing and plain-word warnings about irregular spacing."""
    d = np.diff(np.asarray(locs, dtype=float))
    dz = _median(d)
    warns: list[str] = []
    lo, hi = float(d.min()), float(d.max())
    if dz > 0 and (hi - lo) > SPACING_TOLERANCE * dz:
        gaps = [i for i, v in enumerate(d) if v > (1 + SPACING_TOLERANCE) * dz * 1.5]
        msg = f"{name}: slice spacing varies from {_fmt(round(lo, 3))} to {_fmt(round(hi, 3))} mm"
        if gaps:
            where = ", ".join(f"after slice {i} (z = {locs[i]:.1f} mm)" for i in gaps[:5])
            more = f" and {len(gaps) - 5} more" if len(gaps) > 5 else ""
            msg += f": a gap {where}{more}" if len(gaps) == 1 else f": gaps {where}{more}"
        msg += f"; shown with the median spacing {_fmt(round(dz, 4))} mm"
        warns.append(msg)
    return dz, warns


def _tilt_deg(first: Sequence[float], last: Sequence[float], normal: np.ndarray) -> float:
    d = np.asarray(last, dtype=float) - np.asarray(first, dtype=float)
    n = float(np.linalg.norm(d))
    if n == 0:
        return 0.0
    c = min(1.0, abs(float(d @ normal)) / n)
    return math.degrees(math.acos(c))


# ---------------------------------------------------------------------------------------
# Series assembly
# ---------------------------------------------------------------------------------------


def _implementation(ds: Dataset) -> str:
    """``"<Implementation Class UID> <Version Name>"`` of the file meta, or ``""``."""
    fm = getattr(ds, "file_meta", None)
    if fm is None:
        return ""
    uid = str(fm.get("ImplementationClassUID", "") or "").strip()
    name = str(fm.get("ImplementationVersionName", "") or "").strip()
    return f"{uid} {name}".strip() if uid else ""


def _full_header(path: str) -> Dataset:
    """Whole header of the first file of a series (text values, sequences)."""
    return _read_header(path, force=None)


def _text(ds: Dataset, keyword: str) -> str:
    v = ds.get(keyword)
    if v is None:
        return ""
    if isinstance(v, MultiValue):
        return "\\".join(str(x) for x in v)
    return str(v).strip()


def _value_unit(ds: Dataset, modality: str) -> str:
    rtype = _text(ds, "RescaleType")
    if not rtype:
        pvt = _first_item(_first_item(ds, "SharedFunctionalGroupsSequence"),
                          "PixelValueTransformationSequence")
        if pvt is not None:
            rtype = _text(pvt, "RescaleType")
    mlut = _first_item(ds, "ModalityLUTSequence")
    if mlut is not None and _text(mlut, "ModalityLUTType"):
        rtype = _text(mlut, "ModalityLUTType")
    if rtype and rtype.upper() != "US":
        return rtype
    return "HU" if modality == "CT" else ""


def _padding(ds: Dataset, plane: Plane, warns: list[str], name: str) -> list[tuple[float, float]]:
    """Pixel Padding Value / Range Limit (C.7.5.1.1.2) as a modality-unit range."""
    if "PixelPaddingValue" not in ds:
        return []
    try:
        v = ds.PixelPaddingValue
        lim = ds.get("PixelPaddingRangeLimit")
        a = int(v[0] if isinstance(v, (MultiValue, list)) else v)
        b = a if lim is None else int(lim[0] if isinstance(lim, (MultiValue, list)) else lim)
    except (TypeError, ValueError, IndexError) as exc:
        warns.append(f"{name}: Pixel Padding Value ignored ({exc})")
        return []
    lo, hi = min(a, b), max(a, b)
    if plane.modality_lut is not None:
        vals = plane.modality_lut.apply(np.array([lo, hi]))
        return [(float(vals.min()), float(vals.max()))]
    m = [plane.slope * lo + plane.intercept, plane.slope * hi + plane.intercept]
    return [(min(m), max(m))]


def _voi_luts(ds: Dataset, warns: list[str], name: str) -> list[LUT]:
    out: list[LUT] = []
    seq = ds.get("VOILUTSequence") or []
    if not seq:
        item = _first_item(_first_item(ds, "SharedFunctionalGroupsSequence"),
                           "FrameVOILUTSequence")
        seq = (item.get("VOILUTSequence") or []) if item is not None else []
    for i, item in enumerate(seq):
        try:
            out.append(LUT.from_item(item))
        except (WindowError, AttributeError, KeyError, ValueError, TypeError) as exc:
            warns.append(f"{name}: VOI LUT {i + 1} ignored ({exc})")
    return out


def _make_series(
    recs: list[_Record], part: tuple[str, Any], suffix: str, warns_out: list[str]
) -> Series:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        s = _make_series_quiet(recs, part, suffix, warns_out)
    for msg in _pydicom_messages(caught, recs[0].path):
        if msg not in s.warnings:
            s.warnings.append(msg)
            warns_out.append(msg)
    return s


def _make_series_quiet(
    recs: list[_Record], part: tuple[str, Any], suffix: str, warns_out: list[str]
) -> Series:
    kind, data = part
    r0 = recs[0]
    ds = r0.header if r0.header is not None else _full_header(r0.path)
    name = _name(r0.path)
    warns: list[str] = []
    for r in recs:
        for w in r.warnings:
            if w not in warns:
                warns.append(w)
    label = kind.split("|")[0]
    if label == "3d":
        stacks = [data]
    else:
        stacks = data
    flat = [f for st in stacks for f in st]
    rgb = r0.spp == 3 or r0.photometric.startswith(("RGB", "YBR", "PALETTE"))
    orientation = r0.orientation
    normal = _normal(orientation) if orientation else None
    ps = r0.pixel_spacing
    nz = len(stacks[0])
    z_frames = stacks[0]
    row_sp, col_sp = (ps if ps else (1.0, 1.0))
    inplane_unit = "mm" if ps else "pixel"
    ser_desc = _text(ds, "SeriesDescription")
    has_pos = all(f.position is not None for f in flat) and orientation is not None
    axis: tuple[str, ...]
    scale: tuple[float, ...]
    units: tuple[str, ...]
    if nz == 1 and len(stacks) == 1:
        axis, scale, units = ("y", "x"), (row_sp, col_sp), (inplane_unit, inplane_unit)
        if has_pos and orientation:
            p = np.asarray(flat[0].position)
            translate: tuple[float, ...] = (float(p @ np.asarray(orientation[3:6])),
                                             float(p @ np.asarray(orientation[:3])))
        else:
            translate = (0.0, 0.0)
    else:
        if has_pos and normal is not None:
            locs = [float(f.location or 0.0) for f in z_frames]
            p0 = np.asarray(z_frames[0].position)
            if nz > 1:
                dz, sw = _spacing_warning(locs, ser_desc or name)
                warns.extend(sw)
                tilt = _tilt_deg(z_frames[0].position or (0, 0, 0),
                                 z_frames[-1].position or (0, 0, 0), normal)
                if tilt > TILT_TOLERANCE_DEG:
                    warns.append(
                        f"{ser_desc or name}: gantry tilt of {tilt:.1f} degrees (slice positions "
                        "do not advance along the slice normal)")
            else:
                dz = r0.spacing_between or r0.thickness or 1.0
            z_scale, z_unit = abs(dz) or 1.0, "mm"
            z_label = "z"
            z_tr = locs[0]
            translate_yx = (float(p0 @ np.asarray(orientation[3:6])),  # type: ignore[index]
                            float(p0 @ np.asarray(orientation[:3])))  # type: ignore[index]
        elif r0.multi_frame and r0.frame_time and len(recs) == 1:
            z_scale, z_unit, z_label, z_tr = float(r0.frame_time), "ms", "t", 0.0
            translate_yx = (0.0, 0.0)
        else:
            if r0.spacing_between:
                z_scale, src = abs(r0.spacing_between), "Spacing Between Slices"
            elif r0.thickness:
                z_scale, src = abs(r0.thickness), "Slice Thickness"
            else:
                z_scale, src = 1.0, "a default of 1"
            if nz > 1:
                spacing = (f"spacing {_fmt(z_scale)} mm from {src}" if src != "a default of 1"
                           else "no slice spacing in the header: 1 slice per pixel step")
                missing = " or ".join(
                    [w for w, gone in (("Image Position (Patient)",
                                        any(f.position is None for f in flat)),
                                       ("Image Orientation (Patient)", orientation is None))
                     if gone])
                warns.append(f"{ser_desc or name}: no {missing}; not placed in patient "
                             "space, slices ordered by "
                             f"Instance Number and frame, {spacing}")
            z_unit, z_label, z_tr = ("mm" if src != "a default of 1" else "pixel"), "z", 0.0
            translate_yx = (0.0, 0.0)
        axis = (z_label, "y", "x")
        scale = (z_scale, row_sp, col_sp)
        units = (z_unit, inplane_unit, inplane_unit)
        translate = (z_tr, *translate_yx)
        if len(stacks) > 1:
            lab = kind.split(":")[1].split("|")[0]
            axis = (lab, *axis)
            scale = (1.0, *scale)
            units = ("", *units)
            translate = (0.0, *translate)
    planes = [
        Plane(path=f.path, frame=f.frame, sop_instance_uid=f.sop_uid, instance_number=f.instance,
              position=f.position, location=f.location, slope=f.slope, intercept=f.intercept,
              modality_lut=f.modality_lut, windows=f.windows, fragments_at=f.fragments_at,
              file_frames=f.file_frames)
        for f in flat
    ]
    shape: tuple[int, ...] = ((len(stacks), nz) if len(stacks) > 1 else
                              ((nz,) if nz > 1 else ())) + (r0.rows, r0.columns)
    if rgb:
        shape = (*shape, 3)
    modality = _text(ds, "Modality")
    sub = kind.split("|")[1] if "|" in kind else ""
    desc = ser_desc
    for extra in (sub, suffix):
        if extra:
            desc = f"{desc} ({extra})" if desc else f"({extra})"
    number = ds.get("SeriesNumber")
    try:
        number_i = int(number) if number not in (None, "") else None
    except (TypeError, ValueError):
        number_i = None
    voi_fn = _text(ds, "VOILUTFunction") or (
        planes[0].windows[0].function if planes[0].windows else "LINEAR")
    pls = _text(ds, "PresentationLUTShape") or None
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    s = Series(
        uid=r0.series_uid,
        planes=planes,
        shape=shape,
        number=number_i,
        description=desc,
        modality=modality,
        study_uid=_text(ds, "StudyInstanceUID"),
        patient_id=_text(ds, "PatientID"),
        study_date=_text(ds, "StudyDate"),
        study_description=_text(ds, "StudyDescription"),
        rows=r0.rows,
        columns=r0.columns,
        samples_per_pixel=r0.spp,
        photometric=r0.photometric,
        bits_allocated=int(ds.get("BitsAllocated", 16) or 16),
        bits_stored=int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16),
        pixel_representation=int(ds.get("PixelRepresentation", 0) or 0),
        transfer_syntax=str(ts) if ts else "",
        implementation=_implementation(ds),
        axis_labels=axis,
        scale=tuple(float(v) for v in scale),
        translate=tuple(float(v) for v in translate),
        units=tuple(units),
        orientation=tuple(orientation) if orientation else None,
        windows=list(planes[0].windows),
        voi_luts=_voi_luts(ds, warns, name),
        voi_function=str(voi_fn).upper(),
        presentation_lut_shape=pls,
        padding=[] if rgb else _padding(ds, planes[0], warns, name),
        value_unit=_value_unit(ds, modality),
        header=header_dict(ds),
        warnings=warns,
    )
    warns_out.extend(warns)
    return s


# ---------------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------------


def scan(
    paths: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    *,
    progress: Callable[[int, int], None] | None = None,
    processes: int = 1,
    reader: HeaderReader | None = None,
) -> ScanResult:
    """Read the headers of all DICOM files under ``paths`` and group them into series.

    Parameters
    ----------
    paths
        Files and folders (folders are walked recursively; a DICOMDIR stands for its
        folder).
    progress
        Called as ``progress(done, total)`` while reading headers.
    processes
        Header reading is pure Python (it holds the GIL), so more than one process is
        needed to use more than one core. Above 1, a large scan is split over that many
        forked processes, on Linux, when the caller runs no other Python thread (the
        command line does this; inside napari the scan stays in-process). The result is
        the same either way.
    reader
        Reads the headers of a list of files instead of this process (e.g. on a Dask
        cluster, :mod:`~napari_dicom.core.cluster`): ``reader(files, progress)`` returns
        one :func:`read_headers` result per file, in order. Walking the folders, grouping
        and sorting stay here, so the result is the same.

    Returns
    -------
    ScanResult
        Series sorted by :meth:`Series.sort_key`, plus skipped, non-image and non-DICOM
        files and warnings.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    urls = [p for p in paths if isinstance(p, str) and _is_url(p)]
    if urls:  # series on a DICOMweb server: the same series, their bytes fetched
        from .dicomweb import scan_urls

        remote = scan_urls(urls)
        if len(urls) == len(paths):
            return remote
        local = scan([p for p in paths if p not in urls], progress=progress,
                     processes=processes, reader=reader)
        local.series = sorted([*local.series, *remote.series], key=lambda s: s.sort_key())
        local.non_image.extend(remote.non_image)
        local.objects.extend(remote.objects)
        local.warnings.extend(remote.warnings)
        return local
    notes: list[str] = []
    files, missing = iter_files(paths, notes)
    result = ScanResult(skipped=list(missing), warnings=notes, not_walked=len(notes))
    records: list[_Record] = []
    read = (reader(files, progress) if reader is not None
            else _read_records(files, progress, processes))
    for f, r in zip(files, read, strict=True):
        if r is None:
            result.non_dicom += 1
        elif isinstance(r, Skipped):
            result.skipped.append(r)
        elif isinstance(r, tuple) and r[0] == "object":
            result.objects.append(f)
        elif isinstance(r, tuple):
            result.non_image.append(Skipped(f, r[1]))
        else:
            records.append(r)
    records = _split_orientations(_without_duplicates(records, result))
    result.series = _assemble(records, result.warnings, result.skipped)
    result.series.sort(key=lambda s: s.sort_key())
    if not result.series:  # a DICOMDIR given: say why it gave nothing
        for raw in paths:
            p = str(os.fspath(raw))
            if os.path.basename(p).upper() == "DICOMDIR" and os.path.isfile(p):
                why = dicomdir_problem(p) or "its folder holds no DICOM image"
                result.skipped.append(Skipped(p, f"{_name(p)}: {why}"))
    for s in result.skipped:
        result.warnings.append(f"skipped {s.reason}")
    return result


def dicomdir_problem(path: str) -> str | None:
    """Why a DICOMDIR (PS3.10 7.2) leads to no image: not DICOM, damaged, not a media
    directory, records pointing outside its folder (never read: its folder is) or to files
    that are not there; ``None`` when none of these. Never raises."""
    if not is_dicom_file(path):
        return "not a DICOM file"
    try:
        ds = _read_header(path)
        records = ds.get("DirectoryRecordSequence")
        meta_class = str(getattr(ds.get("file_meta", Dataset()),
                                 "MediaStorageSOPClassUID", "") or "")
        if meta_class != _DICOMDIR_CLASS and records is None:
            return f"not a DICOMDIR ({_sop_class_name(meta_class)})"
        root = os.path.realpath(os.path.dirname(path) or ".")
        outside: list[str] = []
        missing = n = 0
        for rec in records or []:
            ref = rec.get("ReferencedFileID")
            if not ref:
                continue
            parts = [str(ref)] if isinstance(ref, str) else [str(x) for x in ref]
            n += 1
            target = os.path.realpath(os.path.join(root, *parts))
            if os.path.commonpath([root, target]) != root:
                outside.append("/".join(parts))
            elif not os.path.isfile(target):
                missing += 1
    except (OSError, *HEADER_ERRORS) as exc:
        return f"damaged ({_why(exc)})"
    if outside:
        return (f"{len(outside)} of its {n} records point outside its folder (e.g. "
                f"{outside[0]}), which is not read")
    if missing:
        return f"{missing} of its {n} records point to files that are not there"
    return None


def _is_url(text: str) -> bool:
    return text.lower().startswith(("dicomweb+http://", "dicomweb+https://"))


def scan_datasets(items: Sequence[tuple[str, Dataset]], source: Any = None) -> ScanResult:
    """Group headers that came without files (``(reference, header)`` pairs, e.g. a
    DICOMweb series' metadata) into series, as :func:`scan` groups files; each series
    reads its pixels from ``source`` (see :class:`~napari_dicom.core.series.FrameSource`).
    """
    result = ScanResult()
    cache = _WindowCache()
    records: list[_Record] = []
    for ref, ds in items:
        sop_class = _str(ds, _TAG["SOPClassUID"]) or ""
        if _TAG["Rows"] not in ds or _TAG["Columns"] not in ds:
            result.non_image.append(Skipped(ref, f"{_name(ref)}: {_sop_class_name(sop_class)} "
                                                 "(no pixel data)"))
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                r = _build_record(ref, ds, sop_class, cache)
            except (ValueError, KeyError, TypeError, IndexError, AttributeError,
                    WindowError) as exc:
                result.skipped.append(Skipped(ref, f"{_name(ref)}: unusable image header "
                                                   f"({exc})"))
                continue
        r.warnings.extend(m for m in _pydicom_messages(caught, ref) if m not in r.warnings)
        r.header = ds
        records.append(r)
    records = _without_duplicates(records, result)
    result.series = _assemble(records, result.warnings)
    for s in result.series:
        s.source = source
    result.series.sort(key=lambda s: s.sort_key())
    for sk in result.skipped:
        result.warnings.append(f"skipped {sk.reason}")
    return result


_ReadResult = _Record | Skipped | tuple[str, str] | None

#: fewest files per forked reader worth the fork (a fork and the results' pickling cost
#: about as much as reading ~30 headers)
MIN_FILES_PER_PROCESS = 100


def _read_records(
    files: list[str], progress: Callable[[int, int], None] | None, processes: int,
) -> list[_ReadResult]:
    """One :func:`_read_record` result per file, in order; see :func:`scan`."""
    total = len(files)
    n_proc = min(processes, total // MIN_FILES_PER_PROCESS)
    if n_proc > 1 and _can_fork():
        return _read_records_forked(files, progress, n_proc)
    cache = _WindowCache()
    step = max(1, total // 100)
    out: list[_ReadResult] = []
    for i, f in enumerate(files):
        out.append(_read_record(f, cache))
        if progress is not None and ((i + 1) % step == 0 or i + 1 == total):
            progress(i + 1, total)
    return out


def _can_fork() -> bool:
    """Forking is safe here: Linux (macOS frameworks are not fork-safe), and no other
    Python thread that could hold a lock the child needs."""
    import threading

    return sys.platform.startswith("linux") and threading.active_count() == 1


def read_headers(paths: Sequence[str]) -> list[_ReadResult]:
    """What :func:`scan` needs of each file's header, in order (picklable: a cluster
    worker runs this on its share of the files and sends the results back)."""
    cache = _WindowCache()
    return [_read_record(p, cache) for p in paths]


#: ``reader(files, progress)`` of :func:`scan`: one :func:`read_headers` result per file
HeaderReader = Callable[[list[str], Callable[[int, int], None] | None], list[_ReadResult]]


def _ignore_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _read_records_forked(
    files: list[str], progress: Callable[[int, int], None] | None, n_proc: int,
) -> list[_ReadResult]:
    """The reads split in chunks over ``n_proc`` forked processes; a process that dies
    (killed, out of memory) does not hang the scan: its files are read in-process."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    size = max(16, math.ceil(len(files) / (4 * n_proc)))
    chunks = [files[i : i + size] for i in range(0, len(files), size)]
    out: list[_ReadResult] = []
    try:
        with warnings.catch_warnings():
            # Python >= 3.12 warns about forking a process with threads: numpy's BLAS
            # threads are idle, and the children only parse headers (no BLAS, no locks)
            warnings.simplefilter("ignore", DeprecationWarning)
            # a Ctrl-C reaches the whole process group: the parent stops the scan (the
            # pool's shutdown ends the children); children ignoring it print no tracebacks
            pool = ProcessPoolExecutor(n_proc, mp_context=multiprocessing.get_context("fork"),
                                       initializer=_ignore_sigint)
            with pool:
                try:
                    for part in pool.map(read_headers, chunks):
                        out.extend(part)
                        if progress is not None:
                            progress(len(out), len(files))
                except KeyboardInterrupt:  # stop now: the chunks not started are dropped
                    pool.shutdown(cancel_futures=True)
                    raise
    except BrokenProcessPool:
        cache = _WindowCache()
        for f in files[len(out) :]:
            out.append(_read_record(f, cache))
        if progress is not None:
            progress(len(out), len(files))
    return out


def _without_duplicates(records: list[_Record], result: ScanResult) -> list[_Record]:
    """Keep one file per SOP Instance UID (PS3.3 C.12.1.1.1: the UID names the image).

    A study copied twice into the folder (``CD/`` and ``CD copy/``) must not become a
    second echo or time axis: the first file (in path order) is kept, the others are
    counted in one warning that names an example pair.
    """
    seen: dict[str, str] = {}
    kept: list[_Record] = []
    dups: list[tuple[str, str]] = []
    for r in records:
        uid = r.frames[0].sop_uid if r.frames else ""
        if uid and uid in seen:
            dups.append((r.path, seen[uid]))
            continue
        if uid:
            seen[uid] = r.path
        kept.append(r)
    if dups:
        path, first = dups[0]
        result.warnings.append(
            f"{len(dups)} file(s) repeat images already read (same SOP Instance UID) and were "
            f"left out, e.g. {path} = {first}"
        )
    return kept


def _assemble(
    records: Iterable[_Record], warns_out: list[str], skipped_out: list[Skipped] | None = None,
) -> list[Series]:
    groups: dict[tuple[Any, ...], list[_Record]] = {}
    for r in records:
        groups.setdefault(_group_key(r), []).append(r)
    by_uid: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for key in groups:
        by_uid[key[0]].append(key)
    out: list[Series] = []
    for uid, keys in by_uid.items():
        # the largest group keeps the plain description; the others get "(2)", "(3)", ...
        keys.sort(key=lambda k: -sum(len(r.frames) for r in groups[k]))
        n_split = 0
        for gi, key in enumerate(keys):
            recs = groups[key]
            suffix = "" if gi == 0 else str(gi + 1)
            for sub in _split_multiframe(recs):
                made = _series_of(sub, suffix, warns_out, skipped_out)
                n_split += len(made)
                out.extend(made)
        if n_split > len(keys):
            warns_out.append(f"series {uid}: split into {n_split} layers (images of different "
                            "size, orientation, echo, or unequal repeats per position)")
    return out


def _series_of(
    sub: list[_Record], suffix: str, warns_out: list[str], skipped_out: list[Skipped] | None,
) -> list[Series]:
    """The layers of one group of records. The first file's whole header describes the
    series; when it cannot be read (a damaged element the header-only parse did not
    touch), that file is skipped and the next one describes the series."""
    while sub:
        frames = _with_locations(sub)
        parts = _arrange(frames)
        try:
            made = []
            for pi, part in enumerate(parts):
                if len(parts) > 1 and "|" not in part[0]:
                    part = (f"{part[0]}|part {pi + 1}", part[1])
                made.append(_make_series(sub, part, suffix, warns_out))
            return made
        except (OSError, *HEADER_ERRORS) as exc:
            bad = sub[0].path
            reason = f"{_name(bad)}: cannot read the DICOM header ({_why(exc)})"
            if skipped_out is None:
                raise
            skipped_out.append(Skipped(bad, reason))
            sub = sub[1:]
    return []


def _split_multiframe(recs: list[_Record]) -> list[list[_Record]]:
    """Multi-frame files without positions (cine loops) stay one layer per file."""
    multi = [r for r in recs if r.multi_frame]
    if len(multi) > 1 and any(f.position is None for r in multi for f in r.frames):
        recs = sorted(recs, key=lambda r: (r.frames[0].instance or 0, r.path))
        return [[r] for r in recs]
    return [recs]


def _with_locations(recs: list[_Record]) -> list[_Frame]:
    r0 = recs[0]
    normal = _normal(r0.orientation) if r0.orientation else None
    frames: list[_Frame] = []
    for r in recs:
        for f in r.frames:
            if normal is not None and f.position is not None:
                f.location = float(np.asarray(f.position) @ normal)
            frames.append(f)
    return frames


# ---------------------------------------------------------------------------------------
# Header as a JSON-friendly dict
# ---------------------------------------------------------------------------------------

MAX_BYTES = 1024
MAX_ITEMS = 32


def header_dict(ds: Dataset, max_depth: int = 3) -> dict[str, Any]:
    """The data set as ``{keyword: value}``, safe for ``json.dumps``.

    No pixel data; byte values over 1 kB become ``"<N bytes>"``; sequences become lists of
    dicts down to ``max_depth`` levels (deeper: ``"<sequence of N items>"``) and at most 32
    items; private or unknown tags are keyed ``"(gggg,eeee)"``.
    """
    out: dict[str, Any] = {}
    fm = getattr(ds, "file_meta", None)
    if fm is not None and "TransferSyntaxUID" in fm:
        out["TransferSyntaxUID"] = str(fm.TransferSyntaxUID)
    for tag in list(ds.keys()):
        if int(tag) in _PIXEL_TAGS or tag.group == 0x0002:
            continue
        key = f"({tag.group:04X},{tag.element:04X})"
        try:  # a damaged element (unknown VR, stray item, bad charset) is shown as such
            elem = ds[tag]
            key = elem.keyword or key
            out[key] = _jsonable(elem.value, elem.VR, max_depth)
        except HEADER_ERRORS as exc:
            out[key] = f"<unreadable: {_why(exc)}>"
    return out


def _jsonable(value: Any, vr: str | None, depth: int) -> Any:
    if value is None:
        return None
    if isinstance(value, DicomSequence):
        if depth <= 0:
            return f"<sequence of {len(value)} items>"
        items: list[Any] = [header_dict(item, depth - 1) for item in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"<{len(value) - MAX_ITEMS} more items>")
        return items
    if isinstance(value, (bytes, bytearray, memoryview)):
        n = len(value)
        return f"<{n} bytes>" if n > MAX_BYTES else bytes(value).hex()
    if isinstance(value, (MultiValue, list, tuple)):
        if len(value) > 4 * MAX_ITEMS * 8:
            return f"<{len(value)} values>"
        return [_jsonable(v, vr, depth) for v in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        f = float(value)
        return f if math.isfinite(f) else str(f)
    if isinstance(value, (str, UID)):
        return str(value)
    if isinstance(value, np.ndarray):
        return f"<array {value.shape} {value.dtype}>" if value.size > 256 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)

