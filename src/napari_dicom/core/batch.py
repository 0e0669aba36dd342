"""Batch export of DICOM series to PNG stacks: the Qt-free engine behind ``napari-dicom export``.

Files -> :func:`~napari_dicom.core.scan.scan` -> one folder per series
(:class:`~napari_dicom.core.naming.OutputNamer`) -> :func:`~napari_dicom.core.pixels.load_series`
-> a :class:`~napari_dicom.core.render.Display` chosen by a :class:`WindowRequest`
-> :func:`~napari_dicom.core.export.export_stack` (the function the napari writer uses, so
the PNGs are the same bytes) -> a run manifest.

Nothing here parses arguments or prints: :mod:`napari_dicom.cli` does that. A series that
cannot be loaded or exported is recorded with its reason and the batch goes on. Two
things stop the batch instead: a full disk (every later series would fail the same way;
the :class:`OSError` is raised, with the run manifest left as it was) and an interrupt.
Either way the series already exported stay, and the one being written when it stopped
keeps its earlier export (:mod:`~napari_dicom.core.output`).

Files napari-dicom did not write are never overwritten unless ``overwrite`` is set: a
``manifest.csv`` in ``out`` that is not a run manifest refuses the whole run before
anything is read (:class:`~napari_dicom.core.output.ExportRefused`); such files in a
series folder refuse that series (status ``refused``).
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

import numpy as np
import numpy.typing as npt

from .naming import OutputNamer, UnsafePathError
from .output import (
    ExportRefused,
    interrupts_to_main_thread,
    is_disk_full,
    kept_on_resume,
    manifest_header,
    plan_stack,
)
from .presets import get_preset
from .render import (
    Display,
    Window,
    WindowError,
    normalize_function,
)
from .series import Series

if TYPE_CHECKING:
    from .deid import Pseudonymizer

__all__ = [
    "CLAHE_MISSING",
    "BatchResult",
    "ExportOptions",
    "MissingDependencyError",
    "SeriesResult",
    "SeriesRunner",
    "WindowRequest",
    "choose_display",
    "clahe_uint8",
    "export_all",
    "export_one",
    "parse_window",
    "preset_window",
    "require_cv2",
]

WindowMode = Literal["file", "explicit", "preset", "minmax", "percentile"]
InvertMode = Literal["auto", "yes", "no"]
FramesMode = Literal["all", "first"]

CLAHE_MISSING = (
    "--clahe needs opencv-python-headless: pip install 'napari-dicom[clahe]'"
)

#: columns of the run manifest ``OUT/manifest.csv``, one row per series
RUN_MANIFEST_COLUMNS = (
    "source",
    "output",
    "images",
    "written",
    "window_center",
    "window_width",
    "voi_function",
    "window",
    "invert",
    "status",
    "message",
    "patient_id",
    "study_date",
    "study_description",
    "series_number",
    "series_description",
    "modality",
    "series_instance_uid",
)


class MissingDependencyError(ImportError):
    """An optional dependency a requested feature needs is not installed."""


# --------------------------------------------------------------------------------------
# Window choice
# --------------------------------------------------------------------------------------


def parse_window(text: str, function: str | None = None) -> Window:
    """A window from ``"C,W"`` (centre, width in modality units, e.g. ``"40,400"``).

    Raises
    ------
    WindowError
        When the text is not two numbers, or the standard refuses the width
        (LINEAR needs ``W >= 1``, PS3.3 C.11.2.1.2.1).
    """
    parts = [p.strip() for p in str(text).replace(";", ",").split(",")]
    if len(parts) != 2:
        raise WindowError(f"a window is written CENTER,WIDTH (e.g. 40,400); got {text!r}")
    try:
        center, width = float(parts[0]), float(parts[1])
    except ValueError:
        raise WindowError(
            f"a window is written CENTER,WIDTH with two numbers (e.g. 40,400); got {text!r}"
        ) from None
    return Window(center, width, normalize_function(function), "command line")


@dataclass(frozen=True)
class WindowRequest:
    """How the user asked the window to be chosen (one of the ``--window`` family).

    * ``file``: the file's default display (first stored window or VOI LUT), else a
      min-max window over the data without padding
      (:func:`~napari_dicom.core.pixels.default_display`);
    * ``explicit`` / ``preset``: ``window`` as given;
    * ``minmax``: min-max of the data without Pixel Padding (C.11.2.1.2.1 note 4);
    * ``percentile``: the ``percentiles`` of the data without padding, optionally
      leaving out the extreme values first.

    ``function`` (LINEAR, LINEAR_EXACT, SIGMOID) replaces the VOI LUT Function of the
    chosen window; ``invert`` ``auto`` follows the file (MONOCHROME1, Presentation LUT
    Shape, C.7.6.3.1.2 / C.11.6).
    """

    mode: WindowMode = "file"
    window: Window | None = None
    percentiles: tuple[float, float] = (1.0, 99.0)
    ignore_extremes: bool = False
    function: str | None = None
    invert: InvertMode = "auto"

    def describe(self) -> str:
        if self.mode in ("explicit", "preset") and self.window is not None:
            return f"{self.mode} {self.window.label()}"
        if self.mode == "percentile":
            lo, hi = self.percentiles
            extra = " ignoring extremes" if self.ignore_extremes else ""
            return f"percentile {lo:g}-{hi:g}{extra}"
        return self.mode


def preset_window(name: str, function: str | None = None) -> Window:
    """A CT preset (:mod:`~napari_dicom.core.presets`), its function replaced if asked."""
    w = get_preset(name)
    return replace(w, function=normalize_function(function)) if function else w


def choose_display(
    series: Series, data: Any, request: WindowRequest
) -> tuple[Display, str]:
    """The Display for ``data`` (modality values of ``series``, numpy or dask) as
    ``request`` asks, and a plain-words note of where the window came from.

    Data-driven windows use :class:`~napari_dicom.core.stats.LayerStats` over the whole
    series (exact on integer data, Pixel Padding left out, lazy data read slab by slab).

    Raises
    ------
    WindowError
        When the data allow no such window (e.g. only padding values).
    """
    from .pixels import default_display
    from .stats import LayerStats

    fn = normalize_function(request.function) if request.function else None
    if request.mode == "file":
        display, note = default_display(series, data)
        if fn is not None and display.voi_lut is None and fn != display.window.function:
            display = display.with_window(replace(display.window, function=fn))
            note += f", as {fn}"
    elif request.mode in ("explicit", "preset"):
        if request.window is None:
            raise WindowError(f"window mode {request.mode!r} needs a window")
        w = request.window if fn is None else replace(request.window, function=fn)
        display = Display(w)
        note = f"{request.mode} window {w.label()}" + (
            f" ({w.explanation})" if w.explanation else "")
    elif series.rgb:
        display, note = default_display(series, data)
        note += f" (--{request.mode} does not apply to colour images)"
    elif request.mode == "minmax":
        lo, hi = LayerStats(data, series.padding).minmax("series")
        display = Display(Window.from_limits(lo, hi, fn or "LINEAR", "min-max"))
        note = "min-max of the data" + (" excluding padding" if series.padding else "")
    elif request.mode == "percentile":
        lo_q, hi_q = request.percentiles
        lo, hi = LayerStats(data, series.padding).percentile_limits(
            lo_q, hi_q, request.ignore_extremes, "series"
        )
        label = f"percentile {lo_q:g}-{hi_q:g}"
        display = Display(Window.from_limits(lo, hi, fn or "LINEAR", label))
        note = label + (" ignoring extremes" if request.ignore_extremes else "") + (
            " excluding padding" if series.padding else "")
    else:  # pragma: no cover - argparse restricts the choices
        raise WindowError(f"unknown window mode {request.mode!r}")
    invert = series.invert if request.invert == "auto" else request.invert == "yes"
    if series.rgb:
        invert = False
    return replace(display, invert=invert), note


# --------------------------------------------------------------------------------------
# CLAHE (optional, OpenCV)
# --------------------------------------------------------------------------------------


def require_cv2() -> Any:
    """Import OpenCV or raise :class:`MissingDependencyError` saying how to install it."""
    try:
        import cv2
    except ImportError as exc:
        raise MissingDependencyError(CLAHE_MISSING) from exc
    return cv2


def clahe_uint8(
    img: npt.NDArray[np.uint8], clip_limit: float = 2.0, tiles: int = 8
) -> npt.NDArray[np.uint8]:
    """Contrast Limited Adaptive Histogram Equalisation of 8-bit images, slice by slice.

    ``(..., H, W)`` grey: each 2-D slice through ``cv2.createCLAHE``; ``(..., H, W, 3)``
    colour: the L channel of CIE L*a*b*. Same shape and dtype as the input.
    """
    cv2 = require_cv2()
    clahe = cv2.createCLAHE(clipLimit=float(clip_limit), tileGridSize=(tiles, tiles))
    a = np.ascontiguousarray(img, dtype=np.uint8)
    out = np.empty_like(a)
    rgb = a.ndim >= 3 and a.shape[-1] == 3
    lead = a.shape[:-3] if rgb else a.shape[:-2]
    for idx in np.ndindex(*lead):
        if rgb:
            lab = cv2.cvtColor(a[idx], cv2.COLOR_RGB2LAB)
            lab[..., 0] = clahe.apply(np.ascontiguousarray(lab[..., 0]))
            out[idx] = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
        else:
            out[idx] = clahe.apply(a[idx])
    return out


# --------------------------------------------------------------------------------------
# The batch
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportOptions:
    window: WindowRequest = field(default_factory=WindowRequest)
    frames: FramesMode = "all"
    clahe: bool = False
    jobs: int | None = None
    skip_existing: bool = False
    overwrite: bool = False
    #: de-identified names, manifests and PNG text (:mod:`~napari_dicom.core.deid`)
    deidentify: Pseudonymizer | None = None


@dataclass
class SeriesResult:
    """What happened to one series."""

    series: Series
    folder: Path | None
    images: int = 0
    written: int = 0
    display: Display | None = None
    #: ok | ok (resumed) | skipped-existing | partial (damaged planes left out) | failed
    #: | refused (files napari-dicom did not write are in the way)
    status: str = "ok"
    message: str = ""
    note: str = ""
    damaged: dict[int, str] = field(default_factory=dict)
    #: ``skip_existing``: PNGs that were there but cut short (written anew)
    incomplete: int = 0

    @property
    def ok(self) -> bool:
        return self.status not in ("failed", "partial", "refused")


@dataclass
class BatchResult:
    out: Path
    results: list[SeriesResult]
    scan: Any  # core.scan.ScanResult
    manifest: Path | None = None
    #: why the batch stopped early or the run manifest was not written ("" when neither)
    error: str = ""
    #: seconds spent finding and reading the headers (scan) and exporting the series
    scan_seconds: float = 0.0
    export_seconds: float = 0.0
    #: processes that read and exported (1: this one; a cluster's workers)
    workers: int = 1

    @property
    def images(self) -> int:
        return sum(r.images for r in self.results)

    @property
    def written(self) -> int:
        return sum(r.written for r in self.results)

    @property
    def failed(self) -> list[SeriesResult]:
        return [r for r in self.results if not r.ok]

    @property
    def skipped_files(self) -> list[Any]:
        return list(self.scan.skipped)

    @property
    def complete(self) -> bool:
        """Every input converted: no file skipped, no damaged plane, no series failed."""
        return (not self.failed and not self.skipped_files and bool(self.results)
                and not self.error)


#: progress callback of the batch: (steps done, steps in total, label); an image is two
#: steps (decoded, written), so a display shows images as steps / 2
BatchProgress = Callable[[int, int, str], None]


def selected_planes(series: Series, frames: FramesMode) -> list[int]:
    """Indices of the planes to export: all, or the first frame of each multi-frame file."""
    if frames == "all":
        return list(range(len(series.planes)))
    return [i for i, p in enumerate(series.planes) if p.frame in (None, 0)]


def series_source(series: Series) -> str:
    """A readable source for the manifest: the file, or the folder holding all files."""
    paths = sorted({p.path for p in series.planes})
    if not paths:
        return ""
    if len(paths) == 1:
        return paths[0]
    return os.path.commonpath(paths)


#: series up to this many bytes of values are decoded at once (damaged planes are then
#: left out of the export); larger ones are read plane by plane while exporting
EAGER_BYTES = 1 << 30

_META_PER_PLANE = ("files", "frames", "sop_instance_uids", "positions", "locations",
                   "plane_windows")




def load_for_export(
    series: Series, frames: FramesMode, jobs: int | None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Any, list[int], dict[int, str]]:
    """Modality values of the planes to export, flattened to ``(planes, H, W[, 3])``.

    Returns the array (numpy, or dask for a series above :data:`EAGER_BYTES`), the plane
    indices it holds and the damaged planes found while decoding (index -> note); damaged
    planes are left out of an eagerly loaded array.
    """
    from .pixels import load_series, value_dtype

    keep = selected_planes(series, frames)
    nbytes = int(np.prod(series.shape, dtype=np.int64)) * value_dtype(series).itemsize
    subset = len(keep) < len(series.planes)
    eager = nbytes <= EAGER_BYTES and not subset
    series.damaged.clear()
    data = load_series(series, lazy=not eager, jobs=jobs, progress=progress if eager else None)
    pshape = tuple(series.shape[-3:] if series.rgb else series.shape[-2:])
    flat = data.reshape((len(series.planes), *pshape))
    if subset:  # a few planes (first frames): decode them now, in parallel
        part = flat[keep]
        flat = part if isinstance(part, np.ndarray) else np.asarray(
            cast(Any, part).compute(num_workers=jobs)
        )
        eager = True
    damaged = dict(series.damaged)
    if damaged and eager:
        good = [i for i in range(len(keep)) if keep[i] not in damaged]
        flat = flat[good]
        keep = [keep[i] for i in good]
    return flat, keep, damaged


def _subset_meta(meta: dict[str, Any], keep: Sequence[int], n: int) -> dict[str, Any]:
    if len(keep) == n:
        return meta
    out = dict(meta)
    for key in _META_PER_PLANE:
        v = meta.get(key)
        if isinstance(v, list) and len(v) == n:
            out[key] = [v[i] for i in keep]
    return out


def _shared_meta(meta: dict[str, Any], options: ExportOptions) -> dict[str, Any]:
    """The metadata that goes into the PNG text and stack manifest (scrubbed when
    de-identifying)."""
    return meta if options.deidentify is None else options.deidentify.scrub_meta(meta)


def _shared_uid(series: Series, options: ExportOptions) -> str:
    """The Series Instance UID written into the PNG text (a pseudonym when de-identifying)."""
    return series.uid if options.deidentify is None else options.deidentify.uid(series.uid)


def _check_folder(result: SeriesResult, options: ExportOptions) -> set[str]:
    """The names of the PNGs ``--skip-existing`` keeps in the result's folder (those cut
    short counted in ``result.incomplete``); the result refused when files napari-dicom
    did not write are in the way (checked now, before decoding; the export checks again)."""
    from .export import STACK_MANIFEST_HEADERS, plane_file_names

    assert result.folder is not None
    folder = result.folder
    existing: set[str] = set()
    if options.skip_existing:  # what export_stack keeps: complete PNGs (kept_on_resume)
        present = [p for p in folder.glob("*.png")]
        existing = {p.name for p in present if kept_on_resume(p)}
        result.incomplete = len(present) - len(existing)
    n = len(selected_planes(result.series, options.frames))
    try:
        plan_stack(folder, plane_file_names((n,), folder.name),
                   overwrite=options.overwrite, resume=options.skip_existing,
                   manifest_headers=STACK_MANIFEST_HEADERS)
    except ExportRefused as exc:
        _failed(result, exc)
    return existing


def export_one(
    series: Series,
    folder: Path,
    options: ExportOptions,
    progress: Callable[[int, int], None] | None = None,
    decode_progress: Callable[[int, int], None] | None = None,
) -> SeriesResult:
    """Load, window and write one series into ``folder``; failures become a result.

    The folder always holds a stack (``<folder name>_0001.png`` ...) and its
    ``manifest.csv``, also for a single image.
    """
    from .export import export_stack
    from .pixels import DicomLoadError, series_metadata

    result = SeriesResult(series, folder)
    existing = _check_folder(result, options)
    if result.status == "refused":
        return result
    if streamable(series, options):
        streamed = _export_streaming(series, folder, options, result, decode_progress)
        if streamed is not None:
            return _finish(result, streamed, existing)
    try:
        data, keep, damaged = load_for_export(
            series, options.frames, options.jobs, decode_progress
        )
        result.damaged = damaged
        if not keep:
            raise DicomLoadError(f"series {series.name!r}: no plane could be decoded")
        display, note = choose_display(series, data, options.window)
        result.display, result.note = display, note
        meta = _shared_meta(
            _subset_meta(series_metadata(series, display, note), keep, len(series.planes)),
            options,
        )
        if options.clahe and series.rgb:
            arr = np.asarray(data)
            if arr.dtype != np.uint8:
                raise ValueError(f"--clahe needs 8-bit colour, this series holds {arr.dtype}")
            data = clahe_uint8(arr)
        elif options.clahe:
            from .render import render_uint8

            shown = display
            data = clahe_uint8(render_uint8(np.asarray(data), display))
            # the 8-bit result goes through an identity window: LINEAR c 128 w 256 maps
            # x in 0..255 to x exactly (C.11.2.1.2.1), so export_stack writes it as is
            display = Display(Window.from_limits(0, 255, "LINEAR", "CLAHE"))
            meta["clahe"] = f"CLAHE after {shown.describe()}"
        paths = export_stack(
            data,
            display,
            folder,
            meta=meta,
            jobs=options.jobs,
            progress=progress,
            skip_existing=options.skip_existing,
            series_uid=_shared_uid(series, options),
            rgb=series.rgb,
            overwrite=options.overwrite,
        )
    except (DicomLoadError, WindowError, OSError, ValueError) as exc:
        return _failed(result, exc)
    if damaged:
        result.status = "partial"
        result.message = "; ".join(
            f"{series.planes[i].path}: {reason}" for i, reason in sorted(damaged.items())
        ) + (" (left out)" if keep else "")
    return _finish(result, paths, existing)


# --------------------------------------------------------------------------------------
# A long series written by several tasks (the cluster path)
# --------------------------------------------------------------------------------------


def splittable(series: Series, options: ExportOptions) -> bool:
    """Whether the series can be written in plane ranges by several tasks
    (:func:`shared_prepare`, :func:`shared_range`, :func:`shared_finish`): grey, no
    CLAHE, every plane its own file (what :class:`~napari_dicom.core.pixels.PlaneStack`
    decodes one range at a time). Read from the headers only."""
    return (not options.clahe and not series.rgb and bool(series.planes)
            and all(p.frame is None for p in series.planes))


@dataclass
class SharedStack:
    """What the tasks writing one series in plane ranges share, decided once by
    :func:`shared_prepare`: the display of the WHOLE series (a min-max or percentile
    window over all its planes, as the one-task export computes it), the manifest's
    metadata and the stack plan (staging folder) every range writes into."""

    #: the series (the range tasks take it from here: it travels once to each worker
    #: with this result, not once in every range task)
    series: Series
    plan: Any  # core.output.StackPlan
    display: Display
    note: str
    meta: dict[str, Any]
    keep: list[int]
    existing: set[str]
    incomplete: int


def shared_prepare(series: Series, folder: Path, options: ExportOptions,
                   tag: str) -> SharedStack | SeriesResult | None:
    """First task of a series written in ranges: the display, the metadata and the
    staging folder (named by ``tag``, so a run of this task again opens the same one).

    Returns the :class:`SharedStack`, a finished result (refused or failed: the ranges
    do nothing), or None when a plane cannot be decoded (:func:`shared_finish` then
    exports the series as one task, which leaves out and reports the damaged planes as
    the local run does). The display is chosen as :func:`export_one` chooses it: from
    the headers where it needs no data, else from the whole series' values."""
    from .export import open_shared_stack
    from .pixels import DicomLoadError, PlaneStack, series_metadata

    result = SeriesResult(series, folder)
    existing = _check_folder(result, options)
    if result.status == "refused":
        return result
    keep = selected_planes(series, options.frames)
    try:
        if streamable(series, options):
            display, note = choose_display(series, PlaneStack(series, keep), options.window)
        else:  # the values of every plane decide the window: load them as export_one does
            data, loaded, damaged = load_for_export(series, options.frames, options.jobs)
            if damaged or loaded != keep:
                return None
            display, note = choose_display(series, data, options.window)
            del data
        meta = _shared_meta(
            _subset_meta(series_metadata(series, display, note), keep, len(series.planes)),
            options,
        )
        plan = open_shared_stack(folder, len(keep), tag=tag, overwrite=options.overwrite,
                                 resume=options.skip_existing)
    except DicomLoadError:
        return None
    except (WindowError, OSError, ValueError) as exc:
        return _failed(result, exc)
    return SharedStack(series, plan, display, note, meta, keep, existing, result.incomplete)


