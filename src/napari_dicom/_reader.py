"""napari reader: DICOM files, folders and DICOMDIRs -> one image layer per series.

A thin adapter: finding and grouping files is ``core.scan``, pixels and the default display
are ``core.pixels``; this module only turns them into napari LayerData tuples and tells
the user, in plain words, what was skipped.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .core.adjust import showable_limits
from .core.geometry import layer_geometry
from .core.pixels import (
    CT_DEFAULT_WINDOW,
    DicomLoadError,
    default_display,
    plane_windows_note,
    series_metadata,
    value_range,
)
from .core.scan import ScanResult
from .core.volume import SeriesVolume, VolumeView, open_series

log = logging.getLogger(__name__)

PathLike = str | Sequence[str]
LayerData = tuple[Any, dict[str, Any], str]
ReaderFunction = Callable[[PathLike], list[LayerData]]

_SUFFIXES = (".dcm", ".dicom", ".ima")
#: URLs of series on a DICOMweb server (``core.dicomweb``)
_URL_SCHEMES = ("dicomweb+http://", "dicomweb+https://")
#: show a napari progress bar from this many files / planes on
_PROGRESS_FROM = 50
#: seconds before a progress bar appears, and at least between two of its updates
_PROGRESS_FIRST = 0.5
_PROGRESS_EVERY = 0.2
#: the most of the time progress bar updates may take
_PROGRESS_SHARE = 0.05
#: the Qt bindings napari runs on (through qtpy): a QApplication needs one's QtWidgets
_QT_BINDINGS = ("PyQt5", "PyQt6", "PySide2", "PySide6")


def _folder_has_image(folder: Path) -> bool:
    """Whether a walk of ``folder`` finds a DICOM image (``core.scan.has_image``: stops at
    the first one, links followed once, only regular files opened, hidden files too); a
    folder of reports or structure sets only, or with no DICOM at all, is not claimed."""
    from .core.scan import has_image

    return has_image(folder)


def _claims(path: str | os.PathLike[str]) -> bool:
    from .core.safety import HEADER_ERRORS
    from .core.scan import is_dicom_file

    if isinstance(path, str) and path.lower().startswith(_URL_SCHEMES):
        return True  # a DICOMweb study or series (checked when read)
    p = Path(path)
    try:
        if p.is_dir():
            return _folder_has_image(p)
        if p.name.upper() == "DICOMDIR" and p.is_file():
            return True  # its folder is read; a damaged or empty one gets a clear message
        if p.is_file():
            # a single non-image object (say an SR) is claimed, to say what it is
            return is_dicom_file(p)
    except (OSError, *HEADER_ERRORS):  # get_reader never raises
        return False
    return False


def napari_get_reader(path: PathLike) -> ReaderFunction | None:
    """Return :func:`read_dicom` when ``path`` holds DICOM, else ``None`` (never raises).

    Files are probed by their preamble and header (``core.scan.is_dicom_file``), never by
    decoding pixels; a folder is claimed when a walk finds one DICOM file.
    """
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    if not paths:
        return None
    if any(_claims(p) for p in paths):
        return read_dicom
    return None


def _progress_bar(
    total_hint: int, desc: str, clock: Callable[[], float] = time.monotonic
) -> tuple[Any, Callable[[int, int], None]]:
    """A napari progress bar driven by ``callback(done, total)``, throttled by time.

    In the GUI each update of a napari progress bar repaints the window (2 ms to 90 ms
    measured, far more than reading a file's header), so the bar appears only once the
    work has run :data:`_PROGRESS_FIRST` seconds (a quick open shows none) and then moves
    at most every :data:`_PROGRESS_EVERY` seconds, and never more often than keeps its
    updates under :data:`_PROGRESS_SHARE` of the time.
    """
    from napari.utils import progress

    state: dict[str, Any] = {"bar": None, "done": 0, "next": clock() + _PROGRESS_FIRST}

    def callback(done: int, total: int) -> None:
        now = clock()
        if total < _PROGRESS_FROM or now < state["next"]:
            return
        bar = state["bar"]
        if bar is None:
            bar = state["bar"] = progress(total=total, desc=desc)
        bar.update(done - state["done"])
        state["done"] = done
        after = clock()
        state["next"] = after + max(_PROGRESS_EVERY, (after - now) / _PROGRESS_SHARE)

    return state, callback


def _close(state: dict[str, Any]) -> None:
    if state.get("bar") is not None:
        state["bar"].close()


def _notify_scan(result: ScanResult) -> None:
    """Tell the user, in plain words, what the scan found and left out."""
    from napari.utils.notifications import show_info, show_warning

    # a series' own warnings are shown when it is opened, under its layer name, and the
    # skipped files in one summary below: each is said once
    per_series = {w for s in result.series for w in s.warnings}
    skipped = {f"skipped {s.reason}" for s in result.skipped}
    for w in _unique(result.warnings):
        if w not in per_series and w not in skipped:
            show_warning(w)
    if result.skipped:
        names = "; ".join(s.reason for s in result.skipped[:3])
        more = f" (and {len(result.skipped) - 3} more)" if len(result.skipped) > 3 else ""
        show_warning(f"{len(result.skipped)} DICOM file(s) skipped: {names}{more}")
    if result.non_image:
        kinds = sorted({s.reason for s in result.non_image})
        show_info(
            f"{len(result.non_image)} DICOM object(s) without an image not opened: "
            + ", ".join(kinds[:4]) + (" ..." if len(kinds) > 4 else "")
        )
    if result.non_dicom:
        log.info("napari-dicom: %d file(s) that are not DICOM were ignored", result.non_dicom)


def read_dicom(path: PathLike) -> list[LayerData]:
    """Read DICOM files / folders into one image layer per series.

    Each layer carries ``metadata["dicom"]`` (see ``core.meta``), its place in patient space
    (``core.geometry``: scale/translate or affine, units, axis labels) and the file's
    default display (stored window, VOI LUT, or min-max without padding), MONOCHROME1
    shown through ``gray_r`` (data unaltered).

    Raises
    ------
    DicomLoadError
        When nothing readable is found; napari shows the message as a notification.
    """
    from napari.utils.notifications import show_info, show_warning

    from ._colormaps import layer_display_kwargs
    from .core.scan import scan

    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    sources = [os.fspath(p) for p in paths]
    state, cb = _progress_bar(0, "Reading DICOM headers")
    try:
        result = scan(sources, progress=cb)
    finally:
        _close(state)
    _notify_scan(result)
    where = ", ".join(str(p) for p in paths[:3]) + (" ..." if len(paths) > 3 else "")
    if result.objects:
        _add_referenced_series(result)
    if not result.series and not result.objects:
        why = [s.reason for s in [*result.skipped, *result.non_image][:3]]
        raise DicomLoadError(
            f"no DICOM image could be read from {where}: {'; '.join(why) or result.summary()}"
        )

    layers: list[LayerData] = []
    failures: list[str] = []
    for series in result.series:
        try:
            data = open_series(series)
        except DicomLoadError as exc:
            failures.append(str(exc))
            show_warning(f"{series.name}: not opened: {exc}")
            continue
        loading = data if isinstance(data, SeriesVolume) else None
        # an uncompressed series that loads within a quarter second is shown in memory:
        # napari then draws it once, with no decode threads beside its own work and no
        # swap (issue 11); the window and the slider's range still come from the lazy
        # volume, so the picture does not depend on how fast the disk was
        settled = loading.settle() if loading is not None and loading.quick else None
        display, note = default_display(series, data)
        widen = loading.may_widen_to if loading is not None else None  # before dtype
        value_range = _value_range(series, data)
        if settled is not None:
            data, loading = settled, None
        dtype = data.dtype
        meta = series_metadata(series, display, note, dtype=dtype,
                               may_widen=widen if widen != dtype else None)
        data, geometry, meta["placement"] = layer_geometry(series, data)
        kwargs: dict[str, Any] = {"name": series.name, **geometry, "metadata": {"dicom": meta}}
        if series.rgb:
            kwargs["contrast_limits"] = list(showable_limits(*display.window.limits()))
        else:
            kwargs.update(layer_display_kwargs(display, inverted=series.invert))
            meta["value_range"] = list(value_range)
        layers.append((data, kwargs, "image"))
        for w in _unique([*series.warnings, *meta["placement"].get("warnings", [])]):
            show_warning(_named(series.name, w))
        if not meta["default_stored"] and display.window == CT_DEFAULT_WINDOW:
            show_info(f"{series.name}: {note}")  # a window chosen here, not the file's
        own = plane_windows_note(series)  # per-frame windows: say what the layer shows
        if own:
            show_info(f"{series.name}: {own}")
        if loading is not None:
            _swap_when_loaded(loading, data, told=len(series.warnings))
        layers.extend(_overlay_layers(series))
    if result.objects:
        layers.extend(_object_layers(result.objects, result.series))
    if not layers:
        raise DicomLoadError(f"no DICOM series could be loaded from {where}: "
                             + "; ".join(failures or [result.summary()]))
    _widen_ranges_of_current_viewer()
    return layers


def _add_referenced_series(result: ScanResult) -> None:
    """A SEG / RTSTRUCT opened without its images: add the series it refers to from its
    own folder (header scan; only those series are opened)."""
    from napari.utils.notifications import show_warning

    from .core.objects import find_referenced_series
    from .core.scan import scan

    found, warns = find_referenced_series(result.objects, result.series,
                                          lambda folder: scan([folder]).series)
    for w in warns:
        show_warning(w)
    result.series.extend(found)
    result.series.sort(key=lambda s: s.sort_key())


def _object_layers(objects: Sequence[str], series: Sequence[Any]) -> list[LayerData]:
    """SEG and RTSTRUCT layers, each placed by the function that places its image."""
    from napari.utils.notifications import show_warning

    from .core.objects import object_layers

    layers, warns = object_layers(objects, series)
    for w in _unique(warns):
        show_warning(w)
    return [label_layer_data(layer) for layer in layers]


def _overlay_layers(series: Any) -> list[LayerData]:
    """Overlay planes (60xx) of an image series as Labels layers beside it."""
    from napari.utils.notifications import show_warning

    from .core.overlay import overlay_layers

    layers, warns = overlay_layers(series)
    for w in _unique(warns):
        show_warning(w)
    return [label_layer_data(layer) for layer in layers]


def label_layer_data(layer: Any) -> LayerData:
    """A :class:`~napari_dicom.core.labels.LabelLayer` as napari LayerData, placed by its
    image's own geometry (:func:`napari_dicom.core.labels.placed`)."""
    from .core.labels import placed
    from .core.objects import label_metadata

    data, geometry, stored = placed(layer)
    meta = {**label_metadata(layer), "placement": stored}
    kwargs: dict[str, Any] = {"name": layer.name, **geometry, "visible": layer.visible,
                              "metadata": {"segmentation": meta}}
    colours = _segment_colours(layer.segments)
    if layer.kind == "labels":
        kwargs["colormap"] = {0: (0.0, 0.0, 0.0, 0.0), None: (1.0, 1.0, 0.0, 1.0),
                              **{v: (*c, 1.0) for v, c in colours.items()}}
        kwargs["features"] = _features(layer.segments)
        kwargs["opacity"] = 0.6
        return (data, kwargs, "labels")
    if layer.kind == "image":
        from napari.utils.colormaps import Colormap

        rgb = colours[layer.segments[0].value]
        kwargs["colormap"] = Colormap([[*rgb, 0.0], [*rgb, 1.0]],
                                      name=f"{layer.segments[0].label} fraction")
        kwargs["contrast_limits"] = [0.0, 1.0]
        kwargs["blending"] = "translucent"
        return (data, kwargs, "image")
    by_value = {s.value: s for s in layer.segments}
    kwargs["shape_type"] = "polygon"
    kwargs["edge_color"] = [(*colours[v], 1.0) for v in layer.shape_values]
    kwargs["face_color"] = "transparent"
    kwargs["edge_width"] = 1.0
    kwargs["features"] = {"value": list(layer.shape_values),
                          "roi": [by_value[v].label for v in layer.shape_values]}
    return (data, kwargs, "shapes")


def _segment_colours(segments: Sequence[Any]) -> dict[int, tuple[float, float, float]]:
    """Each segment's own colour; napari's label colour for those without one."""
    from napari.utils.colormaps import label_colormap

    cycle = label_colormap()
    out: dict[int, tuple[float, float, float]] = {}
    for s in segments:
        r, g, b = s.colour if s.colour is not None else cycle.map(s.value)[:3]
        out[s.value] = (float(r), float(g), float(b))
    return out


def _features(segments: Sequence[Any]) -> dict[str, list[Any]]:
    return {"index": [s.value for s in segments], "label": [s.label for s in segments],
            "description": [s.description for s in segments]}


def _swap_when_loaded(volume: SeriesVolume, shown: Any, told: int) -> None:
    """Once ``volume`` is in memory, give every layer showing it (as ``shown``: the volume
    or its patient-space view) the finished numpy array, arranged the same way, on the GUI
    thread: 3-D, the widget's statistics and ``np.asarray(layer.data)`` then run at memory
    speed. Contrast limits, colormap and the shown plane stay as they are.

    Without a Qt application (a headless ``ViewerModel``, a script) nothing is swapped:
    indexing the volume and ``np.asarray`` already read the finished array; and a process
    that has not imported Qt cannot have one, so reading there does not import Qt (~0.2 s
    and a display library a script does not need). Damaged planes found by the background
    load (the series' warnings after the first ``told``) are notified then.
    """
    if not volume.in_memory:
        return
    if not _qt_loaded():
        return
    from qtpy.QtWidgets import QApplication

    if QApplication.instance() is None:
        return
    from superqt.utils import ensure_main_thread

    @ensure_main_thread
    def swap(_: Any) -> None:
        from napari import Viewer

        viewers = list(getattr(Viewer, "_instances", ()))
        swapped = False
        for viewer in viewers:
            for layer in viewer.layers:
                if layer.data is shown:
                    _hand_over(layer, volume, shown)
                    swapped = True
        if not swapped:  # loaded before napari added the layer: swap when it does
            _swap_on_insert(viewers, weakref.ref(shown))
        from napari.utils.notifications import show_warning

        series = volume.series
        for w in _unique(series.warnings[told:]):
            show_warning(f"{series.name}: {w}")

    volume.when_loaded(swap)


def _swap_on_insert(viewers: Sequence[Any], shown: weakref.ref[Any]) -> None:
    """Give the layer showing ``shown`` (a loaded volume or its view) the finished array
    when a viewer adds it: once; a layer napari never adds leaves a callback that holds
    nothing (weak reference)."""

    def inserted(event: Any) -> None:
        data = shown()
        if data is None or event.value.data is not data:
            return
        for viewer in viewers:
            viewer.layers.events.inserted.disconnect(inserted)
        _hand_over(event.value, data.base if isinstance(data, VolumeView) else data, data)

    for viewer in viewers:
        viewer.layers.events.inserted.connect(inserted)


def _hand_over(layer: Any, volume: SeriesVolume, shown: Any) -> None:
    """``layer`` (showing ``shown``) gets the finished array; its summary names the
    dtype the volume ended in (int32 when a plane needed it)."""
    from .core.pixels import describe_series

    layer.data = volume.finished(shown)
    meta = (layer.metadata or {}).get("dicom")
    if meta is not None and "summary" in meta:
        note = meta.get("default_source") or "its default display"
        meta["summary"] = describe_series(volume.series, layer.data.dtype, note)


def _qt_loaded() -> bool:
    """Whether this process imported a Qt binding's widgets: without them it has no
    QApplication and no napari window (a script, a headless ``ViewerModel``)."""
    return any(f"{binding}.QtWidgets" in sys.modules for binding in _QT_BINDINGS)


def _value_range(series: Any, data: Any) -> tuple[float, float]:
    """What napari's contrast slider should span: the data's min and max when it is in
    memory (one pass, ~0.1 ms a 512 x 512 plane), else the values the pixels can take."""
    if isinstance(data, np.ndarray) and data.size:
        return float(data.min()), float(data.max())
    return value_range(series)


def _widen_ranges_of_current_viewer() -> None:
    """napari sets a new layer's ``contrast_limits_range`` to the contrast limits it was
    given (the stored window), so its own slider could only narrow the window, and a
    reader cannot pass a range. The viewer that is opening the files widens the range of
    each layer it adds to ``metadata["dicom"]["value_range"]``."""
    if not _qt_loaded():
        return  # no napari window without Qt (napari.current_viewer would import it)
    from napari import current_viewer

    viewer = current_viewer()
    if viewer is None:
        return
    emitter = viewer.layers.events.inserted
    if _widen_range not in emitter.callbacks:
        emitter.connect(_widen_range)


def _widen_range(event: Any) -> None:
    layer = event.value
    meta = (getattr(layer, "metadata", None) or {}).get("dicom") or {}
    vr = meta.get("value_range")
    if vr is None or getattr(layer, "rgb", True):
        return
    lo, hi = (float(v) for v in layer.contrast_limits)
    layer.contrast_limits_range = (min(float(vr[0]), lo), max(float(vr[1]), hi))


def _named(name: str, warning: str) -> str:
    """``warning`` under the layer's name, unless it already starts with the series'
    description (which the name holds): "1 CT Chest: gap ...", not "1 CT Chest: Chest: ..."."""
    head, sep, _ = warning.partition(": ")
    return warning if sep and head in name else f"{name}: {warning}"


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
