"""Pixel loading: stored values -> modality values (PS3.3 C.11.1), eager or lazy.

A :class:`~napari_dicom.core.series.Series` (headers only) becomes an array of shape
``series.shape``:

* grey: the Modality LUT of each plane (rescale ``slope * SV + intercept``, which may
  differ from slice to slice, or a Modality LUT Sequence item) applied into one dtype for
  the whole series (:func:`value_dtype`): integer where the standard allows, ``float32``
  otherwise, never ``float64``;
* colour: RGB as stored, YBR_* converted to RGB (pydicom does it on decode), PALETTE COLOR
  looked up in its palette (C.7.6.3.1.5, 16-bit palettes scaled to 8 bits).

Loading is eager (decode spread over threads, written straight into one preallocated
array, :func:`~.volume.load_now`) or lazy (a dask array, one chunk per plane); what the
reader shows (first plane at once, the volume filled in the background, each plane
decoded once) is :mod:`~.volume`.
:func:`default_display` and :func:`series_metadata` build what the reader (and the CLI)
attach to a layer.

Decoding runs on threads. Measured (``benchmarks/bench_load.py``, 512 x 512 int16):
pydicom's pylibjpeg-libjpeg plugin holds the GIL (8-11 ms/frame, 2 threads ~1.0-1.3x),
so grey JPEG Lossless goes through imagecodecs' libjpeg-turbo when it is installed
(1.6 ms/frame, releases the GIL); single-frame native little-endian files are read from
their tail without a data-set parse (GIL released during I/O); JPEG frames are read at
the offset the header scan recorded. Both fast paths are checked on the series' first
plane (JPEG: against a second, independent decoder, then pydicom if they differ; native:
against pydicom) and fall back to pydicom (:func:`_use_fast`); a check that passed holds
for later series from the same writer, syntax and pixel layout.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import logging
import math
import os
import struct
import sys
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.pixels import (  # type: ignore[attr-defined]
    apply_color_lut,
    get_decoder,
    pixel_array,
)
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from .render import (
    LUT,
    Display,
    Window,
    WindowError,
    apply_rescale,
    bit_patterns,
    data_range,
    lookup_table,
    minmax_window,
    normalize_function,
    render_uint8,
    rescale_dtype,
)
from .safety import TooLargeError, codestream_size, is_panic, one_line, read_deflated, too_large

if TYPE_CHECKING:
    import dask.array

    from .series import Plane, Series

__all__ = [
    "CT_DEFAULT_WINDOW",
    "DicomLoadError",
    "PlaneStack",
    "SourceError",
    "ct_default_window",
    "default_display",
    "default_is_stored",
    "describe_series",
    "display_needs_data",
    "display_step",
    "load_plane",
    "load_series",
    "plane_windows",
    "plane_windows_note",
    "series_metadata",
    "stored_range",
    "value_dtype",
]

log = logging.getLogger(__name__)

#: planes decoded to choose a min-max display of a lazily loaded series
SAMPLE_PLANES = 9

Progress = Callable[[int, int], None]


class DicomLoadError(Exception):
    """A series (or a plane asked for alone) cannot be loaded; the message names the file."""


#: what would decode each compressed transfer syntax (pydicom 3 plugins)
_DECODER_PACKAGES: dict[str, tuple[str, str]] = {
    "1.2.840.10008.1.2.4.50": ("JPEG Baseline", "pylibjpeg-libjpeg, pillow or python-gdcm"),
    "1.2.840.10008.1.2.4.51": ("JPEG Extended", "pylibjpeg-libjpeg, pillow or python-gdcm"),
    "1.2.840.10008.1.2.4.57": ("JPEG Lossless", "pylibjpeg-libjpeg or python-gdcm"),
    "1.2.840.10008.1.2.4.70": ("JPEG Lossless SV1", "pylibjpeg-libjpeg or python-gdcm"),
    "1.2.840.10008.1.2.4.80": ("JPEG-LS Lossless", "pyjpegls, pylibjpeg-libjpeg or python-gdcm"),
    "1.2.840.10008.1.2.4.81": ("JPEG-LS Near-Lossless",
                               "pyjpegls, pylibjpeg-libjpeg or python-gdcm"),
    "1.2.840.10008.1.2.4.90": ("JPEG 2000 Lossless", "pylibjpeg-openjpeg or python-gdcm"),
    "1.2.840.10008.1.2.4.91": ("JPEG 2000", "pylibjpeg-openjpeg or python-gdcm"),
    "1.2.840.10008.1.2.4.201": ("HTJ2K Lossless", "pylibjpeg-openjpeg"),
    "1.2.840.10008.1.2.4.202": ("HTJ2K Lossless RPCL", "pylibjpeg-openjpeg"),
    "1.2.840.10008.1.2.4.203": ("HTJ2K", "pylibjpeg-openjpeg"),
    "1.2.840.10008.1.2.5": ("RLE Lossless", "pydicom itself (or pylibjpeg-rle)"),
    "1.2.840.10008.1.2.4.110": ("JPEG XL Lossless", "no package pydicom 3.0 can use yet"),
    "1.2.840.10008.1.2.4.111": ("JPEG XL JPEG Recompression",
                                "no package pydicom 3.0 can use yet"),
    "1.2.840.10008.1.2.4.112": ("JPEG XL", "no package pydicom 3.0 can use yet"),
}

#: what a damaged file raises while its pixels are decoded (pydicom, numpy, plugins)
_DECODE_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    KeyError,
    IndexError,
    RuntimeError,
    InvalidDicomError,
    BytesLengthException,
    # damaged headers met while decoding: no Pixel Data element (AttributeError), an IS
    # of 1e400 (OverflowError), a truncated deflated or nested data set, an element length
    # of gigabytes (MemoryError from the file read; the header's pixel claim passed the
    # memory budget, so a failed allocation here comes from a damaged length)
    MemoryError,
    AttributeError,
    OverflowError,
    RecursionError,
    struct.error,
    zlib.error,
)


@contextlib.contextmanager
def _panics_as_errors() -> Iterator[None]:
    """A Rust decoder's panic (``PanicException``, a BaseException) inside the block
    becomes a RuntimeError, which callers treat as a damaged file."""
    try:
        yield
    except BaseException as exc:
        if is_panic(exc):
            raise RuntimeError(f"the decoder failed ({one_line(exc)})") from exc
        raise


class _MissingDecoder(DicomLoadError):
    """No installed plugin decodes the file's transfer syntax (never skipped per plane)."""


class SourceError(DicomLoadError):
    """A plane's bytes could not be fetched from the series' source (a server down, a
    refused request, a timeout). Never filled in as a damaged plane: the load fails,
    naming the source and the problem, and a later load fetches the plane again."""


def _syntax_name(uid: str) -> str:
    known = _DECODER_PACKAGES.get(uid)
    if known:
        return known[0]
    name = UID(uid).name
    return name if name and name != uid else uid


def missing_decoder_message(transfer_syntax: str, path: str | None = None) -> str | None:
    """Why pixels in ``transfer_syntax`` cannot be decoded here, or ``None`` if they can.

    Names the syntax and the package that would decode it, e.g. "JPEG 2000 needs
    pylibjpeg-openjpeg or python-gdcm".
    """
    if not transfer_syntax:
        return None
    uid = UID(transfer_syntax)
    where = f"{path}: " if path else ""
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        what = _DECODER_PACKAGES.get(str(uid), (_syntax_name(uid), "a decoder pydicom lacks"))
        return (
            f"{where}pixel data in {what[0]} ({uid}) cannot be decoded: "
            f"{what[0]} needs {what[1]}"
        )
    if decoder.is_available:
        return None
    what = _DECODER_PACKAGES.get(str(uid), (_syntax_name(uid), "a pydicom decoding plugin"))
    return f"{where}{what[0]} ({uid}) needs {what[1]}: install one of them to open this file"