def shared_range(shared: SharedStack | SeriesResult | None,
                 part: tuple[int, int], options: ExportOptions) -> Exception | None:
    """Planes ``part[0]:part[1]`` of a series written in ranges, into the shared staging
    folder (through temporary names: a run again after a worker died rewrites them).
    Returns the error that stopped it (for :func:`shared_finish`), None when written."""
    from .export import export_stack
    from .pixels import DicomLoadError, PlaneStack

    if not isinstance(shared, SharedStack):
        return None
    series = shared.series
    try:
        export_stack(PlaneStack(series, shared.keep), shared.display, shared.plan.folder,
                     meta=shared.meta, jobs=options.jobs, skip_existing=options.skip_existing,
                     series_uid=_shared_uid(series, options), rgb=False,
                     overwrite=options.overwrite, part=part, plan=shared.plan)
    except (DicomLoadError, WindowError, OSError, ValueError) as exc:
        return exc
    return None


def shared_finish(series: Series, folder: Path, options: ExportOptions,
                  shared: SharedStack | SeriesResult | None,
                  outcomes: Sequence[Exception | None]) -> SeriesResult:
    """Last task of a series written in ranges, once every range is written: the
    manifest and the swap into ``folder`` (:func:`~napari_dicom.core.export.install_shared_stack`);
    the result is what :func:`export_one` gives for the series. A plane that could not
    be decoded: the series is exported again as one task (:func:`export_one`)."""
    from .export import install_shared_stack
    from .pixels import DicomLoadError

    if isinstance(shared, SeriesResult):
        return shared
    if shared is None or any(isinstance(o, DicomLoadError) for o in outcomes):
        if shared is not None:
            shared.plan.discard()
        return export_one(series, folder, options)
    result = SeriesResult(series, folder, display=shared.display, note=shared.note,
                          incomplete=shared.incomplete)
    error = next((o for o in outcomes if o is not None), None)
    try:
        if error is not None:
            raise error
        paths = install_shared_stack(shared.plan, shared.meta, shared.display)
    except (WindowError, OSError, ValueError) as exc:
        shared.plan.discard()
        return _failed(result, exc)
    return _finish(result, paths, shared.existing)


