"""A series' modality values: first plane at once, the whole volume soon after, each plane
decoded once.

:func:`open_series` is what the reader shows. It returns

* a numpy array for a small series (loaded now, in well under the time a user notices);
* a :class:`SeriesVolume` that fills one preallocated array on background threads when
  the series fits the memory budget (:func:`memory_budget`): indexing it decodes the
  planes asked for at once (the one napari shows first), the rest are decoded by the
  background threads; :meth:`SeriesVolume.result` is the finished numpy array, which the
  reader swaps into the layer;
* a :class:`SeriesVolume` that stays lazy, with a cache of recently used planes, when the
  series does not fit the budget.

The choice is made on the memory the array needs against the memory available, never
on a plane count.

Values are held in the smallest dtype that holds them exactly. Where the header's range
needs ``int32`` (a CT with Bits Stored 16 and Rescale Intercept -1024) the array starts as
``int16``; a plane whose decoded values do not fit widens the array to ``int32`` then and
there (never a wrapped value), without decoding anything again.

Every plane is decoded once: by the thread that asks for it first, the others wait for
it. The exact histogram of the integer values (what the Window / Level widget's
whole-series histogram and percentiles read) is summed on the background thread once
the volume is in memory and handed over (summing it while decoding slowed the load by a
third on uncompressed series; summing it before the hand-over delayed the swap into the
layer by 15-20 % of the open) and kept with the array
(:func:`~napari_dicom.core.stats.remember_histogram`; while it is being summed,
:func:`~napari_dicom.core.stats.histogram_pending` says so), so the widget waits for that
one pass instead of making its own.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.pixels import iter_pixels, pixel_array  # type: ignore[attr-defined]

from . import counting, safety
from . import pixels as px
from .output import interrupts_to_main_thread
from .render import IntHistogram, WindowError
from .stats import histogram_kept, remember_histogram

if TYPE_CHECKING:
    from .series import Series

__all__ = [
    "BACKGROUND_BYTES",
    "BEHIND_BYTES",
    "CACHE_BYTES",
    "MEMORY_FRACTION",
    "SeriesVolume",
    "VolumeView",
    "histogram_behind",
    "load_now",
    "memory_available",
    "memory_budget",
    "open_series",
]

log = logging.getLogger(__name__)

#: a series whose array needs at most this fraction of the available memory is loaded
#: into memory; a larger one stays lazy
MEMORY_FRACTION = safety.BUDGET_FRACTION
#: arrays up to this size are loaded before the reader returns (tens of milliseconds);
#: larger ones show their first plane at once and load in the background
BACKGROUND_BYTES = 32 << 20
#: decoded planes a lazy (too large) series keeps, at most
CACHE_BYTES = 512 << 20
#: an uncompressed series up to this size decodes in about 0.1 s here (2 threads,
#: files cached): :meth:`SeriesVolume.settle` may wait for it
SETTLE_BYTES = 160 << 20
#: how long the reader waits for such a series before it shows it loading behind
SETTLE_SECONDS = 0.25
#: integer volumes from this size on load the compiled counting loop
#: (:func:`.counting.warm_up`) while they decode: their histogram with ``np.bincount``
#: would take over 0.15 s once they are in memory (0.3 s per 1000 planes of 512 x 512)
COMPILED_FROM = 256 << 20

Progress = Callable[[int, int], None]

_TODO, _BUSY, _DONE = 0, 1, 2


def memory_available() -> int:
    """Bytes of memory available to a new allocation without swapping (Linux
    ``MemAvailable``, elsewhere the free physical pages; within an ``RLIMIT_AS``)."""
    return safety.memory_available()


def memory_budget() -> int:
    """Bytes a whole series array may take: the one budget of ``core.safety`` (by default
    :data:`MEMORY_FRACTION` of :func:`memory_available`; ``NAPARI_DICOM_MEMORY_BUDGET``
    sets it)."""
    return safety.memory_budget(memory_available())


def _narrow_dtype(series: Series) -> tuple[np.dtype[Any], np.dtype[Any]]:
    """``(start, safe)``: the dtype the array starts in and the one every value fits."""
    safe = px.value_dtype(series)
    start = np.dtype(np.int16) if safe == np.int32 and not series.rgb else safe
    return start, safe


def array_bytes(series: Series) -> int:
    """Bytes of the series' array in the dtype it starts in."""
    return int(np.prod(series.shape, dtype=np.int64)) * _narrow_dtype(series)[0].itemsize


