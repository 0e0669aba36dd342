"""Modality values + a :class:`~napari_dicom.core.render.Display` -> 8-bit PNG files.

The one export path of napari-dicom: the napari writer (``_writer.py``), the widget's
"Export PNG stack..." button and the CLI ``export`` command all call :func:`export_stack`,
so the same data and display give byte-identical files whichever door was used.

* Pixels: :func:`~napari_dicom.core.render.render_uint8`, one plane at a time (no float64
  copy of a volume; integer data goes through a lookup table). Grey data with a palette
  (a non-grey napari colormap) gives RGB PNGs; RGB data is written as stored (16-bit
  colour scaled to 8 bits).
* Encoding: :func:`encode_png`, a minimal PNG writer (PNG 2nd ed. / ISO 15948): one IHDR,
  text chunks, one IDAT with filter type 1 (Sub) on every row, IEND. The zlib stream
  comes from libdeflate (through imagecodecs, level 1), otherwise from the standard
  library's zlib at level 1. ``benchmarks/bench_png.py``, on 34 grey and colour images
  of pydicom's and pydicom-data's test files, windowed: files 15 % smaller than with no
  filter at level 2 (the earlier setting), in 28 % less time; 15 % larger than Pillow's
  default (zlib level 6, adaptive filtering), which takes 18x as long. On the noisy
  synthetic CT of the other benchmarks the filter gains nothing (+0.3 % size, +7 % time).
  The compressor releases the GIL, so planes are encoded on ``jobs`` threads. The same
  input gives the same bytes: no time stamp is written, and the compressor is
  deterministic. (ISA-L, 3x faster still, is not: its level-1 output for the same plane
  changed with the thread that ran it, about 3 planes in 1000 with work between calls,
  so two exports of one series could differ.)
* Files (the rules live in :mod:`~napari_dicom.core.output`): a file napari-dicom did
  not write is never overwritten unless ``overwrite`` is given (:class:`ExportRefused`,
  before anything is written); its own earlier output is recognised by its manifest
  (a single PNG by its ``Software`` text). A stack is written into a hidden folder beside
  its target and swapped in once complete, replacing napari-dicom's earlier export of it
  as a whole (planes it no longer has included); a single PNG through a temporary name
  and a rename (:func:`write_atomic`). A PNG never exists truncated under its final
  name, and an export that fails or is interrupted leaves what was there before as it
  was: only what this call wrote (and the folders it created) is removed.

Layout: a 2-D image is written to the given path. An N-D stack ``(..., H, W)`` goes to a
folder named after the file (``scan.png`` -> ``scan/``) holding one PNG per plane along
the leading axes and a ``manifest.csv``. Names are 1-based and zero-padded to at least 4
digits per leading axis, so they sort in array order: ``scan_0001.png`` ... for 3-D,
``scan_0001_0001.png`` (first leading axis, then the next) for 4-D. The manifest's
``index`` columns are 0-based array indices.

Undefined values: NaN is treated as below every window (the bottom of the VOI output,
PS3.3 C.11.2), i.e. 0 in the PNG -- 255 when the display is inverted (MONOCHROME1), as
the lowest value is shown there. A constant image is defined by the window like any
other value.
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import math
import os
import re
import struct
import threading
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import __version__
from .meta import plane_displays
from .output import (
    ExportError,
    ExportRefused,
    StackPlan,
    check_interrupt,
    interrupts_to_main_thread,
    is_own_png,
    kept_on_resume,
    plan_stack,
    remove_leftovers,
)
from .render import Display, render_uint8


def _deflate_engine() -> tuple[str, int, Callable[[Any, int], bytes | bytearray]]:
    """(name, level, compress) of the zlib-stream compressor for IDAT data."""
    try:  # libdeflate: ~2x faster than zlib level 1, smaller files, deterministic
        import imagecodecs

        if imagecodecs.DEFLATE.available:
            return "libdeflate", 1, lambda data, level: imagecodecs.deflate_encode(
                data, level=level)
    except (ImportError, AttributeError):  # pragma: no cover - depends on the environment
        pass
    return "zlib", 1, zlib.compress  # pragma: no cover - depends on the environment


DEFLATE_ENGINE, PNG_LEVEL, _compress = _deflate_engine()

__all__ = [
    "DEFLATE_ENGINE",
    "ExportError",
    "ExportRefused",
    "encode_png",
    "export_stack",
    "grey_palette",
    "install_shared_stack",
    "manifest_columns",
    "open_shared_stack",
    "plane_file_names",
    "write_atomic",
]

SOFTWARE = f"napari-dicom {__version__}"
MANIFEST = "manifest.csv"
#: planes rendered together (one lookup table, one dask compute) per task
MAX_BATCH = 16

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_TYPE = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type (grey, RGB, RGBA)
_tmp_counter = itertools.count()

Progress = Callable[[int, int], object]


# --------------------------------------------------------------------------------------
# PNG bytes
# --------------------------------------------------------------------------------------


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(payload, zlib.crc32(kind)) & 0xFFFFFFFF)
    )


def _text_chunk(key: str, value: str) -> bytes:
    """``tEXt`` when the value is Latin-1, else ``iTXt`` (UTF-8, uncompressed)."""
    try:
        k = key.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"PNG text keyword {key!r} must be Latin-1") from None
    if not (1 <= len(k) <= 79) or key != key.strip() or "  " in key or b"\0" in k:
        raise ValueError(
            f"PNG text keyword {key!r} must be 1-79 characters without leading, trailing "
            "or double spaces"
        )
    value = str(value).replace("\0", "")
    try:
        return _chunk(b"tEXt", k + b"\0" + value.encode("latin-1"))
    except UnicodeEncodeError:
        return _chunk(b"iTXt", k + b"\0\0\0\0\0" + value.encode("utf-8"))


def encode_png(img: npt.NDArray[np.uint8], text: Mapping[str, str] | None = None) -> bytes:
    """Encode an 8-bit image (or a 16-bit grey one) as PNG bytes, deterministically.

    Parameters
    ----------
    img
        ``(H, W)`` grey, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA, ``uint8``; or ``(H, W)``
        ``uint16`` grey, written with bit depth 16 (label maps past 255 labels).
    text
        Keyword -> text, written as ``tEXt`` chunks (``iTXt`` for non-Latin-1 text) in
        the mapping's order, before the image data.

    Returns
    -------
    bytes
        A PNG file: signature, IHDR, text chunks, one IDAT (filter type 1, Sub, on every
        row; deflate level :data:`PNG_LEVEL`), IEND. No time chunk: same input, same
        bytes.
    """
    a = np.asarray(img)
    depth = 8
    if a.dtype == np.uint16 and a.ndim == 2:
        # 16-bit samples are big-endian (PNG 7.1); the Sub filter works on bytes with a
        # 2-byte pixel, which is what 2 "channels" of bytes give below
        depth = 16
        a = a.astype(">u2").view(np.uint8).reshape(a.shape[0], a.shape[1], 2)
        channels = 2
    elif a.dtype != np.uint8:
        raise TypeError(f"encode_png needs uint8 (or 2-D uint16) pixels, got {a.dtype}")
    elif a.ndim == 2:
        channels = 1
    elif a.ndim == 3 and a.shape[2] in (3, 4):
        channels = a.shape[2]
    else:
        raise ValueError(f"encode_png needs (H, W), (H, W, 3) or (H, W, 4) pixels, got {a.shape}")
    h, w = a.shape[:2]
    if h == 0 or w == 0:
        raise ValueError(f"a PNG needs at least one pixel, got shape {a.shape}")
    # filter type 1 (Sub, PNG 9.2): each byte minus the byte one pixel to its left
    # (modulo 256); the first pixel of a row is kept as is
    row = a.reshape(h, w * channels)
    raw = np.empty((h, w * channels + 1), np.uint8)
    raw[:, 0] = 1
    raw[:, 1 : 1 + channels] = row[:, :channels]
    np.subtract(row[:, channels:], row[:, :-channels], out=raw[:, 1 + channels :])
    idat = bytes(_compress(raw, PNG_LEVEL))
    color_type = 0 if depth == 16 else _COLOR_TYPE[channels]
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    parts = [_PNG_SIGNATURE, _chunk(b"IHDR", ihdr)]
    for key, value in (text or {}).items():
        parts.append(_text_chunk(key, value))
    parts += [_chunk(b"IDAT", idat), _chunk(b"IEND", b"")]
    return b"".join(parts)


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder + rename.

    The final name only ever holds a complete file (``os.replace`` is atomic on one file
    system); the temporary file is removed when writing fails. The file gets the usual
    permissions (``0o666`` minus the umask). No fsync: this guards against a failed or
    interrupted export, not against power loss.
    """
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.{next(_tmp_counter)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _write_new(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file (inside a staging folder: no temporary name needed,
    the folder is not in place yet); a failed write leaves no file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except BaseException:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        raise


def plane_file_names(leading_shape: Sequence[int], stem: str) -> list[str]:
    """PNG names for the planes of a stack, in C order over the leading axes.

    1-based, zero-padded to ``max(4, digits)`` per axis, so a plain sort gives array
    order: ``(3,)`` -> ``stem_0001.png .. stem_0003.png``; ``(2, 3)`` ->
    ``stem_0001_0001.png, stem_0001_0002.png, ..., stem_0002_0003.png``.
    """
    shape = [int(n) for n in leading_shape]
    if not shape:
        return [f"{stem}.png"]
    if any(n < 0 for n in shape):
        raise ValueError(f"negative axis length in {shape}")
    widths = [max(4, len(str(n))) for n in shape]
    names = []
    for idx in itertools.product(*(range(n) for n in shape)):
        parts = "_".join(f"{i + 1:0{wd}d}" for i, wd in zip(idx, widths, strict=True))
        names.append(f"{stem}_{parts}.png")
    return names


# --------------------------------------------------------------------------------------
# Pixels
# --------------------------------------------------------------------------------------


def _rgb_uint8(plane: npt.NDArray[Any], bits: int | None) -> npt.NDArray[np.uint8]:
    """RGB(A) data as 8 bits: uint8 as is; other integers scaled from ``[0, 2^bits - 1]``
    (``bits``: Bits Stored, default the dtype's width) with rounding; floats taken as
    ``[0, 1]`` (napari's convention for float RGB)."""
    a = np.asarray(plane)
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return np.where(a, np.uint8(255), np.uint8(0)).astype(np.uint8)
    if a.dtype.kind in "iu":
        nbits = bits if bits else 8 * a.dtype.itemsize - (1 if a.dtype.kind == "i" else 0)
        top = (1 << nbits) - 1
        v = np.clip(a, 0, top).astype(np.uint64)
        out: npt.NDArray[np.uint8] = ((v * 255 + top // 2) // top).astype(np.uint8)
        return out
    if a.dtype.kind == "f":
        v = np.nan_to_num(a.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=0.0)
        scaled = np.floor(np.clip(v, 0.0, 1.0) * np.float32(255) + np.float32(0.5))
        res: npt.NDArray[np.uint8] = scaled.astype(np.uint8)
        return res
    raise TypeError(f"cannot write {a.dtype} RGB data as PNG")


def grey_palette(display: Display | None) -> bool:
    """Whether ``display`` has a palette whose three channels are equal (a grey curve,
    e.g. the colormap that shows a SIGMOID window): such planes are written as grey PNGs."""
    pal = None if display is None else display.palette
    if pal is None:
        return False
    return bool((pal[:, 0] == pal[:, 1]).all() and (pal[:, 0] == pal[:, 2]).all())


def _plane_to_uint8(
    plane: npt.NDArray[Any], display: Display | None, rgb: bool, bits: int | None
) -> npt.NDArray[np.uint8]:
    if rgb:
        return _rgb_uint8(plane, bits)
    if display is None:
        raise ValueError("grey data needs a Display (window) to be exported")
    return _grey_bytes(render_uint8(plane, display), display)


def _grey_bytes(img: npt.NDArray[np.uint8], display: Display) -> npt.NDArray[np.uint8]:
    """A grey palette's RGB rendering as one channel (a smaller PNG, the same picture)."""
    return img[..., 0] if grey_palette(display) else img


def _materialise(plane: Any) -> npt.NDArray[Any]:
    if hasattr(plane, "compute") and not isinstance(plane, np.ndarray):
        # planes run on our own threads: keep dask from starting a pool per plane
        plane = plane.compute(scheduler="synchronous")
    return np.asarray(plane)


# --------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------


def manifest_columns(n_leading: int) -> list[str]:
    """Header of ``manifest.csv`` for a stack with ``n_leading`` leading axes."""
    idx = ["index"] if n_leading == 1 else [f"index{k}" for k in range(n_leading)]
    return [
        "file",
        *idx,
        "location_mm",
        "sop_instance_uid",
        "source_file",
        "frame",
        "window_center",
        "window_width",
        "voi_function",
        "invert",
        "gamma",
    ]


#: the header lines of the stack manifests napari-dicom writes (1 to 8 leading axes): how
#: its own earlier export is recognised
STACK_MANIFEST_HEADERS = frozenset(",".join(manifest_columns(k)) for k in range(1, 9))


def _per_plane(meta: Mapping[str, Any] | None, key: str, n: int) -> list[Any] | None:
    """``meta[key]`` when it holds one entry per plane, else None (e.g. cropped data)."""
    if not meta:
        return None
    v = meta.get(key)
    if isinstance(v, (list, tuple)) and len(v) == n:
        return list(v)
    return None


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if not math.isfinite(v):
            return ""
        return repr(int(v)) if v.is_integer() else f"{v:.6g}"
    return str(v)


def _display_columns(display: Display | None, rgb: bool) -> list[str]:
    if rgb or display is None:
        return ["", "", "RGB as stored", "no", ""]
    d = display.describe()
    if display.voi_lut is not None:
        center = width = ""
        function = f"{d['VOI']} {d['VOILUTRange']}"
    else:
        center, width, function = d["WindowCenter"], d["WindowWidth"], d["VOILUTFunction"]
    return [center, width, function, d["Invert"], _fmt(float(display.gamma))]


def _manifest_bytes(
    names: list[str],
    leading: tuple[int, ...],
    meta: Mapping[str, Any] | None,
    display: Display | None,
    rgb: bool,
    per: Sequence[Display] | None = None,
) -> bytes:
    n = len(names)
    locations = _per_plane(meta, "locations", n)
    uids = _per_plane(meta, "sop_instance_uids", n)
    files = _per_plane(meta, "files", n)
    frames = _per_plane(meta, "frames", n)
    disp = _display_columns(display, rgb)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(manifest_columns(len(leading)))
    for i, (name, idx) in enumerate(zip(names, np.ndindex(*leading), strict=True)):
        writer.writerow(
            [
                name,
                *idx,
                _fmt(None if locations is None else _float_or_none(locations[i])),
                _fmt(None if uids is None else uids[i]),
                _fmt(None if files is None else files[i]),
                _fmt(None if frames is None else frames[i]),
                *(disp if per is None else _display_columns(per[i], rgb)),
            ]
        )
    return buf.getvalue().encode("utf-8")


def _int_or_none(v: Any) -> int | None:
    try:
        return int(v) if v is not None and int(v) > 0 else None
    except (TypeError, ValueError):
        return None


def _float_or_none(v: Any) -> float | None:
    if v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------------------
# The export
# --------------------------------------------------------------------------------------


def _base_text(
    display: Display | None, rgb: bool, series_uid: str | None
) -> dict[str, str]:
    text: dict[str, str] = {}
    if rgb or display is None:
        text["Photometric"] = "RGB as stored"
    else:
        text.update(display.describe())
        if display.palette is not None:
            text["Colormap"] = "grey curve" if grey_palette(display) else "palette (RGB)"
    if series_uid:
        text["SeriesInstanceUID"] = str(series_uid)
    text["Software"] = SOFTWARE
    return text


def _plane_text(
    base: Mapping[str, str], i: int, uids: list[Any] | None, locations: list[Any] | None
) -> dict[str, str]:
    text = dict(base)
    if uids is not None and uids[i]:
        text["SOPInstanceUID"] = str(uids[i])
    if locations is not None:
        loc = _float_or_none(locations[i])
        if loc is not None and math.isfinite(loc):
            text["SliceLocation"] = _fmt(loc)
    return text


def _is_rgb(data: Any, rgb: bool | None) -> bool:
    if rgb is not None:
        return bool(rgb)
    shape = tuple(data.shape)
    return len(shape) >= 3 and shape[-1] in (3, 4)


def _export_error(action: str, path: Path, exc: OSError) -> ExportError:
    reason = exc.strerror or str(exc)
    err = ExportError(f"cannot {action} {path}: {reason}")
    err.errno = exc.errno
    err.strerror = reason
    err.filename = str(path)
    return err


def _make_dirs(folder: Path, created: list[Path]) -> None:
    """``mkdir -p`` that records which folders it created (to remove them on failure)."""
    missing = []
    p = folder
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    if p.exists() and not p.is_dir():
        raise ExportError(f"cannot write into {folder}: {p} exists and is not a folder")
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            if not d.is_dir():
                raise ExportError(
                    f"cannot write into {folder}: {d} exists and is not a folder"
                ) from None
            continue
        except OSError as e:
            raise _export_error("create the folder", d, e) from e
        created.append(d)


def _cleanup(written: Iterable[Path], created: list[Path]) -> None:
    for p in written:
        try:
            p.unlink()
        except FileNotFoundError:
            pass
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:  # not empty (someone else wrote there) or gone: leave it
            pass


def export_stack(
    data: Any,
    display: Display | None,
    out_path: str | os.PathLike[str],
    *,
    meta: Mapping[str, Any] | None = None,
    jobs: int | None = None,
    progress: Progress | None = None,
    skip_existing: bool = False,
    series_uid: str | None = None,
    rgb: bool | None = None,
    overwrite: bool = False,
    part: tuple[int, int] | None = None,
    plan: StackPlan | None = None,
) -> list[Path]:
    """Write modality values as 8-bit PNG(s) exactly as ``display`` shows them.

    Parameters
    ----------
    data
        Modality values (e.g. HU), numpy or dask: grey ``(..., H, W)`` or colour
        ``(..., H, W, 3|4)``.
    display
        The VOI step (window or VOI LUT), polarity, gamma and palette (PS3.3 C.11.2,
        C.7.6.3.1.2); ignored (may be None) for colour data.
    out_path
        ``scan.png``. 2-D data is written there (``.png`` is appended when missing);
        N-D data goes to the folder ``scan/`` (see the module docstring for names).
    meta
        ``layer.metadata["dicom"]`` / ``series_metadata(series)``: ``locations``,
        ``sop_instance_uids``, ``files``, ``frames`` (one per plane, C order) fill the
        manifest and text chunks; ``series_instance_uid`` and ``header["BitsStored"]``
        (scaling of 16-bit colour) are used when present.
    jobs
        Threads that render, encode and write planes (default: all cores).
    progress
        ``progress(done, total)`` after each plane, on the calling thread. Raising from
        it cancels the export (the files written so far are removed).
    skip_existing
        Leave PNGs that already exist under their final name (napari-dicom's files are
        only ever complete there) and write the missing ones in place; planes of the
        earlier export that the stack no longer has are removed.
    series_uid
        Series Instance UID for the PNG text; default ``meta["series_instance_uid"]``.
    rgb
        Whether the last axis holds colour; default: guessed like napari (last axis of
        length 3 or 4 on data with at least 3 axes). The writer passes the layer's flag.
    overwrite
        Replace files napari-dicom did not write that are in the way (a PNG, a
        ``manifest.csv``, a plane name); by default they make the export refuse.
    part, plan
        One task's share of a stack written by several (:func:`open_shared_stack`,
        then :func:`install_shared_stack`): planes ``part[0]:part[1]`` of the 3-D stack
        ``data`` go into ``plan``'s staging folder (its final folder when resuming),
        each through a temporary name of this process and a rename, so a task run again
        after its worker died rewrites them with the same bytes. No manifest, no swap.

    Returns
    -------
    list of Path
        Every file of the export, PNGs in name order then ``manifest.csv`` (files kept by
        ``skip_existing`` included).

    Raises
    ------
    ExportRefused
        A file that napari-dicom did not write is in the way (and ``overwrite`` is
        false); nothing was written.
    ExportError
        The file or folder cannot be created or written (the message names it); nothing
        this call wrote is left behind, and an earlier export of the stack is as it was.
    """
    is_rgb = _is_rgb(data, rgb)
    shape = tuple(int(n) for n in data.shape)
    n_plane_axes = 3 if is_rgb else 2
    if len(shape) < n_plane_axes:
        kind = "colour (..., H, W, 3)" if is_rgb else "grey (..., H, W)"
        raise ValueError(f"cannot export data of shape {shape} as {kind} images")
    if not is_rgb and display is None:
        raise ValueError("grey data needs a Display (window) to be exported")
    leading = shape[: len(shape) - n_plane_axes]
    meta = dict(meta) if meta else {}
    uid = series_uid if series_uid is not None else meta.get("series_instance_uid")
    header = meta.get("header") if isinstance(meta.get("header"), Mapping) else {}
    bits = _int_or_none(header.get("BitsStored")) if header else None
    base = _base_text(display, is_rgb, uid)
    n_planes = int(np.prod(leading, dtype=np.int64)) if leading else 1
    # the file's window on planes that carry their own (Enhanced per-frame VOI): each
    # plane with its own (core.meta.plane_displays)
    per = None if is_rgb else plane_displays(meta, display, n_planes)
    bases = ({id(d): _base_text(d, is_rgb, uid) for d in per} if per is not None else {})

    out = Path(out_path)
    if part is None:
        plan = None
    elif plan is None or len(leading) != 1:
        raise ValueError("a part of a stack needs its plan and 3-D data")
    if not leading:
        target = out if out.suffix.lower() == ".png" else out.with_name(out.name + ".png")
        folder = target.parent
        names = [target.name]
        if (target.is_file() and not overwrite and not (skip_existing or is_own_png(target))):
            raise ExportRefused(
                f"{target} exists and was not written by napari-dicom: not overwritten",
                [target.name],
            )
    elif plan is not None:  # a part (checked above)
        folder = plan.folder
        names = plan.names
    else:
        folder = out.with_suffix("") if out.suffix.lower() == ".png" else out
        names = plane_file_names(leading, folder.name)
        if folder.exists() and not folder.is_dir():
            raise ExportError(f"cannot write into {folder}: it exists and is not a folder")
        remove_leftovers(folder)
        plan = plan_stack(folder, names, overwrite=overwrite, resume=skip_existing,
                          manifest_headers=STACK_MANIFEST_HEADERS)
    n = len(names)
    paths = [folder / name for name in names]
    uids = _per_plane(meta, "sop_instance_uids", n)
    locations = _per_plane(meta, "locations", n)

    # a decoded-on-demand stack (pixels.PlaneStack: 3-D, grey) that renders itself
    by_stack = (not is_rgb and len(leading) == 1
                and callable(getattr(data, "render_uint8", None)))
    created: list[Path] = []
    written: list[Path] = []
    lock = threading.Lock()
    # creating and renaming files in one folder is serial in the kernel (the folder's
    # lock), where a waiting thread spins; waiting here sleeps, leaving the core to the
    # other threads' rendering and compression (perf: ~7 % of the CPU time was spinning)
    dir_lock = threading.Lock()
    stop = threading.Event()
    staged = plan is not None and plan.mode != "resume" and part is None
    if part is not None:
        pass  # the plan's folders exist (open_shared_stack)
    elif plan is not None and staged:
        _make_dirs(folder.parent, created)
        try:
            plan.open_staging()
        except OSError as e:
            raise _export_error("create a staging folder for", folder, e) from e
    else:
        _make_dirs(folder, created)
    write_dir = plan.write_folder if plan is not None else folder
    targets = [write_dir / name for name in names]
    save = _write_new if staged else write_atomic

    def kept(path: Path) -> bool:
        """``skip_existing``: leave this plane as it is (see :func:`kept_on_resume`)."""
        return path.is_file() if plan is None else kept_on_resume(path)

    def render(i0: int, i1: int, shown: Display | None) -> npt.NDArray[np.uint8]:
        """Planes ``i0:i1`` (flat indices, on the last leading axis) as shown."""
        if not leading:
            return _plane_to_uint8(_materialise(data)[np.newaxis], shown, is_rgb, bits)
        prefix = np.unravel_index(i0, leading)[:-1]
        last0 = int(np.unravel_index(i0, leading)[-1])
        key = (*prefix, slice(last0, last0 + i1 - i0))
        if by_stack and shown is not None:  # a PlaneStack renders itself: same bytes
            return _grey_bytes(data.render_uint8(key[-1], shown), shown)
        return _plane_to_uint8(_materialise(data[key]), shown, is_rgb, bits)

    def one(batch: tuple[int, int]) -> int:
        """Render, encode and write planes ``batch[0]:batch[1]`` (flat indices, all on
        the last leading axis): one lookup table per batch, not per plane."""
        i0, i1 = batch
        if stop.is_set():
            return 0
        todo = [i for i in range(i0, i1) if not (skip_existing and kept(paths[i]))]
        if not todo:
            return i1 - i0
        if per is None:
            imgs: Sequence[npt.NDArray[np.uint8]] = list(render(i0, i1, display))
        else:  # each plane its own window
            imgs = [render(i, i + 1, per[i])[0] for i in range(i0, i1)]
        for i in todo:
            if stop.is_set():
                break
            text = base if per is None else bases[id(per[i])]
            png = encode_png(imgs[i - i0], _plane_text(text, i, uids, locations))
            try:
                with dir_lock:
                    save(targets[i], png)
            except OSError as e:
                raise _export_error("write", paths[i], e) from e
            with lock:
                written.append(targets[i])
        return i1 - i0

    n_jobs = max(1, int(jobs) if jobs else (os.cpu_count() or 1))
    if part is None:
        batches = _batches(leading, n_jobs)
    else:
        batches = [(max(a, part[0]), min(b, part[1])) for a, b in _batches(leading, n_jobs)
                   if a < part[1] and b > part[0]]
    n_jobs = min(n_jobs, len(batches))
    try:
        if n_jobs == 1:
            done = 0
            for b in batches:
                done += one(b)
                if progress is not None:
                    progress(done, n)
        else:
            _run_threads(one, batches, n, n_jobs, progress, stop)
        if part is not None:
            return [paths[i] for i in range(*part)]
        if plan is not None:
            manifest = folder / MANIFEST
            try:
                save(write_dir / MANIFEST,
                     _manifest_bytes(names, leading, meta, display, is_rgb, per))
            except OSError as e:
                raise _export_error("write", manifest, e) from e
            written.append(write_dir / MANIFEST)
            paths.append(manifest)
            try:
                plan.install()
            except OSError as e:
                raise _export_error("replace", folder, e) from e
    except BaseException:
        stop.set()
        if plan is not None and part is None:
            plan.discard()
        _cleanup(written, created)
        raise
    return paths


# --------------------------------------------------------------------------------------
# A stack written by several tasks (a long series on a cluster)
# --------------------------------------------------------------------------------------


def open_shared_stack(folder: Path, n: int, *, tag: str, overwrite: bool = False,
                      resume: bool = False) -> StackPlan:
    """Plan a 3-D stack of ``n`` planes in ``folder`` that several tasks will write
    (``export_stack(..., part=, plan=)``), and make its staging folder, named by ``tag``
    (:func:`~napari_dicom.core.output.stage_tag`, made once by the caller): run again,
    this opens the same folder. The rules are :func:`export_stack`'s.

    Raises
    ------
    ExportRefused
        Files napari-dicom did not write are in the way (nothing is written).
    ExportError
        The folders cannot be created.
    """
    if folder.exists() and not folder.is_dir():
        raise ExportError(f"cannot write into {folder}: it exists and is not a folder")
    # its own staging folder stays: this task may run again while ranges are written
    # (Dask recomputes a result lost with its worker)
    remove_leftovers(folder, keep=tag)
    plan = plan_stack(folder, plane_file_names((n,), folder.name), overwrite=overwrite,
                      resume=resume, manifest_headers=STACK_MANIFEST_HEADERS)
    created: list[Path] = []
    try:
        if plan.mode == "resume":
            _make_dirs(folder, created)
        else:
            _make_dirs(folder.parent, created)
            plan.open_staging(tag)
    except OSError as e:
        raise _export_error("create a staging folder for", folder, e) from e
    return plan


#: a temporary name of :func:`write_atomic`: ``.<name>.<pid>.<n>.tmp``
_TMP_RE = re.compile(r"\.(.+)\.\d+\.\d+\.tmp")


def install_shared_stack(plan: StackPlan, meta: Mapping[str, Any] | None,
                         display: Display | None) -> list[Path]:
    """Put a stack that tasks wrote (:func:`open_shared_stack`) in place, once every
    part is written: the temporary files of tasks whose worker died are removed, the
    manifest written, the staging folder swapped (or merged) in. Run again after the
    stack went in (its worker died before it could say so), it finds it done.

    Returns the stack's files, as :func:`export_stack` does."""
    names = plan.names
    paths = [plan.folder / name for name in [*names, MANIFEST]]
    staging = plan.write_folder
    if plan.mode == "swap" and not staging.is_dir() and (plan.folder / MANIFEST).is_file():
        return paths  # a run of this task that died after the swap
    own = {*names, MANIFEST}
    with os.scandir(staging) as it:
        present = {e.name for e in it}
    dead = [staging / e for e in present
            if (m := _TMP_RE.fullmatch(e)) is not None and m.group(1) in own]
    missing = [name for name in names if name not in present]
    if missing:  # never a stack with holes under its final name
        raise ExportError(f"cannot complete {plan.folder}: {len(missing)} plane(s) were not "
                          f"written, e.g. {missing[0]}")
    for p in dead:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)
    try:
        write_atomic(staging / MANIFEST,
                     _manifest_bytes(names, (len(names),), meta, display, False,
                                     plane_displays(meta or {}, display, len(names))))
    except OSError as e:
        raise _export_error("write", plan.folder / MANIFEST, e) from e
    try:
        plan.install()
    except OSError as e:
        raise _export_error("replace", plan.folder, e) from e
    return paths


def _batches(leading: tuple[int, ...], n_jobs: int) -> list[tuple[int, int]]:
    """Flat plane ranges ``[i0, i1)`` along the last leading axis, up to
    :data:`MAX_BATCH` planes each, about four per thread at least."""
    if not leading:
        return [(0, 1)]
    n = math.prod(leading)
    last = leading[-1]
    size = max(1, min(MAX_BATCH, math.ceil(n / (4 * n_jobs)), last))
    out = []
    for start in range(0, n, last):
        for j in range(0, last, size):
            out.append((start + j, start + min(j + size, last)))
    return out


def _run_threads(
    one: Callable[[tuple[int, int]], int],
    batches: list[tuple[int, int]],
    n: int,
    n_jobs: int,
    progress: Progress | None,
    stop: threading.Event,
) -> None:
    """Run ``one(batch)`` on ``n_jobs`` threads, at most ``2 * n_jobs`` batches in flight
    (memory stays a few batches), reporting progress on this thread; first error wins."""
    done = 0
    pending: set[Future[int]] = set()
    todo = iter(batches)
    exhausted = False
    with ThreadPoolExecutor(n_jobs, thread_name_prefix="napari-dicom-export",
                            initializer=interrupts_to_main_thread) as pool:
        try:
            while not exhausted or pending:
                while not exhausted and len(pending) < 2 * n_jobs:
                    b = next(todo, None)
                    if b is None:
                        exhausted = True
                        break
                    pending.add(pool.submit(one, b))
                if not pending:
                    break
                finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
                check_interrupt()
                for f in finished:
                    done += f.result()  # re-raises the worker's error
                if progress is not None:
                    progress(done, n)
        except BaseException:
            stop.set()
            for f in pending:
                f.cancel()
            wait(pending)
            raise