def _failed(result: SeriesResult, exc: Exception) -> SeriesResult:
    """``result`` as failed (or refused) because of ``exc``; a full disk is re-raised: it
    stops the batch."""
    if is_disk_full(exc):
        raise exc
    result.status = "refused" if isinstance(exc, ExportRefused) else "failed"
    result.message = str(exc)
    return result


def _finish(result: SeriesResult, paths: Sequence[Path], existing: set[str]) -> SeriesResult:
    """Count the images of a finished export; name a resumed or skipped one."""
    pngs = [p for p in paths if p.suffix == ".png"]
    result.images = len(pngs)
    result.written = sum(1 for p in pngs if p.name not in existing)
    if result.written < result.images and result.status == "ok":
        result.status = "ok (resumed)" if result.written else "skipped-existing"
    return result


def streamable(series: Series, options: ExportOptions) -> bool:
    """Whether the series can be exported plane by plane as it is decoded: the window
    does not depend on the data (stored window or VOI LUT, ``--window C,W``, a preset;
    colour), no CLAHE, and every plane is its own file (multi-frame files are decoded
    per file run by the whole-series load)."""
    from .pixels import display_needs_data

    mode = options.window.mode
    if options.clahe or not series.planes:
        return False
    if mode == "file":
        fixed = not display_needs_data(series)
    else:
        fixed = mode in ("explicit", "preset") or series.rgb
    return fixed and all(p.frame is None for p in series.planes)