# --------------------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------------------


def stored_range(series: Series) -> tuple[int, int]:
    """Range of stored values allowed by Bits Stored and Pixel Representation (C.7.6.3)."""
    bits = max(1, int(series.bits_stored or series.bits_allocated or 16))
    if int(series.pixel_representation) == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _identity(plane: Plane) -> bool:
    return plane.modality_lut is None and plane.slope == 1 and plane.intercept == 0


def _stored_dtype(series: Series) -> np.dtype[Any]:
    """The dtype pydicom decodes grey stored values into."""
    alloc = int(series.bits_allocated or 16)
    size = 1 if alloc <= 8 else 2 if alloc <= 16 else 4
    kind = "i" if int(series.pixel_representation) == 1 else "u"
    return np.dtype(f"{kind}{size}")


def _transforms(series: Series) -> list[tuple[float, float, LUT | None]]:
    """The distinct Modality LUTs of the planes: ``(slope, intercept, lut)``."""
    seen: dict[tuple[float, float, int], tuple[float, float, LUT | None]] = {}
    for p in series.planes:
        key = (float(p.slope), float(p.intercept), id(p.modality_lut))
        if key not in seen:
            seen[key] = (float(p.slope), float(p.intercept), p.modality_lut)
    return list(seen.values())


def _int_dtype_for(lo: float, hi: float) -> np.dtype[Any] | None:
    for dt in (np.int16, np.int32):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dt)
    return None


def value_dtype(series: Series, stored: tuple[float, float] | None = None) -> np.dtype[Any]:
    """dtype of the modality values of the whole series.

    * Colour: ``uint8`` (``uint16`` for 16-bit, ``uint32`` for 32-bit RGB/YBR, the
      samples as stored; a palette is scaled to 8 bits).
    * Every plane with an identity Modality LUT (slope 1, intercept 0, no LUT): the stored
      dtype itself (``uint8``, ``int16``, ``uint16``...), no conversion at all.
    * Integer slopes/intercepts and Modality LUT Sequences: ``int16`` where the result over
      the stored range fits, else ``int32`` (:func:`~.render.rescale_dtype`).
    * Any non-integer slope or intercept: ``float32``.

    ``stored``: the stored range to assume (default: every value Bits Stored and Pixel
    Representation allow, see :func:`stored_range`); the eager loader passes the range it
    actually decoded, so a CT with Bits Stored 16 still loads as ``int16`` HU.
    """
    if series.rgb:
        if series.photometric.startswith("PALETTE"):
            return np.dtype(np.uint8)
        alloc = int(series.bits_allocated)
        return np.dtype(np.uint8 if alloc <= 8 else np.uint16 if alloc <= 16 else np.uint32)
    if all(_identity(p) for p in series.planes):
        return _stored_dtype(series)
    s_lo, s_hi = stored if stored is not None else stored_range(series)
    lo, hi = math.inf, -math.inf
    for slope, intercept, lut in _transforms(series):
        if lut is not None:
            lo, hi = min(lo, int(lut.data.min())), max(hi, int(lut.data.max()))
            continue
        dt = rescale_dtype(s_lo, s_hi, slope, intercept)
        if dt.kind == "f":
            return np.dtype(np.float32)
        ends = (slope * s_lo + intercept, slope * s_hi + intercept)
        lo, hi = min(lo, *ends), max(hi, *ends)
    return _int_dtype_for(lo, hi) or np.dtype(np.float32)


def value_range(series: Series) -> tuple[float, float]:
    """The modality values the series' pixels can take, without reading them: every stored
    value Bits Stored and Pixel Representation allow (:func:`stored_range`) through each
    plane's Modality LUT (C.11.1); colour: the range of the samples' dtype."""
    if series.rgb:
        info = np.iinfo(value_dtype(series))
        return float(info.min), float(info.max)
    s_lo, s_hi = stored_range(series)
    lo, hi = math.inf, -math.inf
    for slope, intercept, lut in _transforms(series):
        if lut is not None:
            ends: tuple[float, ...] = (float(lut.data.min()), float(lut.data.max()))
        else:
            ends = (slope * s_lo + intercept, slope * s_hi + intercept)
        lo, hi = min(lo, *ends), max(hi, *ends)
    return float(lo), float(hi)


# --------------------------------------------------------------------------------------
# decoding one plane
# --------------------------------------------------------------------------------------


def _modality_values(
    stored: npt.NDArray[Any], plane: Plane, dtype: np.dtype[Any],
    out: npt.NDArray[Any] | None = None,
) -> npt.NDArray[Any]:
    """Apply the plane's Modality LUT (C.11.1) into ``dtype``; slice-sized temporaries.

    An integer ``dtype`` must hold every result (the caller chose it with
    :func:`value_dtype` or checked the plane's range): the arithmetic is done in it.
    ``out`` (of ``dtype``): written there, e.g. the plane's slot in a volume.
    """
    if plane.modality_lut is not None:
        vals = plane.modality_lut.apply(stored).astype(dtype)
        if out is None:
            return vals
        out[...] = vals
        return out
    return apply_rescale(stored, float(plane.slope), float(plane.intercept), dtype, out=out)


#: Palette Color Lookup Table Data (C.7.6.3.1.6), read by ``apply_color_lut``
_PALETTE_DATA = tuple(f"{c}PaletteColorLookupTableData" for c in ("Red", "Green", "Blue", "Alpha"))


def _palette_in_native_order(ds: Dataset) -> Dataset:
    """``ds``, or a data set holding its palette with 16-bit entries in this machine's
    byte order.

    pydicom 3.0.2's ``apply_color_lut`` reads (non-segmented) 16-bit Palette Color LUT
    Data with ``np.frombuffer`` in native order, but an OW value of an Explicit VR Big
    Endian file is big endian (PS3.5 7.3): such a palette came out as ``v << 8 | v >> 8``,
    i.e. black for ``x << 8`` tables. Its segmented path does honour the syntax.
    """
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    little: bool | None = UID(syntax).is_little_endian if syntax else None
    if little is None:
        little = getattr(ds, "original_encoding", (None, None))[1]
    if little is None or little == (sys.byteorder == "little"):
        return ds
    desc = ds.get("RedPaletteColorLookupTableDescriptor")
    entries = (int(desc[0]) or 65536) if desc is not None and len(desc) == 3 else 0
    swap = [kw for kw in _PALETTE_DATA
            if entries and len(ds.get(kw) or b"") == 2 * entries]  # 16-bit entries
    if not swap:
        return ds
    fixed = Dataset()
    for elem in ds.group_dataset(0x0028):
        fixed.add(elem)
    if "PixelPresentation" in ds:
        fixed.PixelPresentation = ds.PixelPresentation
    order = "<u2" if little else ">u2"
    for kw in swap:  # new elements: ``ds``'s own (shared by ``fixed.add``) stay as read
        elem = ds[kw]
        fixed[elem.tag] = DataElement(elem.tag, elem.VR,
                                      np.frombuffer(elem.value, order).astype("=u2").tobytes())
    return fixed


def _palette_to_rgb8(arr: npt.NDArray[Any], ds: Dataset) -> npt.NDArray[np.uint8]:
    """PALETTE COLOR (C.7.6.3.1.5) -> 8-bit RGB.

    16-bit palette entries keep their high byte (``v >> 8``): exact both for tables
    written as ``x * 257`` (full range) and as ``x << 8`` (8-bit values shifted up), where
    ``v * 255 / 65535`` would turn 255 << 8 into 254.
    """
    rgb = apply_color_lut(arr, _palette_in_native_order(ds))
    if rgb.dtype == np.uint8:
        return rgb
    return (rgb >> 8).astype(np.uint8)