class _Planes:
    """Decodes the planes of a series into one array (``keep=True``) or hands each one
    to its caller (``keep=False``), each plane decoded once however many threads ask.

    Plane states: to do, being decoded (by one thread; the others wait on the condition),
    done. A failed plane is done with ``failed[k]`` set (filled by the owner).
    """

    def __init__(self, series: Series, *, keep: bool) -> None:
        px._check_series(series)
        self.series = series
        self.dtype, self.safe = _narrow_dtype(series)
        self.n = len(series.planes)
        self.pshape = px._plane_shape(series)
        self.state = np.zeros(self.n, np.uint8)
        self.cond = threading.Condition()
        self.failed: dict[int, str] = {}
        #: a fault of the series' source (a server that stopped answering): the planes it
        #: hit stay to do (never filled), and whoever waits for them gets this error
        self.error: px.SourceError | None = None
        self._first: dict[int, npt.NDArray[Any]] = {}
        self.fast = px._use_fast(series, keep=self._first)
        self.out: npt.NDArray[Any] | None = (
            np.empty((self.n, *self.pshape), self.dtype) if keep else None)
        self.histogram_on = not series.rgb and self.dtype.kind in "iu"
        #: ``sink(k, values)`` gets each plane when the planes are not kept
        self.sink: Callable[[int, npt.NDArray[Any]], None] | None = None

    # ------------------------------------------------------------------ claiming

    def claim(self, ks: Sequence[int]) -> list[int]:
        """Mark the planes of ``ks`` still to do as being decoded by the caller."""
        with self.cond:
            mine = [k for k in ks if self.state[k] == _TODO]
            self.state[mine] = _BUSY
        return mine

    def wait(self, ks: Sequence[int]) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.error is not None or bool(
                np.all(self.state[list(ks)] == _DONE)))
            if self.error is not None and not np.all(self.state[list(ks)] == _DONE):
                raise self.error

    def all_done(self) -> bool:
        with self.cond:
            return bool(np.all(self.state == _DONE))

    # ------------------------------------------------------------------ decoding

    def decode(self, ks: Sequence[int], path: str | None = None) -> None:
        """Decode the claimed planes ``ks`` (of one file when ``path`` is given: a run of
        a multi-frame file is read in one pass) and store them.

        Each plane fails on its own: one frame of another size, or one a decoder
        refuses, is named and filled while the others load (a run read in one pass that
        breaks off goes on with :meth:`_rest_of_file`)."""
        series = self.series
        if path is None or len(ks) == 1 or self.fast or series.source is not None:
            for i, k in enumerate(ks):
                try:
                    arr, ds = self._decode_one(k)
                    self._store(k, arr, ds)
                except px._MissingDecoder:
                    self._give_up(ks[i:], "no decoder")
                    raise
                except px.SourceError as exc:
                    self._source_fault(ks[i:], exc)
                    raise
                except (px.DicomLoadError, *px._DECODE_ERRORS) as exc:
                    self._give_up([k], px._reason(exc))
            return
        frames = [series.planes[k].frame or 0 for k in ks]
        ds_out = Dataset() if series.photometric.startswith("PALETTE") else None
        read = 0
        try:  # a codestream larger than the header is not decoded at all (core.safety)
            px._check_codestream(path, series, px._fragment_heads(path, series.planes[ks[0]]))
        except px.DicomLoadError as exc:
            self._give_up(ks, px._reason(exc))
            return
        try:
            src: str | Dataset = path
            with px._panics_as_errors():
                whole = px._read_whole(series, path)
                if whole is not None:
                    src = ds_out = whole
                for k, arr in zip(ks, iter_pixels(src, indices=frames, ds_out=ds_out),
                                  strict=True):
                    read += 1
                    try:
                        self._store(k, arr, ds_out)
                    except (px.DicomLoadError, *px._DECODE_ERRORS) as exc:  # another size
                        self._give_up([k], px._reason(exc))
        except NotImplementedError as exc:
            self._give_up(ks[read:], "no decoder")
            msg = px.missing_decoder_message(series.transfer_syntax, path)
            raise px._MissingDecoder(msg or f"{path}: {exc}") from exc
        except (px.DicomLoadError, *px._DECODE_ERRORS) as exc:
            self._rest_of_file(path, ks[read:], exc)

    def _source_fault(self, ks: Sequence[int], exc: px.SourceError) -> None:
        """The series' source failed (a server stopped answering): planes ``ks`` are not
        damaged, they stay to do (asked for again, fetched again), and whoever waits for
        them gets ``exc``."""
        with self.cond:
            for k in ks:
                self.state[k] = _TODO
            self.error = exc
            self.cond.notify_all()

    def _rest_of_file(self, path: str, ks: Sequence[int], first: BaseException) -> None:
        """Frames ``ks`` of a multi-frame file whose read in one pass broke off: the file
        is read once more, whole, and each frame decoded from the data set on its own,
        so the frames that decode load and the others are named (a truncated file: the
        frames past its end, with the bytes missing)."""
        series = self.series
        ds = px._reparsed(path)
        if ds is None:
            self._give_up(ks, px._reason(first))
            return
        cut = px._truncation(ds, series)
        ds = px._padded(ds, cut)
        for i, k in enumerate(ks):
            frame = series.planes[k].frame or 0
            if cut is not None and frame >= cut[0]:
                self._give_up([k], cut[2])
                continue
            try:
                with px._panics_as_errors():
                    self._store(k, pixel_array(ds, index=frame), ds)
            except NotImplementedError as exc:
                self._give_up(ks[i:], "no decoder")
                msg = px.missing_decoder_message(series.transfer_syntax, path)
                raise px._MissingDecoder(msg or f"{path}: {exc}") from exc
            except (px.DicomLoadError, *px._DECODE_ERRORS) as exc:
                self._give_up([k], px._reason(exc))

    def _decode_one(self, k: int) -> tuple[npt.NDArray[Any], Dataset | None]:
        first = self._first.pop(k, None)  # plane 0 as the fast-decode check decoded it
        if first is not None:
            return first, None
        p = self.series.planes[k]
        return px._decode(p.path, p.frame, self.series, self.fast, p)

    def _values(
        self, k: int, arr: npt.NDArray[Any], ds: Dataset | None
    ) -> npt.NDArray[Any] | None:
        """The plane's values (colour), or ``None`` for grey: checked against the dtype
        (widening the series when they do not fit) and written by :meth:`_write`."""
        series, plane = self.series, self.series.planes[k]
        if series.rgb:
            rgb = px._colour(arr, series, ds)
            px._check_shape(rgb, series, plane.path)
            return rgb
        px._check_shape(arr, series, plane.path)
        if self.dtype != self.safe:
            lo, hi = px._plane_range(arr, plane)
            info = np.iinfo(self.dtype)
            if lo < info.min or hi > info.max:
                self._widen(plane.path, lo, hi)
        return None

    def _widen(self, path: str, lo: float, hi: float) -> None:
        """Every value from now on in the safe dtype; a kept array is converted (the
        planes already in it keep their values exactly)."""
        with self.cond:
            if self.dtype == self.safe:
                return
            log.info("%s: values %g..%g do not fit %s: the series is widened to %s",
                     path, lo, hi, self.dtype, self.safe)
            self.dtype = self.safe
            if self.out is not None:
                self.out = self.out.astype(self.safe)

    def _store(self, k: int, arr: npt.NDArray[Any], ds: Dataset | None) -> None:
        """Plane ``k`` from its decoded stored values: into the volume (grey values are
        computed straight into their slot) or to the sink; then marked done."""
        vals = self._values(k, arr, ds)
        plane = self.series.planes[k]
        while True:
            with self.cond:
                out, dt = self.out, self.dtype
            if out is None:
                if vals is None:
                    vals = px._modality_values(arr, plane, dt)
                break
            if vals is None:
                px._modality_values(arr, plane, out.dtype, out=out[k])
            else:
                out[k] = vals
            with self.cond:
                if self.out is out:
                    break
            # widened while we wrote: write again into the new array
        with self.cond:
            self.state[k] = _DONE
            self.cond.notify_all()
        if self.sink is not None:
            assert vals is not None
            self.sink(k, vals)

    def _give_up(self, ks: Sequence[int], why: str) -> None:
        series = self.series
        with self.cond:
            for k in ks:
                self.failed[k] = why
                series.damaged[k] = why
                self.state[k] = _DONE
            self.cond.notify_all()

    # ------------------------------------------------------------------ all planes

    def run(self, jobs: int, progress: Progress | None = None) -> None:
        """Decode every plane not yet claimed, on ``jobs`` threads; ``progress(done,
        total)`` from the calling thread."""
        tasks = px._tasks(self.series, jobs)

        def task(path: str, ks: list[int]) -> int:
            mine = self.claim(ks)
            if mine:
                self.decode(mine, path)
            return len(ks)

        done = 0
        if jobs == 1 or len(tasks) == 1:
            for path, ks in tasks:
                done += task(path, ks)
                if progress is not None:
                    progress(done, self.n)
            return
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="dicom-decode",
                                initializer=interrupts_to_main_thread) as pool:
            futures: list[Future[int]] = [pool.submit(task, p, ks) for p, ks in tasks]
            try:
                for fut in futures:
                    done += fut.result()
                    if progress is not None:
                        progress(done, self.n)
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise


def _fail_notes(series: Series, failed: dict[int, str], fill: float) -> None:
    """One warning per file and reason: a damaged image, or the damaged frames of a
    multi-frame file (e.g. "skipped damaged frames 4-5 of F (the file is truncated
    ...)")."""
    told: dict[tuple[str, str], list[int]] = {}
    for k, why in sorted(failed.items()):
        told.setdefault((series.planes[k].path, str(why)), []).append(k)
    for (path, why), ks in told.items():
        if len(ks) == 1 and series.planes[ks[0]].frame is None:
            what, its = f"skipped damaged image {path}", "its plane is"
        else:
            nums = px._ranges([(series.planes[k].frame or 0) + 1 for k in ks])
            what = f"skipped damaged frame{'s' if len(ks) > 1 else ''} {nums} of {path}"
            its = "their planes are" if len(ks) > 1 else "its plane is"
        series.warnings.append(f"{what} ({why}); {its} filled with the lowest value {fill}")
        log.warning(series.warnings[-1])


def load_now(
    series: Series, *, jobs: int | None = None, progress: Progress | None = None,
) -> npt.NDArray[Any]:
    """Decode the whole series now, on ``jobs`` threads (default: the CPUs), into one
    array of the smallest exact dtype. Damaged planes are filled with the lowest decoded
    value and named in ``series.warnings``; raises :class:`~.pixels.DicomLoadError` when
    no plane decodes."""
    planes = _Planes(series, keep=True)
    planes.run(max(1, jobs or os.cpu_count() or 1), progress)
    out = planes.out
    assert out is not None
    n = planes.n
    if len(planes.failed) == n:
        first = series.planes[0].path
        raise px.DicomLoadError(
            f"none of the {n} images of series {series.name!r} could be decoded; "
            f"first file {first}: {planes.failed[0]}"
        )
    if planes.failed:
        ok = np.ones(n, bool)
        ok[list(planes.failed)] = False
        fill = out[ok].min() if not series.rgb else 0
        out[list(planes.failed)] = fill
        _fail_notes(series, planes.failed, fill)
    return out.reshape(series.shape)


