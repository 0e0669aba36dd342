"""Statistics of an image layer's values for data-driven windows, cached per plane.

:class:`LayerStats` answers "percentile stretch", "min-max" and "histogram" questions for
one array (numpy, dask or any array-like with ``shape``, ``dtype`` and slicing), over the
current plane or the whole series. It calls :mod:`core.render` for every formula
(``IntHistogram``, ``percentile_limits``); it only decides what data those formulas see
and keeps the results.

* Integer data: exact. Plane and series histograms (``IntHistogram``, Pixel Padding ranges
  left out) are built once and cached; the series is worked one plane at a time, and dask
  data is computed one slab of planes at a time, so the volume is never in memory at once.
* Float data: a plane is exact (``np.percentile`` through ``percentile_limits``). The series
  is exact when it holds at most :data:`FLOAT_EXACT_MAX` values and is a numpy array;
  otherwise every k-th plane (and, for huge planes, every s-th pixel of each row and
  column) is sampled into one float32 array of at most about :data:`FLOAT_SAMPLE_MAX`
  values. :attr:`LayerStats.method` says which.

"Planes" are the last two axes by default; the leading axes index them (C order). A plane
across other axes (the one napari shows after its dims were rolled or transposed, e.g. a
sagittal reformat of an axial series) is named by a full index with ``None`` on its two
axes, e.g. ``(None, 7, None)`` for ``data[:, 7, :]``.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np
import numpy.typing as npt

from .render import IntHistogram, WindowError, percentile_limits

#: float series up to this many values are worked exactly
FLOAT_EXACT_MAX = 1 << 24
#: a sampled float series holds about this many values
FLOAT_SAMPLE_MAX = 1 << 22
#: bytes of per-plane histograms kept in the cache (the series histogram is kept apart)
PLANE_CACHE_BYTES = 64 << 20
#: a dask slab (planes computed together) holds about this many bytes
SLAB_BYTES = 64 << 20

#: exact histograms of arrays the loader filled: id -> (weak reference, histogram or the
#: future that will hold it)
_KNOWN: dict[int, tuple[weakref.ref[Any], IntHistogram | Future[IntHistogram]]] = {}
_KNOWN_LOCK = threading.Lock()


def remember_histogram(
    arr: npt.NDArray[Any], hist: IntHistogram | Future[IntHistogram]
) -> None:
    """Keep ``hist`` (every value of ``arr``, nothing left out; or a future that will hold
    it) for :class:`LayerStats` of ``arr``: the loader sums it once the volume is loaded,
    so the series histogram is not made twice. Forgotten when ``arr`` is.

    The array must not be changed in place afterwards (nothing in napari-dicom does).
    """
    key = id(arr)

    def forget(_: Any, key: int = key) -> None:
        with _KNOWN_LOCK:
            _KNOWN.pop(key, None)

    with _KNOWN_LOCK:
        _KNOWN[key] = (weakref.ref(arr, forget), hist)


def histogram_pending(arr: Any) -> Future[IntHistogram] | None:
    """The future of the histogram :func:`remember_histogram` kept for this very array
    while it is still being summed (a caller that must not wait can be told when it is
    done), else ``None``."""
    with _KNOWN_LOCK:
        entry = _KNOWN.get(id(arr))
    if entry is None or entry[0]() is not arr:
        return None
    hist = entry[1]
    return hist if isinstance(hist, Future) and not hist.done() else None


def histogram_kept(arr: Any) -> bool:
    """Whether a histogram of this very array is kept (summed, or being summed)."""
    with _KNOWN_LOCK:
        entry = _KNOWN.get(id(arr))
    return entry is not None and entry[0]() is arr


def known_histogram(arr: Any) -> IntHistogram | None:
    """The histogram :func:`remember_histogram` kept for this very array (waiting for it
    when it is being summed), or ``None``."""
    with _KNOWN_LOCK:
        entry = _KNOWN.get(id(arr))
    if entry is None or entry[0]() is not arr:
        return None
    hist = entry[1]
    if isinstance(hist, Future):
        try:
            return hist.result()
        except (MemoryError, ValueError, WindowError):
            return None  # not summed: the caller counts the values itself
    return hist


Scope = str  # "slice" or "series"
SCOPES = ("slice", "series")


def _check_scope(scope: str) -> str:
    s = str(scope).strip().lower()
    if s in ("plane", "current slice", "slice"):
        return "slice"
    if s in ("volume", "whole series", "series", "all"):
        return "series"
    raise WindowError(f"unknown statistics scope {scope!r}: expected 'slice' or 'series'")


class LayerStats:
    """Cached statistics of ``data`` for percentile and min-max windows and histograms.

    Parameters
    ----------
    data
        ``(..., H, W)`` array: numpy, dask, or any array-like whose ``[i, j, ...]`` slicing
        returns something ``np.asarray`` can take.
    padding
        Closed value ranges to leave out, in the data's units: ``metadata["dicom"]["padding"]``
        (Pixel Padding Value / Range Limit, PS3.3 C.7.5.1.1.2).
    """

    def __init__(self, data: Any, padding: Iterable[Sequence[float]] = ()) -> None:
        self.data = data
        self.shape: tuple[int, ...] = tuple(int(s) for s in data.shape)
        if len(self.shape) < 2:
            raise WindowError(f"statistics need at least 2-D data, got shape {self.shape}")
        self.dtype = np.dtype(data.dtype)
        if self.dtype.kind not in "iubf":
            raise WindowError(f"statistics need integer or float data, got {self.dtype}")
        self.padding: list[tuple[float, float]] = [
            (float(min(p[0], p[1])), float(max(p[0], p[1]))) for p in padding
        ]
        self.lead: tuple[int, ...] = self.shape[:-2]
        self.n_planes = int(np.prod(self.lead)) if self.lead else 1
        self.integer = self.dtype.kind in "iub"
        self.lazy = not isinstance(data, np.ndarray)
        self._planes: dict[int | tuple[int | None, ...], IntHistogram] = {}
        self._plane_bytes = 0
        self._series: IntHistogram | None = None
        self._sample: npt.NDArray[Any] | None = None
        self._sample_method = ""
        self._series_range: tuple[float, float] | None = None

    # ------------------------------------------------------------------ description

    @property
    def method(self) -> str:
        """How series statistics are computed: ``"exact (per-plane histograms)"``,
        ``"exact"`` or ``"sampled (one plane in k...)"``."""
        if self.integer:
            return "exact (per-plane histograms)"
        if self._series_exact_float():
            return "exact"
        return self._sample_method or "sampled (" + self._sample_plan_text() + ")"

    # ------------------------------------------------------------------ planes

    def plane_number(self, index: Sequence[int] | None) -> int:
        """Flat plane number for ``index`` over the leading axes (clipped into range).

        ``index`` may be longer than the number of leading axes (only the last ones are
        used) or ``None`` (plane 0).
        """
        if not self.lead:
            return 0
        idx = list(index or [])
        idx = idx[-len(self.lead) :] if len(idx) >= len(self.lead) else [0] * (
            len(self.lead) - len(idx)
        ) + idx
        clipped = [min(max(int(i), 0), n - 1) for i, n in zip(idx, self.lead, strict=True)]
        return int(np.ravel_multi_index(clipped, self.lead))

    def plane_key(
        self, index: Sequence[int | None] | None
    ) -> int | tuple[int | None, ...]:
        """Which plane ``index`` names: a flat plane number over the leading axes (planes
        on the last two axes, see :meth:`plane_number`), or, for a full index with
        ``None`` on exactly two axes, that index with the other entries clipped into range
        (a plane across any two axes)."""
        idx = list(index or [])
        free = [i for i, v in enumerate(idx) if v is None]
        if not free:
            return self.plane_number([int(v) for v in idx if v is not None])
        if len(idx) != len(self.shape) or len(free) != 2:
            raise WindowError(
                f"a plane index names 2 free axes of {len(self.shape)}: got {tuple(idx)}"
            )
        if free == [len(self.shape) - 2, len(self.shape) - 1]:
            return self.plane_number([int(v) for v in idx[:-2] if v is not None])
        return tuple(
            None if v is None else min(max(int(v), 0), n - 1)
            for v, n in zip(idx, self.shape, strict=True)
        )

    def _plane(self, k: int | tuple[int | None, ...]) -> npt.NDArray[Any]:
        if isinstance(k, tuple):
            return np.asarray(self.data[tuple(slice(None) if v is None else v for v in k)])
        if not self.lead:
            return np.asarray(self.data)
        return np.asarray(self.data[np.unravel_index(k, self.lead)])

    def _hist_of(self, plane: npt.NDArray[Any]) -> IntHistogram:
        return IntHistogram.of(plane, self.padding)

    def plane_histogram(self, index: Sequence[int | None] | None) -> IntHistogram:
        """Exact histogram of one plane (integer data), padding left out; cached."""
        if not self.integer:
            raise WindowError("exact histograms need integer data")
        k = self.plane_key(index)
        h = self._planes.get(k)
        if h is None:
            h = self._hist_of(self._plane(k))
            self._keep(k, h)
        return h

    def _keep(self, k: int | tuple[int | None, ...], h: IntHistogram) -> None:
        if self._plane_bytes + h.counts.nbytes <= PLANE_CACHE_BYTES:
            self._planes[k] = h
            self._plane_bytes += h.counts.nbytes

    def _slabs(self) -> Iterator[tuple[int, npt.NDArray[Any]]]:
        """Yield ``(first plane number, planes)`` with planes shaped ``(n, H, W)``."""
        if not self.lead:
            yield 0, np.asarray(self.data)[None]
            return
        plane_bytes = self.shape[-2] * self.shape[-1] * self.dtype.itemsize
        flat = self.data.reshape((self.n_planes, *self.shape[-2:]))
        if isinstance(flat, np.ndarray):
            yield 0, flat
            return
        step = max(1, SLAB_BYTES // max(plane_bytes, 1))
        chunks = getattr(flat, "chunks", None)
        if chunks:
            # follow the chunk boundaries along the plane axis, capped at SLAB_BYTES
            step = max(1, min(step, max(int(c) for c in chunks[0])))
        for k0 in range(0, self.n_planes, step):
            yield k0, np.asarray(flat[k0 : k0 + step])

    def series_histogram(self) -> IntHistogram:
        """Exact histogram of every plane (integer data), padding left out; cached.

        A numpy volume goes through ``IntHistogram.of`` in one call (it works plane by
        plane); a lazy one is computed one slab of planes at a time and the slab
        histograms are summed.
        """
        if not self.integer:
            raise WindowError("exact histograms need integer data")
        if self._series is None:
            known = known_histogram(self.data)
            if known is None and hasattr(self.data, "series_histogram"):
                known = self.data.series_histogram()  # a SeriesVolume: summed as it loads
            if known is not None:
                for r0, r1 in self.padding:
                    known = known.without(r0, r1)
                self._series = known.trimmed()
                return self._series
            total = IntHistogram(0, np.zeros(0, np.int64))
            for _, slab in self._slabs():
                total = total + self._hist_of(slab)
            self._series = total.trimmed()
        return self._series

    # ------------------------------------------------------------------ float sampling

    def _series_exact_float(self) -> bool:
        return not self.lazy and math.prod(self.shape) <= FLOAT_EXACT_MAX

    def _sample_plan(self) -> tuple[int, int]:
        """(plane step k, pixel stride s) so the sample holds about FLOAT_SAMPLE_MAX values."""
        per_plane = self.shape[-2] * self.shape[-1]
        s = 1
        while per_plane // (s * s) > FLOAT_SAMPLE_MAX // 4:
            s += 1
        kept = per_plane // (s * s) or 1
        k = max(1, math.ceil(self.n_planes * kept / FLOAT_SAMPLE_MAX))
        return k, s

    def _sample_plan_text(self) -> str:
        k, s = self._sample_plan()
        text = "every plane" if k == 1 else f"one plane in {k}"
        if s > 1:
            text += f", one pixel in {s} along each axis"
        return text

    def _float_series_values(self) -> npt.NDArray[Any]:
        """The series (exact) or its documented sample, as an array for ``percentile_limits``."""
        if self._series_exact_float():
            return np.asarray(self.data)
        if self._sample is None:
            k, s = self._sample_plan()
            parts = []
            for p in range(0, self.n_planes, k):
                plane = self._plane(p)[::s, ::s]
                parts.append(np.asarray(plane, dtype=np.float32).ravel())
            self._sample = np.concatenate(parts) if parts else np.zeros(0, np.float32)
            self._sample_method = "sampled (" + self._sample_plan_text() + ")"
        return self._sample

    # ------------------------------------------------------------------ answers

    def percentile_limits(
        self,
        lo_q: float = 1.0,
        hi_q: float = 99.0,
        ignore_extremes: bool = False,
        scope: Scope = "series",
        index: Sequence[int | None] | None = None,
    ) -> tuple[float, float]:
        """Contrast limits ``(P_lo, P_hi)`` over the plane at ``index`` or the series.

        Pixel Padding ranges are left out; ``ignore_extremes`` also leaves out every value
        equal to the minimum or maximum (see :func:`core.render.percentile_limits`).
        Integer data gives exactly ``np.percentile`` of those values.
        """
        sc = _check_scope(scope)
        if self.integer:
            h = self.plane_histogram(index) if sc == "slice" else self.series_histogram()
            return percentile_limits(h, lo_q, hi_q, ignore_extremes)
        values = (
            self._plane(self.plane_key(index)) if sc == "slice" else self._float_series_values()
        )
        return percentile_limits(values, lo_q, hi_q, ignore_extremes, self.padding)

    def minmax(
        self, scope: Scope = "series", index: Sequence[int | None] | None = None
    ) -> tuple[float, float]:
        """Smallest and largest value (finite, padding left out) of the plane or series.

        Exact for every dtype (float series are scanned plane by plane, not sampled).
        """
        sc = _check_scope(scope)
        if self.integer:
            h = self.plane_histogram(index) if sc == "slice" else self.series_histogram()
            if h.total == 0:
                raise WindowError("no values left once the pixel padding is left out")
            return float(h.min()), float(h.max())
        if sc == "slice":
            return _float_range(self._plane(self.plane_key(index)), self.padding)
        if self._series_range is None:
            lo, hi = math.inf, -math.inf
            for _, slab in self._slabs():
                for j in range(slab.shape[0]):
                    try:
                        a, b = _float_range(slab[j], self.padding)
                    except WindowError:
                        continue  # a plane of padding / NaN only
                    lo, hi = min(lo, a), max(hi, b)
            if lo > hi:
                raise WindowError("no finite values left once the pixel padding is left out")
            self._series_range = (lo, hi)
        return self._series_range

    def histogram(
        self,
        bins: int = 256,
        scope: Scope = "series",
        index: Sequence[int | None] | None = None,
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """``(edges, counts)`` for display: ``bins`` equal bins from min to max (padding
        left out). Show ``np.log1p(counts)`` for a log scale."""
        sc = _check_scope(scope)
        lo, hi = self.minmax(sc, index)
        if hi <= lo:
            hi = lo + 1.0
        edges = np.linspace(lo, hi, bins + 1)
        if self.integer:
            h = self.plane_histogram(index) if sc == "slice" else self.series_histogram()
            values = h.offset + np.arange(h.counts.size)
            idx = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, bins - 1)
            counts = np.bincount(idx, weights=h.counts, minlength=bins).astype(np.int64)
            return edges, counts
        values = (
            self._plane(self.plane_key(index)) if sc == "slice" else self._float_series_values()
        )
        v = np.asarray(values).ravel()
        v = v[np.isfinite(v)]
        for r0, r1 in self.padding:
            v = v[(v < r0) | (v > r1)]
        counts, _ = np.histogram(v, bins=edges)
        return edges, counts.astype(np.int64)


def _float_range(
    a: npt.NDArray[Any], padding: Sequence[tuple[float, float]]
) -> tuple[float, float]:
    v = np.asarray(a).ravel()
    v = v[np.isfinite(v)] if v.dtype.kind == "f" else v
    for r0, r1 in padding:
        v = v[(v < r0) | (v > r1)]
    if v.size == 0:
        raise WindowError("no finite values left once the pixel padding is left out")
    return float(v.min()), float(v.max())


def histogram_image(
    edges: npt.NDArray[Any],
    counts: npt.NDArray[Any],
    limits: tuple[float, float] | None,
    width: int = 256,
    height: int = 72,
    invert: bool = False,
) -> npt.NDArray[np.uint8]:
    """A small RGB picture of a histogram with log counts and the window drawn on it.

    Bars are light grey on dark grey; the span between the contrast ``limits`` is tinted
    and its ends are drawn as yellow lines; a ramp under the bars shows the grey level
    each value gets (reversed when ``invert``). Returns ``(height, width, 3)`` uint8.
    """
    counts = np.asarray(counts, dtype=np.float64)
    img = np.full((height, width, 3), 40, np.uint8)
    ramp_h = max(4, height // 8)
    bar_h = height - ramp_h - 1
    lo_e, hi_e = float(edges[0]), float(edges[-1])
    xs = lo_e + (np.arange(width) + 0.5) / width * (hi_e - lo_e)
    # counts resampled onto the pixel columns (max of the bins that fall in a column)
    col = np.clip(((np.arange(counts.size) + 0.5) / counts.size * width).astype(int), 0, width - 1)
    per_col = np.zeros(width)
    np.maximum.at(per_col, col, np.log1p(counts))
    top = per_col.max() or 1.0
    heights = np.round(per_col / top * (bar_h - 2)).astype(int)
    rows = np.arange(bar_h)[:, None]
    bars = rows >= (bar_h - heights)[None, :]
    if limits is not None:
        lo, hi = float(limits[0]), float(limits[1])
        inside = (xs >= lo) & (xs <= hi)
        img[:bar_h, inside] = (58, 58, 74)
        ramp = np.clip((xs - lo) / (hi - lo) if hi > lo else (xs > lo).astype(float), 0, 1)
    else:
        ramp = (xs - lo_e) / (hi_e - lo_e)
    img[:bar_h][bars] = (200, 200, 200)
    if invert:
        ramp = 1.0 - ramp
    grey = np.round(ramp * 255).astype(np.uint8)
    img[height - ramp_h :, :, :] = grey[None, :, None]
    if limits is not None:
        for v in (lo, hi):
            if lo_e <= v <= hi_e:
                x = int(np.clip((v - lo_e) / (hi_e - lo_e) * width, 0, width - 1))
                img[:bar_h, x] = (255, 210, 0)
    return img