def _colour(arr: npt.NDArray[Any], series: Series, ds: Dataset | None) -> npt.NDArray[Any]:
    if series.photometric.startswith("PALETTE"):
        if ds is None:
            raise DicomLoadError("internal: palette lookup without its dataset")
        return _palette_to_rgb8(arr, ds)
    want = value_dtype(series)
    return arr.astype(want, copy=False)


#: JPEG Lossless (Process 14, any predictor / Selection Value 1), PS3.5 A.4.1
_JPEG_LOSSLESS = ("1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70")


def _imagecodecs() -> Any:
    try:
        import imagecodecs
    except ImportError:
        return None
    return imagecodecs if hasattr(imagecodecs, "jpeg8_decode") else None


def _jpeg_frame(path: str, frame: int | None, plane: Plane | None) -> bytes:
    """The encoded bytes of one frame of an encapsulated file.

    Read from the offset the header scan recorded (``plane.fragments_at``), without
    parsing the data set again; without it, the file is read with pydicom.
    """
    from pydicom.encaps import get_frame

    if plane is not None and plane.fragments_at is not None:
        with open(path, "rb") as f:
            f.seek(plane.fragments_at)
            if frame is None and plane.file_frames == 1:
                buf: Any = f.read()  # one read, fragments parsed from memory
            else:
                buf = f
            return get_frame(buf, frame or 0, number_of_frames=plane.file_frames)
    ds = dcmread(path)
    nf = int(ds.get("NumberOfFrames", 1) or 1)
    return get_frame(ds.PixelData, frame or 0, number_of_frames=nf)


def _fast_decode(
    path: str, frame: int | None, series: Series, plane: Plane | None = None,
    decoder: str = "jpeg8_decode",
) -> npt.NDArray[Any]:
    """JPEG Lossless grey frame through imagecodecs: by default libjpeg-turbo (about 5x
    faster than pylibjpeg-libjpeg here, and it releases the GIL so threads scale).

    The decoder returns the bit pattern; Pixel Representation 1 is sign-extended from
    Bits Stored (PS3.5 8.2.1), as pydicom does.
    """
    if series.source is not None:
        data = series.source.read_frame(path, frame)
    else:
        data = _jpeg_frame(path, frame, plane)
    _check_codestream(path, series, [bytes(data[:8192])])
    arr = np.asarray(getattr(_imagecodecs(), decoder)(data))
    if int(series.pixel_representation) == 1:
        arr = arr.view(f"i{arr.dtype.itemsize}")
    return _stored_bits(arr, series, own=True)


#: JPEG Baseline (Process 1) and Extended (Processes 2 & 4: 12-bit), PS3.5 A.4.1
_JPEG_LOSSY = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51")
#: colour space of the JPEG components, by Photometric Interpretation (PS3.5 8.2.1: RGB
#: means no colour transform was applied; YBR_FULL(_422) means YCbCr)
_JPEG_COLOUR = {"RGB": "RGB", "YBR_FULL": "YCbCr", "YBR_FULL_422": "YCbCr"}


def _turbo_decode(
    path: str, frame: int | None, series: Series, plane: Plane | None = None,
) -> npt.NDArray[Any]:
    """A lossy JPEG frame (8 or 12 bit, grey or colour) through libjpeg-turbo
    (imagecodecs): stored grey values, or RGB.

    Lossy decoders may differ (the IDCT and the chroma upsampling are left to them);
    libjpeg-turbo with its default accurate integer IDCT is what DCMTK (IJG), browsers
    and most viewers show. pylibjpeg-libjpeg, pydicom's first choice, differs from it by
    up to 7 levels on YBR images and cannot decode some 12-bit Extended streams (error
    -1038) that libjpeg-turbo and DCMTK decode.

    The colour transform follows the Photometric Interpretation, not the JPEG markers:
    RGB is decoded without one, YBR_FULL / YBR_FULL_422 from YCbCr (as DCMTK does by
    default); libjpeg's guess from the markers turns RGB streams without an Adobe marker
    into false colours.
    """
    ic = _imagecodecs()
    data = _jpeg_frame(path, frame, plane)
    _check_codestream(path, series, [data[:8192]])
    if int(series.samples_per_pixel) == 3:
        space = getattr(ic.JPEG8.CS, _JPEG_COLOUR[series.photometric])
        rgb: npt.NDArray[Any] = np.asarray(
            ic.jpeg8_decode(data, colorspace=space, outcolorspace=ic.JPEG8.CS.RGB))
        return rgb
    arr = np.asarray(ic.jpeg8_decode(data))
    if int(series.pixel_representation) == 1:
        arr = arr.view(f"i{arr.dtype.itemsize}")
    return _stored_bits(arr, series, own=True)


#: Explicit and Implicit VR Little Endian (PS3.5 A.2, A.1)
_NATIVE_LE = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")