def _export_streaming(
    series: Series, folder: Path, options: ExportOptions, result: SeriesResult,
    progress: Callable[[int, int], None] | None,
) -> list[Path] | None:
    """Decode, render and write each run of planes on one thread (no whole-series
    array: memory stays a few planes per thread, and decoding overlaps writing).

    Returns the files written, or ``None`` when a plane cannot be decoded: nothing of
    this attempt is left, and the caller's whole-series load reports the damaged planes
    and exports the rest. ``progress(done, n)`` counts two steps per image (decoded and
    written), as the two-stage path does.
    """
    from .export import export_stack
    from .pixels import DicomLoadError, PlaneStack, series_metadata

    keep = selected_planes(series, options.frames)
    tick = None if progress is None else (lambda done, n: progress(2 * done, n))
    try:
        stack = PlaneStack(series, keep)
        display, note = choose_display(series, stack, options.window)
        meta = _shared_meta(_subset_meta(series_metadata(series, display, note), keep,
                                          len(series.planes)), options)
        paths = export_stack(
            stack, display, folder, meta=meta, jobs=options.jobs, progress=tick,
            skip_existing=options.skip_existing, series_uid=_shared_uid(series, options),
            rgb=series.rgb,
            overwrite=options.overwrite,
        )
    except DicomLoadError:
        return None
    except (WindowError, OSError, ValueError) as exc:
        _failed(result, exc)
        return []
    result.display, result.note = display, note
    return paths


