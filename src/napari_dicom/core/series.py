"""The Series model: what ``core.scan`` finds and ``core.pixels`` loads.

A :class:`Series` is one napari layer's worth of images: the planes (2-D images: a
single-frame file, or one frame of a multi-frame file) in array order, the geometry, the
windows and the polarity. Building it reads headers only; pixels are decoded by
``core.pixels``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydicom.dataset import Dataset

from .render import LUT, Window, needs_inversion


class FrameSource(Protocol):
    """Where a series' bytes come from when they are not files on disk (DICOMweb).

    A plane's ``path`` is then a reference the source understands. ``core.pixels``
    decodes what :meth:`read_frame` returns as it decodes a file's frame, so a series
    from a source is the same :class:`Series` as one from files once its headers are read.
    """

    #: what messages call the source (a server's root URL; never credentials)
    name: str

    def read_header(self, ref: str) -> Dataset:
        """The header of the instance ``ref`` (no pixel data)."""

    def read_frame(self, ref: str, frame: int | None) -> bytes | memoryview:
        """One frame's pixel bytes: native, or one compressed frame (a read-only view
        where the source holds them in a larger buffer)."""

    def frame_syntax(self, ref: str) -> str:
        """The transfer syntax :meth:`read_frame` returns ``ref``'s frames in."""


@dataclass
class Plane:
    """One 2-D image of a series: a file, or one frame of a multi-frame file."""

    path: str
    #: 0-based frame index in a multi-frame file; ``None`` for a single-frame file
    frame: int | None
    sop_instance_uid: str
    instance_number: int | None = None
    #: Image Position (Patient) of the plane's first pixel, mm (per-frame for Enhanced)
    position: tuple[float, float, float] | None = None
    #: position along the slice normal, mm (``position . normal``)
    location: float | None = None
    #: Modality LUT of this plane (C.11.1): rescale, or a Modality LUT Sequence item
    slope: float = 1.0
    intercept: float = 0.0
    modality_lut: LUT | None = None
    #: windows of this plane (per-frame Frame VOI LUT for Enhanced, else the file's)
    windows: tuple[Window, ...] = ()
    #: file offset of the first item (Basic Offset Table) of encapsulated little-endian
    #: Pixel Data, found by the header scan; lets a frame be read without parsing the file
    fragments_at: int | None = None
    #: Number of Frames of the file holding this plane
    file_frames: int = 1


@dataclass
class Series:
    """A series (or a split of one) as one layer: planes in array order plus metadata.

    ``shape`` is the array shape the loader returns: ``(*leading, rows, columns)`` for
    grey, plus a trailing 3 for colour (``rgb``). ``planes`` has one entry per 2-D image in
    C order over ``shape[:-2]`` (or ``shape[:-3]`` for colour).
    """

    uid: str
    planes: list[Plane]
    shape: tuple[int, ...]
    number: int | None = None
    description: str = ""
    modality: str = ""
    study_uid: str = ""
    patient_id: str = ""
    study_date: str = ""
    study_description: str = ""
    rows: int = 0
    columns: int = 0
    samples_per_pixel: int = 1
    photometric: str = "MONOCHROME2"
    bits_allocated: int = 16
    bits_stored: int = 16
    pixel_representation: int = 0
    transfer_syntax: str = ""
    #: what wrote the first file: Implementation Class UID and Version Name (0002,0012-13)
    implementation: str = ""
    #: layer axes, e.g. ("z", "y", "x") or ("t", "z", "y", "x")
    axis_labels: tuple[str, ...] = ("y", "x")
    #: one spacing and origin per array axis (before the colour axis), mm or s
    scale: tuple[float, ...] = (1.0, 1.0)
    translate: tuple[float, ...] = (0.0, 0.0)
    units: tuple[str, ...] = ("mm", "mm")
    #: Image Orientation (Patient): row and column direction cosines
    orientation: tuple[float, ...] | None = None
    #: stored windows (first = file default) and VOI LUT Sequence items, modality units
    windows: list[Window] = field(default_factory=list)
    voi_luts: list[LUT] = field(default_factory=list)
    voi_function: str = "LINEAR"
    presentation_lut_shape: str | None = None
    #: Pixel Padding Value ranges, in modality units (closed ranges)
    padding: list[tuple[float, float]] = field(default_factory=list)
    #: unit of the modality values ("HU" for CT, Rescale Type, or "")
    value_unit: str = ""
    #: first instance's header, JSON-friendly (no pixel data, no large binary values)
    header: dict[str, Any] = field(default_factory=dict)
    #: plain-word warnings found while scanning (irregular spacing, tilt, skipped files)
    warnings: list[str] = field(default_factory=list)
    #: planes that failed to decode while loading: plane index -> reason (the loader fills
    #: them with the lowest value and adds a warning; the CLI leaves them out)
    damaged: dict[int, str] = field(default_factory=dict)
    #: where the pixels come from when not from the files at ``Plane.path`` (a DICOMweb
    #: server: ``read_header(ref)`` / ``read_frame(ref, frame)``); ``None`` for files
    source: FrameSource | None = field(default=None, repr=False, compare=False)

    @property
    def rgb(self) -> bool:
        return self.samples_per_pixel == 3 or self.photometric.startswith(
            ("RGB", "YBR", "PALETTE")
        )

    @property
    def invert(self) -> bool:
        """Display polarity per C.7.6.3.1.2 / C.11.6 (MONOCHROME1, Presentation LUT)."""
        return (not self.rgb) and needs_inversion(self.photometric, self.presentation_lut_shape)

    @property
    def name(self) -> str:
        """Layer name: ``"<number> <modality> <description>"``, e.g. ``"3 CT Thorax 1.0"``."""
        parts = [str(self.number) if self.number is not None else "", self.modality,
                 self.description]
        name = " ".join(p for p in parts if p).strip()
        return name or f"DICOM {self.uid[-12:]}"

    @property
    def safe_name(self) -> str:
        """:attr:`name` with only portable file-name characters."""
        return sanitize(self.name)

    def sort_key(self) -> tuple[int, str, str]:
        return (self.number if self.number is not None else 1 << 30, self.description, self.uid)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def sanitize(text: str, fallback: str = "unnamed", max_len: int = 80) -> str:
    """A portable file-name component: letters, digits, ``.``, ``_`` and ``-``; no
    separators, never ``.`` or ``..``, never empty."""
    s = _UNSAFE.sub("_", text.strip()).strip("._-")
    s = re.sub(r"_+", "_", s)[:max_len].strip("._-")
    return s or fallback