def _native_tail(path: str, series: Series) -> npt.NDArray[Any]:
    """Stored values of a single-frame native little-endian file read from its tail.

    Pixel Data (7FE0,0010) is nearly always the last element: the last ``N`` bytes of the
    file are the pixels when the bytes before them are exactly its tag, VR and length
    ``N`` (explicit: 12 bytes, implicit: 8). Only those bytes are read, with no data-set
    parse (the GIL is released during the read, so threads scale). Anything else raises
    ``ValueError`` and the caller uses pydicom.
    """
    dt = _stored_dtype(series).newbyteorder("<")
    n = int(series.rows) * int(series.columns) * dt.itemsize
    length = n + (n & 1)
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size < length + 12:
            raise ValueError("file shorter than its pixel data")
        f.seek(size - length - 12)
        buf = f.read(length + 12)
    tag = b"\xe0\x7f\x10\x00"
    ln = length.to_bytes(4, "little")
    explicit = buf[:4] == tag and buf[4:6] in (b"OW", b"OB") and buf[6:12] == b"\x00\x00" + ln
    implicit = buf[4:8] == tag and buf[8:12] == ln
    if not (explicit or implicit):
        raise ValueError("Pixel Data is not the last element")
    arr = np.frombuffer(buf, dtype=dt, count=n // dt.itemsize, offset=12)
    arr = arr.reshape(int(series.rows), int(series.columns))
    return _stored_bits(arr, series)


def _stored_bits(
    arr: npt.NDArray[Any], series: Series, own: bool = False
) -> npt.NDArray[Any]:
    """Keep the low Bits Stored bits, sign-extended for Pixel Representation 1 (PS3.5
    8.1.1). ``own``: ``arr`` was just decoded for this call and nothing else holds it, so
    it is changed in place (no second plane-sized array)."""
    bits, size = int(series.bits_stored), 8 * arr.dtype.itemsize
    if bits >= size:
        return arr
    if int(series.pixel_representation) == 1:
        signed = arr.view(f"i{arr.dtype.itemsize}")
        if own:
            np.left_shift(signed, size - bits, out=signed)
            np.right_shift(signed, size - bits, out=signed)
            return signed
        out: npt.NDArray[Any] = (signed << (size - bits)) >> (size - bits)
        return out
    mask = arr.dtype.type((1 << bits) - 1)
    if own:
        np.bitwise_and(arr, mask, out=arr)
        return arr
    masked: npt.NDArray[Any] = arr & mask
    return masked


def _fast_kind(series: Series) -> str | None:
    if series.transfer_syntax in _JPEG_LOSSY and _imagecodecs() is not None:
        spp = int(series.samples_per_pixel)
        if (spp == 1 and not series.rgb) or (spp == 3 and series.photometric in _JPEG_COLOUR):
            return "turbo"
    if series.rgb or int(series.samples_per_pixel) != 1:
        return None
    if series.transfer_syntax in _JPEG_LOSSLESS and _imagecodecs() is not None:
        return "jpeg"
    if (series.transfer_syntax in _NATIVE_LE and int(series.bits_allocated) in (8, 16, 32)
            and (series.source is not None or all(p.frame is None for p in series.planes))):
        return "native"
    return None


#: fast decodes found right, by what they were checked on (see :func:`_use_fast`)
_FAST_CHECKED: dict[tuple[Any, ...], str] = {}


def _fast_signature(series: Series, kind: str) -> tuple[Any, ...] | None:
    """What a fast-decode check holds for: the same writer (Implementation Class UID and
    Version Name), transfer syntax and pixel layout. ``None`` when the writer is unknown
    (no file meta): such a series is checked on its own."""
    if not series.implementation:
        return None
    return (kind, series.implementation, series.transfer_syntax, int(series.bits_allocated),
            int(series.bits_stored), int(series.pixel_representation), series.photometric,
            int(series.samples_per_pixel))


def _use_fast(series: Series, keep: dict[int, Any] | None = None) -> str | None:
    """The fast decode that applies ("native": tail read; "jpeg": imagecodecs for JPEG
    Lossless), checked on the series' first plane; ``None`` when none applies or the
    check fails (pydicom then decodes the series). Lossy JPEG ("turbo",
    :func:`_turbo_decode`) is not checked: libjpeg-turbo is the reference decoder there,
    and pydicom's may legitimately differ.

    The check for "jpeg" asks a second, independent decoder first: imagecodecs' SOF3
    decoder (dcm2niix's lossless JPEG code). When both agree, the plane is right; only
    otherwise is pydicom's decode (pylibjpeg-libjpeg: ~5x slower, and it holds the GIL)
    asked to arbitrate. The native tail read is checked against pydicom's native read.

    A check that passed holds for later series from the same writer, syntax and pixel
    layout (:func:`_fast_signature`), as it holds for a series' other planes: a folder
    of 60 single-image JPEG Lossless radiographs from one device is checked once, not 60
    times (each check costs two more decodes of the image). A failed check is not kept.

    ``keep``: when given, a check that passed leaves the first plane's fast decode in it
    (``keep[0]``), so the loader does not decode that plane again.
    """
    kind = _fast_kind(series)
    if kind is None or kind == "turbo":  # lossy JPEG: libjpeg-turbo is the reference
        return kind
    signature = _fast_signature(series, kind)
    if signature is not None and signature in _FAST_CHECKED:
        return _FAST_CHECKED[signature]
    checked = _check_fast(series, kind, keep)
    if checked is not None and signature is not None:
        _FAST_CHECKED[signature] = checked
    return checked


def _check_fast(
    series: Series, kind: str, keep: dict[int, Any] | None = None
) -> str | None:
    """``kind`` when the fast decode of the series' first plane is right, else ``None``
    (that decode is left in ``keep[0]`` when it is right)."""
    p = series.planes[0]
    try:
        fast, _ = _decode(p.path, p.frame, series, fast=kind, plane=p)
    except (*_DECODE_ERRORS, DicomLoadError):
        return None
    if kind == "jpeg":
        try:
            other = _fast_decode(p.path, p.frame, series, p, decoder="jpegsof3_decode")
            if other.shape == fast.shape and np.array_equal(other, fast):
                if keep is not None:
                    keep[0] = fast
                return kind
        except (*_DECODE_ERRORS, AttributeError):  # AttributeError: a build without SOF3
            pass
    try:
        ref, _ = _decode(p.path, p.frame, series, plane=p)
    except (*_DECODE_ERRORS, DicomLoadError):
        return None
    if fast.shape == ref.shape and np.array_equal(fast, ref):
        if keep is not None:
            keep[0] = fast
        return kind
    log.info("%s: the fast %s decode differs from pydicom's; using pydicom", p.path, kind)
    return None


def _decode(
    path: str, frame: int | None, series: Series, fast: str | None = None,
    plane: Plane | None = None,
) -> tuple[npt.NDArray[Any], Dataset | None]:
    """Decode one frame (or the only one) of ``path``: stored grey values, or RGB.

    YBR_* is converted to RGB by pydicom (``as_rgb=True``, its default). ``fast`` is
    the fast path :func:`_use_fast` chose for the series; ``plane`` (the plane being
    decoded) lets the JPEG fast path read the frame without a parse.

    A data set encoded otherwise than its transfer syntax says (Implicit VR under an
    explicit VR JPEG syntax: ``dcmread`` reads it, warning) defeats pydicom's file-based
    pixel reader, which trusts the syntax; when that reader fails, the file is read whole
    with ``dcmread`` and decoded from the data set (the first error stands if that fails
    too).
    """
    if series.source is not None:
        return _decode_fetched(path, frame, series, fast)
    if fast:
        try:
            if fast == "native":
                return _native_tail(path, series), None
            if fast == "turbo":
                return _turbo_decode(path, frame, series, plane), None
            return _fast_decode(path, frame, series, plane), None
        except _DECODE_ERRORS as exc:  # imagecodecs' errors are RuntimeError subclasses
            log.info("%s: imagecodecs could not decode (%s); trying pydicom", path, exc)
    ds_out = Dataset() if series.photometric.startswith("PALETTE") else None
    _check_codestream(path, series, _fragment_heads(path, plane))
    try:
        with _panics_as_errors():
            whole = _read_whole(series, path)
            if whole is not None:
                ds_out = whole
                arr = pixel_array(whole, index=frame)
            else:
                try:
                    arr = pixel_array(path, index=frame, ds_out=ds_out)
                except _DECODE_ERRORS as first:
                    ds_out = _reparsed(path)
                    if ds_out is None:
                        raise
                    cut = _truncation(ds_out, series)
                    if cut is not None and (frame or 0) >= cut[0]:
                        raise DicomLoadError(f"{path}: {cut[2]}") from None
                    try:
                        arr = pixel_array(_padded(ds_out, cut), index=frame)
                    except _DECODE_ERRORS:
                        raise first from None
    except NotImplementedError as exc:  # no decoder for the syntax at all
        msg = missing_decoder_message(series.transfer_syntax or _file_syntax(path), path)
        raise _MissingDecoder(msg or f"{path}: {exc}") from exc
    if frame is None and arr.ndim == (3 if series.rgb else 2) + 1:
        arr = arr[0]  # a multi-frame file listed as a single plane: take frame 0
    return arr, ds_out


def _decode_fetched(
    ref: str, frame: int | None, series: Series, fast: str | None,
) -> tuple[npt.NDArray[Any], Dataset | None]:
    """Decode one frame that ``series.source`` fetches (``read_frame``): native grey
    bytes read as they are, JPEG Lossless through imagecodecs (both checked on the
    series' first plane by :func:`_use_fast`), anything else by pydicom from the
    instance's header with the frame as its Pixel Data."""
    source = series.source
    assert source is not None
    if fast == "native":
        data = source.read_frame(ref, frame)
        dt = _stored_dtype(series).newbyteorder("<")
        n = int(series.rows) * int(series.columns)
        if len(data) < n * dt.itemsize:
            raise DicomLoadError(f"{ref}: frame of {len(data)} bytes, the header says "
                                 f"{n * dt.itemsize}")
        arr = np.frombuffer(data, dtype=dt, count=n).reshape(int(series.rows),
                                                               int(series.columns))
        return _stored_bits(arr, series), None
    if fast == "jpeg":
        return _fast_decode(ref, frame, series), None
    data = bytes(source.read_frame(ref, frame))  # pydicom takes bytes
    ds = copy.copy(source.read_header(ref))
    ds.file_meta = copy.copy(ds.file_meta)
    syntax = UID(source.frame_syntax(ref))
    ds.file_meta.TransferSyntaxUID = syntax
    if "NumberOfFrames" in ds:
        del ds.NumberOfFrames
    if syntax.is_encapsulated:
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([data])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    else:
        ds.PixelData = data
        ds["PixelData"].VR = "OB" if int(series.bits_allocated) <= 8 else "OW"
    try:
        arr = ds.pixel_array
    except NotImplementedError as exc:
        msg = missing_decoder_message(str(syntax), ref)
        raise _MissingDecoder(msg or f"{ref}: {exc}") from exc
    return arr, ds


def _reparsed(path: str) -> Dataset | None:
    """The whole data set of ``path`` read by ``dcmread`` (see :func:`_decode`), or
    ``None`` when it cannot be read. (pydicom does not record that it found the data set
    in another encoding than the transfer syntax's: ``original_encoding`` still gives the
    syntax's, so the whole read is simply tried.)"""
    try:
        return dcmread(path)
    except _DECODE_ERRORS:
        return None


def _truncation(ds: Dataset, series: Series) -> tuple[int, int, str] | None:
    """``(complete frames, expected bytes, message)`` when the native Pixel Data of
    ``ds`` (read whole) holds fewer bytes than its header says (PS3.5 8.1.1), else
    ``None``.

    The message says that the file is truncated, how many bytes are missing and which
    frames are incomplete; it is the same for every such frame of the file, so the loader
    tells it once.
    """
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is not None and UID(syntax).is_compressed:
        return None
    value = ds.get("PixelData")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    bits = int(ds.get("BitsAllocated", 0) or 0)
    if value is None or bits % 8 or not rows or not cols:
        return None
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples == 3 and str(ds.get("PhotometricInterpretation", "")) == "YBR_FULL_422":
        samples = 2  # native 4:2:2: Y Y Cb Cr per pair of pixels
    nf = int(ds.get("NumberOfFrames", 1) or 1)
    per_frame = rows * cols * samples * bits // 8
    expected, held = per_frame * nf, len(value)
    if held >= expected:
        return None
    complete = held // per_frame
    if nf == 1:
        which = "its only frame is"
    elif complete == nf - 1:
        which = f"frame {nf} of {nf} is"
    else:
        which = f"frames {complete + 1}-{nf} of {nf} are"
    return complete, expected, (
        f"the file is truncated: {expected - held} of the {expected} bytes of its pixel "
        f"data are missing; {which} incomplete")


def _padded(ds: Dataset, cut: tuple[int, int, str] | None) -> Dataset:
    """``ds`` with truncated native Pixel Data padded to its full size (zeros), so that
    pydicom decodes the complete frames from it (it refuses a short value as a whole)."""
    if cut is not None:
        raw = ds.PixelData
        ds.PixelData = raw + bytes(max(0, cut[1] - len(raw)))
    return ds


def _deflated(series: Series) -> bool:
    """Deflated Explicit VR Little Endian (PS3.5 A.5): pydicom's file-based pixel reader
    does not inflate the data set, so such files are read whole with ``dcmread``."""
    return bool(series.transfer_syntax) and UID(series.transfer_syntax).is_deflated


def _read_whole(series: Series, path: str) -> Dataset | None:
    """The whole data set, for files pydicom's file-based pixel reader cannot take:
    Deflated Explicit VR Little Endian (not inflated by it), and data sets without File
    Meta Information (no Transfer Syntax UID: the encoding pydicom detected decides it,
    PS3.5 A.1/A.2/A.3). ``None`` for every other file."""
    if _deflated(series):
        with open(path, "rb") as fp:
            try:
                ds: Dataset = read_deflated(fp, stop_before_pixels=False)
            except TooLargeError as exc:
                raise DicomLoadError(f"{path}: {exc}") from exc
        return ds
    if series.transfer_syntax:
        return None
    ds = dcmread(path, force=True)
    if not ds.file_meta.get("TransferSyntaxUID"):
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit
            else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )
    return ds