def _ticker(
    progress: BatchProgress | None, base: int, total: int, label: str
) -> Callable[[int, int], None] | None:
    """A ``(done, n)`` callback for one stage of one series, offset into the batch total."""
    if progress is None:
        return None
    report = progress

    def tick(done: int, _n: int) -> None:
        report(base + done, total, label)

    return tick


class SeriesRunner(Protocol):
    """Somewhere else to read headers and export series (a Dask cluster:
    :class:`~napari_dicom.core.cluster.DaskRunner`); :func:`export_all` names the folders,
    counts progress and writes the run manifest itself, so the output is the same."""

    #: processes doing the work (for the summary)
    workers: int

    def read_headers(self, files: list[str],
                     progress: Callable[[int, int], None] | None) -> list[Any]:
        """:func:`~napari_dicom.core.scan.read_headers` of ``files``, in their order."""
        ...

    def export_series(
        self, work: Sequence[tuple[int, Series, Path]], options: ExportOptions
    ) -> Iterator[tuple[int, SeriesResult]]:
        """``export_one(series, folder, options)`` of each item, yielded with its index as
        each finishes."""
        ...


#: series with fewer images than this many per job are exported side by side, one thread
#: each (a folder of single-image X-rays would otherwise use one core); larger series one
#: after the other, each over all threads
SMALL_SERIES_PER_JOB = 8