class SeriesVolume:
    """The modality values of a series as an array-like napari shows (``shape``,
    ``dtype``, ``ndim``, ``size``, indexing, ``np.asarray``), decoded as they are asked
    for; see the module docstring.

    Parameters
    ----------
    series
        The series (headers only).
    budget
        Bytes the whole array may take (default :func:`memory_budget`). Within it the
        volume is filled in memory (:attr:`in_memory`); beyond it planes are decoded when
        indexed and the last ones used are kept (at most ``min(budget, CACHE_BYTES)``).
    jobs
        Background decoding threads (default: the CPUs).
    background
        Start decoding the whole series on background threads now (in memory only);
        otherwise planes are decoded when asked for and :meth:`result` decodes the rest.
    """

    def __init__(
        self, series: Series, *, budget: int | None = None, jobs: int | None = None,
        background: bool = True,
    ) -> None:
        self.series = series
        self.shape: tuple[int, ...] = tuple(int(s) for s in series.shape)
        self.ndim = len(self.shape)
        self.size = int(np.prod(self.shape, dtype=np.int64))
        self.budget = memory_budget() if budget is None else int(budget)
        self.in_memory = array_bytes(series) <= self.budget
        self._planes = _Planes(series, keep=self.in_memory)
        self._lead = px._lead_shape(series)
        self._jobs = max(1, jobs or os.cpu_count() or 1)
        self._fill = px._lowest(series, self._planes.dtype)
        self._callbacks: list[Callable[[npt.NDArray[Any]], object]] = []
        self._called = False  # the when_loaded callbacks have run
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._finished = threading.Event()
        self._result: npt.NDArray[Any] | None = None
        self._cache: OrderedDict[int, npt.NDArray[Any]] = OrderedDict()
        self._cache_bytes = min(self.budget, CACHE_BYTES)
        self._filled: set[int] = set()
        #: :meth:`settle` waits for the load (no histogram summed behind if it ends then)
        self._settled = False
        #: the background thread sums the exact histogram of the finished volume
        self._summing = False
        #: the exact histogram of the finished volume, summed after it is in memory
        self._histogram: Future[IntHistogram] = Future()
        self._counted = np.zeros(self._planes.n, bool)  # lazy: planes in the histogram
        self._lazy_hist = IntHistogram(0, np.zeros(0, np.int64))
        if not self.in_memory:
            self._planes.sink = self._keep_lazy
        elif background:
            self.start()

    # ------------------------------------------------------------------ array protocol

    @property
    def dtype(self) -> np.dtype[Any]:
        return self._planes.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        how = "in memory" if self.in_memory else "lazy"
        state = "loaded" if self.loaded else "loading" if self.in_memory else "cached"
        return f"<SeriesVolume {self.shape} {self.dtype} {how}, {state}>"

    def _split(self, key: Any) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
        """``key`` as (leading-axes part, plane-axes part), Ellipsis expanded."""
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is None for k in key):
            raise IndexError("SeriesVolume indexing does not take None (np.newaxis)")
        if any(k is Ellipsis for k in key):
            i = next(j for j, k in enumerate(key) if k is Ellipsis)
            fill = (slice(None),) * (self.ndim - len(key) + 1)
            key = key[:i] + fill + key[i + 1 :]
        nl = len(self._lead)
        return key[:nl], key[nl:]

    def _plane_numbers(self, lead_key: tuple[Any, ...]) -> npt.NDArray[np.intp]:
        numbers = np.arange(self._planes.n, dtype=np.intp).reshape(self._lead)
        return np.asarray(numbers[lead_key])

    def __getitem__(self, key: Any) -> Any:
        if self._result is not None:
            out: npt.NDArray[Any] = self._result[key]
            return out
        if key is None or (isinstance(key, tuple) and len(key) == 1 and key[0] is None):
            return VolumeView(self, new=1)  # data[np.newaxis]: a single plane as a slab
        lead_key, plane_key = self._split(key)
        numbers = self._plane_numbers(lead_key)
        ks = sorted(set(int(k) for k in numbers.ravel()))
        if self.in_memory:
            self._ensure(ks)
            arr = self._planes.out
            assert arr is not None
            out = arr.reshape(self.shape)[key]
            return out
        got = {k: self._lazy_plane(k) for k in ks}
        dt = self.dtype
        stack = np.empty((*numbers.shape, *self._planes.pshape), dt)
        flat = stack.reshape((-1, *self._planes.pshape))
        for j, k in enumerate(numbers.ravel()):
            flat[j] = got[int(k)]
        picked: npt.NDArray[Any] = stack[(slice(None),) * numbers.ndim + plane_key]
        return picked

    def __array__(self, dtype: Any = None, copy: Any = None) -> npt.NDArray[Any]:
        arr = self.result() if self.in_memory else self[...]
        return arr if dtype is None else arr.astype(dtype)

    def transpose(self, *axes: Any) -> VolumeView:
        """A view with the axes in ``axes`` order (as ``numpy.transpose``), still lazy."""
        return VolumeView(self).transpose(*axes)

    def finished(self, shown: Any) -> npt.NDArray[Any]:
        """What ``shown`` (this volume or a :class:`VolumeView` of it) is once the volume
        is in memory: a numpy view of :meth:`result`, its histogram kept with it."""
        arr = self.result()
        if isinstance(shown, VolumeView):
            arr = shown.apply(arr)
        if arr is not self._result and self._planes.histogram_on and self._summing:
            remember_histogram(arr, self._histogram)
        return arr

    def reshape(self, shape: Sequence[int]) -> SeriesVolume | npt.NDArray[Any]:
        """Only to the same shape (itself) or, once loaded, as numpy reshapes."""
        shape = tuple(int(s) for s in shape)
        if shape == self.shape:
            return self
        if self.in_memory:
            return self.result().reshape(shape)
        raise ValueError(f"a lazy SeriesVolume keeps its shape {self.shape}")

    # ------------------------------------------------------------------ in memory

    def _ensure(self, ks: Sequence[int]) -> None:
        planes = self._planes
        mine = planes.claim(ks)
        for k in mine:
            planes.decode([k])
        planes.wait(ks)
        self._fill_failed()

    def _fill_failed(self) -> None:
        """Fill the planes that failed (once each) and name them in the warnings."""
        planes = self._planes
        with planes.cond:
            bad = {k: why for k, why in planes.failed.items() if k not in self._filled}
            self._filled.update(bad)
            if bad and planes.out is not None:
                planes.out[list(bad)] = self._fill
        if bad:
            _fail_notes(self.series, bad, self._fill)

    def start(self) -> None:
        """Start decoding every plane on background threads (once)."""
        with self._lock:
            if self._thread is not None or not self.in_memory:
                return
            self._thread = threading.Thread(target=self._background, daemon=True,
                                            name="dicom-volume")
            self._thread.start()

    def _background(self) -> None:
        planes = self._planes
        if planes.histogram_on and array_bytes(self.series) >= COMPILED_FROM:
            counting.warm_up()  # ready when the volume is: its histogram in 0.1 s
        try:
            planes.run(self._jobs)
            self._fill_failed()
            self._finish(histogram=planes.histogram_on)
        except BaseException as exc:  # handed to whoever waits for the result
            self._error = exc
            self._finished.set()
            if not self._histogram.done():
                self._histogram.set_exception(exc)

    def _finish(self, histogram: bool = False) -> None:
        """The volume is in memory: :meth:`result` and indexing return it from now on.
        The :meth:`when_loaded` callbacks run first (the reader's swap: the layer gets
        the array without waiting); then, with ``histogram`` (the background thread), the
        exact histogram is summed (~0.3 s per 1000 planes of 512 x 512 here; it was kept
        with the array as a future before the callbacks ran, so the widget never sums
        it again, and :func:`~napari_dicom.core.stats.histogram_pending` tells it to show
        the current slice until then)."""
        out = self._planes.out
        assert out is not None
        result = out.reshape(self.shape)
        with self._lock:
            histogram = self._summing = histogram and not self._settled
            if histogram:
                remember_histogram(result, self._histogram)
            self._result = result
        self._finished.set()
        with self._lock:
            callbacks, self._callbacks = self._callbacks, []
            self._called = True
        for cb in callbacks:
            cb(result)
        if histogram:
            try:
                self._histogram.set_result(histogram_of(result, self._jobs))
            except (WindowError, MemoryError) as exc:  # a range too wide to count exactly
                self._histogram.set_exception(exc)

    @property
    def quick(self) -> bool:
        """Whether the whole volume should be in memory within about 0.1 s: kept in
        memory, at most :data:`SETTLE_BYTES`, and uncompressed (its planes read straight
        from the files)."""
        return (self.in_memory and self._planes.fast == "native"
                and array_bytes(self.series) <= SETTLE_BYTES)

    def settle(self, seconds: float | None = None) -> npt.NDArray[Any] | None:
        """Wait up to ``seconds`` (default :data:`SETTLE_SECONDS`) for the background
        load. The finished array when it came in time: its caller shows it as a plain
        array, and no histogram is summed behind (whoever needs one sums it: the widget
        with :func:`histogram_behind`).
        ``None`` when it did not: the load goes on behind as if nobody had waited."""
        with self._lock:
            if self._result is not None and self._error is None:
                return self._result  # already loaded (its histogram summed behind)
            if self._thread is None:
                return None
            self._settled = True
        self._finished.wait(SETTLE_SECONDS if seconds is None else seconds)
        with self._lock:
            if self._result is None or self._error is not None:
                self._settled = False  # still loading (or failed): as before
                return None
        return self._result

    @property
    def may_widen_to(self) -> np.dtype[Any] | None:
        """The dtype the volume goes to if a plane not decoded yet does not fit its dtype
        (``int32`` for a CT started as ``int16``), ``None`` once that cannot happen."""
        planes = self._planes
        with planes.cond:
            if planes.dtype == planes.safe or bool(np.all(planes.state == _DONE)):
                return None
            return planes.safe

    @property
    def loaded(self) -> bool:
        """Whether the whole volume is in memory (:meth:`result` returns at once)."""
        return self._result is not None

    def result(self, timeout: float | None = None) -> npt.NDArray[Any]:
        """The whole volume as one numpy array (waits for the background load, or
        decodes the planes left in the calling thread)."""
        if not self.in_memory:
            raise MemoryError(
                f"series {self.series.name!r} needs {array_bytes(self.series) / 2**20:.0f} "
                f"MiB, over the memory budget of {self.budget / 2**20:.0f} MiB: it stays lazy"
            )
        if self._result is None:
            if self._thread is None:
                self._planes.run(self._jobs)
                self._fill_failed()
                with self._lock:
                    started = self._thread is not None
                if not started and self._result is None:
                    self._finish()
            if not self._finished.wait(timeout):
                raise TimeoutError(f"series {self.series.name!r} still loading")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def when_loaded(self, callback: Callable[[npt.NDArray[Any]], object]) -> None:
        """Call ``callback(array)`` once the volume is in memory (from the loading thread,
        before its histogram is summed; or now when that is done). A callback must be
        quick: the reader's posts the swap to the GUI thread."""
        with self._lock:
            if not self._called:
                self._callbacks.append(callback)
                return
            result = self._result
        assert result is not None
        callback(result)

    # ------------------------------------------------------------------ lazy (too large)

    def _keep_lazy(self, k: int, vals: npt.NDArray[Any]) -> None:
        with self._lock:
            self._cache[k] = vals
            self._cache.move_to_end(k)
            total = sum(v.nbytes for v in self._cache.values())
            while len(self._cache) > 1 and total > self._cache_bytes:
                _, old = self._cache.popitem(last=False)
                total -= old.nbytes
            if self._planes.histogram_on and not self._counted[k]:
                self._counted[k] = True
                self._lazy_hist = self._lazy_hist + IntHistogram.of(vals)

    def _lazy_plane(self, k: int) -> npt.NDArray[Any]:
        planes = self._planes
        while True:
            with self._lock:
                hit = self._cache.get(k)
                if hit is not None:
                    self._cache.move_to_end(k)
                    return hit
            with planes.cond:
                if planes.state[k] == _BUSY:  # another thread decodes it: wait for it
                    planes.cond.wait_for(lambda: planes.state[k] != _BUSY)
                    continue
                planes.state[k] = _BUSY
            planes.decode([k])
            if k in planes.failed:
                with self._lock:
                    self._cache[k] = np.full(planes.pshape, self._fill, planes.dtype)
                _fail_notes(self.series, {k: planes.failed[k]}, self._fill)
            with planes.cond:  # a lazy plane may be decoded again once it left the cache
                planes.state[k] = _TODO
                planes.cond.notify_all()

    # ------------------------------------------------------------------ statistics

    def series_histogram(self) -> IntHistogram | None:
        """Exact histogram of every value (integer data; ``None`` otherwise). In memory:
        summed on the background thread once the volume is loaded (waits for it). Lazy:
        summed as planes are decoded; the planes not seen yet are decoded, once."""
        planes = self._planes
        if not planes.histogram_on:
            return None
        if self.in_memory:
            arr = self.result()
            if self._summing:
                return self._histogram.result()
            return histogram_of(arr, self._jobs)
        for k in np.flatnonzero(~self._counted):
            self._lazy_plane(int(k))
        with self._lock:
            return self._lazy_hist