def _file_syntax(path: str) -> str:
    try:
        return str(dcmread(path, stop_before_pixels=True, specific_tags=[]).file_meta
                   .get("TransferSyntaxUID", ""))
    except _DECODE_ERRORS:
        return ""


#: JPEG, JPEG-LS, JPEG 2000 and HTJ2K: codestreams whose header gives the image size
_CODESTREAM_PREFIX = "1.2.840.10008.1.2.4."


@functools.lru_cache(maxsize=256)
def _heads_at(path: str, at: int, mtime_ns: int) -> tuple[bytes, ...]:
    """The first bytes of every fragment of the encapsulated Pixel Data at ``at`` (PS3.5
    A.4: a Basic Offset Table item, then one item per fragment)."""
    heads = []
    with open(path, "rb") as f:
        f.seek(at)
        first = True
        while True:
            item = f.read(8)
            if len(item) < 8 or item[:4] != b"\xfe\xff\x00\xe0":
                break
            (length,) = struct.unpack("<I", item[4:])
            if not first:
                heads.append(f.read(min(length, 8192)))
                f.seek(f.tell() - min(length, 8192) + length)
            else:
                f.seek(length, os.SEEK_CUR)
            first = False
    return tuple(heads)


def _fragment_heads(path: str, plane: Plane | None) -> list[bytes]:
    if plane is None or plane.fragments_at is None:
        return []
    try:
        return list(_heads_at(path, plane.fragments_at, os.stat(path).st_mtime_ns))
    except OSError:
        return []


def _check_codestream(path: str, series: Series, heads: Sequence[bytes]) -> None:
    """Refuse to decode a frame whose codestream header (JPEG SOF, JPEG-LS SOF55, JPEG 2000
    SIZ) describes a larger image than the DICOM header: the decoder would allocate what
    the codestream says (65500 x 65500 from a few hundred bytes)."""
    if not series.transfer_syntax.startswith(_CODESTREAM_PREFIX):
        return
    for h in heads:
        size = codestream_size(h)
        if size is None:
            continue
        rows, cols, comps = size
        if rows > series.rows or cols > series.columns or comps > 4:
            raise DicomLoadError(
                f"{path}: the compressed image says {rows} x {cols} pixels ({comps} "
                f"components), the header {series.rows} x {series.columns}; not decoded")


def _to_values(
    arr: npt.NDArray[Any], plane: Plane, series: Series, dtype: np.dtype[Any],
    ds: Dataset | None,
) -> npt.NDArray[Any]:
    if series.rgb:
        return _colour(arr, series, ds)
    return _modality_values(arr, plane, dtype)


def _check_shape(arr: npt.NDArray[Any], series: Series, path: str) -> None:
    want = tuple(series.shape[-3:] if series.rgb else series.shape[-2:])
    if arr.shape != want:
        raise DicomLoadError(
            f"{path}: image is {' x '.join(map(str, arr.shape))}, the series expects "
            f"{' x '.join(map(str, want))}"
        )


def _reason(exc: BaseException) -> str:
    """Why a plane was not decoded, on one line (a DicomLoadError names its file)."""
    if isinstance(exc, DicomLoadError):
        return one_line(exc)
    return f"cannot decode the pixel data ({one_line(exc)})"


@contextlib.contextmanager
def _naming_the_file(path: str) -> Iterator[None]:
    """A decoder's error inside the block becomes a :class:`DicomLoadError` that names
    ``path`` (a DicomLoadError passes as it is)."""
    try:
        yield
    except DicomLoadError:
        raise
    except _DECODE_ERRORS as exc:
        raise DicomLoadError(f"{path}: cannot decode the pixel data ({one_line(exc)})") from exc


def load_plane(
    series: Series, i: int, dtype: npt.DTypeLike | None = None, *, fast: str | None = None
) -> npt.NDArray[Any]:
    """Decode plane ``i`` of the series and apply its Modality LUT.

    Parameters
    ----------
    series
        The series (headers only).
    i
        Plane index in array order (C order over the leading axes).
    dtype
        Output dtype; default :func:`value_dtype` of the series.
    fast
        The series' fast decode path, from :func:`_use_fast` (``None``: pydicom).

    Raises
    ------
    DicomLoadError
        The file cannot be read or decoded (the message names it and the reason).
    """
    plane = series.planes[i]
    dt = np.dtype(dtype) if dtype is not None else value_dtype(series)
    with _naming_the_file(plane.path):
        arr, ds = _decode(plane.path, plane.frame, series, fast, plane)
        vals = _to_values(arr, plane, series, dt, ds)
        _check_shape(vals, series, plane.path)
    return vals