def export_all(
    sources: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    options: ExportOptions,
    *,
    progress: BatchProgress | None = None,
    series_progress: Callable[[int, int], None] | None = None,
    scan_progress: Callable[..., Any] | None = None,
    runner: SeriesRunner | None = None,
) -> BatchResult:
    """Scan ``sources``, export every series under ``out``, write ``out/manifest.csv``.

    ``progress(images_done, images_total, label)`` is called as planes are decoded and
    written (an image counts once decoded and once written: ``images_total`` is twice the
    number of images; a series exported plane by plane counts both at once);
    ``series_progress(count, n_series)`` as series are taken up (small series, run side
    by side, when they finish). All callbacks run on the calling thread. Results and the
    run manifest keep the scan's series order.

    ``runner`` reads the headers and exports the series elsewhere (a Dask cluster); the
    folders, the progress, the results and the run manifest are made here as without it,
    so the files are the same.

    Raises
    ------
    ExportRefused
        ``out/manifest.csv`` exists and is not a run manifest napari-dicom wrote (and
        ``options.overwrite`` is false); raised before anything is read or written.

    A full disk stops the batch and the run manifest is then not written; that, or a
    run manifest that cannot be written, is said in :attr:`BatchResult.error`. The
    series exported so far stay.
    """
    from .scan import scan

    check_run_manifest(out, options.overwrite)
    jobs = options.jobs or os.cpu_count() or 1
    t0 = time.perf_counter()
    scanned = scan([os.fspath(s) for s in sources], progress=scan_progress, processes=jobs,
                   reader=None if runner is None else runner.read_headers)
    t_scan = time.perf_counter() - t0
    namer = OutputNamer(out, options.deidentify)
    n_series = len(scanned.series)
    slots: list[SeriesResult | None] = [None] * n_series
    plan: list[tuple[int, Series, Path, int]] = []  # index, series, folder, images
    seen: dict[str, int] = {}
    for index, series in enumerate(scanned.series):
        n = seen.get(series.uid, 0)
        seen[series.uid] = n + 1
        key = series.uid if n == 0 else f"{series.uid}#{n + 1}"
        try:  # named in scan order, so the names never depend on timing
            folder = namer.folder_for(series, key=key)
        except UnsafePathError as exc:
            slots[index] = SeriesResult(series, None, status="failed", message=str(exc))
            continue
        plan.append((index, series, folder, len(selected_planes(series, options.frames))))
    total = 2 * sum(p[3] for p in plan)
    done = 0
    taken = sum(r is not None for r in slots)

    def step(n_images: int, label: str) -> None:
        nonlocal done
        done += 2 * n_images
        if progress is not None:
            progress(done, total, label)

    def run_series() -> None:
        nonlocal taken
        if runner is not None:  # every series is one task; results come back as they end
            count = {p[0]: (p[2], p[3]) for p in plan}
            for index, res in runner.export_series([p[:3] for p in plan], options):
                folder, k = count[index]
                res.series = scanned.series[index]  # the scan's object, not a copy
                slots[index] = res
                taken += 1
                if series_progress is not None:
                    series_progress(taken, n_series)
                step(k, folder.name)
            return
        small = [p for p in plan if jobs > 1 and p[3] < SMALL_SERIES_PER_JOB * jobs]
        if small:
            single = replace(options, jobs=1)
            with ThreadPoolExecutor(jobs, thread_name_prefix="napari-dicom-series",
                                    initializer=interrupts_to_main_thread) as pool:
                futures = {pool.submit(export_one, series, folder, single): (index, folder, k)
                           for index, series, folder, k in small}
                try:
                    for fut in as_completed(futures):
                        index, folder, k = futures[fut]
                        slots[index] = fut.result()
                        taken += 1
                        if series_progress is not None:
                            series_progress(taken, n_series)
                        step(k, folder.name)
                except BaseException:
                    pool.shutdown(cancel_futures=True)
                    raise
        chosen = {p[0] for p in small}
        for index, series, folder, n_images in plan:
            if index in chosen:
                continue
            taken += 1
            if series_progress is not None:
                series_progress(taken, n_series)
            decode_tick = _ticker(progress, done, total, f"{folder.name}: reading")
            write_tick = _ticker(progress, done + n_images, total, f"{folder.name}: writing")
            slots[index] = export_one(series, folder, options, write_tick, decode_tick)
            step(n_images, folder.name)

    error = ""
    t0 = time.perf_counter()
    try:
        run_series()
    except OSError as exc:  # export_one lets only a full disk through: stop the batch
        error = " ".join(str(exc).split()) + (
            " (stopped: the series exported before are kept, this one keeps its earlier "
            "export; the run manifest is as it was)")
    results = [r for r in slots if r is not None]
    batch = BatchResult(namer.root, results, scanned, error=error, scan_seconds=t_scan,
                        export_seconds=time.perf_counter() - t0,
                        workers=1 if runner is None else runner.workers)
    if not error:
        path = namer.root / "manifest.csv"
        try:
            batch.manifest = write_run_manifest(namer.root, results, options.deidentify)
        except OSError as exc:
            batch.error = f"cannot write the run manifest {path}: {exc.strerror or exc}"
    return batch