def histogram_of(arr: npt.NDArray[Any], jobs: int = 1) -> IntHistogram:
    """:meth:`~.render.IntHistogram.of` of a volume, its planes split over ``jobs``
    threads (numpy's bincount lets go of the GIL for part of its work)."""
    flat = arr.reshape((-1, *arr.shape[-2:])) if arr.ndim > 2 else arr[None]
    parts = np.array_split(np.arange(flat.shape[0]), max(1, min(jobs, flat.shape[0])))
    if len(parts) == 1:
        return IntHistogram.of(flat)
    with ThreadPoolExecutor(len(parts), thread_name_prefix="dicom-histogram") as pool:
        hists = list(pool.map(lambda ks: IntHistogram.of(flat[ks[0] : ks[-1] + 1]), parts))
    total = hists[0]
    for h in hists[1:]:
        total = total + h
    return total.trimmed()


#: integer arrays from this size on have their histogram summed on a thread by
#: :func:`histogram_behind` (smaller ones take milliseconds where they are needed)
BEHIND_BYTES = 16 << 20


def histogram_behind(arr: Any, jobs: int | None = None) -> Future[IntHistogram] | None:
    """Start summing the exact histogram of an in-memory integer array on a background
    thread and keep it with the array (:func:`~.stats.remember_histogram`), so that a
    caller on the GUI thread can show something else until it is summed
    (:func:`~.stats.histogram_pending`) instead of blocking (0.2 s for 300 planes of
    512 x 512, 0.6 s for 1000, here). Returns the future, or ``None`` when there is
    nothing to do: not a numpy integer array of at least :data:`BEHIND_BYTES`, or its
    histogram already kept (the background loader's, or an earlier call's)."""
    if (not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iu"
            or arr.nbytes < BEHIND_BYTES or arr.ndim < 2 or histogram_kept(arr)):
        return None
    fut: Future[IntHistogram] = Future()
    remember_histogram(arr, fut)
    n = max(1, jobs or os.cpu_count() or 1)

    def run() -> None:
        try:
            fut.set_result(histogram_of(arr, n))
        except (WindowError, MemoryError) as exc:  # a range too wide to count exactly
            fut.set_exception(exc)

    threading.Thread(target=run, daemon=True, name="dicom-histogram").start()
    return fut