# --------------------------------------------------------------------------------------
# loading a series
# --------------------------------------------------------------------------------------


def _plane_shape(series: Series) -> tuple[int, ...]:
    return tuple(series.shape[-3:] if series.rgb else series.shape[-2:])


def _lead_shape(series: Series) -> tuple[int, ...]:
    return tuple(series.shape[:-3] if series.rgb else series.shape[:-2])


def _check_series(series: Series) -> None:
    n = int(np.prod(_lead_shape(series), dtype=np.int64))
    if n != len(series.planes):
        raise DicomLoadError(
            f"series {series.name!r}: {len(series.planes)} planes for shape {series.shape}"
        )
    if not series.planes:
        raise DicomLoadError(f"series {series.name!r} has no image planes")
    msg = missing_decoder_message(series.transfer_syntax, series.planes[0].path)
    if msg:
        raise DicomLoadError(msg)


def load_series(
    series: Series,
    *,
    lazy: bool | None = None,
    jobs: int | None = None,
    progress: Progress | None = None,
    budget: int | None = None,
) -> npt.NDArray[Any] | dask.array.Array:
    """The modality values of ``series`` as one array of shape ``series.shape``.

    Parameters
    ----------
    lazy
        ``True``: a dask array, one chunk per plane, decoded on demand. ``False``: decode
        everything now. ``None``: lazy when the array needs more memory than ``budget``.
    jobs
        Decoding threads for an eager load (default: the number of CPUs).
    progress
        ``progress(done, total)`` called after each decoded plane (eager) from the calling
        thread.
    budget
        Bytes the array may take (default :func:`~.volume.memory_budget`: a share of the
        memory available now).

    Values are in the smallest dtype that holds them exactly (:mod:`~.volume`). Planes
    whose file fails to decode are filled with the lowest value (eager: the lowest
    decoded value; lazy: the lowest value the series can hold) and named in
    ``series.warnings``; the rest loads. Raises :class:`DicomLoadError` when nothing can
    be decoded or no installed decoder handles the transfer syntax.
    """
    from .volume import array_bytes, load_now, memory_budget

    _check_series(series)
    if lazy is None:
        lazy = array_bytes(series) > (memory_budget() if budget is None else budget)
    if not lazy and budget is None:  # asked for in memory: within the budget or refused
        problem = too_large(array_bytes(series), f"series {series.name!r}")
        if problem:
            raise DicomLoadError(problem)
    if lazy:
        return _load_lazy(series)
    return load_now(series, jobs=jobs, progress=progress)


def _fail_note(series: Series, path: str, exc: BaseException) -> str:
    msg = f"skipped damaged image {path} ({exc}); its plane is filled with the lowest value"
    log.warning(msg)
    return msg


def _lowest(series: Series, dtype: np.dtype[Any]) -> float:
    """Lowest modality value the series can hold (lazy fill value for damaged planes)."""
    if series.rgb:
        return 0
    s_lo, s_hi = stored_range(series)
    lo = math.inf
    for slope, intercept, lut in _transforms(series):
        lo = min(lo, int(lut.data.min())) if lut is not None else min(
            lo, slope * s_lo + intercept, slope * s_hi + intercept)
    if dtype.kind in "iu":
        lo = max(lo, np.iinfo(dtype).min)
    return lo


def _load_lazy(series: Series) -> dask.array.Array:
    import dask.array as da

    dt = value_dtype(series)
    lead = _lead_shape(series)
    pshape = _plane_shape(series)
    fill = _lowest(series, dt)
    fast = _use_fast(series)
    chunks = tuple((1,) * n for n in lead) + tuple((n,) for n in pshape)
    lock = threading.Lock()

    def block(block_id: tuple[int, ...] | None = None) -> npt.NDArray[Any]:
        assert block_id is not None
        k = int(np.ravel_multi_index(block_id[: len(lead)], lead)) if lead else 0
        try:
            plane = load_plane(series, k, dt, fast=fast)
        except (_MissingDecoder, SourceError):
            raise
        except DicomLoadError as exc:
            with lock:
                series.damaged[k] = str(exc)
                series.warnings.append(_fail_note(series, series.planes[k].path, exc))
            plane = np.full(pshape, fill, dt)
        return plane.reshape((1,) * len(lead) + pshape)

    lazy: dask.array.Array = da.map_blocks(  # type: ignore[no-untyped-call]
        block, dtype=dt, chunks=chunks, meta=np.empty((0,) * len(chunks), dt)
    )
    return lazy


def _tasks(series: Series, jobs: int) -> list[tuple[str, list[int]]]:
    """Work units: ``(path, plane indices)``; frames of one multi-frame file are split in
    about ``jobs`` runs so the file is read once per run, not once per frame."""
    by_path: dict[str, list[int]] = {}
    order: list[str] = []
    for k, p in enumerate(series.planes):
        if p.path not in by_path:
            by_path[p.path] = []
            order.append(p.path)
        by_path[p.path].append(k)
    tasks: list[tuple[str, list[int]]] = []
    for path in order:
        ks = by_path[path]
        if len(ks) == 1:
            tasks.append((path, ks))
            continue
        step = max(1, math.ceil(len(ks) / max(1, jobs)))
        tasks.extend((path, ks[i : i + step]) for i in range(0, len(ks), step))
    return tasks