def _row(r: SeriesResult, root: Path, deid: Pseudonymizer | None = None) -> dict[str, str]:
    s = r.series
    d = r.display
    w = d.window if d is not None and d.voi_lut is None else None
    if d is not None and d.voi_lut is not None:
        window = f"VOI LUT {d.voi_lut.explanation}".strip()
    elif w is not None:
        window = f"{w.label()} {w.explanation}".strip()
    else:
        window = ""
    row = {
        "source": series_source(s),
        "output": str(r.folder.relative_to(root)) if r.folder is not None else "",
        "images": str(r.images),
        "written": str(r.written),
        "window_center": "" if w is None else f"{w.center:g}",
        "window_width": "" if w is None else f"{w.width:g}",
        "voi_function": "" if w is None else w.function,
        "window": window,
        "invert": "" if d is None else ("yes" if d.invert else "no"),
        "status": r.status,
        "message": r.message,
        "patient_id": s.patient_id,
        "study_date": s.study_date,
        "study_description": s.study_description,
        "series_number": "" if s.number is None else str(s.number),
        "series_description": s.description,
        "modality": s.modality,
        "series_instance_uid": s.uid,
    }
    if deid is not None:  # see core.deid: what is replaced, left out and kept
        patient = r.folder.relative_to(root).parts[0] if r.folder is not None else ""
        row.update(source="", message="", patient_id=patient, study_date="",
                   study_description="", series_description="",
                   series_instance_uid=deid.uid(s.uid, record=True))
    return row


RUN_MANIFEST_HEADER = ",".join(RUN_MANIFEST_COLUMNS)


def check_run_manifest(out: str | os.PathLike[str], overwrite: bool = False) -> None:
    """Raise :class:`ExportRefused` when ``out/manifest.csv`` exists and napari-dicom did
    not write it as a run manifest (unless ``overwrite``)."""
    path = Path(out) / "manifest.csv"
    if overwrite or not (path.exists() or path.is_symlink()):
        return
    if path.is_file() and manifest_header(path) == RUN_MANIFEST_HEADER:
        return
    raise ExportRefused(
        f"{path} exists and was not written by napari-dicom: not overwritten", [path.name]
    )


def write_run_manifest(root: Path, results: Sequence[SeriesResult],
                       deid: Pseudonymizer | None = None) -> Path:
    """``root/manifest.csv``: one row per series (written atomically); de-identified
    rows with ``deid``."""
    from .export import write_atomic

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=RUN_MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in results:
        writer.writerow(_row(r, root, deid))
    root.mkdir(parents=True, exist_ok=True)
    path = root / "manifest.csv"
    write_atomic(path, buf.getvalue().encode("utf-8"))
    return path