def _full_key(key: Any, ndim: int) -> tuple[int | slice, ...]:
    """``key`` as one int or slice per axis (Ellipsis expanded, missing axes whole)."""
    if not isinstance(key, tuple):
        key = (key,)
    if sum(k is Ellipsis for k in key) > 1:
        raise IndexError("an index can only have a single ellipsis")
    if any(k is Ellipsis for k in key):
        i = next(j for j, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (ndim - len(key) + 1) + key[i + 1 :]
    out: list[int | slice] = []
    for k in key:
        if isinstance(k, slice):
            out.append(k)
        elif isinstance(k, int | np.integer):
            out.append(int(k))
        else:
            raise IndexError(f"a lazy DICOM volume takes ints and slices, not {k!r}")
    if len(out) > ndim:
        raise IndexError(f"too many indices for a {ndim}-D volume")
    return (*out, *(slice(None),) * (ndim - len(out)))


class VolumeView:
    """A :class:`SeriesVolume` with ``new`` leading axes of length 1 added and then its
    axes put in ``order`` (what the reader's patient-space placement asks of the array:
    ``data[np.newaxis]``, ``data.transpose(...)``), still decoded as it is indexed."""

    def __init__(
        self, base: SeriesVolume, new: int = 0, order: Sequence[int] | None = None
    ) -> None:
        self.base = base
        self.new = int(new)
        n = base.ndim + self.new
        self.order = tuple(range(n)) if order is None else tuple(int(a) for a in order)
        if sorted(self.order) != list(range(n)):
            raise ValueError(f"axes {self.order} do not fit a {n}-D volume")
        ext = (1,) * self.new + base.shape
        self.shape: tuple[int, ...] = tuple(ext[a] for a in self.order)
        self.ndim = n
        self.size = base.size

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.base.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"<VolumeView {self.shape} (new={self.new}, order={self.order}) of {self.base!r}>"

    def apply(self, arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """The same view of the base volume's numpy array (no copy)."""
        out = arr.reshape((1,) * self.new + arr.shape)
        return out.transpose(self.order) if self.order != tuple(range(self.ndim)) else out

    def transpose(self, *axes: Any) -> VolumeView:
        if len(axes) == 1 and not isinstance(axes[0], int | np.integer):
            axes = tuple(axes[0]) if axes[0] is not None else ()
        if not axes:
            axes = tuple(reversed(range(self.ndim)))
        return VolumeView(self.base, self.new, [self.order[int(a)] for a in axes])

    def reshape(self, shape: Sequence[int]) -> VolumeView | npt.NDArray[Any]:
        if tuple(int(s) for s in shape) == self.shape:
            return self
        return np.asarray(self).reshape(tuple(shape))

    def series_histogram(self) -> IntHistogram | None:
        return self.base.series_histogram()

    def __array__(self, dtype: Any = None, copy: Any = None) -> npt.NDArray[Any]:
        arr = self.apply(np.asarray(self.base))
        return arr if dtype is None else arr.astype(dtype)

    def __getitem__(self, key: Any) -> npt.NDArray[Any]:
        if self.base.loaded:
            done: npt.NDArray[Any] = self.apply(self.base.result())[key]
            return done
        key = _full_key(key, self.ndim)
        ext_key: list[int | slice] = [slice(None)] * self.ndim
        for i, a in enumerate(self.order):
            ext_key[a] = key[i]
        part = np.asarray(self.base[tuple(ext_key[self.new :])])
        part = part.reshape((1,) * self.new + part.shape)[(*ext_key[: self.new], Ellipsis)]
        kept = [a for a, k in zip(self.order, key, strict=True) if not isinstance(k, int)]
        ranked = sorted(kept)
        return part.transpose([ranked.index(a) for a in kept])


def open_series(
    series: Series, *, budget: int | None = None, jobs: int | None = None,
    background_from: int | None = None,
) -> npt.NDArray[Any] | SeriesVolume:
    """What the reader shows: a numpy array for a series up to ``background_from`` bytes
    (default :data:`BACKGROUND_BYTES`), loaded now; else a :class:`SeriesVolume`, filled
    in the background when it fits ``budget`` (default :func:`memory_budget`), lazy with
    a cache when it does not."""
    limit = BACKGROUND_BYTES if background_from is None else background_from
    fits = array_bytes(series) <= (memory_budget() if budget is None else budget)
    if fits and array_bytes(series) <= limit:
        return load_now(series, jobs=jobs)
    return SeriesVolume(series, budget=budget, jobs=jobs)