def _ranges(nums: Sequence[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1-3, 7"``."""
    parts: list[str] = []
    for v in sorted(nums):
        if parts and v == int(parts[-1].split("-")[-1]) + 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{v}"
        else:
            parts.append(str(v))
    return ", ".join(parts)


class PlaneStack:
    """Modality values of some planes of a series, decoded when indexed: ``(n, H, W)``
    grey or ``(n, H, W, 3)`` colour, for a consumer that walks the planes once in runs
    (the batch export: decode, render and write each run on one thread, no whole-series
    array, no dask).

    ``stack[i]`` and ``stack[a:b]`` return numpy arrays of the same values
    :func:`load_series` gives (grey that needs ``int32`` by its header is returned as
    ``int16`` for runs whose values fit, as the eager load does). A plane that cannot be
    decoded raises :class:`DicomLoadError` naming its file: a stack holds no fill values.

    :meth:`render_uint8` gives what :func:`~.render.render_uint8` gives for those values,
    straight from the stored values where the modality values are integers.
    """

    def __init__(self, series: Series, planes: Sequence[int] | None = None) -> None:
        _check_series(series)
        self.series = series
        self.planes = list(range(len(series.planes))) if planes is None else list(planes)
        self.dtype = value_dtype(series)
        self.shape = (len(self.planes), *_plane_shape(series))
        self.ndim = len(self.shape)
        self._fast = _use_fast(series)
        # as in the eager load: try int16 when the header range needs int32
        self._narrow = (np.dtype(np.int16) if self.dtype == np.int32 and not series.rgb
                        else None)
        # stored value -> displayed byte in one table per modality transform: grey, 8/16
        # bit stored values and integer modality values (the table is built from them)
        self._by_stored = (not series.rgb and self.dtype.kind in "iu"
                           and _stored_dtype(series).itemsize <= 2)
        self._tables: dict[tuple[Any, ...], tuple[Display, npt.NDArray[np.uint8]]] = {}

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> npt.NDArray[Any]:
        if isinstance(key, tuple) and len(key) == 1:
            key = key[0]
        if isinstance(key, int | np.integer):
            plane: npt.NDArray[Any] = self._read([self.planes[key]])[0]
            return plane
        if isinstance(key, slice):
            return self._read(self.planes[key])
        raise TypeError(f"PlaneStack takes an index or a slice of planes, not {key!r}")

    def __array__(self, dtype: Any = None, copy: Any = None) -> npt.NDArray[Any]:
        arr = self._read(self.planes)
        return arr if dtype is None else arr.astype(dtype)

    def render_uint8(self, key: int | slice, display: Display) -> npt.NDArray[np.uint8]:
        """``render_uint8(stack[key], display)``, byte for byte, for a slice or an index.

        Where the modality values are integers, each plane goes from its stored values
        to bytes in one lookup: the table maps every stored bit pattern through the
        plane's Modality LUT (:func:`_modality_values`) and the display
        (:func:`~.render.lookup_table`), the two steps :func:`~.render.render_uint8`
        applies to the values. No modality-value array is made: on a 512 x 512 CT plane
        this halves the time from decoded to rendered (~0.7 -> ~0.35 ms).
        """
        ks = [self.planes[key]] if isinstance(key, int | np.integer) else self.planes[key]
        if not self._by_stored:
            out = render_uint8(self._read(ks), display)
            return out[0] if isinstance(key, int | np.integer) else out
        series = self.series
        out = np.empty((len(ks), *self.shape[1:], *((3,) if display.rgb else ())), np.uint8)
        for j, k in enumerate(ks):
            plane = series.planes[k]
            with _naming_the_file(plane.path):
                arr, _ = _decode(plane.path, plane.frame, series, self._fast, plane)
                _check_shape(arr, series, plane.path)
            if arr.dtype.kind not in "iu" or arr.dtype.itemsize > 2:  # not as the header says
                out[j] = render_uint8(self._read([k]), display)[0]
                continue
            table = self._table(arr.dtype, plane, display)
            np.take(table, arr.view(f"u{arr.dtype.itemsize}"), axis=0, out=out[j])
        return out[0] if isinstance(key, int | np.integer) else out

    def _table(
        self, stored: np.dtype[Any], plane: Plane, display: Display,
    ) -> npt.NDArray[np.uint8]:
        """Displayed byte(s) for every bit pattern of ``stored``, indexed by the pattern
        read as unsigned (two's complement for signed values)."""
        key = (stored, float(plane.slope), float(plane.intercept), id(plane.modality_lut))
        shown, table = self._tables.get(key, (None, None))
        if shown is not display or table is None:  # the cache holds the display it is for
            values = _modality_values(bit_patterns(stored), plane, np.dtype(np.int64))
            table = lookup_table(values, display)
            self._tables[key] = (display, table)
        return table

    def _read(self, ks: Sequence[int]) -> npt.NDArray[Any]:
        series = self.series
        out = np.empty((len(ks), *self.shape[1:]), self._narrow or self.dtype)
        for j, k in enumerate(ks):
            plane = series.planes[k]
            with _naming_the_file(plane.path):
                arr, ds = _decode(plane.path, plane.frame, series, self._fast, plane)
                if series.rgb:
                    vals = _colour(arr, series, ds)
                else:
                    _check_shape(arr, series, plane.path)
                    if out.dtype != self.dtype:
                        lo, hi = _plane_range(arr, plane)
                        info = np.iinfo(out.dtype)
                        if lo < info.min or hi > info.max:
                            out = out.astype(self.dtype)
                    vals = _modality_values(arr, plane, out.dtype)
                _check_shape(vals, series, plane.path)
            out[j] = vals
        return out


def _plane_range(stored: npt.NDArray[Any], plane: Plane) -> tuple[float, float]:
    """Range of the plane's modality values, from its stored min and max."""
    if stored.size == 0:
        return 0.0, 0.0
    if plane.modality_lut is not None:  # its whole output range (value_dtype covers it)
        lut = plane.modality_lut.data
        return float(lut.min()), float(lut.max())
    ends = (plane.slope * float(stored.min()) + plane.intercept,
            plane.slope * float(stored.max()) + plane.intercept)
    return min(ends), max(ends)


# --------------------------------------------------------------------------------------
# default display and layer metadata (used by the reader and the CLI)
# --------------------------------------------------------------------------------------


def _sample_indices(n: int, k: int = SAMPLE_PLANES) -> list[int]:
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def _with_file_function(w: Window, series: Series) -> Window:
    fn = normalize_function(series.voi_function)
    if w.function == "LINEAR" and fn != "LINEAR":
        w = dataclasses.replace(w, function=fn)
    return w


def _first_window(series: Series) -> Window | None:
    if not series.windows:
        return None
    return _with_file_function(series.windows[0], series)


def plane_windows(series: Series) -> list[Window] | None:
    """Each plane's own first stored window, when the planes do not all share one;
    ``None`` when they do (or some plane has none, or the series is colour).

    The VOI of an image is its own (C.11.2): an Enhanced multi-frame file gives each
    frame its window in the Per-frame Functional Groups' Frame VOI LUT Sequence
    (C.7.6.16.2.10), and single-frame images of a series may each carry theirs. The
    series' default display shows the first plane's (:func:`default_display`); the PNG
    export shows each plane with its own (:func:`~.meta.plane_displays`).
    """
    if series.rgb or series.voi_luts:
        return None
    firsts = [p.windows[0] if p.windows else None for p in series.planes]
    if any(w is None for w in firsts):
        return None
    wins = [_with_file_function(w, series) for w in firsts if w is not None]
    if len({(w.center, w.width, w.function) for w in wins}) <= 1:
        return None
    return wins


def plane_windows_note(series: Series) -> str | None:
    """What the layer shows when the planes carry windows of their own (napari has one
    contrast range per layer), or ``None``."""
    wins = plane_windows(series)
    if wins is None:
        return None
    what = "frames" if any(p.frame is not None for p in series.planes) else "images"
    widths = sorted(w.width for w in wins)
    centers = sorted(w.center for w in wins)

    def span(v: list[float]) -> str:
        return f"{v[0]:g}" if v[0] == v[-1] else f"{v[0]:g} to {v[-1]:g}"

    return (f"its {len(wins)} {what} carry their own stored windows (W {span(widths)} / "
            f"L {span(centers)}); the layer shows the first one's ({wins[0].label()}) on "
            f"every plane, as napari has one contrast range per layer; PNG exports of "
            f"the file's window apply each plane's own")


def display_needs_data(series: Series) -> bool:
    """Whether :func:`default_display` reads the pixel values: only a grey series with
    neither a stored window nor a VOI LUT (it gets a min-max window)."""
    return not series.rgb and _first_window(series) is None and not series.voi_luts


def default_display(series: Series, data: Any) -> tuple[Display, str]:
    """The file's default display and a plain-words note of where it came from.

    First stored window (with the file's VOI LUT Function: SIGMOID, LINEAR_EXACT), else the
    first VOI LUT Sequence item (C.11.2.1.1), else, for a CT in HU, the soft-tissue window
    W 400 / L 40 (:func:`ct_default_window`: what peer viewers do, and why), else a min-max
    window (C.11.2.1.2.1 note 4) over the data excluding Pixel Padding (for lazy data: over
    a sample of planes). Colour images: the full range of their dtype. Polarity is
    ``series.invert``.
    """
    invert = series.invert
    if series.rgb:
        top = float((1 << (8 * np.dtype(data.dtype).itemsize)) - 1)  # 255, 65535, 2^32-1
        return Display.from_limits(0.0, top), "colour image, full range"
    w = _first_window(series)
    if w is not None:
        label = f"stored window {w.label()}" + (f" ({w.explanation})" if w.explanation else "")
        if w.function != "LINEAR":
            label += f", {w.function}"
        return Display(w, invert=invert), label
    if series.voi_luts:
        lut = series.voi_luts[0]
        first, last = lut.input_range()
        win = Window.from_limits(first, max(last, first), "LINEAR")
        return Display(win, voi_lut=lut, invert=invert), (
            f"stored VOI LUT {lut.explanation}".strip())
    if isinstance(data, np.ndarray):
        arr = data
        how = "min-max of the data"
    else:
        lead = _lead_shape(series)
        n = int(np.prod(lead, dtype=np.int64)) if lead else 1
        idx = _sample_indices(n)
        flat = data.reshape((n, *_plane_shape(series)))
        arr = np.stack([np.asarray(flat[i]) for i in idx])
        how = f"min-max of {len(idx)} of {n} planes (lazy loading)"
    if series.padding:
        how += " excluding padding"
    try:
        lo, hi = data_range(arr, series.padding)
    except WindowError:
        lo, hi = data_range(arr)
        how += " (only padding values present)"
    if hi <= lo:
        hi = lo + 1
    ct = ct_default_window(series, lo, hi)
    if ct is not None:
        return Display(ct, invert=invert), (
            f"no stored window: CT default soft-tissue window {ct.label()} chosen by "
            f"napari-dicom, not stored in the file (data {lo:g} to {hi:g} HU, "
            f"{how})")
    return Display(minmax_window(lo, hi), invert=invert), how


#: the window a CT without a stored window opens in: OHIF's "Soft tissue" preset
#: (W 400 / L 40 HU, ``core.presets.CT_PRESETS["abdomen"]``)
CT_DEFAULT_WINDOW = Window(40.0, 400.0, "LINEAR", "CT default (soft tissue), not stored")
#: a CT's values are taken for calibrated HU when they reach down to air / lung (below
#: this, padding left out) and up past the soft-tissue window
_CT_AIR_BELOW = -500.0


def ct_default_window(series: Series, lo: float, hi: float) -> Window | None:
    """The window chosen for a CT that stores none (no Window Center / Width, no VOI LUT),
    or ``None`` to keep the min-max window.

    Peer viewers, read in their sources:

    * Weasis (weasis-dicom-tools ``org/dcm4che3/img/lut/PresetWindowLevel.java``,
      https://github.com/nroduit/weasis-dicom-tools): the file's windows first; for an image
      that carries none, a configured modality preset marked "fallback default" is put
      first, else "Auto Level [Image]" (the image's full range).
    * 3D Slicer (``Libs/MRML/Core/vtkMRMLScalarVolumeDisplayNode.cxx``,
      ``CalculateAutoLevels``, https://github.com/Slicer/Slicer): the stored window when
      there is one, else an automatic window over the 0.1th to 99.9th percentile of the
      volume; its comment notes that a CT-specific rule would do better.
    * OHIF / cornerstone (``computeAutoVoi``, https://github.com/cornerstonejs/cornerstone3D):
      the image's min-max; its CT presets start with "Soft tissue" W 400 / L 40
      (``defaultWindowLevelPresets.ts``, https://github.com/OHIF/Viewers).

    A min-max (or 0.1-99.9 percentile) window over a CT spans air to bone, about 3000 HU,
    and leaves soft tissue one flat grey. So, as Weasis' modality fallback does, a CT in
    HU opens in the soft-tissue window, OHIF's first CT preset. The rule holds only when
    the values look like calibrated HU (modality CT, value unit HU, values reaching below
    -500 HU (air, lung) and above the window's top), so that an uncalibrated CT (stored
    values 0 to 4095 without a rescale) keeps its min-max window. Other modalities are
    unchanged: they have no absolute scale a fixed window could rely on.
    """
    if series.rgb or series.modality.upper() != "CT" or series.value_unit.upper() != "HU":
        return None
    top = CT_DEFAULT_WINDOW.center + CT_DEFAULT_WINDOW.width / 2
    if lo < _CT_AIR_BELOW and hi > top:
        return CT_DEFAULT_WINDOW
    return None


def display_step(series: Series, display: Display) -> dict[str, Any]:
    """``{"window": dict|None, "voi_lut": int|None}`` for ``metadata["dicom"]["display"]``."""
    if display.voi_lut is not None:
        i = next((j for j, lut in enumerate(series.voi_luts) if lut is display.voi_lut), 0)
        return {"window": None, "voi_lut": i}
    return {"window": display.window.to_dict(), "voi_lut": None}


def _plain(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def describe_series(
    series: Series, dtype: npt.DTypeLike, display_note: str,
    may_widen: npt.DTypeLike | None = None,
) -> str:
    """A short plain-words summary, e.g. "CT, 40 images of 128 x 128, ... values in HU".

    ``may_widen``: the dtype a volume still loading goes to if a plane's values do not
    fit ``dtype`` (said, so that the summary is never wrong before the load ends)."""
    lead = _lead_shape(series)
    n = int(np.prod(lead, dtype=np.int64)) if lead else 1
    dims = f"{series.columns or series.shape[-1]} x {series.rows or series.shape[-2]}"
    if series.rgb:
        dims = f"{series.shape[-2]} x {series.shape[-3]}"
    parts = [series.modality or "DICOM", f"{n} image{'s' if n != 1 else ''} of {dims} pixels"]
    spacing = [f"{s:g}" for s, u in zip(series.scale, series.units, strict=False) if u == "mm"]
    if spacing:
        parts.append("spacing " + " x ".join(spacing) + " mm")
    if series.rgb:
        parts.append(f"colour ({series.photometric} shown as RGB)")
    else:
        unit = f" in {series.value_unit}" if series.value_unit else ""
        widen = f"; {np.dtype(may_widen).name} if a plane needs it" if may_widen else ""
        parts.append(f"values{unit} ({np.dtype(dtype).name}{widen})")
        if series.invert:
            parts.append(f"{series.photometric}: low values shown white")
    parts.append(f"shown with {display_note}")
    return ", ".join(parts)


def series_metadata(
    series: Series, display: Display | None = None, display_note: str = "",
    dtype: npt.DTypeLike | None = None, may_widen: npt.DTypeLike | None = None,
) -> dict[str, Any]:
    """``layer.metadata["dicom"]`` per :mod:`napari_dicom.core.meta` (JSON-friendly).

    ``display``: the default display (see :func:`default_display`); its step is stored as
    both ``"default"`` and ``"display"``. Extra keys: ``"summary"`` (plain words),
    ``"default_source"`` (where the default display came from) and ``"default_stored"``
    (``False`` when no window is stored and napari-dicom chose one).
    """
    step = display_step(series, display) if display is not None and not series.rgb else {
        "window": None, "voi_lut": None}
    dt = np.dtype(dtype) if dtype is not None else value_dtype(series)
    return {
        "header": series.header,
        "series_instance_uid": series.uid,
        "modality": series.modality,
        "value_unit": series.value_unit,
        "files": [p.path for p in series.planes],
        "frames": [p.frame for p in series.planes],
        "sop_instance_uids": [p.sop_instance_uid for p in series.planes],
        "positions": [_plain(p.position) if p.position is not None else None
                      for p in series.planes],
        "locations": [float(p.location) if p.location is not None else None
                      for p in series.planes],
        "windows": [w.to_dict() for w in series.windows],
        "voi_luts": [lut.to_dict() for lut in series.voi_luts],
        "voi_function": series.voi_function,
        "photometric": series.photometric,
        "presentation_lut_shape": series.presentation_lut_shape,
        "invert": bool(series.invert),
        "padding": [[float(a), float(b)] for a, b in series.padding],
        "default": dict(step),
        "display": dict(step),
        "plane_windows": _plane_window_dicts(series),
        "default_source": display_note,
        "default_stored": default_is_stored(series),
        "summary": describe_series(series, dt, display_note or "its default display",
                                   may_widen),
    }


def default_is_stored(series: Series) -> bool:
    """Whether the default display comes from the file (a stored window or VOI LUT, or a
    colour image shown as is), not chosen by :func:`default_display` (min-max, or
    :func:`ct_default_window` for a CT)."""
    return bool(series.rgb or series.windows or series.voi_luts)


def _plane_window_dicts(series: Series) -> list[dict[str, Any]] | None:
    wins = plane_windows(series)
    return None if wins is None else [w.to_dict() for w in wins]


def plane_paths(series: Series) -> Sequence[str]:
    return [p.path for p in series.planes]
